"""The accounting service: wiring only (config, pool, tally, sockets, pruner)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import datetime

from services.accounting import queries
from services.accounting.handlers import make_handlers
from services.accounting.model import Detail, Usage
from services.accounting.pipeline import Pipeline
from services.accounting.prune import DetailPruner
from services.accounting.tally import Tally
from services.common import config, db, lifecycle, observe, worker
from services.common.config import AccountingConfig
from services.common.protocol import FrameLimits
from services.common.rpc import RpcServer

log = logging.getLogger(__name__)

#: How often the pruner looks for expired detail-ids when it found none to spare.
PRUNE_IDLE_S = 300.0


async def serve(cfg: AccountingConfig, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        events = await observe.open_observers(
            stack, "accounting", "", cfg.events_endpoint, cfg.metrics_bind
        )
        pool = await db.create_pool(cfg.database_url, max_size=4)
        stack.push_async_callback(pool.close)

        async def count(details: Sequence[Detail]) -> list[int]:
            return await queries.count_details(pool, details)

        async def look_up(bucket_id: int, since: datetime | None, max_hours: int) -> Usage:
            return await queries.usage(pool, bucket_id, since, max_hours)

        tally = Tally(count)
        tally.start()
        stack.push_async_callback(tally.close, cfg.drain_timeout_s)
        # Bound before the ROUTER, whose ping is the readiness probe.
        pipeline = Pipeline(tally, cfg.max_header_bytes)
        await pipeline.start(cfg.pipeline_bind)
        stack.push_async_callback(pipeline.close)
        limits = FrameLimits(max_header_bytes=cfg.max_header_bytes, max_payload_frames=0)
        server = RpcServer("accounting", make_handlers(tally, look_up), limits, cfg.max_in_flight)
        endpoint = await server.start(cfg.bind)
        stack.push_async_callback(server.close, cfg.drain_timeout_s)
        task = worker.start(DetailPruner(pool, cfg.detail_retention_s), stop, idle_s=PRUNE_IDLE_S)
        stack.push_async_callback(worker.finish, task, cfg.drain_timeout_s)
        lifecycle.write_endpoint_file(cfg.endpoint_file, endpoint)
        await stop.wait()
        observe.stopping(events)
        # Closing, in order: no more pipeline details; acknowledged requests in
        # flight are answered; everything queued is counted; sockets close.
        await pipeline.stop_reading()


def main() -> None:
    cfg = config.load(AccountingConfig, "accounting")
    lifecycle.run("accounting", lambda stop: serve(cfg, stop))


if __name__ == "__main__":
    main()
