"""The write path: stream a body into erasure-coded shares on the home nodes.

The body is cut into sequences of ``sequence_size`` bytes; each is encoded
(off the event loop) into ``n`` shares and share *i* is archived by the writer
of home node *i*. One sequence is held back until the next byte or the end of
the body shows whether it is the last, because the last goes out as
``archive-key-final`` (or ``-entire`` when it is the only one). Sending one
sequence overlaps reading and encoding the next, so memory stays within a
few sequences whatever the object size.

Invariants:
- A share whose home writer is down goes to two other live writers (the next
  nodes in the object's preference list) tagged with ``handoff-node-name``;
  both must make it durable. More than ``n - k`` homes down: ``Unavailable``
  before anything is sent (the caller answers 503, no byte is stored).
- ``finish_check`` (length, Content-MD5, payload hash, trailing checksum) runs
  after the last byte is read and before the final message goes out: a body
  that fails it leaves only cancelled archives behind.
- On any failure every archive this call started is cancelled (best effort;
  what a dead writer kept is collected by anti-entropy as an orphan).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from services.common import codec, erasure, messages
from services.common.messages import FileInfo, SegmentRef
from services.common.rpc import RpcTimeout
from services.gateway.nodes import NodeSet

log = logging.getLogger(__name__)


class Unavailable(Exception):
    """Too few nodes answer to store or read this object."""


class TooLarge(Exception):
    """The body is longer than the caller allows."""


@dataclass(frozen=True)
class Layout:
    """How one object version is coded and where its shares live."""

    k: int
    n: int
    sequence_size: int
    homes: tuple[str, ...]
    #: The rest of the preference list: where handoffs go first.
    spares: tuple[str, ...] = ()


#: segment-num -> the nodes holding that share for its (down) home.
Handoffs = dict[int, list[str]]


@dataclass(frozen=True)
class Stored:
    size: int
    md5: bytes
    #: How many shares the object has (n).
    shares: int
    handoffs: Handoffs = field(default_factory=dict)

    @property
    def handed_off(self) -> int:
        return len(self.handoffs)


@dataclass
class _Digest:
    size: int = 0
    md5: Any = field(default_factory=hashlib.md5)
    adler32: int = 1

    def update(self, data: bytes) -> None:
        self.size += len(data)
        self.md5.update(data)
        self.adler32 = zlib.adler32(data, self.adler32)


def _encode(digest: _Digest, data: bytes, k: int, n: int) -> list[bytes]:
    """Hash and encode one sequence (runs in a thread, in body order)."""
    digest.update(data)
    return codec.encode_sync(data, k, n)


class _Archive:
    """The archives of one segment group on all home writers."""

    def __init__(
        self,
        nodes: NodeSet,
        layout: Layout,
        ref: SegmentRef,
        user_request_id: str,
        handoffs: Handoffs,
    ) -> None:
        self.nodes = nodes
        self.layout = layout
        self.user_request_id = user_request_id
        self.started = False
        # Each share's targets: its home, or the two nodes holding it for the home.
        self.targets: list[list[tuple[str, SegmentRef]]] = []
        for num, ref_i in enumerate(ref.group(layout.n)):
            home = layout.homes[num]
            if num in handoffs:
                held = dataclasses.replace(ref_i, handoff_node_name=home)
                self.targets.append([(holder, held) for holder in handoffs[num]])
            else:
                self.targets.append([(home, ref_i)])

    async def send(
        self, sequence_num: int, length: int, shares: list[bytes], kind: str, file: FileInfo | None
    ) -> None:
        pad = erasure.padding_size(length, self.layout.k)
        if kind in ("archive-key-start", "archive-key-entire"):
            self.started = True
        await asyncio.gather(
            *(
                self._send_one(node, ref, sequence_num, shares[i], pad, kind, file)
                for i in range(self.layout.n)
                for node, ref in self.targets[i]
            )
        )

    async def _send_one(
        self,
        node: str,
        ref: SegmentRef,
        sequence_num: int,
        share: bytes,
        pad: int,
        kind: str,
        file: FileInfo | None,
    ) -> None:
        endpoint = self.nodes[node].writer
        header = messages.archive(
            kind,
            ref,
            share,
            sequence_num,
            zfec_padding_size=pad,
            file=file,
            user_request_id=self.user_request_id,
        )
        try:
            reply = await endpoint.client.request(header, [share])
        except (RpcTimeout, ConnectionError) as exc:
            self.nodes.mark_down(endpoint, str(exc))
            raise Unavailable(f"writer of {endpoint.node_name} did not answer") from exc
        if reply.header.get("result") != "success":
            raise Unavailable(
                f"writer of {endpoint.node_name} refused {kind}: "
                f"{reply.header.get('result')}: {reply.header.get('error-message')}"
            )

    async def cancel(self) -> None:
        if not self.started:
            return

        async def cancel_one(node: str, ref: SegmentRef) -> None:
            endpoint = self.nodes[node].writer
            try:
                await endpoint.client.request(messages.cancel(ref), timeout_s=2.0)
            except (RpcTimeout, ConnectionError):
                pass

        await asyncio.gather(
            *(cancel_one(node, ref) for targets in self.targets for node, ref in targets)
        )


HOLDERS_PER_HANDOFF = 2


def plan_handoffs(nodes: NodeSet, layout: Layout) -> Handoffs:
    """Two live holders for every share whose home writer is down.

    Holders come from the preference list after the homes, then the other
    homes in order after the down one; a node holds at most one handed-off
    share of an object. More than ``n - k`` homes down, or too few live
    writers to hold two copies: ``Unavailable``.
    """
    down = [num for num, home in enumerate(layout.homes) if not nodes.is_up(home, "writer")]
    if len(down) > layout.n - layout.k:
        raise Unavailable(
            f"{len(down)} of {layout.n} home writers are down; at most "
            f"{layout.n - layout.k} may be: {', '.join(layout.homes[i] for i in down)}"
        )
    handoffs: Handoffs = {}
    used: set[str] = set()
    for num in down:
        rotated = layout.homes[num + 1 :] + layout.homes[:num]
        candidates = [
            node
            for node in (*layout.spares, *rotated)
            if node not in used and nodes.is_up(node, "writer")
        ]
        if len(candidates) < HOLDERS_PER_HANDOFF:
            raise Unavailable(f"too few live writers to hold {layout.homes[num]}'s share")
        handoffs[num] = candidates[:HOLDERS_PER_HANDOFF]
        used.update(handoffs[num])
    return handoffs


async def store_stream(
    nodes: NodeSet,
    layout: Layout,
    ref: SegmentRef,
    body: AsyncIterator[bytes],
    finish_check: Callable[[int, bytes], None],
    max_bytes: int,
    user_meta: dict[str, Any],
    user_request_id: str = "",
) -> Stored:
    """Store ``body`` as segment group (ref.unified_id, ref.conjoined_part).

    ``finish_check(size, md5)`` raises to refuse the body once it is all read.
    """
    handoffs = plan_handoffs(nodes, layout)
    archive = _Archive(nodes, layout, ref, user_request_id, handoffs)
    digest = _Digest()
    in_flight: asyncio.Task[None] | None = None
    held: bytes | None = None  # a full sequence waiting to learn if it is the last
    sequence_num = 0
    buffer = bytearray()

    async def send_held(kind: str, file: FileInfo | None) -> None:
        nonlocal in_flight, sequence_num, held
        assert held is not None
        data, held = held, None
        shares = await asyncio.to_thread(_encode, digest, data, layout.k, layout.n)
        if in_flight is not None:
            await in_flight
        in_flight = asyncio.create_task(archive.send(sequence_num, len(data), shares, kind, file))
        sequence_num += 1

    def middle_kind() -> str:
        return "archive-key-start" if sequence_num == 0 else "archive-key-next"

    try:
        async for chunk in body:
            buffer += chunk
            if digest.size + len(buffer) + (len(held) if held else 0) > max_bytes:
                raise TooLarge(f"body is over {max_bytes} bytes")
            while True:
                if held is not None and buffer:
                    await send_held(middle_kind(), None)  # more follows: not the last
                elif held is None and len(buffer) >= layout.sequence_size:
                    held = bytes(buffer[: layout.sequence_size])
                    del buffer[: layout.sequence_size]
                else:
                    break
        # The body is complete: the last sequence is ``held`` (then ``buffer``
        # is empty) or else ``buffer`` (possibly empty: a 0-byte object).
        last = held if held is not None else bytes(buffer)
        held = None
        buffer.clear()
        shares = await asyncio.to_thread(_encode, digest, last, layout.k, layout.n)
        if in_flight is not None:
            await in_flight
            in_flight = None
        md5 = digest.md5.digest()
        finish_check(digest.size, md5)
        file = FileInfo(digest.size, md5, digest.adler32, user_meta)
        kind = "archive-key-entire" if sequence_num == 0 else "archive-key-final"
        await archive.send(sequence_num, len(last), shares, kind, file)
        return Stored(digest.size, md5, layout.n, handoffs)
    except BaseException:
        if in_flight is not None:
            in_flight.cancel()
            await asyncio.gather(in_flight, return_exceptions=True)
        await asyncio.shield(archive.cancel())
        raise
