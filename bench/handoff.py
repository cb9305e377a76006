"""Benchmark of hinted handoff: PUT throughput with one node down, and the backlog's drain time.

    python -m bench.handoff [--object-mib 4] [--concurrency 4] [--backlog-objects 128]
                            [--node node03] [--verify 16] [--drain-timeout 900]
                            [--detect-rounds 3] [--dir DIR]

Brings up a local cluster of 6 nodes, k=4 n=6, in a fresh temporary directory
(or uses the cluster already running in ``--dir`` when DIR/cluster.json
exists), creates a bucket and measures, through the gateway's S3 API:

* **all nodes up**: BACKLOG-OBJECTS PUTs of OBJECT-MiB objects at
  concurrency CONCURRENCY (MiB/s of object bytes, ops/s, p50/p99 latency);
  every PUT's ETag must be the body's md5 and its ``x-nimbus-shares`` header
  must say ``home=n; handoff=0``;
* **detection** (before the one-down phase): NODE's writer process is
  killed with SIGKILL and started again (``services.local.cluster.start_node``),
  then paused with SIGSTOP and resumed with SIGCONT, DETECT-ROUNDS times
  each; ``GET /-/health`` is polled every 20 ms from the signal until it
  reports the writer down, then until it reports it up again (times printed;
  the process is always resumed or restarted, also after an error);
* **one node down**: NODE's processes are stopped
  (``services.local.cluster.stop_node``: SIGTERM, the services drain and
  exit) while the gateway's ``GET /-/health`` is polled until it reports
  NODE's writer down (printed: from the SIGTERM, and how long the stop took);
  then as many PUTs as above, timed the same way. Every answer's
  ``x-nimbus-shares`` is counted; when every node is a home of every object
  (nodes == n) each must say ``home=n-1; handoff=1``;
* **backlog drain**: the handoff backlog (``handoff_backlog`` of the gateway's
  ``GET /-/status``: segments and bytes the nodes hold for others) is
  recorded, NODE is started again (``services.local.cluster.start_node``,
  which returns once its services answer) and ``/-/status`` is polled every
  0.2 s until every node's handoff service answers and the backlog is 0
  segments. The drain time counts from the start-node call (how long the
  start itself took and when the gateway saw NODE's writer up are printed
  too); MiB/s is the recorded backlog's bytes over that time. The handoff
  service is throttled on purpose (it rests ``tranquility`` times each busy
  step and notices a returned home within ``idle_s``), so this is the rate
  it chooses, not the fastest possible;
* **verification**: a sample of VERIFY objects (spread over the one-down
  phase, plus a few of the all-up phase) is read back and md5-compared.

The client is aiohttp in this process; requests are signed with botocore's
SigV4 signer (``UNSIGNED-PAYLOAD``) before the timed spans. It runs on the
same machine as the cluster and competes with it for the CPUs; each phase
prints the CPU used by the client and the gateway (and, for the drain, by the
handoff services) and how busy the machine was.

It prints numbers and never asserts timings. A failed request, a wrong
``x-nimbus-shares`` header, a backlog that does not drain within
DRAIN-TIMEOUT seconds or a wrong byte read back is an error: it is printed
and the exit status is 1.

With ``--dir`` naming a running cluster, this benchmark STOPS AND RESTARTS
NODE (default node03) of that cluster (it is started again also after an
error or Ctrl-C) and leaves the cluster running; all nodes must be up at the
start. Objects and the bucket it created are deleted at the end. A cluster
this script started is always stopped and its directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import os
import re
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    MIB,
    S3,
    BenchError,
    ClusterSpec,
    Endpoint,
    Outcome,
    Pattern,
    add_dir_argument,
    client_session,
    deletions,
    gateway_endpoint,
    get_md5,
    machine_ticks,
    print_errors,
    print_machine_facts,
    proc_cpu_s,
    put,
    record_error,
    run_on_cluster,
    run_workers,
    simple,
)
from services.common.config import GatewayConfig, HandoffConfig
from services.local import cluster

NODES, K = 6, 4
#: Started when ``--dir`` names no running cluster.
CLUSTER = ClusterSpec(f"a {NODES}-node cluster (k={K})", nodes=NODES, k=K)
#: How often /-/status (during the drain) is polled.
POLL_S = 0.2
#: How often /-/health is polled while waiting for the gateway to see a change.
DETECT_POLL_S = 0.02
#: How long the gateway may take to see the stopped node's writer down.
DETECT_TIMEOUT_S = 60.0
#: How often the drain prints the remaining backlog.
PROGRESS_S = 5.0
#: Objects of the all-up phase read back besides the sample of the one-down phase.
UP_VERIFY = 4
SHARES_HEADER = re.compile(r"^\s*home=(\d+)\s*;\s*handoff=(\d+)\s*$")


# --- processes and the machine ----------------------------------------------------


def pids(directory: Path, names: Sequence[str]) -> dict[str, int | None]:
    """The pid of each named process of the cluster if it is alive, else None."""
    table = cluster.process_table(directory)
    found: dict[str, int | None] = {}
    for name in names:
        entry = table.get(name) or {}
        found[name] = int(entry["pid"]) if entry.get("alive") and entry.get("pid") else None
    return found


@dataclass
class Usage:
    """A timed span: wall seconds, CPU of the client and of watched processes, machine load."""

    seconds: float = 0.0
    client_cpu_s: float = 0.0
    process_cpu_s: dict[str, float] = field(default_factory=dict)
    machine_busy_pct: float = 0.0

    def cpu_line(self) -> str:
        watched = "".join(f", {name} {cpu:.1f} s" for name, cpu in self.process_cpu_s.items())
        return (
            f"cpu: client {self.client_cpu_s:.1f} s{watched}; "
            f"machine {self.machine_busy_pct:.0f}% busy"
        )


class Meter:
    """Measures a span; ``watch`` maps a label to a pid whose CPU is counted."""

    def __init__(self, watch: Mapping[str, int | None]) -> None:
        self._watch = watch
        self._cpu0 = {name: proc_cpu_s(pid) for name, pid in watch.items()}
        self._busy0, self._total0 = machine_ticks()
        self._client0 = time.process_time()
        self._started = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._started

    def stop(self, extra_cpu: dict[str, float] | None = None) -> Usage:
        seconds = self.elapsed()
        busy1, total1 = machine_ticks()
        cpu = {name: proc_cpu_s(pid) - self._cpu0[name] for name, pid in self._watch.items()} | (
            extra_cpu or {}
        )
        return Usage(
            seconds=seconds,
            client_cpu_s=time.process_time() - self._client0,
            process_cpu_s=cpu,
            machine_busy_pct=100.0 * (busy1 - self._busy0) / max(1, total1 - self._total0),
        )


# --- the report -------------------------------------------------------------------


@dataclass
class PutPhase:
    label: str
    object_bytes: int
    concurrency: int
    usage: Usage
    outcome: Outcome[str]
    #: ``x-nimbus-shares`` answers: (home, handoff) -> how many PUTs said it.
    shares: dict[tuple[int, int] | None, int]

    @property
    def count(self) -> int:
        return len(self.outcome.results)

    @property
    def mib_per_s(self) -> float:
        return self.count * self.object_bytes / MIB / self.usage.seconds

    @property
    def ops_per_s(self) -> float:
        return self.count / self.usage.seconds

    def percentile_s(self, pct: int) -> float:
        latencies = self.outcome.latencies
        if len(latencies) < 2:
            return latencies[0] if latencies else float("nan")
        return statistics.quantiles(latencies, n=100, method="inclusive")[pct - 1]

    def shares_text(self) -> str:
        parts = []
        for answer, times in sorted(self.shares.items(), key=lambda item: str(item[0])):
            said = (
                "no/unparsable header"
                if answer is None
                else f"home={answer[0]}; handoff={answer[1]}"
            )
            parts.append(f"{times} x '{said}'")
        return ", ".join(parts) or "none"

    def line(self) -> str:
        failed = len(self.outcome.errors)
        note = f"  [{failed} of {self.outcome.attempted} FAILED]" if failed else ""
        return (
            f"PUT {self.label:<14} {self.object_bytes / MIB:g} MiB x {self.count:<4} "
            f"concurrency {self.concurrency}: {self.mib_per_s:7.1f} MiB/s, "
            f"{self.ops_per_s:6.2f} ops/s, p50 {self.percentile_s(50):.2f} s, "
            f"p99 {self.percentile_s(99):.2f} s ({self.usage.seconds:.2f} s){note}\n"
            f"    x-nimbus-shares: {self.shares_text()}\n"
            f"    {self.usage.cpu_line()}"
        )


@dataclass
class Drain:
    segments: int
    bytes: int
    per_holder: dict[str, dict[str, Any]]
    start_node_s: float = float("nan")
    seen_up_s: float | None = None
    seconds: float | None = None
    polls: int = 0
    unknown_polls: int = 0
    failed_polls: int = 0
    usage: Usage | None = None

    #: Shares the PUTs handed off (from their ``x-nimbus-shares``); each has two holders.
    shares: int = 0

    @property
    def mib(self) -> float:
        return self.bytes / MIB

    def distinct_note(self) -> str:
        """The rate of distinct share bytes that reached home, when each share had two copies."""
        if self.seconds is None or not self.shares or self.segments != 2 * self.shares:
            return ""
        return (
            f"; {self.shares} distinct shares, {self.mib / 2:.1f} MiB, reached home: "
            f"{self.mib / 2 / self.seconds:.1f} MiB/s"
        )


@dataclass
class Detection:
    """How soon the gateway saw NODE's writer down after a signal, and up again."""

    how: str
    down_s: list[float] = field(default_factory=list)
    up_s: list[float] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"{self.how}: seen down {spread_text(self.down_s)} after the signal; up again "
            f"{spread_text(self.up_s)} after the restart or resume began"
        )


