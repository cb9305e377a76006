"""The writer service of one node: wiring only (config, pool, files, socket)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.common import config, db, lifecycle, observe
from services.common.config import WriterConfig
from services.common.rpc import RpcServer
from services.common.valuefile import ValueFileWriter
from services.writer import queries
from services.writer.archive import Archiver
from services.writer.handlers import make_handlers

log = logging.getLogger(__name__)


async def serve(cfg: WriterConfig, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        events = await observe.open_observers(
            stack, "writer", cfg.node_name, cfg.events_endpoint, cfg.metrics_bind
        )
        pool = await db.create_pool(cfg.node_database_url)
        stack.push_async_callback(pool.close)
        cancelled = await queries.cancel_active_segments(pool)
        if cancelled:
            log.warning("cancelled %d archives left unfinished by a previous run", cancelled)
        values = ValueFileWriter(
            cfg.data_dir,
            cfg.value_file_max_bytes,
            allocate_id=lambda: queries.new_value_file(pool),
            on_close=lambda file_id, size: queries.close_value_file(pool, file_id, size),
        )
        stack.push_async_callback(values.close)
        server = RpcServer(
            f"writer {cfg.node_name}",
            make_handlers(Archiver(pool, values, events)),
            cfg.frame_limits,
            cfg.max_in_flight,
        )
        endpoint = await server.start(cfg.bind)
        stack.push_async_callback(server.close, cfg.drain_timeout_s)
        lifecycle.write_endpoint_file(cfg.endpoint_file, endpoint)
        await stop.wait()
        observe.stopping(events)


def main() -> None:
    cfg = config.load(WriterConfig, "writer")
    lifecycle.run("writer", lambda stop: serve(cfg, stop))


if __name__ == "__main__":
    main()
