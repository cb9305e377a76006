"""The tally's batching, retries and answers, against an in-memory "database"."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.accounting.model import (
    Detail,
    DetailsRejected,
    Event,
    counted_indices,
    plan_dedupe,
)
from services.accounting.tally import Tally
from services.common.protocol import ErrorCode, ProtocolError


class FakeDatabase:
    """Counts like queries.count_details; fails while ``down``; refuses values of 13."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.total = 0
        self.batches: list[int] = []
        self.down = False
        self.calls_while_down = 0
        self.retried = asyncio.Event()

    async def count(self, details: Sequence[Detail]) -> list[int]:
        await asyncio.sleep(0)  # a real database answers later
        if self.down:
            self.calls_while_down += 1
            if self.calls_while_down >= 3:
                self.retried.set()
            raise ConnectionRefusedError("database is away")
        if any(d.value == 13 for d in details):
            raise DetailsRejected("13 is unlucky")
        plan = plan_dedupe(details)
        new = set(plan.detail_ids) - self.seen
        self.seen |= new
        indices = counted_indices(details, plan, new)
        self.total += sum(details[i].value for i in indices)
        self.batches.append(len(details))
        return indices


def detail(value: int, detail_id: str | None = None) -> Detail:
    return Detail(1, Event.BYTES_ADDED, value, 3600.0, detail_id)


async def test_queued_details_are_counted_in_few_batches() -> None:
    database = FakeDatabase()
    tally = Tally(database.count, batch_max=100)
    for _ in range(1000):
        await tally.offer(detail(1))
    tally.start()
    await tally.close(timeout_s=10)
    assert database.total == 1000
    assert database.batches == [100] * 10


async def test_an_acknowledged_detail_counts_once() -> None:
    database = FakeDatabase()
    tally = Tally(database.count)
    tally.start()
    first, again = await asyncio.gather(tally.count(detail(5, "x")), tally.count(detail(5, "x")))
    assert (first, again) == (True, False)
    assert await tally.count(detail(5, "x")) is False
    assert database.total == 5
    await tally.close(timeout_s=10)


async def test_a_refused_detail_costs_only_itself() -> None:
    database = FakeDatabase()
    tally = Tally(database.count)
    for value in (1, 13, 2):
        await tally.offer(detail(value))
    rejected = asyncio.ensure_future(tally.count(detail(13, "bad")))
    tally.start()
    with pytest.raises(ProtocolError) as caught:
        await rejected
    assert caught.value.code == ErrorCode.BAD_FIELD
    await tally.close(timeout_s=10)
    assert database.total == 3


async def test_while_the_database_is_away_pipeline_details_wait_and_acks_fail() -> None:
    database = FakeDatabase()
    database.down = True
    tally = Tally(database.count, retry_initial_s=0.001, retry_max_s=0.01)
    tally.start()
    await tally.offer(detail(7))
    with pytest.raises(ProtocolError) as caught:
        await tally.count(detail(1, "acked"))
    assert caught.value.code == ErrorCode.UNAVAILABLE
    await asyncio.wait_for(database.retried.wait(), timeout=10)
    database.down = False
    await tally.close(timeout_s=10)
    assert database.total == 7


async def test_close_gives_up_after_its_timeout() -> None:
    database = FakeDatabase()
    database.down = True
    tally = Tally(database.count, retry_initial_s=0.001, retry_max_s=0.001)
    tally.start()
    await tally.offer(detail(7))
    await tally.close(timeout_s=0.05)
    assert database.total == 0
    with pytest.raises(ProtocolError) as caught:
        await tally.count(detail(1, "late"))
    assert caught.value.code == ErrorCode.SHUTTING_DOWN
