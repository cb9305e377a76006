"""The reader's SQL against its node database: every statement, named."""

from __future__ import annotations

from typing import Any

import asyncpg

Record = Any


async def find_segment(
    pool: asyncpg.Pool,
    collection_id: int,
    key: str,
    unified_id: int,
    conjoined_part: int,
    segment_num: int,
) -> Record | None:
    """The final copy of this share on this node: its own first, else one held for another."""
    return await pool.fetchrow(
        """SELECT id, file_size, file_adler32, file_hash, file_user_meta, handoff_node_name
           FROM segment
           WHERE collection_id = $1 AND key = $2 AND unified_id = $3
             AND conjoined_part = $4 AND segment_num = $5 AND status = 'F'
           ORDER BY handoff_node_name NULLS FIRST
           LIMIT 1""",
        collection_id,
        key,
        unified_id,
        conjoined_part,
        segment_num,
    )


async def sequences(pool: asyncpg.Pool, segment_id: int, first: int, last: int) -> list[Record]:
    return await pool.fetch(
        """SELECT sequence_num, value_file_id, value_file_offset, size, zfec_padding_size,
                  hash, adler32
           FROM segment_sequence
           WHERE segment_id = $1 AND sequence_num BETWEEN $2 AND $3
           ORDER BY sequence_num""",
        segment_id,
        first,
        last,
    )


async def sequence_count(pool: asyncpg.Pool, segment_id: int) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM segment_sequence WHERE segment_id = $1", segment_id
    )
    return count


async def record_damage(
    pool: asyncpg.Pool, segment_id: int, sequence_num: int, reason: str, detected_by: str
) -> None:
    await pool.execute(
        """INSERT INTO damaged_segment (segment_id, sequence_num, reason, detected_by)
           VALUES ($1, $2, $3, $4)
           ON CONFLICT (segment_id, sequence_num)
           DO UPDATE SET reason = $3, detected_by = $4, detected_at = now()""",
        segment_id,
        sequence_num,
        reason,
        detected_by,
    )
