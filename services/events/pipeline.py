"""The event stream: PULL what every service sends, PUB it to subscribers.

Each message received on the pipeline is checked by
:func:`services.events.intake.parse`; a bad one is counted, logged and
dropped. A good one is kept in the :class:`History` and published as two
frames: the topic (its ``event-type``, UTF-8) and its JSON header exactly as
received.

Invariants:
- Nothing a sender pushes stops the read loop: oversized frames far past the
  limit are cut off inside ZeroMQ (``MAXMSGSIZE``), everything else is
  checked here.
- Publishing never blocks: a PUB socket drops what a slow subscriber does not
  take (ZeroMQ's high-water mark), so one stuck follower cannot stall the
  cluster's events.
- Metric labels stay bounded: event types are short names, and past
  ``MAX_TYPE_LABELS`` distinct ones the rest are counted as ``other``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiozmq
import zmq
from prometheus_client import Counter, Gauge

from services.common import protocol
from services.events import intake
from services.events.history import History
from services.events.intake import BadEvent

log = logging.getLogger(__name__)

RECEIVED = Counter(
    "nimbus_events_received",
    "Events received on the pipeline and published, by event type",
    ["event_type"],
)
DROPPED = Counter(
    "nimbus_events_dropped",
    "Malformed messages dropped from the pipeline, by reason",
    ["reason"],
)
HELD = Gauge("nimbus_events_history", "Events held for recent-events-request")

#: Distinct event-type label values counted before the rest become ``other``.
MAX_TYPE_LABELS = 256
#: Messages queued for each subscriber before the PUB socket drops new ones.
PUBLISH_QUEUE_LIMIT = 10_000


class Pipeline:
    """The PULL and PUB sockets and the loop between them."""

    def __init__(self, history: History, max_header_bytes: int) -> None:
        self._history = history
        self._max_header_bytes = max_header_bytes
        self._pull: aiozmq.ZmqStream | None = None
        self._publish: aiozmq.ZmqStream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._type_labels: set[str] = set()
        self.dropped = 0
        self.pipeline_endpoint = ""
        self.publish_endpoint = ""

    async def start(self, pipeline_bind: str, publish_bind: str) -> None:
        """Bind both sockets (publishing first: nothing received goes unpublished)."""
        self._publish = await aiozmq.create_zmq_stream(zmq.PUB)
        pub = self._publish.transport
        pub.setsockopt(zmq.SNDHWM, PUBLISH_QUEUE_LIMIT)
        pub.setsockopt(zmq.LINGER, 500)
        self.publish_endpoint = await pub.bind(protocol.zmq_bind_address(publish_bind))

        self._pull = await aiozmq.create_zmq_stream(zmq.PULL, high_read=16 << 20)
        pull = self._pull.transport
        # Frames up to 16 times the limit are received (and counted as too
        # large); larger ones are cut off inside ZeroMQ before they use memory.
        pull.setsockopt(zmq.MAXMSGSIZE, 16 * self._max_header_bytes)
        pull.setsockopt(zmq.LINGER, 0)
        self.pipeline_endpoint = await pull.bind(protocol.zmq_bind_address(pipeline_bind))
        self._reader = asyncio.create_task(self._read_loop(), name="events-pipeline")
        log.info(
            "events: pipeline on %s, publishing on %s",
            self.pipeline_endpoint,
            self.publish_endpoint,
        )

    async def _read_loop(self) -> None:
        assert self._pull is not None
        while True:
            try:
                frames = await self._pull.read()
            except aiozmq.ZmqStreamClosed:
                return
            try:
                self.receive(frames)
            except Exception:  # a bug here must not end the stream
                log.exception("events: could not handle a message")

    def receive(self, frames: list[bytes]) -> None:
        """Check one pipeline message; publish it or count it dropped."""
        try:
            header = intake.parse(frames, self._max_header_bytes)
        except BadEvent as exc:
            self.dropped += 1
            DROPPED.labels(exc.reason).inc()
            # Logged, but a sender gone mad must not flood the log.
            if self.dropped <= 100 or self.dropped % 1000 == 0:
                log.warning("events: dropped a message (%d so far): %s", self.dropped, exc)
            return
        self._publish_one(header, bytes(frames[0]))

    def publish(self, header: dict[str, Any]) -> None:
        """Publish an event of the events service's own (already well formed)."""
        self._publish_one(header, protocol.encode_header(header))

    def _publish_one(self, header: dict[str, Any], raw: bytes) -> None:
        event_type = str(header["event-type"])
        self._history.add(header)
        HELD.set(len(self._history))
        RECEIVED.labels(self._label(event_type)).inc()
        if self._publish is None:
            return
        try:
            self._publish.write([event_type.encode("utf-8"), raw])
        except (aiozmq.ZmqStreamClosed, zmq.ZMQError) as exc:
            log.warning("events: %s not published: %s", event_type, exc)

    def _label(self, event_type: str) -> str:
        if event_type in self._type_labels:
            return event_type
        if len(self._type_labels) < MAX_TYPE_LABELS:
            self._type_labels.add(event_type)
            return event_type
        return "other"

    async def close(self) -> None:
        """Stop reading, then close both sockets (their ports are free afterwards)."""
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        for stream in (self._pull, self._publish):
            if stream is not None:
                stream.close()
        self._pull = self._publish = None
