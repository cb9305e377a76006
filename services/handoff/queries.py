"""The handoff service's SQL: its node database, and the node list of the central one.

A copy held for another node is a segment row with ``handoff_node_name`` set
and status 'F' (a final share) or 'T' (a tombstone). Forwarding it home ends
with ``purge``, which makes it 'P': never read or forwarded again.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from services.handoff.model import HeldSegment, HeldSequence, Holding

Executor = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

#: Held copies the worker may forward: not yet purged, not known to be damaged.
_FORWARDABLE = """s.handoff_node_name IS NOT NULL AND s.status IN ('F', 'T')
    AND NOT EXISTS (SELECT 1 FROM damaged_segment d WHERE d.segment_id = s.id)"""


async def homes_with_holdings(db: Executor) -> list[str]:
    """The nodes this node holds forwardable copies for, by name."""
    rows = await db.fetch(
        f"SELECT DISTINCT s.handoff_node_name AS home FROM segment s WHERE {_FORWARDABLE} "
        "ORDER BY 1"
    )
    return [row["home"] for row in rows]


async def held_segments(db: Executor, home: str, after_id: int, limit: int) -> list[HeldSegment]:
    """Forwardable copies held for ``home``, in arrival order, past ``after_id``.

    Arrival order keeps a tombstone behind the shares it destroys.
    """
    rows = await db.fetch(
        f"""SELECT s.id, s.handoff_node_name, s.status, s.collection_id, s.key, s.unified_id,
                   s.conjoined_part, s.segment_num, s.timestamp_s, s.user_request_id,
                   s.file_size, s.file_adler32, s.file_hash, s.file_user_meta,
                   s.destroyed_unified_id, s.destroyed_conjoined_part
            FROM segment s
            WHERE s.handoff_node_name = $1 AND s.id > $2 AND {_FORWARDABLE}
            ORDER BY s.id
            LIMIT $3""",
        home,
        after_id,
        limit,
    )
    return [_held_segment(row) for row in rows]


def _held_segment(row: Any) -> HeldSegment:
    return HeldSegment(
        id=row["id"],
        home=row["handoff_node_name"],
        status=row["status"],
        collection_id=row["collection_id"],
        key=row["key"],
        unified_id=row["unified_id"],
        conjoined_part=row["conjoined_part"],
        segment_num=row["segment_num"],
        timestamp_s=row["timestamp_s"],
        user_request_id=row["user_request_id"],
        file_size=row["file_size"],
        file_adler32=row["file_adler32"],
        file_hash=None if row["file_hash"] is None else bytes(row["file_hash"]),
        user_meta=json.loads(row["file_user_meta"] or "{}"),
        destroyed_unified_id=row["destroyed_unified_id"],
        destroyed_conjoined_part=row["destroyed_conjoined_part"],
    )


async def sequences(db: Executor, segment_id: int) -> list[HeldSequence]:
    rows = await db.fetch(
        """SELECT sequence_num, value_file_id, value_file_offset, size, zfec_padding_size,
                  hash, adler32
           FROM segment_sequence WHERE segment_id = $1 ORDER BY sequence_num""",
        segment_id,
    )
    return [
        HeldSequence(
            sequence_num=row["sequence_num"],
            value_file_id=row["value_file_id"],
            value_file_offset=row["value_file_offset"],
            size=row["size"],
            zfec_padding_size=row["zfec_padding_size"],
            md5=bytes(row["hash"]),
            adler32=row["adler32"],
        )
        for row in rows
    ]


async def purge(db: Executor, segment_id: int, status: str) -> bool:
    """Mark a copy its home has confirmed purged; False if it changed meanwhile
    (e.g. a destroy-key made it 'D', which is as final)."""
    result: str = await db.execute(
        "UPDATE segment SET status = 'P', completed_at = now() WHERE id = $1 AND status = $2",
        segment_id,
        status,
    )
    return result.split()[-1] == "1"


async def record_damage(db: Executor, segment_id: int, sequence_num: int, reason: str) -> None:
    await db.execute(
        """INSERT INTO damaged_segment (segment_id, sequence_num, reason, detected_by)
           VALUES ($1, $2, $3, 'handoff')
           ON CONFLICT (segment_id, sequence_num)
           DO UPDATE SET reason = $3, detected_by = 'handoff', detected_at = now()""",
        segment_id,
        sequence_num,
        reason,
    )


async def holdings(db: Executor) -> dict[str, Holding]:
    """Per home: held final shares and their bytes, tombstones, damaged shares."""
    rows = await db.fetch(
        """SELECT s.handoff_node_name AS home,
                  count(*) FILTER (WHERE s.status = 'F') AS segments,
                  coalesce(sum(q.bytes) FILTER (WHERE s.status = 'F'), 0) AS bytes,
                  count(*) FILTER (WHERE s.status = 'T') AS tombstones,
                  count(*) FILTER (WHERE s.status = 'F' AND EXISTS (
                      SELECT 1 FROM damaged_segment d WHERE d.segment_id = s.id)) AS damaged
           FROM segment s
           LEFT JOIN LATERAL (SELECT sum(size) AS bytes FROM segment_sequence
                              WHERE segment_id = s.id) q ON true
           WHERE s.handoff_node_name IS NOT NULL AND s.status IN ('F', 'T')
           GROUP BY s.handoff_node_name
           ORDER BY 1"""
    )
    return {
        row["home"]: Holding(
            segments=row["segments"],
            bytes=int(row["bytes"]),
            tombstones=row["tombstones"],
            damaged=row["damaged"],
        )
        for row in rows
    }


async def load_cursor(db: Executor, worker: str) -> dict[str, Any] | None:
    raw = await db.fetchval("SELECT cursor FROM repair_cursor WHERE worker = $1", worker)
    if raw is None:
        return None
    document: dict[str, Any] = json.loads(raw)
    return document


async def save_cursor(db: Executor, worker: str, cursor: dict[str, Any]) -> None:
    await db.execute(
        """INSERT INTO repair_cursor (worker, cursor) VALUES ($1, $2::jsonb)
           ON CONFLICT (worker) DO UPDATE SET cursor = $2::jsonb, updated_at = now()""",
        worker,
        json.dumps(cursor),
    )


async def writer_endpoints(central: Executor) -> dict[str, str]:
    """Every node's writer endpoint, from the central database's node list."""
    rows = await central.fetch("SELECT name, writer_endpoint FROM node")
    return {row["name"]: row["writer_endpoint"] for row in rows}