def spread_text(values: Sequence[float]) -> str:
    if not values:
        return "(not measured)"
    if len(values) == 1:
        return f"{values[0]:.2f} s"
    return (
        f"{min(values):.2f}/{statistics.median(values):.2f}/{max(values):.2f} s "
        f"(min/median/max of {len(values)})"
    )


@dataclass
class Report:
    phases: list[PutPhase] = field(default_factory=list)
    detections: list[Detection] = field(default_factory=list)
    #: From the SIGTERM of ``stop_node`` until /-/health showed the writer down.
    detect_s: float | None = None
    stop_s: float | None = None
    drain: Drain | None = None
    verified: int = 0
    errors: list[str] = field(default_factory=list)

    def error(self, message: str) -> None:
        record_error(self.errors, message)


# --- phases -----------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    object_bytes: int
    concurrency: int
    objects: int
    node: str
    verify: int
    drain_timeout_s: float
    detect_rounds: int


@dataclass
class Objects:
    """The objects of one phase: keys, urls, the streams their bodies come from, md5s."""

    keys: list[str]
    urls: list[str]
    streams: list[int]
    digests: list[str]
    stored: list[int] = field(default_factory=list)


def make_objects(
    s3: S3, bucket: str, pattern: Pattern, prefix: str, base: int, options: Options
) -> Objects:
    keys = [f"{prefix}/{i:05d}" for i in range(options.objects)]
    streams = [base + i for i in range(options.objects)]
    return Objects(
        keys,
        [s3.url(bucket, key) for key in keys],
        streams,
        [pattern.md5(stream, options.object_bytes) for stream in streams],
    )


