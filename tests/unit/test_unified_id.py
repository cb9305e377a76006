"""Ordering and layout of unified ids."""

from __future__ import annotations

import itertools
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.unified_id import (
    EPOCH_MS,
    MAX_COUNTER,
    MAX_MS,
    MAX_SHARD,
    UnifiedIdGenerator,
    compose,
    decompose,
    timestamp_s,
)


class FakeClock:
    """A clock that reads whatever the test sets, in ms since the Unix epoch."""

    def __init__(self, ms: int = EPOCH_MS + 1_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.integers(-50, 50), st.integers(1, 30)),
        min_size=1,
        max_size=40,
    ),
    shard=st.integers(0, MAX_SHARD),
)
def test_ids_strictly_increase_when_clock_jumps_around(
    steps: list[tuple[int, int]], shard: int
) -> None:
    clock = FakeClock(EPOCH_MS + 10_000)
    gen = UnifiedIdGenerator(shard, clock)
    ids: list[int] = []
    for delta, count in steps:
        clock.ms += delta
        for _ in range(count):
            ids.append(gen.next_id())
            ms, got_shard, _counter = decompose(ids[-1])
            assert got_shard == shard
            assert ms >= clock.ms - EPOCH_MS  # never behind the clock
    assert all(a < b for a, b in itertools.pairwise(ids))


def test_more_than_4096_ids_in_one_ms_borrow_the_next_ms() -> None:
    clock = FakeClock()
    gen = UnifiedIdGenerator(7, clock)
    ids = [gen.next_id() for _ in range(3 * (MAX_COUNTER + 1) + 5)]
    assert all(a < b for a, b in itertools.pairwise(ids))
    base = clock.ms - EPOCH_MS
    assert decompose(ids[0]) == (base, 7, 0)
    assert decompose(ids[MAX_COUNTER]) == (base, 7, MAX_COUNTER)
    assert decompose(ids[MAX_COUNTER + 1]) == (base + 1, 7, 0)
    assert decompose(ids[-1]) == (base + 3, 7, 4)
    # The clock catching up to the borrowed ms still yields larger ids.
    clock.ms += 1
    after = gen.next_id()
    assert after > ids[-1]
    assert decompose(after) == (base + 3, 7, 5)
    clock.ms += 10
    assert decompose(gen.next_id()) == (base + 11, 7, 0)


def test_backwards_clock_keeps_logical_ms() -> None:
    clock = FakeClock()
    gen = UnifiedIdGenerator(1, clock)
    first = gen.next_id()
    clock.ms -= 5_000
    second = gen.next_id()
    assert second > first
    assert decompose(second)[0] == decompose(first)[0]
    clock.ms = 0  # even back before the epoch, once ids were handed out
    third = gen.next_id()
    assert third > second
    assert decompose(third)[0] == decompose(first)[0]


@given(shards=st.lists(st.integers(0, MAX_SHARD), min_size=2, max_size=5, unique=True))
@settings(max_examples=20, deadline=None)
def test_different_shards_never_collide(shards: list[int]) -> None:
    clock = FakeClock()
    gens = [UnifiedIdGenerator(shard, clock) for shard in shards]
    seen: set[int] = set()
    for tick in range(3):
        clock.ms += tick
        for gen in gens:
            for _ in range(50):
                uid = gen.next_id()
                assert uid not in seen
                seen.add(uid)


@given(
    ms=st.integers(0, MAX_MS),
    shard=st.integers(0, MAX_SHARD),
    counter=st.integers(0, MAX_COUNTER),
)
def test_compose_decompose_round_trip_and_fit_in_bigint(ms: int, shard: int, counter: int) -> None:
    uid = compose(ms, shard, counter)
    assert 0 <= uid < 2**63
    assert decompose(uid) == (ms, shard, counter)
    assert timestamp_s(uid) == (ms + EPOCH_MS) / 1000


def test_ids_sort_by_time_across_shards() -> None:
    assert compose(5, MAX_SHARD, MAX_COUNTER) < compose(6, 0, 0)


def test_largest_id_fits_signed_bigint() -> None:
    assert compose(MAX_MS, MAX_SHARD, MAX_COUNTER) == 2**63 - 1


def test_default_clock_is_wall_time() -> None:
    uid = UnifiedIdGenerator(3).next_id()
    assert abs(timestamp_s(uid) - time.time()) < 5
    assert decompose(uid)[1] == 3


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        UnifiedIdGenerator(MAX_SHARD + 1)
    with pytest.raises(ValueError):
        UnifiedIdGenerator(-1)
    with pytest.raises(ValueError):
        UnifiedIdGenerator(0, FakeClock(EPOCH_MS - 1)).next_id()
    with pytest.raises(OverflowError):
        UnifiedIdGenerator(0, FakeClock(EPOCH_MS + MAX_MS + 1)).next_id()
    with pytest.raises(ValueError):
        decompose(-1)
    with pytest.raises(ValueError):
        decompose(2**63)
    with pytest.raises(ValueError):
        compose(0, 0, MAX_COUNTER + 1)
