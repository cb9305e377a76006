"""The accounting service's SQL (central database: accounting_hourly, accounting_detail).

Counting a batch is one transaction: the batch's detail-ids go into
``accounting_detail`` (ids already there are skipped), then the details that
are new, summed per (bucket, hour), are added to ``accounting_hourly``. Both
statements take their row locks in sorted order, so concurrent batches
(another process, a retry) wait for each other instead of deadlocking.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from services.accounting.model import (
    Detail,
    DetailsRejected,
    HourUsage,
    Totals,
    Usage,
    aggregate,
    counted_indices,
    hour_datetime,
    plan_dedupe,
)

Executor = asyncpg.Pool | asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


async def count_details(pool: asyncpg.Pool, details: Sequence[Detail]) -> list[int]:
    """Count ``details`` exactly once each; the indices of those counted now.

    A detail not in the result repeats one counted before (same detail-id, in
    an earlier batch or earlier in this one). When this returns, the
    transaction has committed. ``DetailsRejected`` if the database refuses
    them; any other exception means it may accept them later.
    """
    try:
        return await _count_details(pool, details)
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
        raise DetailsRejected(f"{type(exc).__name__}: {exc}") from exc


async def _count_details(pool: asyncpg.Pool, details: Sequence[Detail]) -> list[int]:
    plan = plan_dedupe(details)
    async with pool.acquire() as conn, conn.transaction():
        new_ids: set[str] = set()
        if plan.detail_ids:
            rows = await conn.fetch(
                """INSERT INTO accounting_detail (detail_id)
                   SELECT id FROM unnest($1::text[]) AS id ORDER BY 1
                   ON CONFLICT (detail_id) DO NOTHING
                   RETURNING detail_id""",
                plan.detail_ids,
            )
            new_ids = {row["detail_id"] for row in rows}
        indices = counted_indices(details, plan, new_ids)
        sums = aggregate(details[i] for i in indices)
        if sums:
            await conn.execute(
                """INSERT INTO accounting_hourly
                       (bucket_id, hour, bytes_added, bytes_removed, bytes_retrieved)
                   SELECT * FROM unnest($1::bigint[], $2::timestamptz[],
                                        $3::bigint[], $4::bigint[], $5::bigint[])
                   ORDER BY 1, 2
                   ON CONFLICT (bucket_id, hour) DO UPDATE SET
                       bytes_added = accounting_hourly.bytes_added + EXCLUDED.bytes_added,
                       bytes_removed = accounting_hourly.bytes_removed + EXCLUDED.bytes_removed,
                       bytes_retrieved =
                           accounting_hourly.bytes_retrieved + EXCLUDED.bytes_retrieved""",
                [bucket for bucket, _ in sums],
                [hour_datetime(hour_s) for _, hour_s in sums],
                [totals.bytes_added for totals in sums.values()],
                [totals.bytes_removed for totals in sums.values()],
                [totals.bytes_retrieved for totals in sums.values()],
            )
    return indices


async def usage(
    pool: asyncpg.Pool, bucket_id: int, since: datetime | None, max_hours: int
) -> Usage:
    """Totals of ``bucket_id`` from the hour ``since`` on (all time if None), and
    its newest ``max_hours`` hours with usage, oldest first."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        # One snapshot for both statements: the hours add up to the totals
        # whenever none was left out.
        total = await conn.fetchrow(
            """SELECT count(*) AS hours,
                      coalesce(sum(bytes_added), 0) AS bytes_added,
                      coalesce(sum(bytes_removed), 0) AS bytes_removed,
                      coalesce(sum(bytes_retrieved), 0) AS bytes_retrieved
               FROM accounting_hourly
               WHERE bucket_id = $1 AND ($2::timestamptz IS NULL OR hour >= $2)""",
            bucket_id,
            since,
        )
        rows = await conn.fetch(
            """SELECT hour, bytes_added, bytes_removed, bytes_retrieved
               FROM accounting_hourly
               WHERE bucket_id = $1 AND ($2::timestamptz IS NULL OR hour >= $2)
               ORDER BY hour DESC
               LIMIT $3""",
            bucket_id,
            since,
            max_hours,
        )
    assert total is not None
    hourly = [
        HourUsage(
            row["hour"],
            Totals(row["bytes_added"], row["bytes_removed"], row["bytes_retrieved"]),
        )
        for row in reversed(rows)
    ]
    totals = Totals(
        int(total["bytes_added"]), int(total["bytes_removed"]), int(total["bytes_retrieved"])
    )
    return Usage(totals, hourly, truncated=total["hours"] > len(hourly))


async def prune_details(db: Executor, retention_s: float, limit: int) -> int:
    """Forget at most ``limit`` detail-ids counted more than ``retention_s`` ago."""
    result: str = await db.execute(
        """DELETE FROM accounting_detail
           WHERE detail_id IN (
               SELECT detail_id FROM accounting_detail
               WHERE counted_at < now() - make_interval(secs => $1)
               LIMIT $2)""",
        retention_s,
        limit,
    )
    return int(result.split()[-1])
