"""Counting details in batches: one transaction per batch, answers after commit.

Both sockets hand their details to one :class:`Tally`. Its loop takes what is
queued (up to ``batch_max`` details) and counts it with one call of
``count`` (one transaction, see :func:`services.accounting.queries.count_details`).
Only after that call returns, i.e. after the commit, are the acknowledged
details answered; a stream of small details costs one transaction per batch,
not per detail.

When counting fails:
- the database refused the batch (``DetailsRejected``): each detail is
  counted on its own, so one bad detail costs only itself;
- anything else (the database is away, a deadlock): acknowledged details are
  answered ``unavailable`` at once (their senders resend), pipeline details
  are kept and retried with the next batch after a back-off. While they are
  held the queue fills, the pipeline stops reading its socket and ZeroMQ
  pushes back on the senders: nothing received is dropped while the database
  is away, only when the service must stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence

from services.accounting import metrics
from services.accounting.model import Detail, DetailsRejected
from services.common.protocol import ErrorCode, ProtocolError

log = logging.getLogger(__name__)

#: Details counted in one transaction at most.
BATCH_MAX_DETAILS = 500
#: Details waiting to be counted at most; past it, the pipeline stops reading.
QUEUE_MAX_DETAILS = 10_000

CountDetails = Callable[[Sequence[Detail]], Awaitable[list[int]]]


@dataclasses.dataclass(slots=True)
class _Entry:
    detail: Detail
    #: Set for an acknowledged detail: True once counted, False if counted before.
    done: asyncio.Future[bool] | None = None
    settled: bool = False


class Tally:
    """The queue of details to count and the loop that counts them."""

    def __init__(
        self,
        count: CountDetails,
        batch_max: int = BATCH_MAX_DETAILS,
        queue_max: int = QUEUE_MAX_DETAILS,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
    ) -> None:
        self._count_details = count
        self._batch_max = batch_max
        self._queue: asyncio.Queue[_Entry] = asyncio.Queue(queue_max)
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        #: The batch being counted; between batches, the pipeline details held for a retry.
        self._batch: list[_Entry] = []
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="accounting tally")

    async def offer(self, detail: Detail) -> None:
        """Queue a pipeline detail; waits while the queue is full."""
        await self._queue.put(_Entry(detail))

    async def count(self, detail: Detail) -> bool:
        """Count an acknowledged detail; True if counted now, False if counted before.

        Returns only after the transaction that counted it has committed.
        """
        if self._closing:
            raise ProtocolError(ErrorCode.SHUTTING_DOWN, "accounting is shutting down")
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Entry(detail, done))
        return await done

    async def _run(self) -> None:
        failures = 0
        while True:
            batch = self._batch or [await self._queue.get()]
            self._batch = batch
            while len(batch) < self._batch_max:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            self._batch = await self._count(batch)
            if self._batch:
                failures += 1
                delay = min(self._retry_initial_s * 2 ** (failures - 1), self._retry_max_s)
                await asyncio.sleep(delay)  # back-off before trying the database again
            else:
                failures = 0

    async def _count(self, batch: list[_Entry]) -> list[_Entry]:
        """Count ``batch``; the pipeline entries to try again later."""
        try:
            counted = await self._count_details([entry.detail for entry in batch])
        except DetailsRejected as exc:
            if len(batch) > 1:
                log.warning("%d details refused together; counting each alone", len(batch))
                held: list[_Entry] = []
                for entry in batch:
                    held += await self._count([entry])
                return held
            self._reject(batch[0], exc)
            return []
        except Exception as exc:
            metrics.DATABASE_FAILURES.inc()
            log.warning(
                "counting %d details failed, will retry: %s: %s",
                len(batch),
                type(exc).__name__,
                exc,
            )
            unavailable = ProtocolError(
                ErrorCode.UNAVAILABLE, f"accounting database unavailable: {type(exc).__name__}"
            )
            held = []
            for entry in batch:
                if entry.done is None:
                    held.append(entry)
                else:
                    self._settle(entry, error=unavailable)
            return held
        metrics.BATCH_DETAILS.observe(len(batch))
        now = set(counted)
        for index, entry in enumerate(batch):
            if index in now:
                event = entry.detail.event.value
                metrics.DETAILS_COUNTED.labels(event).inc()
                metrics.BYTES_COUNTED.labels(event).inc(entry.detail.value)
            else:
                metrics.DETAILS_DUPLICATE.inc()
            self._settle(entry, result=index in now)
        return []

    def _reject(self, entry: _Entry, exc: DetailsRejected) -> None:
        log.error("detail %s refused by the database: %s", entry.detail, exc)
        metrics.DETAILS_DROPPED.labels("rejected").inc()
        self._settle(entry, error=ProtocolError(ErrorCode.BAD_FIELD, f"detail refused: {exc}"))

    def _settle(
        self, entry: _Entry, result: bool = False, error: BaseException | None = None
    ) -> None:
        if entry.settled:
            return
        entry.settled = True
        if entry.done is not None and not entry.done.done():
            if error is None:
                entry.done.set_result(result)
            else:
                entry.done.set_exception(error)
        self._queue.task_done()

    async def close(self, timeout_s: float) -> None:
        """Count what is queued (for up to ``timeout_s``), then stop."""
        self._closing = True
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            log.warning("details still uncounted after %.0f s", timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # A batch cut off mid-transaction was rolled back: none of it counts.
        lost = [entry for entry in self._batch if not entry.settled]
        self._batch = []
        while not self._queue.empty():
            lost.append(self._queue.get_nowait())
        gone = ProtocolError(ErrorCode.SHUTTING_DOWN, "accounting is shutting down")
        for entry in lost:
            if entry.done is None:
                metrics.DETAILS_DROPPED.labels("shutdown").inc()
            self._settle(entry, error=gone)
        if lost:
            log.error("%d details lost at shutdown (not counted)", len(lost))
