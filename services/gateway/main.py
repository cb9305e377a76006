"""The S3 gateway: wiring only (config, pool, nodes, workers, HTTP server)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from services.common import config, db, lifecycle, observe, worker
from services.common.config import GatewayConfig
from services.common.unified_id import UnifiedIdGenerator
from services.gateway import queries
from services.gateway.app import make_app
from services.gateway.context import GATEWAY, Gateway, Principal
from services.gateway.handlers.usage import ACCOUNTING
from services.gateway.nodes import NodeSet
from services.gateway.reaper import Reaper
from services.gateway.secrets import SecretBox
from services.gateway.usage import Accounting, UsageFlusher

log = logging.getLogger(__name__)

ROOT_USER = "root"


async def serve(cfg: GatewayConfig, stop: asyncio.Event) -> None:
    box = SecretBox(cfg.master_key)
    async with contextlib.AsyncExitStack() as stack:
        events = await observe.open_observers(
            stack, "gateway", "", cfg.events_endpoint, cfg.metrics_bind
        )
        pool = await db.create_pool(cfg.database_url, max_size=20)
        stack.push_async_callback(pool.close)
        root_id = await queries.ensure_user(pool, ROOT_USER)
        await queries.put_access_key(
            pool, cfg.root_access_key, root_id, box.seal(cfg.root_access_key, cfg.root_secret_key)
        )
        nodes = await NodeSet.connect(
            await queries.cluster_nodes(pool),
            cfg.node_timeout_s,
            cfg.heartbeat_timeout_s,
            cfg.down_after,
            heartbeat_interval_s=cfg.heartbeat_interval_s,
            events=events,
        )
        stack.push_async_callback(nodes.close)
        await nodes.run_once()
        gw = Gateway(
            cfg=cfg,
            pool=pool,
            nodes=nodes,
            ids=UnifiedIdGenerator(cfg.id_shard),
            box=box,
            root=Principal(root_id, ROOT_USER, cfg.root_access_key),
            events=events,
        )
        workers_stop = asyncio.Event()
        stack.callback(workers_stop.set)
        heartbeat = worker.start(nodes, workers_stop, idle_s=cfg.heartbeat_interval_s)
        reaper = worker.start(Reaper(gw), workers_stop, idle_s=5.0)
        accounting = Accounting(cfg.accounting_endpoint)
        stack.push_async_callback(accounting.close)
        flusher = worker.start(
            UsageFlusher(gw, accounting), workers_stop, idle_s=cfg.accounting_flush_s
        )

        app = make_app()
        app[GATEWAY] = gw
        app[ACCOUNTING] = accounting
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, cfg.host, cfg.port, shutdown_timeout=30.0)
        await site.start()
        stack.push_async_callback(runner.cleanup)
        port = runner.addresses[0][1]
        url = f"http://{cfg.host}:{port}"
        log.info("gateway serving on %s", url)
        lifecycle.write_endpoint_file(cfg.endpoint_file, url)
        await stop.wait()
        observe.stopping(events)
        workers_stop.set()
        await asyncio.gather(heartbeat, reaper, flusher, return_exceptions=True)


def main() -> None:
    cfg = config.load(GatewayConfig, "gateway")
    lifecycle.run("gateway", lambda stop: serve(cfg, stop))


if __name__ == "__main__":
    main()
