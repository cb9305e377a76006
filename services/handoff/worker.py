"""The handoff worker: one bounded batch of held copies forwarded home per step.

Each step finds the nodes this node holds copies for, pings each one's writer
(a home that does not answer within ``ping_timeout_s`` is down and skipped),
and forwards the held copies of the homes that answer, a batch of the oldest
at a time (at most ``batch_segments`` segments and ``batch_bytes`` bytes; the
shares of a batch in random order, so that the two holders of a share seldom
send it at the same moment, then its tombstones), purging each copy ('P') as
soon as its home confirms it. Homes are visited in turn, one step starting
where the last left off, so a large backlog for one node does not starve
another. It runs in :func:`services.common.worker.run_forever`, which
rests ``tranquility`` times the step's duration after each busy step, so
client traffic keeps priority.

Invariants:
- The node database is the state: a held copy is pending until it is purged,
  so a restart loses nothing and a step run twice only repeats forwards the
  home accepts as duplicates. The ``repair_cursor`` row 'handoff' keeps, per
  home, where the walk of its copies resumes (a copy the home keeps refusing
  never blocks the ones behind it; the walk wraps around at the end), and
  running totals.
- A copy is purged only after the home's ``success``; a damaged one is recorded
  in ``damaged_segment`` and never forwarded; a refused one is retried after a
  back-off that doubles up to ``retry_max_s``.
- Between segments the step checks ``stop``: a shutdown waits for at most the
  segment being forwarded.

Events (best effort): ``share-forwarded`` for each share its home confirmed
(then purged here), ``damage-found`` for a held share found damaged, and
``handoff-backlog`` after the first step and every step after which what this
node holds differs (see :mod:`services.handoff.backlog`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import asyncpg

from services.common import protocol
from services.common.config import HandoffConfig
from services.handoff import queries
from services.handoff.backlog import BacklogReport
from services.handoff.forward import (
    HomeWriter,
    Outcome,
    Result,
    Unreachable,
    forward_share,
    forward_tombstone,
)
from services.handoff.model import HeldSegment, Holding

if TYPE_CHECKING:
    from services.common.events import EventSender

log = logging.getLogger(__name__)

CURSOR_NAME = "handoff"
SHARE_FORWARDED = "share-forwarded"
DAMAGE_FOUND = "damage-found"

Connect = Callable[[str], Awaitable[HomeWriter]]
EndpointLookup = Callable[[], Awaitable[dict[str, str]]]


@dataclass
class Cursor:
    """Where the walk of each home's copies resumes, and what was done so far."""

    after: dict[str, int] = field(default_factory=dict)
    forwarded_segments: int = 0
    forwarded_bytes: int = 0
    forwarded_tombstones: int = 0
    damaged: int = 0

    @classmethod
    def from_json(cls, document: dict[str, Any] | None) -> Cursor:
        if not document:
            return cls()
        forwarded = document.get("forwarded", {})
        return cls(
            after={str(k): int(v) for k, v in document.get("after", {}).items()},
            forwarded_segments=int(forwarded.get("segments", 0)),
            forwarded_bytes=int(forwarded.get("bytes", 0)),
            forwarded_tombstones=int(forwarded.get("tombstones", 0)),
            damaged=int(document.get("damaged", 0)),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "after": dict(self.after),
            "forwarded": self.totals(),
            "damaged": self.damaged,
        }

    def totals(self) -> dict[str, int]:
        return {
            "segments": self.forwarded_segments,
            "bytes": self.forwarded_bytes,
            "tombstones": self.forwarded_tombstones,
        }


@dataclass
class _Retry:
    not_before: float
    delay_s: float


@dataclass
class _Budget:
    segments: int
    bytes: int

    @property
    def spent(self) -> bool:
        return self.segments <= 0 or self.bytes <= 0


@dataclass(frozen=True)
class Status:
    node_name: str
    holdings: dict[str, Holding]
    forwarded: dict[str, int]
    #: Homes with copies held: whether their writer answered the last ping.
    homes_up: dict[str, bool]