def parse_shares(value: str) -> tuple[int, int] | None:
    match = SHARES_HEADER.match(value)
    return None if match is None else (int(match[1]), int(match[2]))


async def put_phase(
    s3: S3,
    pattern: Pattern,
    objects: Objects,
    label: str,
    options: Options,
    gateway_pid: int | None,
) -> PutPhase:
    """PUT every object (timed; bodies are built in the job, a 4 MiB copy) and tally the shares."""

    async def job(i: int, headers: dict[str, str]) -> str:
        body = pattern.body(objects.streams[i], options.object_bytes)
        return await put(
            s3, objects.urls[i], headers, body, len(body), objects.digests[i], objects.keys[i]
        )

    jobs = [functools.partial(job, i, s3.sign("PUT", url)) for i, url in enumerate(objects.urls)]
    meter = Meter({"gateway": gateway_pid})
    outcome = await run_workers(jobs, options.concurrency)
    usage = meter.stop()
    objects.stored = sorted(outcome.results)
    shares: dict[tuple[int, int] | None, int] = {}
    for value in outcome.results.values():
        answer = parse_shares(value)
        shares[answer] = shares.get(answer, 0) + 1
    phase = PutPhase(label, options.object_bytes, options.concurrency, usage, outcome, shares)
    print(phase.line(), flush=True)
    return phase


