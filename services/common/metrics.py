"""Prometheus metrics (prometheus-client) and the ``/metrics`` HTTP endpoint.

Each service is its own process, so the library's default registry holds
exactly that service's metrics. ZeroMQ services serve them with
:func:`start_server` on ``metrics_bind`` (``host:port``; port 0 picks one);
the gateway adds :func:`handle_metrics` to its own HTTP application.

The metrics every ZeroMQ service shares are defined here and fed by
:class:`services.common.rpc.RpcServer`: requests and errors by message type,
latency, bytes in and out.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

log = logging.getLogger(__name__)

#: Latency buckets from 1 ms to 1 min (ZeroMQ requests and HTTP requests alike).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

RPC_REQUESTS = Counter(
    "nimbus_rpc_requests",
    "ZeroMQ requests served, by message type and result (success or the error code)",
    ["message_type", "result"],
)
RPC_SECONDS = Histogram(
    "nimbus_rpc_request_seconds",
    "Time to serve one ZeroMQ request, by message type",
    ["message_type"],
    buckets=LATENCY_BUCKETS,
)
RPC_BYTES_IN = Counter("nimbus_rpc_received_bytes", "Bytes of ZeroMQ requests received")
RPC_BYTES_OUT = Counter("nimbus_rpc_sent_bytes", "Bytes of ZeroMQ replies sent")


def exposition() -> bytes:
    """The default registry in the Prometheus text format."""
    return generate_latest()


async def handle_metrics(request: web.Request) -> web.Response:
    response = web.Response(body=exposition())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def split_bind(bind: str) -> tuple[str, int]:
    """``host:port`` (``tcp://`` and ``http://`` prefixes allowed) → (host, port)."""
    address = bind.split("://", 1)[-1]
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"metrics_bind must be host:port, got {bind!r}")
    return host, int(port)


class MetricsServer:
    """A small aiohttp server answering ``GET /metrics``; ``close`` frees the port."""

    def __init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self, bind: str) -> str:
        host, port = split_bind(bind)
        app = web.Application()
        app.router.add_get("/metrics", handle_metrics)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, shutdown_timeout=1.0)
        await site.start()
        bound = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound}/metrics"
        log.info("metrics on %s", self.url)
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def start_server(bind: str) -> MetricsServer | None:
    """Serve ``/metrics`` on ``bind``; None when ``bind`` is empty."""
    if not bind:
        return None
    server = MetricsServer()
    await server.start(bind)
    return server
