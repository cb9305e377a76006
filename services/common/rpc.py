"""Request/reply over ZeroMQ: a ROUTER server and a DEALER client (aiozmq).

The server reads requests, dispatches each by ``message-type`` to a handler in
its own task (so many requests are served at once), and writes the handler's
reply back to the requesting peer. The client keeps any number of requests in
flight on one DEALER connection and matches replies by ``message-id``; each
request has its own timeout. Optionally the client sets socket options before
it connects (e.g. ZMTP heartbeats) and hands the socket monitor's events
(connection made, lost, ...) to a callback; ``last_received`` says when the
peer last sent anything.

Invariants:
- A malformed, unknown or oversized message gets an error reply; a handler
  that raises gets an ``internal-error`` reply. Nothing a peer sends can stop
  the server.
- Every server answers ``ping`` (readiness).
- ``RpcServer.close`` stops taking work (new requests get ``shutting-down``),
  lets in-flight handlers finish, then closes the socket so the port is free.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiozmq
import zmq

from services.common import metrics, protocol
from services.common.protocol import ErrorCode, FrameLimits, Header, Message, ProtocolError

log = logging.getLogger(__name__)

Reply = tuple[Header, Sequence[bytes]]
Handler = Callable[[Message], Awaitable[Reply]]


class RpcServer:
    """A ROUTER socket serving ``handlers`` keyed by message type."""

    def __init__(
        self,
        service_name: str,
        handlers: Mapping[str, Handler],
        limits: FrameLimits = protocol.DEFAULT_LIMITS,
        max_in_flight: int = 256,
    ) -> None:
        self.service_name = service_name
        self._handlers = dict(handlers)
        self._limits = limits
        self._slots = asyncio.Semaphore(max_in_flight)
        self._stream: aiozmq.ZmqStream | None = None
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.endpoint = ""

    async def start(self, bind: str) -> str:
        """Bind (``tcp://127.0.0.1:0`` picks a free port) and start serving."""
        self._stream = await aiozmq.create_zmq_stream(zmq.ROUTER, high_read=1 << 30)
        sock = self._stream.transport
        # Far larger frames than the limit cut the peer off inside ZeroMQ;
        # anything up to twice the limit is received and answered with an error.
        sock.setsockopt(zmq.MAXMSGSIZE, 2 * self._limits.max_frame_bytes + 1024)
        sock.setsockopt(zmq.LINGER, 1000)
        self.endpoint = await sock.bind(protocol.zmq_bind_address(bind))
        self._reader = asyncio.create_task(self._read_loop(), name=f"{self.service_name}-rpc")
        log.info("%s serving on %s", self.service_name, self.endpoint)
        return self.endpoint

    async def _read_loop(self) -> None:
        assert self._stream is not None
        while True:
            try:
                frames = await self._stream.read()
            except aiozmq.ZmqStreamClosed:
                return
            identity, body = self._split_envelope(frames)
            if identity is None:
                continue
            await self._slots.acquire()
            task = asyncio.create_task(self._serve_one(identity, body))
            self._tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    @staticmethod
    def _split_envelope(frames: list[bytes]) -> tuple[list[bytes] | None, list[bytes]]:
        # ROUTER prepends the peer identity; a REQ peer adds an empty delimiter.
        if len(frames) < 2:
            return None, []
        if len(frames) >= 3 and frames[1] == b"":
            return frames[:2], frames[2:]
        return frames[:1], frames[1:]

    async def _serve_one(self, identity: list[bytes], body: list[bytes]) -> None:
        started = time.monotonic()
        metrics.RPC_BYTES_IN.inc(sum(len(frame) for frame in body))
        request: Header = {}
        try:
            message = protocol.decode(body, self._limits)
            request = message.header
            header, payloads = await self._dispatch(message)
        except ProtocolError as exc:
            header, payloads = protocol.error_reply(request or _guess_header(body), exc), ()
            log.info("%s: %s: %s", self.service_name, exc.code, exc.message)
        except Exception as exc:
            log.exception("%s: handler failed", self.service_name)
            header = protocol.reply_header(
                request or _guess_header(body),
                ErrorCode.INTERNAL_ERROR,
                f"{type(exc).__name__}: {exc}",
            )
            payloads = ()
        reply = protocol.encode(header, payloads)
        self._send(identity, reply)
        kind = str(request.get("message-type") or "undecodable")
        if kind not in self._handlers and kind != "ping":
            kind = "unknown"  # bounded label values whatever peers send
        metrics.RPC_REQUESTS.labels(kind, str(header.get("result"))).inc()
        metrics.RPC_SECONDS.labels(kind).observe(time.monotonic() - started)
        metrics.RPC_BYTES_OUT.inc(sum(len(frame) for frame in reply))
        log.debug(
            "%s %s -> %s in %.1f ms",
            self.service_name,
            request.get("message-type"),
            header.get("result"),
            (time.monotonic() - started) * 1000,
        )

    async def _dispatch(self, message: Message) -> Reply:
        kind = message.message_type
        if self._closing:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, f"{self.service_name} is shutting down")
        if kind == "ping":
            return protocol.reply_header(message.header, service=self.service_name), ()
        handler = self._handlers.get(kind)
        if handler is None:
            raise ProtocolError(ErrorCode.UNKNOWN_MESSAGE_TYPE, f"unknown message-type {kind!r}")
        return await handler(message)

    def _send(self, identity: list[bytes], frames: list[bytes]) -> None:
        if self._stream is None:
            return
        try:
            self._stream.write([*identity, *frames])
        except (aiozmq.ZmqStreamClosed, zmq.ZMQError) as exc:
            log.warning("%s: reply not sent: %s", self.service_name, exc)

    async def close(self, drain_timeout_s: float = 30.0) -> None:
        """Refuse new work, finish in-flight requests, close the socket."""
        self._closing = True
        log.info("%s closing with %d requests in flight", self.service_name, len(self._tasks))
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=drain_timeout_s)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._stream is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._stream.drain(), timeout=5)
            self._stream.close()
            self._stream = None
        for task in list(self._tasks):
            task.cancel()


