"""The read path: stream a byte range of an object version from its shares.

Healthy case: only the data shares (0..k-1, zfec is systematic) that cover
the range are read, from their home readers, and joined: nothing is decoded.
When a reader is down, slow past its timeout, or reports a share damaged or
missing, more shares (parity first) are opened from the failing sequence on
and every sequence after that is decoded from any ``k`` of them. Fewer than
``k`` reachable shares: ``Unavailable``.

The caller pulls the first chunk before it sends response headers, so an
object that cannot be read is answered 503 with no partial body.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from services.common import codec, erasure, messages
from services.common.erasure import ShareSlice
from services.common.messages import SegmentRef
from services.common.protocol import Message
from services.common.rpc import RpcTimeout
from services.gateway.nodes import NodeSet
from services.gateway.store import Layout, Unavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    """One segment group of a version: a whole single-part object, or one part."""

    conjoined_part: int
    offset: int
    size: int
    #: segment-num -> nodes holding that share for its home (handed off at write).
    handoffs: Mapping[int, Sequence[str]] = field(default_factory=dict)


class _ShareFailed(Exception):
    pass


class _Source:
    """One segment's shares, streamed in order from one reader."""

    def __init__(
        self, nodes: NodeSet, node_name: str, ref: SegmentRef, first: int, last: int
    ) -> None:
        self.nodes = nodes
        self.endpoint = nodes[node_name].reader
        self.ref = ref
        self.first = first
        self.last = last
        self.retrieve_id = uuid.uuid4().hex
        self.position: int | None = None  # sequence of the next reply

    async def _request(self, header: dict[str, object]) -> Message:
        try:
            reply = await self.endpoint.client.request(header)
        except (RpcTimeout, ConnectionError) as exc:
            self.nodes.mark_down(self.endpoint, str(exc))
            raise _ShareFailed(f"{self.endpoint.node_name} reader: {exc}") from exc
        if reply.header.get("result") != "success":
            raise _ShareFailed(
                f"{self.endpoint.node_name} reader: {reply.header.get('result')}: "
                f"{reply.header.get('error-message')}"
            )
        return reply

    async def get(self, sequence_num: int) -> bytes:
        """The share of ``sequence_num`` (sequences are asked for in order)."""
        if not self.endpoint.up:
            raise _ShareFailed(f"{self.endpoint.node_name} reader is down")
        while True:
            if self.position is None:
                header = messages.retrieve_start(self.retrieve_id, self.ref, self.first, self.last)
                reply = await self._request(header)
            else:
                reply = await self._request(messages.retrieve_next(self.retrieve_id))
            got = int(reply.header["sequence-num"])
            self.position = got + 1
            if got == sequence_num:
                return reply.payloads[0] if reply.payloads else b""
            if got > sequence_num:
                raise _ShareFailed(f"{self.endpoint.node_name} skipped sequence {sequence_num}")


