"""The PULL pipeline: fire-and-forget ``space-accounting-detail`` messages.

Each message is one JSON header frame. One that does not decode, is not a
``space-accounting-detail``, carries payload frames or has a missing or
invalid field is logged, counted in ``nimbus_accounting_details_dropped_total``
(by error code) and dropped; the pipeline goes on with the next. Valid
details are queued on the :class:`~services.accounting.tally.Tally`; while
its queue is full the pipeline stops reading, so ZeroMQ's queues push back
on the senders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiozmq
import zmq

from services.accounting import metrics
from services.accounting.model import DETAIL, parse_detail
from services.accounting.tally import Tally
from services.common import protocol
from services.common.protocol import ErrorCode, FrameLimits, ProtocolError

log = logging.getLogger(__name__)

#: Bytes aiozmq buffers before it stops reading the socket (ZeroMQ queues the rest).
_READ_BUFFER_BYTES = 4 * 1024 * 1024
#: Drops are logged one by one up to this many, then every ``_LOG_EVERY``-th.
_LOG_FIRST = 20
_LOG_EVERY = 1000


class Pipeline:
    """A PULL socket feeding valid details to a tally."""

    def __init__(self, tally: Tally, max_header_bytes: int) -> None:
        self._tally = tally
        self._limits = FrameLimits(
            max_header_bytes=max_header_bytes, max_payload_frames=0, max_frame_bytes=0
        )
        self._stream: aiozmq.ZmqStream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._dropped = 0
        self.endpoint = ""

    async def start(self, bind: str) -> str:
        """Bind (``tcp://127.0.0.1:0`` picks a free port) and start reading."""
        self._stream = await aiozmq.create_zmq_stream(zmq.PULL, high_read=_READ_BUFFER_BYTES)
        sock = self._stream.transport
        # A peer sending far more than any detail is cut off inside ZeroMQ.
        sock.setsockopt(zmq.MAXMSGSIZE, 2 * self._limits.max_header_bytes + 1024)
        sock.setsockopt(zmq.LINGER, 1000)
        self.endpoint = await sock.bind(protocol.zmq_bind_address(bind))
        self._reader = asyncio.create_task(self._read_loop(), name="accounting pipeline")
        log.info("accounting pipeline on %s", self.endpoint)
        return self.endpoint

    async def _read_loop(self) -> None:
        assert self._stream is not None
        while True:
            try:
                frames = await self._stream.read()
            except aiozmq.ZmqStreamClosed:
                return
            try:
                message = protocol.decode(frames, self._limits)
                if message.message_type != DETAIL:
                    raise ProtocolError(
                        ErrorCode.UNKNOWN_MESSAGE_TYPE,
                        f"the pipeline takes only {DETAIL}, not {message.message_type!r}",
                    )
                detail = parse_detail(message.header, require_id=False)
            except ProtocolError as exc:
                self._drop(exc)
                continue
            await self._tally.offer(detail)

    def _drop(self, exc: ProtocolError) -> None:
        metrics.DETAILS_DROPPED.labels(exc.code.value).inc()
        self._dropped += 1
        if self._dropped <= _LOG_FIRST or self._dropped % _LOG_EVERY == 0:
            log.warning(
                "dropped a detail from the pipeline (%d so far): %s: %s",
                self._dropped,
                exc.code,
                exc.message,
            )

    async def stop_reading(self) -> None:
        """Take no more details (those already queued are still counted)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None

    async def close(self) -> None:
        """Stop reading and close the socket, freeing its port."""
        await self.stop_reading()
        if self._stream is not None:
            self._stream.close()
            self._stream = None
