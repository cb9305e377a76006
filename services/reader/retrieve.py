"""The reader's logic: hand out a segment's shares in order, each verified.

A retrieval is opened by ``start`` (which sequences to send) and advanced by
``next``; its position is kept in memory by ``retrieve-id`` and forgotten
after it completes, fails, or idles too long. Every share is read from its
value file and its md5 compared with the one stored at archive time before
it is sent; a mismatch is recorded as damage, reported to the caller and
sent as a ``damage-found`` event, and none of the bad bytes leave the node.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

from services.common import valuefile
from services.common.protocol import ErrorCode, ProtocolError
from services.common.valuefile import Location
from services.reader import queries

if TYPE_CHECKING:
    from services.common.events import EventSender

log = logging.getLogger(__name__)

#: Sent when a stored share fails its checksum or cannot be read.
DAMAGE_FOUND = "damage-found"


@dataclass(frozen=True)
class SegmentKey:
    collection_id: int
    key: str
    unified_id: int
    conjoined_part: int
    segment_num: int


@dataclass(frozen=True)
class ShareOut:
    sequence_num: int
    data: bytes
    md5: bytes
    adler32: int
    zfec_padding_size: int
    completed: bool


@dataclass(frozen=True)
class SegmentMeta:
    file_size: int
    file_adler32: int
    file_hash: bytes
    user_meta: dict[str, Any]
    sequence_count: int
    handoff_node_name: str | None


@dataclass
class _Retrieval:
    segment: SegmentKey
    segment_id: int
    rows: list[Any]
    position: int
    last_used: float


class Retriever:
    def __init__(
        self,
        pool: asyncpg.Pool,
        data_dir: Path,
        node_name: str,
        events: EventSender | None = None,
    ) -> None:
        self._pool = pool
        self._data_dir = data_dir
        self._node_name = node_name
        self._events = events
        self._open: dict[str, _Retrieval] = {}

    @property
    def open_count(self) -> int:
        return len(self._open)

    async def start(
        self, retrieve_id: str, segment: SegmentKey, first: int, last: int | None
    ) -> tuple[SegmentMeta, ShareOut]:
        row = await queries.find_segment(
            self._pool,
            segment.collection_id,
            segment.key,
            segment.unified_id,
            segment.conjoined_part,
            segment.segment_num,
        )
        if row is None:
            raise ProtocolError(
                ErrorCode.NOT_FOUND,
                f"no final segment {segment.segment_num} of {segment.key!r} "
                f"unified-id {segment.unified_id} on {self._node_name}",
            )
        total = await queries.sequence_count(self._pool, row["id"])
        end = total - 1 if last is None else min(last, total - 1)
        rows = await queries.sequences(self._pool, row["id"], first, end)
        if not rows or first > end:
            raise ProtocolError(
                ErrorCode.BAD_FIELD,
                f"sequences {first}..{last} are outside the segment's 0..{total - 1}",
            )
        meta = SegmentMeta(
            file_size=row["file_size"],
            file_adler32=row["file_adler32"],
            file_hash=bytes(row["file_hash"]),
            user_meta=json.loads(row["file_user_meta"] or "{}"),
            sequence_count=total,
            handoff_node_name=row["handoff_node_name"],
        )
        state = _Retrieval(segment, row["id"], list(rows), 0, time.monotonic())
        self._open[retrieve_id] = state
        return meta, await self._send_next(retrieve_id, state)

    async def next(self, retrieve_id: str) -> ShareOut:
        state = self._open.get(retrieve_id)
        if state is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_RETRIEVE, f"no open retrieval with retrieve-id {retrieve_id!r}"
            )
        return await self._send_next(retrieve_id, state)

    async def _send_next(self, retrieve_id: str, state: _Retrieval) -> ShareOut:
        row = state.rows[state.position]
        state.position += 1
        state.last_used = time.monotonic()
        completed = state.position >= len(state.rows)
        if completed:
            self._open.pop(retrieve_id, None)
        location = Location(row["value_file_id"], row["value_file_offset"], row["size"])
        try:
            data = await asyncio.to_thread(self._read_verified, location, bytes(row["hash"]))
        except _Damage as damage:
            self._open.pop(retrieve_id, None)
            sequence_num = row["sequence_num"]
            await queries.record_damage(
                self._pool, state.segment_id, sequence_num, str(damage), "reader"
            )
            log.warning(
                "segment %d sequence %d damaged: %s", state.segment_id, sequence_num, damage
            )
            self._report_damage(state.segment, sequence_num, str(damage))
            raise ProtocolError(
                ErrorCode.DAMAGED,
                f"sequence {sequence_num} is damaged on {self._node_name}: {damage}",
                sequence_num=sequence_num,
            ) from damage
        return ShareOut(
            sequence_num=row["sequence_num"],
            data=data,
            md5=bytes(row["hash"]),
            adler32=row["adler32"],
            zfec_padding_size=row["zfec_padding_size"],
            completed=completed,
        )

    def _read_verified(self, location: Location, md5: bytes) -> bytes:
        try:
            data = valuefile.read_range(self._data_dir, location)
        except (OSError, EOFError) as exc:
            raise _Damage(f"unreadable: {exc}") from exc
        if hashlib.md5(data).digest() != md5:
            raise _Damage("md5 mismatch")
        return data

    def _report_damage(self, segment: SegmentKey, sequence_num: int, reason: str) -> None:
        if self._events is None:
            return
        self._events.send(
            DAMAGE_FOUND,
            **{
                "collection-id": segment.collection_id,
                "key": segment.key,
                "unified-id": segment.unified_id,
                "conjoined-part": segment.conjoined_part,
                "segment-num": segment.segment_num,
                "sequence-num": sequence_num,
                "reason": reason,
                "detected-by": "reader",
            },
        )

    def expire_idle(self, idle_timeout_s: float) -> int:
        cutoff = time.monotonic() - idle_timeout_s
        stale = [rid for rid, state in self._open.items() if state.last_used < cutoff]
        for rid in stale:
            del self._open[rid]
        return len(stale)


class _Damage(Exception):
    pass