class HandoffWorker:
    name = "handoff"

    def __init__(
        self,
        cfg: HandoffConfig,
        pool: asyncpg.Pool,
        endpoints: EndpointLookup,
        connect: Connect,
        stop: asyncio.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        events: EventSender | None = None,
    ) -> None:
        self._cfg = cfg
        self._events = events
        self._backlog = BacklogReport(events)
        self._pool = pool
        self._lookup = endpoints
        self._connect = connect
        self._stop = stop or asyncio.Event()
        self._clock = clock
        self._known_endpoints: dict[str, str] = {}
        self._clients: dict[str, tuple[str, HomeWriter]] = {}
        self._up: dict[str, bool] = {}
        self._retry: dict[int, _Retry] = {}
        self._cursor: Cursor | None = None
        self._turn = 0
        self._random = random.Random()
        # One step at a time, even if a test or the CLI calls run_once meanwhile.
        self._step_lock = asyncio.Lock()

    async def run_once(self) -> bool:
        async with self._step_lock:
            progressed = await self._step()
            self._backlog.update(await queries.holdings(self._pool))
            return progressed

    async def _step(self) -> bool:
        homes = await queries.homes_with_holdings(self._pool)
        for gone in set(self._up) - set(homes):
            del self._up[gone]
        if not homes:
            await self._close_clients(keep=())
            return False
        self._forget_old_retries()
        cursor = await self._load_cursor()
        endpoints = await self._endpoints()
        budget = _Budget(self._cfg.batch_segments, self._cfg.batch_bytes)
        start = self._turn % len(homes)
        self._turn += 1
        progressed = False
        before = cursor.as_json()
        try:
            for home in homes[start:] + homes[:start]:
                if budget.spent or self._stop.is_set():
                    break
                writer = await self._reach(home, endpoints.get(home))
                if writer is not None:
                    progressed |= await self._forward_home(home, writer, cursor, budget)
        finally:
            if cursor.as_json() != before:
                await queries.save_cursor(self._pool, CURSOR_NAME, cursor.as_json())
        await self._close_clients(keep=homes)
        return progressed

    async def _forward_home(
        self, home: str, writer: HomeWriter, cursor: Cursor, budget: _Budget
    ) -> bool:
        """Forward this home's copies past its cursor; True if any was settled."""
        limit = budget.segments
        rows = await queries.held_segments(self._pool, home, cursor.after.get(home, 0), limit)
        unsettled = {segment.id for segment in rows}
        progressed = False
        try:
            for segment in self._batch_order(rows):
                if budget.spent or self._stop.is_set():
                    break
                if self._backing_off(segment.id):
                    unsettled.discard(segment.id)
                    continue
                try:
                    result = await self._forward(writer, segment)
                except Unreachable as exc:
                    log.warning("home %s stopped answering: %s", home, exc)
                    self._mark(home, up=False)
                    await self._drop_client(home)
                    break
                unsettled.discard(segment.id)
                budget.segments -= 1
                budget.bytes -= result.bytes_sent
                progressed |= await self._settle(segment, result, cursor)
        finally:
            if unsettled:  # resume at the first copy not tried yet
                cursor.after[home] = min(unsettled) - 1
            elif len(rows) == limit:
                cursor.after[home] = rows[-1].id
            else:
                cursor.after.pop(home, None)  # the end: wrap, refused copies get another turn
        return progressed

    def _batch_order(self, rows: list[HeldSegment]) -> list[HeldSegment]:
        """Shares in random order, then tombstones in arrival order.

        Both holders of a share walk the same keys, and notice the home on the
        same tick; a random order keeps them from racing on each share. A
        tombstone goes after the shares of its batch, so it destroys a version
        at the home only once that version is there (held copies that arrived
        before a tombstone were destroyed here already and are not forwarded).
        """
        shares = [segment for segment in rows if not segment.is_tombstone]
        self._random.shuffle(shares)
        return shares + [segment for segment in rows if segment.is_tombstone]

    async def _forward(self, writer: HomeWriter, segment: HeldSegment) -> Result:
        timeout_s = self._cfg.forward_timeout_s
        if segment.is_tombstone:
            return await forward_tombstone(writer, segment, self._cfg.node_name, timeout_s)
        sequences = await queries.sequences(self._pool, segment.id)
        return await forward_share(
            writer, segment, sequences, self._cfg.data_dir, self._cfg.node_name, timeout_s
        )

    async def _settle(self, segment: HeldSegment, result: Result, cursor: Cursor) -> bool:
        """Record what forwarding one copy came to; True unless the home refused it."""
        what = f"{'tombstone' if segment.is_tombstone else 'share'} {segment.id} of {segment.key!r}"
        if result.outcome is Outcome.FORWARDED:
            self._retry.pop(segment.id, None)
            await queries.purge(self._pool, segment.id, segment.status)
            if segment.is_tombstone:
                cursor.forwarded_tombstones += 1
            else:
                cursor.forwarded_segments += 1
                cursor.forwarded_bytes += result.bytes_sent
                self._send(SHARE_FORWARDED, segment, bytes=result.bytes_sent)
            log.debug("forwarded %s to %s and purged it", what, segment.home)
            return True
        if result.outcome is Outcome.DAMAGED:
            self._retry.pop(segment.id, None)
            await queries.record_damage(
                self._pool, segment.id, result.sequence_num, f"handoff: {result.detail}"
            )
            cursor.damaged += 1
            self._send(
                DAMAGE_FOUND,
                segment,
                **{
                    "sequence-num": result.sequence_num,
                    "reason": result.detail,
                    "detected-by": "handoff",
                },
            )
            log.warning(
                "not forwarding %s to %s: sequence %d is damaged: %s",
                what,
                segment.home,
                result.sequence_num,
                result.detail,
            )
            return True
        retry = self._retry.get(segment.id)
        delay_s = (
            self._cfg.retry_initial_s
            if retry is None
            else min(retry.delay_s * 2, self._cfg.retry_max_s)
        )
        self._retry[segment.id] = _Retry(self._clock() + delay_s, delay_s)
        log.warning(
            "%s refused %s (%s); retrying in %.0f s", segment.home, what, result.detail, delay_s
        )
        return False

    def _send(self, event_type: str, segment: HeldSegment, **fields: Any) -> None:
        if self._events is None:
            return
        self._events.send(
            event_type,
            **{
                "home-node": segment.home,
                "collection-id": segment.collection_id,
                "key": segment.key,
                "unified-id": segment.unified_id,
                "conjoined-part": segment.conjoined_part,
                "segment-num": segment.segment_num,
                **fields,
            },
        )

    def _forget_old_retries(self) -> None:
        """Back-offs long past (their copy purged or destroyed meanwhile) are dropped."""
        horizon = self._clock() - self._cfg.retry_max_s
        for segment_id in [i for i, r in self._retry.items() if r.not_before < horizon]:
            del self._retry[segment_id]

    def _backing_off(self, segment_id: int) -> bool:
        retry = self._retry.get(segment_id)
        return retry is not None and self._clock() < retry.not_before

    async def _reach(self, home: str, endpoint: str | None) -> HomeWriter | None:
        """A connection to ``home``'s writer if it answers ping now, else None."""
        if endpoint is None:
            if self._up.get(home, True):
                log.warning("holding copies for %s, which is not in the node list", home)
            self._up[home] = False
            return None
        cached = self._clients.get(home)
        if cached is not None and cached[0] != endpoint:
            await self._drop_client(home)
            cached = None
        if cached is None:
            cached = (endpoint, await self._connect(endpoint))
            self._clients[home] = cached
        writer = cached[1]
        try:
            reply = await writer.request({"message-type": "ping"}, (), self._cfg.ping_timeout_s)
            answered = reply.get("result") == protocol.SUCCESS
        except Unreachable:
            answered = False
        self._mark(home, up=answered)
        if not answered:
            # A fresh connection next time: nothing queued for a dead peer is sent later.
            await self._drop_client(home)
            return None
        return writer

    def _mark(self, home: str, up: bool) -> None:
        if self._up.get(home) != up:
            log.info("home %s is %s", home, "up: forwarding its copies" if up else "down")
        self._up[home] = up

    async def _drop_client(self, home: str) -> None:
        cached = self._clients.pop(home, None)
        if cached is not None:
            await cached[1].close()

    async def _close_clients(self, keep: Collection[str]) -> None:
        for home in [h for h in self._clients if h not in keep]:
            await self._drop_client(home)

    async def _endpoints(self) -> dict[str, str]:
        """The homes' writer endpoints; the last known ones if the central database is away."""
        try:
            self._known_endpoints = await self._lookup()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if not self._known_endpoints:
                raise
            log.warning("node list unavailable, using the last one read: %s", exc)
        return self._known_endpoints

    async def _load_cursor(self) -> Cursor:
        if self._cursor is None:
            self._cursor = Cursor.from_json(await queries.load_cursor(self._pool, CURSOR_NAME))
        return self._cursor

    async def status(self) -> Status:
        holdings = await queries.holdings(self._pool)
        cursor = await self._load_cursor()
        return Status(
            node_name=self._cfg.node_name,
            holdings=holdings,
            forwarded=cursor.totals(),
            homes_up={home: self._up[home] for home in holdings if home in self._up},
        )

    async def close(self) -> None:
        await self._close_clients(keep=())