def _guess_header(body: list[bytes]) -> Header:
    """Best effort for replies to messages that did not decode."""
    try:
        header = json.loads(body[0]) if body else {}
    except (ValueError, UnicodeDecodeError):
        return {"message-type": "error"}
    if not isinstance(header, dict):
        return {"message-type": "error"}
    kind = header.get("message-type")
    return {
        "message-type": kind if isinstance(kind, str) else "error",
        "message-id": header.get("message-id"),
    }


#: Replies come from our own services; bound them generously all the same.
_REPLY_LIMITS = FrameLimits(max_payload_frames=1024, max_frame_bytes=1 << 30)


class RpcTimeout(Exception):
    """No reply arrived within the request's timeout."""


class RpcClient:
    """A DEALER connection with many requests in flight, matched by message-id."""

    def __init__(
        self,
        endpoint: str,
        timeout_s: float,
        *,
        socket_options: Mapping[int, int] | None = None,
        on_event: Callable[[int], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        #: Set on the DEALER socket before it connects (e.g. ``zmq.HEARTBEAT_IVL``).
        self._socket_options = dict(socket_options or {})
        #: Called with each socket monitor event (``zmq.EVENT_*``) of the connection.
        self._on_event = on_event
        #: ``time.monotonic()`` when the last message from the peer was read (0: none yet).
        self.last_received = 0.0
        self._stream: aiozmq.ZmqStream | None = None
        self._pending: dict[str, asyncio.Future[Message]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        endpoint: str,
        timeout_s: float = 10.0,
        *,
        socket_options: Mapping[int, int] | None = None,
        on_event: Callable[[int], None] | None = None,
    ) -> RpcClient:
        client = cls(endpoint, timeout_s, socket_options=socket_options, on_event=on_event)
        await client._open()
        return client

    async def _open(self) -> None:
        self._stream = stream = await aiozmq.create_zmq_stream(zmq.DEALER, high_read=1 << 30)
        stream.transport.setsockopt(zmq.LINGER, 0)
        for option, value in self._socket_options.items():
            stream.transport.setsockopt(option, value)
        if self._on_event is not None:
            # Before connecting, so that the first connection's events are seen too.
            await stream.transport.enable_monitor()
            self._watcher = asyncio.create_task(
                self._watch_loop(stream, self._on_event), name=f"rpc-monitor {self.endpoint}"
            )
        await stream.transport.connect(self.endpoint)
        self._reader = asyncio.create_task(self._read_loop(), name=f"rpc-client {self.endpoint}")

    async def _watch_loop(self, stream: aiozmq.ZmqStream, on_event: Callable[[int], None]) -> None:
        while True:
            try:
                event = await stream.read_event()
            except aiozmq.ZmqStreamClosed:
                return
            try:
                on_event(int(event.event))
            except Exception:
                log.exception("socket event handler for %s failed", self.endpoint)

    def fail_pending(self, reason: str) -> int:
        """Fail every request waiting for a reply (as when the connection is gone); how many."""
        failed = 0
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"{self.endpoint}: {reason}"))
                failed += 1
        return failed

    async def reset(self) -> None:
        """Drop the connection (failing what is pending) and connect afresh.

        A new connect resolves the host name again: after a container restart
        the old address may belong to another container by now.
        """
        await self.close()
        await self._open()

    async def _read_loop(self) -> None:
        assert self._stream is not None
        while True:
            try:
                frames = await self._stream.read()
            except aiozmq.ZmqStreamClosed:
                break
            self.last_received = time.monotonic()
            try:
                message = protocol.decode(frames, _REPLY_LIMITS)
            except ProtocolError as exc:
                log.warning("undecodable reply from %s: %s", self.endpoint, exc.message)
                continue
            future = self._pending.pop(str(message.header.get("message-id")), None)
            if future is not None and not future.done():
                future.set_result(message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"connection to {self.endpoint} closed"))

    async def request(
        self,
        header: Mapping[str, Any],
        payloads: Sequence[bytes] = (),
        timeout_s: float | None = None,
    ) -> Message:
        """Send one request and wait for its reply (``RpcTimeout`` if none comes)."""
        if self._stream is None:
            raise ConnectionError(f"client for {self.endpoint} is closed")
        request = dict(header)
        message_id = str(request.setdefault("message-id", protocol.new_message_id()))
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        try:
            self._stream.write(protocol.encode(request, payloads))
            # The drain is within the timeout too: with no connection for long
            # the socket's queue fills and the drain could wait for ever.
            return await asyncio.wait_for(
                self._drained_reply(self._stream, future), timeout_s or self.timeout_s
            )
        except TimeoutError as exc:
            raise RpcTimeout(
                f"no reply to {request.get('message-type')} from {self.endpoint} "
                f"within {timeout_s or self.timeout_s} s"
            ) from exc
        finally:
            self._pending.pop(message_id, None)

    @staticmethod
    async def _drained_reply(stream: aiozmq.ZmqStream, future: asyncio.Future[Message]) -> Message:
        await stream.drain()
        return await future

    async def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self._reader is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