def check_shares(phase: PutPhase, expected: tuple[int, int] | None, report: Report) -> None:
    """Failed PUTs are errors; so are answers other than ``expected`` (None: any)."""
    if phase.outcome.errors:
        first = "\n      ".join(phase.outcome.errors[:3])
        report.error(
            f"PUT {phase.label}: {len(phase.outcome.errors)} request(s) failed; first: {first}"
        )
    if expected is None:
        return
    wrong = phase.count - phase.shares.get(expected, 0)
    if wrong:
        report.error(
            f"PUT {phase.label}: {wrong} of {phase.count} answer(s) did not say "
            f"'x-nimbus-shares: home={expected[0]}; handoff={expected[1]}' "
            f"({phase.shares_text()})"
        )


async def writer_state(s3: S3, node: str) -> bool | None:
    """Whether the gateway sees ``node``'s writer up (None: not in /-/health)."""
    health = await s3.admin_json("/-/health")
    state = (health.get("nodes") or {}).get(node, {}).get("writer")
    return None if state is None else bool(state)


async def check_all_up(s3: S3) -> None:
    health = await s3.admin_json("/-/health")
    nodes: dict[str, dict[str, bool]] = health.get("nodes") or {}
    down = sorted(
        f"{node} {service}"
        for node, services in nodes.items()
        for service, up in services.items()
        if not up
    )
    if health.get("status") != "ok" or down:
        raise BenchError(
            f"the cluster is not healthy before the run (status {health.get('status')!r}, "
            f"down: {', '.join(down) or 'none'}); every node must be up"
        )


async def wait_for_writer(s3: S3, node: str, up: bool, since: float) -> float:
    """Poll /-/health until ``node``'s writer is ``up`` (or down); seconds from ``since``."""
    while True:
        state = await writer_state(s3, node)
        if state is None:
            raise BenchError(f"/-/health does not list {node}")
        if state is up:
            return time.perf_counter() - since
        if time.perf_counter() - since > DETECT_TIMEOUT_S:
            raise BenchError(
                f"/-/health still reports {node}'s writer {'down' if up else 'up'} "
                f"{DETECT_TIMEOUT_S:.0f} s after the change"
            )
        await asyncio.sleep(DETECT_POLL_S)


async def detect_kill_and_pause(
    s3: S3, directory: Path, node: str, rounds: int, report: Report
) -> None:
    """SIGKILL ``node``'s writer (then start it again), and SIGSTOP it (then SIGCONT).

    ``rounds`` times each; /-/health is polled from each signal until the
    writer is reported down, and from the restart or resume until it is up.
    """
    name = f"{node}-writer"
    killed, paused = Detection("SIGKILL, then start-node"), Detection("SIGSTOP, then SIGCONT")
    report.detections += [killed, paused]
    for _ in range(rounds):
        pid = pids(directory, [name])[name]
        if pid is None:
            raise BenchError(f"{name} is not running")
        began = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        try:
            killed.down_s.append(await wait_for_writer(s3, node, False, began))
        finally:
            began = time.perf_counter()
            await cluster.start_node(directory, node)
        killed.up_s.append(await wait_for_writer(s3, node, True, began))

        pid = pids(directory, [name])[name]
        if pid is None:
            raise BenchError(f"{name} is not running")
        began = time.perf_counter()
        os.kill(pid, signal.SIGSTOP)
        try:
            paused.down_s.append(await wait_for_writer(s3, node, False, began))
        finally:
            began = time.perf_counter()
            os.kill(pid, signal.SIGCONT)
        paused.up_s.append(await wait_for_writer(s3, node, True, began))
    for detection in (killed, paused):
        print(f"{name} {detection.line()}", flush=True)


