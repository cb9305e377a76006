"""Unified ids: 64-bit, time-ordered ids for object versions and write order.

Layout, from the most significant bit down (63 bits used, so every id is a
non-negative signed Postgres ``bigint``)::

    | 41 bits: ms since 2020-01-01T00:00:00Z | 10 bits: shard | 12 bits: counter |

Invariants:

* Ids of one generator are strictly increasing, even if the wall clock goes
  backwards or more than 4096 ids are asked for in one millisecond: the
  generator then keeps or advances its own logical millisecond, which may run
  ahead of the clock until the clock catches up.
* Generators with different shards never produce the same id, since the
  shard is part of every id.
* The millisecond field lasts until about 2089; past that ``next_id`` raises.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = [
    "COUNTER_BITS",
    "EPOCH_MS",
    "MS_BITS",
    "SHARD_BITS",
    "UnifiedIdGenerator",
    "compose",
    "decompose",
    "timestamp_s",
]

EPOCH_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z in ms since the Unix epoch
MS_BITS = 41
SHARD_BITS = 10
COUNTER_BITS = 12

MAX_MS = (1 << MS_BITS) - 1
MAX_SHARD = (1 << SHARD_BITS) - 1
MAX_COUNTER = (1 << COUNTER_BITS) - 1


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch, from the system clock."""
    return time.time_ns() // 1_000_000


def compose(ms: int, shard: int, counter: int) -> int:
    """Build an id from ms since :data:`EPOCH_MS`, shard and counter."""
    if not 0 <= ms <= MAX_MS:
        raise ValueError(f"ms {ms} out of range 0..{MAX_MS}")
    if not 0 <= shard <= MAX_SHARD:
        raise ValueError(f"shard {shard} out of range 0..{MAX_SHARD}")
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"counter {counter} out of range 0..{MAX_COUNTER}")
    return (ms << (SHARD_BITS + COUNTER_BITS)) | (shard << COUNTER_BITS) | counter


def decompose(uid: int) -> tuple[int, int, int]:
    """Split an id into ``(ms since EPOCH_MS, shard, counter)``."""
    if not 0 <= uid < 1 << (MS_BITS + SHARD_BITS + COUNTER_BITS):
        raise ValueError(f"not a unified id: {uid}")
    return (
        uid >> (SHARD_BITS + COUNTER_BITS),
        (uid >> COUNTER_BITS) & MAX_SHARD,
        uid & MAX_COUNTER,
    )


def timestamp_s(uid: int) -> float:
    """Seconds since the Unix epoch of the (logical) millisecond of an id."""
    return (decompose(uid)[0] + EPOCH_MS) / 1000


class UnifiedIdGenerator:
    """Produces strictly increasing unified ids for one shard.

    ``clock_ms`` returns milliseconds since the Unix epoch; tests inject a
    fake one. Safe to call from several threads.
    """

    def __init__(self, shard: int, clock_ms: Callable[[], int] = wall_clock_ms) -> None:
        if not 0 <= shard <= MAX_SHARD:
            raise ValueError(f"shard {shard} out of range 0..{MAX_SHARD}")
        self.shard = shard
        self._clock_ms = clock_ms
        self._last_ms = -1
        self._counter = MAX_COUNTER
        self._lock = threading.Lock()

    def next_id(self) -> int:
        """Return the next id, strictly greater than every earlier one."""
        with self._lock:
            now = self._clock_ms() - EPOCH_MS
            if now < 0 and self._last_ms < 0:
                raise ValueError(f"clock reads {now} ms before the unified id epoch")
            if now > self._last_ms:
                self._last_ms = now
                self._counter = 0
            elif self._counter < MAX_COUNTER:
                self._counter += 1
            else:  # counter exhausted: borrow the next millisecond
                self._last_ms += 1
                self._counter = 0
            if self._last_ms > MAX_MS:
                raise OverflowError("unified id milliseconds exhausted")
            return compose(self._last_ms, self.shard, self._counter)
