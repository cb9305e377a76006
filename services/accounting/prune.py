"""The worker that forgets detail-ids once a resend can no longer be expected."""

from __future__ import annotations

import logging

import asyncpg

from services.accounting import metrics, queries

log = logging.getLogger(__name__)

#: Detail-ids deleted per step at most (a short transaction; the next step goes on).
PRUNE_BATCH = 10_000


class DetailPruner:
    """Deletes ``accounting_detail`` rows counted more than ``retention_s`` ago."""

    name = "accounting-prune"

    def __init__(self, pool: asyncpg.Pool, retention_s: float, batch: int = PRUNE_BATCH) -> None:
        self._pool = pool
        self._retention_s = retention_s
        self._batch = batch

    async def run_once(self) -> bool:
        deleted = await queries.prune_details(self._pool, self._retention_s, self._batch)
        if deleted:
            metrics.DETAILS_PRUNED.inc(deleted)
            log.info("forgot %d detail-ids older than %.0f s", deleted, self._retention_s)
        return deleted == self._batch