async def stop_and_detect(s3: S3, directory: Path, node: str, report: Report) -> None:
    """Stop ``node`` (SIGTERM) while polling /-/health until its writer is reported down."""

    def stop() -> tuple[list[str], float]:
        stopped = cluster.stop_node(directory, node)
        return stopped, time.perf_counter() - began

    began = time.perf_counter()
    stopping = asyncio.create_task(asyncio.to_thread(stop))
    try:
        report.detect_s = await wait_for_writer(s3, node, False, began)
    finally:
        stopped, report.stop_s = await stopping
    print(
        f"stopped {node} ({', '.join(stopped) or 'nothing was running'}) in {report.stop_s:.2f} s; "
        f"gateway reported its writer down {report.detect_s:.2f} s after the SIGTERM",
        flush=True,
    )


def handoff_states(document: dict[str, Any]) -> dict[str, str]:
    return {name: str(node.get("handoff")) for name, node in (document.get("nodes") or {}).items()}


def backlog_of(document: dict[str, Any]) -> tuple[int, int]:
    backlog = document.get("handoff_backlog") or {}
    return int(backlog.get("segments", 0)), int(backlog.get("bytes", 0))


async def record_backlog(s3: S3, node: str) -> Drain:
    """The backlog /-/status reports now (every live node's handoff service must answer)."""
    for _ in range(50):
        document = await s3.admin_json("/-/status")
        unknown = [
            name
            for name, state in handoff_states(document).items()
            if state != "up" and name != node
        ]
        if not unknown:
            segments, size = backlog_of(document)
            holders = {
                name: entry.get("holds_for_others") or {}
                for name, entry in (document.get("nodes") or {}).items()
                if entry.get("holds_for_others")
            }
            return Drain(segments, size, holders)
        await asyncio.sleep(POLL_S)
    raise BenchError(f"/-/status: the handoff service of {', '.join(unknown)} does not answer")


async def drain_backlog(s3: S3, directory: Path, node: str, drain: Drain, options: Options) -> None:
    """Start ``node`` again; poll /-/status until every handoff service answers, holding nothing."""
    handoff_names = [n for n in cluster.process_table(directory) if n.endswith("-handoff")]
    others = {name: pid for name, pid in pids(directory, handoff_names).items() if pid is not None}
    meter = Meter(others)
    await cluster.start_node(directory, node)
    drain.start_node_s = meter.elapsed()
    print(f"started {node} again in {drain.start_node_s:.2f} s; polling /-/status every {POLL_S} s")
    last_print = meter.elapsed()
    while True:
        elapsed = meter.elapsed()
        if elapsed > options.drain_timeout_s:
            break
        try:
            document = await s3.admin_json("/-/status")
        except BenchError as exc:
            drain.failed_polls += 1
            print(f"  {elapsed:6.1f} s: {exc}", flush=True)
            await asyncio.sleep(POLL_S)
            continue
        drain.polls += 1
        node_entry = (document.get("nodes") or {}).get(node) or {}
        if drain.seen_up_s is None and node_entry.get("writer") == "up":
            drain.seen_up_s = meter.elapsed()
        unknown = [name for name, state in handoff_states(document).items() if state != "up"]
        segments, size = backlog_of(document)
        if unknown:
            drain.unknown_polls += 1
        elif segments == 0:
            drain.seconds = meter.elapsed()
            break
        if meter.elapsed() - last_print >= PROGRESS_S:
            last_print = meter.elapsed()
            note = f" (handoff of {', '.join(unknown)} did not answer)" if unknown else ""
            print(
                f"  {last_print:6.1f} s: {segments} segments, {size / MIB:.1f} MiB left{note}",
                flush=True,
            )
        await asyncio.sleep(POLL_S)
    # The restarted node's processes are new: all their CPU is the drain's.
    restarted = pids(directory, [f"{node}-writer", f"{node}-handoff"])
    drain.usage = meter.stop({name: proc_cpu_s(pid) for name, pid in restarted.items()})


