"""The events service: wiring only (config, pipeline, history, query socket)."""

from __future__ import annotations

import asyncio
import contextlib
import os

from services.common import config, events, lifecycle, observe
from services.common.config import EventsConfig
from services.common.protocol import FrameLimits
from services.common.rpc import RpcServer
from services.events.handlers import make_handlers
from services.events.history import History
from services.events.pipeline import Pipeline

SERVICE = "events"


async def serve(cfg: EventsConfig, stop: asyncio.Event) -> None:
    async with contextlib.AsyncExitStack() as stack:
        # No event sender: this service publishes its own events straight into its stream.
        await observe.open_observers(stack, SERVICE, "", "", cfg.metrics_bind)
        history = History(cfg.history)
        pipeline = Pipeline(history, cfg.max_header_bytes)
        await pipeline.start(cfg.pipeline_bind, cfg.publish_bind)
        stack.push_async_callback(pipeline.close)
        limits = FrameLimits(max_header_bytes=cfg.max_header_bytes, max_payload_frames=0)
        server = RpcServer(SERVICE, make_handlers(history), limits)
        endpoint = await server.start(cfg.bind)
        stack.push_async_callback(server.close, cfg.drain_timeout_s)
        pipeline.publish(events.event_header(events.STARTED, SERVICE, "", pid=os.getpid()))
        lifecycle.write_endpoint_file(cfg.endpoint_file, endpoint)
        await stop.wait()
        pipeline.publish(events.event_header(events.STOPPING, SERVICE, "", pid=os.getpid()))


def main() -> None:
    cfg = config.load(EventsConfig, SERVICE)
    lifecycle.run(SERVICE, lambda stop: serve(cfg, stop))


if __name__ == "__main__":
    main()
