"""The writer's logic: store shares durably, one archive at a time per segment.

An archive is either one ``entire`` message or ``start``, any number of
``next`` and a ``final``. Every share is checked (size, md5, adler32) before a
byte is written. The segment row is 'A' while archiving and becomes 'F' only
in the transaction that follows the fsync of its last share, so a reply of
success means the share is durable and readable, and a writer killed before
then leaves nothing final (its 'A' rows are cancelled at the next start).

Pieces of one archive may arrive pipelined; they are applied in arrival order
because each piece takes the archive's lock before its first ``await``.

A share stored for another node (``handoff-node-name`` set) is announced by
one ``share-handed-off`` event when its segment becomes final (not per
sequence, and not again for a retry of an archive already final).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import asyncpg

from services.common.protocol import ErrorCode, ProtocolError
from services.common.valuefile import ValueFileWriter
from services.writer import queries
from services.writer.model import FileSummary, SegmentIdentity, SegmentInfo, ShareIn

if TYPE_CHECKING:
    from services.common.events import EventSender

log = logging.getLogger(__name__)

#: Sent when a share held for another (down) node becomes final here.
SHARE_HANDED_OFF = "share-handed-off"


@dataclass
class _Active:
    segment_id: int | None = None
    next_sequence: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    file_ids: set[int] = field(default_factory=set)


def verify_share(share: ShareIn) -> None:
    """Raise unless the bytes are what the header says (runs in a thread)."""
    if len(share.data) != share.size:
        raise ProtocolError(
            ErrorCode.SIZE_MISMATCH,
            f"sequence {share.sequence_num}: segment-size says {share.size} bytes, "
            f"payload has {len(share.data)}",
        )
    if hashlib.md5(share.data).digest() != share.md5:
        raise ProtocolError(
            ErrorCode.MD5_MISMATCH, f"sequence {share.sequence_num}: md5 does not match payload"
        )
    if zlib.adler32(share.data) != share.adler32:
        raise ProtocolError(
            ErrorCode.ADLER32_MISMATCH,
            f"sequence {share.sequence_num}: adler32 does not match payload",
        )


class Archiver:
    def __init__(
        self, pool: asyncpg.Pool, values: ValueFileWriter, events: EventSender | None = None
    ) -> None:
        self._pool = pool
        self._values = values
        self._events = events
        self._active: dict[SegmentIdentity, _Active] = {}

    @property
    def active_count(self) -> int:
        return len(self._active)

    async def entire(
        self, identity: SegmentIdentity, info: SegmentInfo, share: ShareIn, summary: FileSummary
    ) -> None:
        if share.sequence_num != 0:
            raise ProtocolError(ErrorCode.OUT_OF_SEQUENCE, "archive-key-entire is sequence 0")
        await asyncio.to_thread(verify_share, share)
        if await self._already_final(identity, summary):
            return
        location = await self._values.append(share.data)
        await self._values.sync(location.file_id)
        async with self._pool.acquire() as conn, conn.transaction():
            segment_id = await queries.insert_segment(conn, identity, info, "A")
            await queries.insert_sequence(conn, segment_id, share, location)
            made_final = await self._finalize(conn, segment_id, identity, summary)
        if made_final:
            self._announce(identity)

    async def start(self, identity: SegmentIdentity, info: SegmentInfo, share: ShareIn) -> None:
        if share.sequence_num != 0:
            raise ProtocolError(ErrorCode.OUT_OF_SEQUENCE, "archive-key-start is sequence 0")
        # Registered before the first await: later pieces queue behind this one.
        previous = self._active.pop(identity, None)
        state = _Active()
        self._active[identity] = state
        async with state.lock:
            if previous is not None and previous.segment_id is not None:
                # A start for an archive already open is a retry: the old one is dead.
                await queries.cancel_unfinished(self._pool, previous.segment_id)
            try:
                await asyncio.to_thread(verify_share, share)
                state.segment_id = await queries.insert_segment(self._pool, identity, info, "A")
                await self._store(state, share)
            except BaseException:
                await self._abandon(identity, state)
                raise

    async def next(self, identity: SegmentIdentity, share: ShareIn) -> None:
        state = self._lookup(identity)
        async with state.lock:
            self._check_order(state, share)
            await asyncio.to_thread(verify_share, share)
            await self._store(state, share)

    async def final(self, identity: SegmentIdentity, share: ShareIn, summary: FileSummary) -> None:
        state = self._lookup(identity)
        async with state.lock:
            self._check_order(state, share)
            await asyncio.to_thread(verify_share, share)
            location = await self._values.append(share.data)
            state.file_ids.add(location.file_id)
            for file_id in sorted(state.file_ids):
                await self._values.sync(file_id)
            assert state.segment_id is not None
            async with self._pool.acquire() as conn, conn.transaction():
                await queries.insert_sequence(conn, state.segment_id, share, location)
                made_final = await self._finalize(conn, state.segment_id, identity, summary)
            if made_final:
                self._announce(identity)
            # Pieces still queued on this archive (a sender racing another with the
            # same share, as two handoff holders may) are out of sequence from now on.
            state.next_sequence = share.sequence_num + 1
            if self._active.get(identity) is state:
                del self._active[identity]

    async def cancel(self, identity: SegmentIdentity) -> None:
        state = self._lookup(identity)
        async with state.lock:
            await self._abandon(identity, state)

    async def destroy(
        self,
        identity: SegmentIdentity,
        info: SegmentInfo,
        unified_id_to_delete: int | None,
        conjoined_part_to_delete: int | None = None,
    ) -> int:
        async with self._pool.acquire() as conn:
            return await queries.destroy(
                conn, identity, info, unified_id_to_delete, conjoined_part_to_delete
            )

    def _lookup(self, identity: SegmentIdentity) -> _Active:
        state = self._active.get(identity)
        if state is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_ARCHIVE,
                f"no archive in progress for {identity.key!r} unified-id {identity.unified_id} "
                f"segment {identity.segment_num}",
            )
        return state

    @staticmethod
    def _check_order(state: _Active, share: ShareIn) -> None:
        if state.segment_id is None:
            raise ProtocolError(ErrorCode.UNKNOWN_ARCHIVE, "archive start failed")
        if share.sequence_num != state.next_sequence:
            raise ProtocolError(
                ErrorCode.OUT_OF_SEQUENCE,
                f"expected sequence {state.next_sequence}, got {share.sequence_num}",
            )

    async def _store(self, state: _Active, share: ShareIn) -> None:
        assert state.segment_id is not None
        location = await self._values.append(share.data)
        state.file_ids.add(location.file_id)
        await queries.insert_sequence(self._pool, state.segment_id, share, location)
        state.next_sequence += 1

    async def _abandon(self, identity: SegmentIdentity, state: _Active) -> None:
        if self._active.get(identity) is state:
            del self._active[identity]
        if state.segment_id is not None:
            await queries.cancel_unfinished(self._pool, state.segment_id)

    async def _already_final(self, identity: SegmentIdentity, summary: FileSummary) -> bool:
        existing = await queries.final_file_hash(self._pool, identity)
        if existing is None:
            return False
        if existing == summary.file_hash:
            return True  # a retried archive that already succeeded
        raise ProtocolError(
            ErrorCode.ALREADY_EXISTS, "a different final copy of this segment is stored"
        )

    async def _finalize(
        self,
        conn: queries.Connection,
        segment_id: int,
        identity: SegmentIdentity,
        summary: FileSummary,
    ) -> bool:
        """Make the segment final; False if the same copy was final already."""
        try:
            async with conn.transaction():
                await queries.finalize_segment(conn, segment_id, summary)
        except asyncpg.UniqueViolationError:
            await self._already_final(identity, summary)
            await queries.set_status(conn, segment_id, "C")
            return False
        return True

    def _announce(self, identity: SegmentIdentity) -> None:
        """Once committed: say when this node now holds a share for another."""
        if self._events is None or identity.handoff_node_name is None:
            return
        self._events.send(
            SHARE_HANDED_OFF,
            **{
                "home-node": identity.handoff_node_name,
                "collection-id": identity.collection_id,
                "key": identity.key,
                "unified-id": identity.unified_id,
                "conjoined-part": identity.conjoined_part,
                "segment-num": identity.segment_num,
            },
        )