async def verify(s3: S3, objects: Sequence[tuple[Objects, int]], size: int, report: Report) -> None:
    """GET each (objects, index) and compare its length and md5 with what was stored."""

    async def job(group: Objects, i: int) -> str:
        url = group.urls[i]
        received, digest = await get_md5(s3, url, s3.sign("GET", url), group.keys[i])
        if received != size or digest != group.digests[i]:
            raise BenchError(
                f"WRONG BYTES: GET {group.keys[i]}: {received} bytes with md5 {digest}, "
                f"stored {size} bytes with md5 {group.digests[i]}"
            )
        return ""

    outcome = await run_workers([functools.partial(job, g, i) for g, i in objects], 4)
    report.verified = len(outcome.results)
    for error in outcome.errors:
        report.error(error)
    print(
        f"verified {report.verified} of {len(objects)} objects byte-identical (length and md5)",
        flush=True,
    )


def spread(indexes: Sequence[int], count: int) -> list[int]:
    """``count`` of ``indexes``, evenly spaced (all of them if there are fewer)."""
    if count >= len(indexes):
        return list(indexes)
    step = len(indexes) / count
    return [indexes[int(j * step)] for j in range(count)]


async def measure(
    directory: Path,
    endpoint: Endpoint,
    description: dict[str, Any],
    options: Options,
    report: Report,
) -> None:
    n = int(description["n"])
    every_node_a_home = len(description["nodes"]) == n
    gateway_pid = pids(directory, ["gateway"])["gateway"]
    async with client_session() as session:
        s3 = S3(endpoint, session)
        await check_all_up(s3)
        bucket = f"bench-handoff-{uuid.uuid4().hex[:12]}"
        await simple(s3, "PUT", s3.url(bucket), (200,), f"bucket {bucket}")
        node_down = False
        up_objects: Objects | None = None
        down_objects: Objects | None = None
        try:
            pattern = Pattern()
            print("computing the md5 of every body (untimed) ...", flush=True)
            up_objects = make_objects(s3, bucket, pattern, "up", 100_000, options)
            down_objects = make_objects(s3, bucket, pattern, "down", 200_000, options)

            # Warm-up (untimed): connections, database pool, first value files.
            warm = pattern.body(1, options.object_bytes)
            warm_url = s3.url(bucket, "warm-up")
            await put(
                s3,
                warm_url,
                s3.sign("PUT", warm_url),
                warm,
                len(warm),
                hashlib.md5(warm).hexdigest(),
                "warm-up",
            )

            phase = await put_phase(s3, pattern, up_objects, "all up", options, gateway_pid)
            report.phases.append(phase)
            check_shares(phase, (n, 0), report)

            if options.detect_rounds:
                await detect_kill_and_pause(
                    s3, directory, options.node, options.detect_rounds, report
                )

            node_down = True
            await stop_and_detect(s3, directory, options.node, report)
            phase = await put_phase(
                s3, pattern, down_objects, f"{options.node} down", options, gateway_pid
            )
            report.phases.append(phase)
            # With more nodes than shares, not every object has the stopped node as a home.
            check_shares(phase, (n - 1, 1) if every_node_a_home else None, report)

            report.drain = drain = await record_backlog(s3, options.node)
            # Every handed-off share is held by two nodes: the backlog counts both copies.
            drain.shares = sum(
                times * answer[1] for answer, times in phase.shares.items() if answer is not None
            )
            print(
                f"handoff backlog with {options.node} down: {drain.segments} segments, "
                f"{drain.mib:.1f} MiB (held copies; {drain.shares} shares handed off x 2 "
                f"holders = {2 * drain.shares} expected)",
                flush=True,
            )
            for holder, homes in sorted(drain.per_holder.items()):
                held = ", ".join(
                    f"for {home}: {c.get('segments', 0)} segments, "
                    f"{int(c.get('bytes', 0)) / MIB:.1f} MiB"
                    for home, c in sorted(homes.items())
                )
                print(f"    {holder} holds {held}")
            node_down = False
            await drain_backlog(s3, directory, options.node, drain, options)
            if drain.seconds is None:
                report.error(
                    f"the handoff backlog did not drain within {options.drain_timeout_s:g} s "
                    f"of starting {options.node}"
                )
            else:
                print(
                    f"backlog of {drain.segments} segments, {drain.mib:.1f} MiB drained in "
                    f"{drain.seconds:.2f} s ({drain.mib / drain.seconds:.1f} MiB/s of held "
                    f"copies{drain.distinct_note()})",
                    flush=True,
                )
            if drain.usage is not None:
                print(f"    {drain.usage.cpu_line()}", flush=True)

            sample = [(down_objects, i) for i in spread(down_objects.stored, options.verify)]
            sample += [(up_objects, i) for i in spread(up_objects.stored, UP_VERIFY)]
            await verify(s3, sample, options.object_bytes, report)
        finally:
            if node_down:
                print(f"starting {options.node} again ...", file=sys.stderr, flush=True)
                try:
                    await cluster.start_node(directory, options.node)
                except Exception as exc:
                    report.error(f"starting {options.node} again failed: {exc}")
            keys = ["warm-up"]
            for group in (up_objects, down_objects):
                keys += [] if group is None else [group.keys[i] for i in group.stored]
            began = time.perf_counter()
            outcome = await run_workers(deletions(s3, bucket, keys), options.concurrency)
            for error in outcome.errors[:3]:
                report.error(error)
            with contextlib.suppress(BenchError):
                await simple(s3, "DELETE", s3.url(bucket), (204, 200), f"bucket {bucket}")
            print(
                f"deleted {len(outcome.results)} objects and the bucket in "
                f"{time.perf_counter() - began:.1f} s",
                flush=True,
            )


