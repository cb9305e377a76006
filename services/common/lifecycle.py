"""How every service process starts and stops.

``run(serve)`` configures logging, runs ``serve(stop)`` on a fresh event loop
and turns SIGTERM and SIGINT into ``stop`` being set. ``serve`` opens its
resources (pool, sockets, workers), waits for ``stop``, then closes them in
reverse order: stop accepting, finish in-flight work, close sockets and pool.
The process exits 0 after a clean stop, 1 if ``serve`` failed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

Serve = Callable[[asyncio.Event], Awaitable[None]]


def configure_logging(service: str) -> None:
    level = os.environ.get("NIMBUS_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s {service}[%(process)d] %(levelname)s %(name)s: %(message)s",
    )


def run(service: str, serve: Serve) -> None:
    """Run ``serve`` until SIGTERM/SIGINT; exit 0 on a clean stop."""
    configure_logging(service)
    try:
        asyncio.run(_main(service, serve))
    except Exception:
        log.exception("%s failed", service)
        sys.exit(1)
    log.info("%s stopped", service)
    sys.exit(0)


async def _main(service: str, serve: Serve) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, service, signum, stop)
    await serve(stop)


def _on_signal(service: str, signum: int, stop: asyncio.Event) -> None:
    log.info("%s: %s received, stopping", service, signal.Signals(signum).name)
    stop.set()


def write_endpoint_file(path: Path | None, endpoint: str) -> None:
    """Publish the bound endpoint atomically (readers never see half a file)."""
    if path is None:
        return
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(endpoint + "\n")
    os.replace(tmp, path)
