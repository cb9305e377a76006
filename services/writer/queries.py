"""The writer's SQL against its node database: every statement, named."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from services.common.valuefile import Location
from services.writer.model import FileSummary, SegmentIdentity, SegmentInfo, ShareIn

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Executor = asyncpg.Pool | Connection


async def cancel_active_segments(db: Executor) -> int:
    """Archives left 'A' by a killed writer can never finish: cancel them."""
    status: str = await db.execute(
        "UPDATE segment SET status = 'C', completed_at = now() WHERE status = 'A'"
    )
    return int(status.split()[-1])


async def new_value_file(db: Executor) -> int:
    file_id: int = await db.fetchval("INSERT INTO value_file DEFAULT VALUES RETURNING id")
    return file_id


async def close_value_file(db: Executor, file_id: int, size_bytes: int) -> None:
    await db.execute(
        "UPDATE value_file SET closed_at = now(), size_bytes = $2 WHERE id = $1",
        file_id,
        size_bytes,
    )


async def insert_segment(
    db: Executor, identity: SegmentIdentity, info: SegmentInfo, status: str
) -> int:
    segment_id: int = await db.fetchval(
        """INSERT INTO segment (collection_id, key, unified_id, conjoined_part, segment_num,
                                status, timestamp_s, handoff_node_name, source_node_name,
                                user_request_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id""",
        identity.collection_id,
        identity.key,
        identity.unified_id,
        identity.conjoined_part,
        identity.segment_num,
        status,
        info.timestamp_s,
        identity.handoff_node_name,
        info.source_node_name,
        info.user_request_id,
    )
    return segment_id


async def insert_sequence(
    db: Executor, segment_id: int, share: ShareIn, location: Location
) -> None:
    await db.execute(
        """INSERT INTO segment_sequence (segment_id, sequence_num, value_file_id,
                                         value_file_offset, size, zfec_padding_size,
                                         hash, adler32)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        segment_id,
        share.sequence_num,
        location.file_id,
        location.offset,
        location.size,
        share.zfec_padding_size,
        share.md5,
        share.adler32,
    )


async def finalize_segment(db: Executor, segment_id: int, summary: FileSummary) -> None:
    await db.execute(
        """UPDATE segment SET status = 'F', completed_at = now(), file_size = $2,
                  file_adler32 = $3, file_hash = $4, file_user_meta = $5::jsonb
           WHERE id = $1""",
        segment_id,
        summary.file_size,
        summary.file_adler32,
        summary.file_hash,
        json.dumps(summary.user_meta),
    )


async def set_status(db: Executor, segment_id: int, status: str) -> None:
    await db.execute(
        "UPDATE segment SET status = $2, completed_at = now() WHERE id = $1", segment_id, status
    )


async def cancel_unfinished(db: Executor, segment_id: int) -> None:
    """Cancel an archive unless it finished meanwhile: a final segment stays final
    (a start retried, or a cancel queued, behind a final that won the race)."""
    await db.execute(
        "UPDATE segment SET status = 'C', completed_at = now() WHERE id = $1 AND status = 'A'",
        segment_id,
    )


async def final_file_hash(db: Executor, identity: SegmentIdentity) -> bytes | None:
    """The file hash of the final copy of this segment, if one exists."""
    row: Any = await db.fetchrow(
        """SELECT file_hash FROM segment
           WHERE collection_id = $1 AND key = $2 AND unified_id = $3 AND conjoined_part = $4
             AND segment_num = $5 AND coalesce(handoff_node_name, '') = coalesce($6, '')
             AND status = 'F'""",
        identity.collection_id,
        identity.key,
        identity.unified_id,
        identity.conjoined_part,
        identity.segment_num,
        identity.handoff_node_name,
    )
    return None if row is None else bytes(row["file_hash"])


async def destroy(
    db: Connection,
    identity: SegmentIdentity,
    info: SegmentInfo,
    unified_id_to_delete: int | None,
    conjoined_part_to_delete: int | None = None,
) -> int:
    """Record a tombstone; mark the segments it kills destroyed. Returns how many.

    ``conjoined_part_to_delete`` limits it to one part (a replaced part upload).
    """
    async with db.transaction():
        segment_id = await insert_segment(db, identity, info, "T")
        # The limits are kept so a tombstone held for another node is forwarded as received.
        await db.execute(
            """UPDATE segment SET destroyed_unified_id = $2, destroyed_conjoined_part = $3,
                                  completed_at = now()
               WHERE id = $1""",
            segment_id,
            unified_id_to_delete,
            conjoined_part_to_delete,
        )
        status: str = await db.execute(
            """UPDATE segment SET status = 'D'
               WHERE collection_id = $1 AND key = $2 AND status IN ('F', 'A')
                 AND (unified_id = $3 OR ($3::bigint IS NULL AND unified_id < $4))
                 AND ($5::integer IS NULL OR conjoined_part = $5)""",
            identity.collection_id,
            identity.key,
            unified_id_to_delete,
            identity.unified_id,
            conjoined_part_to_delete,
        )
    return int(status.split()[-1])
