"""The reader service of one node: wiring only (config, pool, socket, expiry)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from services.common import config, db, lifecycle, observe, worker
from services.common.config import ReaderConfig
from services.common.rpc import RpcServer
from services.reader.handlers import make_handlers
from services.reader.retrieve import Retriever


@dataclass
class ExpireIdle:
    """Forgets retrievals their client abandoned."""

    retriever: Retriever
    idle_timeout_s: float
    name: str = "expire-idle-retrievals"

    async def run_once(self) -> bool:
        return self.retriever.expire_idle(self.idle_timeout_s) > 0


async def serve(cfg: ReaderConfig, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        events = await observe.open_observers(
            stack, "reader", cfg.node_name, cfg.events_endpoint, cfg.metrics_bind
        )
        pool = await db.create_pool(cfg.node_database_url)
        stack.push_async_callback(pool.close)
        retriever = Retriever(pool, cfg.data_dir, cfg.node_name, events)
        server = RpcServer(
            f"reader {cfg.node_name}", make_handlers(retriever), cfg.frame_limits, cfg.max_in_flight
        )
        endpoint = await server.start(cfg.bind)
        stack.push_async_callback(server.close, cfg.drain_timeout_s)
        expiry = worker.start(ExpireIdle(retriever, cfg.retrieve_idle_timeout_s), stop, idle_s=10)
        stack.push_async_callback(asyncio.wait_for, expiry, 5)
        lifecycle.write_endpoint_file(cfg.endpoint_file, endpoint)
        await stop.wait()
        observe.stopping(events)


def main() -> None:
    cfg = config.load(ReaderConfig, "reader")
    lifecycle.run("reader", lambda stop: serve(cfg, stop))


if __name__ == "__main__":
    main()