class _PartReader:
    def __init__(
        self, nodes: NodeSet, layout: Layout, ref: SegmentRef, part: Part, first: int, last: int
    ) -> None:
        self.nodes = nodes
        self.layout = layout
        self.part = part
        self.refs = ref.group(layout.n)
        self.slices = erasure.byte_range_to_shares(
            first, last, part.size, layout.sequence_size, layout.k
        )
        self.window = (self.slices[0].sequence_num, self.slices[-1].sequence_num)
        self.sources: dict[int, _Source] = {}
        self.tried: set[int] = set()
        self.untried: dict[int, list[str]] = {}

    def _locations(self, segment_num: int) -> list[str]:
        """Where a share may be: its home, and the nodes it was handed off to.

        Nodes the gateway sees up come first; a home that missed the write
        answers not-found and the holders are asked next.
        """
        nodes = [self.layout.homes[segment_num], *self.part.handoffs.get(segment_num, ())]
        return sorted(nodes, key=lambda node: not self.nodes.is_up(node, "reader"))

    def _reachable(self, segment_num: int) -> bool:
        return any(self.nodes.is_up(node, "reader") for node in self._locations(segment_num))

    def _open(self, segment_num: int, from_sequence: int) -> _Source | None:
        if segment_num not in self.tried:
            self.tried.add(segment_num)
            self.untried[segment_num] = self._locations(segment_num)
        left = self.untried[segment_num]
        if not left:
            return None
        source = _Source(
            self.nodes, left.pop(0), self.refs[segment_num], from_sequence, self.window[1]
        )
        self.sources[segment_num] = source
        return source

    async def _fetch(self, segment_num: int, sequence_num: int) -> bytes | None:
        """One share of ``sequence_num``, trying each location in turn; None if none has it."""
        while True:
            source = self.sources.get(segment_num) or self._open(segment_num, sequence_num)
            if source is None:
                return None
            try:
                return await source.get(sequence_num)
            except _ShareFailed as exc:
                log.warning("share %d of sequence %d: %s", segment_num, sequence_num, exc)
                del self.sources[segment_num]

    async def _gather(self, sequence_num: int, wanted: Sequence[int]) -> dict[int, bytes]:
        """Shares of ``sequence_num`` from the ``wanted`` segments that answer."""
        results = await asyncio.gather(*(self._fetch(num, sequence_num) for num in wanted))
        return {num: share for num, share in zip(wanted, results, strict=True) if share is not None}

    async def sequence_bytes(self, sequence_num: int, slices: list[ShareSlice]) -> bytes:
        k, n = self.layout.k, self.layout.n
        length = min(
            self.layout.sequence_size, self.part.size - sequence_num * self.layout.sequence_size
        )
        share_size = erasure.share_size(length, k)
        needed = sorted({s.share_num for s in slices})
        # Healthy: the needed data shares. Degraded: every open source (>= k).
        wanted = (
            sorted(set(self.sources) | set(needed))
            if len(self.sources) < k
            else sorted(self.sources)
        )
        got = await self._gather(sequence_num, wanted)
        if all(num in got for num in needed):
            return b"".join(got[s.share_num][s.start : s.end] for s in slices)
        # Degraded: collect any k shares, data shares first, then parity.
        candidates = [num for num in range(n) if num not in self.tried]
        while len(got) < k:
            missing = k - len(got)
            batch = [num for num in candidates if self._reachable(num)][:missing] or candidates[
                :missing
            ]
            if not batch:
                raise Unavailable(
                    f"only {len(got)} of the {k} shares needed for sequence {sequence_num} "
                    f"of part {self.part.conjoined_part} can be read"
                )
            candidates = [num for num in candidates if num not in batch]
            got.update(await self._gather(sequence_num, batch))
        data = await codec.decode(got, k, n, length)
        return b"".join(
            data[s.share_num * share_size + s.start : s.share_num * share_size + s.end]
            for s in slices
        )

    async def stream(self) -> AsyncIterator[bytes]:
        by_sequence: dict[int, list[ShareSlice]] = {}
        for piece in self.slices:
            by_sequence.setdefault(piece.sequence_num, []).append(piece)
        for sequence_num in sorted(by_sequence):
            yield await self.sequence_bytes(sequence_num, by_sequence[sequence_num])


async def fetch_range(
    nodes: NodeSet,
    layout: Layout,
    collection_id: int,
    key: str,
    unified_id: int,
    parts: Sequence[Part],
    first: int,
    last: int,
) -> AsyncIterator[bytes]:
    """Bytes ``first..last`` (inclusive) of the version, sequence by sequence."""
    for part in parts:
        end = part.offset + part.size - 1
        if part.size == 0 or end < first or part.offset > last:
            continue
        reader = _PartReader(
            nodes,
            layout,
            SegmentRef(collection_id, key, unified_id, 0, part.conjoined_part),
            part,
            max(first, part.offset) - part.offset,
            min(last, end) - part.offset,
        )
        async for chunk in reader.stream():
            yield chunk