# --- output; main -----------------------------------------------------------------


def print_header(directory: Path, description: dict[str, Any], options: Options) -> None:
    sequence = description["gateway"].get("sequence_size", GatewayConfig.sequence_size)
    defaults = HandoffConfig.__dataclass_fields__
    print(
        "Nimbus hinted-handoff benchmark (MiB = 2^20 bytes; MiB/s = MiB of object bytes per second)"
    )
    print_machine_facts()
    print(
        f"  cluster:    {len(description['nodes'])} nodes, k={description['k']} "
        f"n={description['n']}, sequence size {sequence / MIB:g} MiB, in {directory}"
    )
    print(f"  gateway:    {description['gateway']['url']}")
    print(
        "  handoff:    defaults batch_segments "
        f"{defaults['batch_segments'].default}, tranquility {defaults['tranquility'].default}, "
        f"idle_s {defaults['idle_s'].default} (the service's own throttle)"
    )
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"  load avg:   {load} (1, 5, 15 min) at start; other work on the machine skews results")
    print(
        f"  workload:   {options.objects} x {options.object_bytes / MIB:g} MiB PUTs at "
        f"concurrency {options.concurrency} with all nodes up, then as many with "
        f"{options.node} down;\n              then {options.node} started again and the "
        f"backlog drained; {options.verify} + {UP_VERIFY} objects read back"
    )
    print(flush=True)


