"""The handoff service of one node: wiring only (config, pools, socket, worker)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.common import config, db, lifecycle, observe, worker
from services.common.config import HandoffConfig
from services.common.rpc import RpcServer
from services.handoff import queries
from services.handoff.forward import HomeWriter
from services.handoff.handlers import make_handlers
from services.handoff.transport import RpcHomeWriter
from services.handoff.worker import HandoffWorker

log = logging.getLogger(__name__)


async def serve(cfg: HandoffConfig, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        events = await observe.open_observers(
            stack, "handoff", cfg.node_name, cfg.events_endpoint, cfg.metrics_bind
        )
        pool = await db.create_pool(cfg.node_database_url, max_size=4)
        stack.push_async_callback(pool.close)
        central = await db.create_pool(cfg.database_url, max_size=2)
        stack.push_async_callback(central.close)

        async def connect(endpoint: str) -> HomeWriter:
            return await RpcHomeWriter.connect(endpoint, cfg.forward_timeout_s)

        handoff = HandoffWorker(
            cfg, pool, lambda: queries.writer_endpoints(central), connect, stop, events=events
        )
        stack.push_async_callback(handoff.close)
        server = RpcServer(
            f"handoff {cfg.node_name}", make_handlers(handoff), cfg.frame_limits, cfg.max_in_flight
        )
        endpoint = await server.start(cfg.bind)
        stack.push_async_callback(server.close, cfg.drain_timeout_s)
        task = worker.start(handoff, stop, idle_s=cfg.idle_s, tranquility=cfg.tranquility)
        stack.push_async_callback(worker.finish, task, cfg.drain_timeout_s)
        lifecycle.write_endpoint_file(cfg.endpoint_file, endpoint)
        await stop.wait()
        observe.stopping(events)


def main() -> None:
    cfg = config.load(HandoffConfig, "handoff")
    lifecycle.run("handoff", lambda stop: serve(cfg, stop))


if __name__ == "__main__":
    main()
