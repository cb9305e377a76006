"""The one loop all background work runs in (scrub, audit, handoff, expiry).

A worker does one bounded step per ``run_once`` and says whether it found
work. ``run_forever`` repeats it until ``stop`` is set: after a step that did
work it rests ``tranquility`` times as long as the step took (Garage's
tranquilizer: tranquility 2 keeps the worker near a third of one core), after
an idle step it waits ``idle_s``. A failing step is logged and retried after
``idle_s``; it never ends the loop. Tests and the CLI call ``run_once``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Protocol

log = logging.getLogger(__name__)


class Worker(Protocol):
    name: str

    async def run_once(self) -> bool:
        """Do one bounded step; True if there was work."""
        ...


async def run_forever(
    worker: Worker, stop: asyncio.Event, idle_s: float = 5.0, tranquility: float = 1.0
) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            busy = await worker.run_once()
        except Exception:
            log.exception("worker %s step failed", worker.name)
            busy = False
        rest = tranquility * (time.monotonic() - started) if busy else idle_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=rest)


def start(
    worker: Worker, stop: asyncio.Event, idle_s: float = 5.0, tranquility: float = 1.0
) -> asyncio.Task[None]:
    return asyncio.create_task(
        run_forever(worker, stop, idle_s, tranquility), name=f"worker {worker.name}"
    )


async def finish(task: asyncio.Task[None], timeout_s: float) -> None:
    """Let a stopped worker finish its step; cancel it past ``timeout_s``."""
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        log.warning("%s did not stop within %.0f s; cancelling it", task.get_name(), timeout_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