def print_summary(report: Report, options: Options) -> None:
    print()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load avg at the end: {load} (1, 5, 15 min)")
    print("Summary")
    for phase in report.phases:
        print(
            f"  PUT {phase.label:<12} {phase.object_bytes / MIB:g} MiB x {phase.count} "
            f"conc {phase.concurrency}: {phase.mib_per_s:6.1f} MiB/s {phase.ops_per_s:6.2f} ops/s "
            f"p50 {phase.percentile_s(50):.2f} s; shares: {phase.shares_text()}"
        )
    for detection in report.detections:
        print(f"  {options.node} writer {detection.line()}")
    if report.detect_s is not None and report.stop_s is not None:
        print(
            f"  {options.node} stop (SIGTERM) took {report.stop_s:.2f} s; gateway saw its writer "
            f"down {report.detect_s:.2f} s after the SIGTERM"
        )
    drain = report.drain
    if drain is not None:
        took = (
            "did NOT drain"
            if drain.seconds is None
            else (
                f"drained in {drain.seconds:.2f} s = {drain.mib / drain.seconds:.1f} MiB/s of "
                f"held copies{drain.distinct_note()}"
            )
        )
        seen = "never" if drain.seen_up_s is None else f"{drain.seen_up_s:.2f} s"
        print(
            f"  backlog {drain.segments} segments, {drain.mib:.1f} MiB: {took} "
            f"(from the start-node call; start-node took {drain.start_node_s:.2f} s, "
            f"gateway saw {options.node}'s writer up at {seen}; {drain.polls} polls, "
            f"{drain.unknown_polls} with a handoff service not answering, "
            f"{drain.failed_polls} failed)"
        )
    print(f"  verified {report.verified} objects byte-identical")


def parse_args(argv: Sequence[str] | None) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.handoff",
        description=(__doc__ or "").split("\n")[0],
        epilog="With --dir naming a running cluster, NODE of that cluster is stopped and "
        "started again (also after an error or Ctrl-C); the cluster is left running.",
    )
    parser.add_argument("--object-mib", type=float, default=4, help="object size (default 4)")
    parser.add_argument("--concurrency", type=int, default=4, help="PUTs in flight (default 4)")
    parser.add_argument(
        "--backlog-objects",
        type=int,
        default=128,
        help="objects PUT with NODE down, which make the backlog; as many are PUT with all "
        "nodes up (default 128)",
    )
    parser.add_argument(
        "--node", default="node03", help="the node stopped and started again (default node03)"
    )
    parser.add_argument(
        "--verify",
        type=int,
        default=16,
        help="objects of the one-down phase read back "
        f"and md5-compared, plus {UP_VERIFY} of the all-up phase (default 16)",
    )
    parser.add_argument(
        "--drain-timeout", type=float, default=900, help="seconds the drain may take (default 900)"
    )
    parser.add_argument(
        "--detect-rounds",
        type=int,
        default=3,
        help="times NODE's writer is killed (and started again) and paused (and resumed) to "
        "time the gateway's detection; 0: none (default 3)",
    )
    add_dir_argument(parser)
    args = parser.parse_args(argv)
    options = Options(
        int(args.object_mib * MIB),
        args.concurrency,
        args.backlog_objects,
        args.node,
        args.verify,
        args.drain_timeout,
        args.detect_rounds,
    )
    if options.object_bytes < 1 or options.concurrency < 1 or options.objects < 1:
        parser.error("--object-mib, --concurrency and --backlog-objects must be positive")
    if options.verify < 0 or options.drain_timeout_s <= 0 or options.detect_rounds < 0:
        parser.error("--verify and --detect-rounds must be >= 0 and --drain-timeout positive")
    return options, args.dir


def main(argv: Sequence[str] | None = None) -> int:
    options, given_dir = parse_args(argv)

    def body(directory: Path, description: dict[str, Any]) -> int:
        if options.node not in {node["name"] for node in description["nodes"]}:
            raise BenchError(f"the cluster in {directory} has no node {options.node}")
        report = Report()
        endpoint = gateway_endpoint(directory, description)
        print_header(directory, description, options)
        try:
            asyncio.run(measure(directory, endpoint, description, options, report))
        except BenchError as exc:
            report.error(str(exc))
        print_summary(report, options)
        if report.errors:
            print_errors(report.errors, blank_line_before=True)
            return 1
        return 0

    resolved = None if given_dir is None else given_dir.resolve()
    return run_on_cluster(resolved, CLUSTER, body, keep_logs_on_error=True)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
