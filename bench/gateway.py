"""Benchmark of the S3 gateway: throughput, small-object ops/s, memory on a huge PUT.

    python -m bench.gateway [--object-mib 64] [--small-count 2000] [--big-mib 2048]
                            [--skip-2gib] [--dir DIR]

Brings up a local cluster of 6 nodes, k=4 n=6, in a fresh temporary directory
(or uses the cluster already running in ``--dir`` when DIR/cluster.json
exists), creates a bucket and measures, through the gateway's S3 API:

* one 2 GiB object (``--big-mib``), first, so the gateway's memory baseline
  is that of a gateway that has served only a 1 MiB warm-up: it is streamed
  from a generator (never held in memory by the client) and the gateway's
  resident set (``VmRSS`` of /proc/<pid>/status, sampled every 100 ms in a
  thread) is printed before, at its peak during the upload and during the
  GET, with ``VmHWM`` at the end of each (the high-water mark is reset
  through /proc/<pid>/clear_refs before each, when the kernel allows it); the
  GET is md5-verified while streaming (that md5 is inside the timed span).
  Then the object is deleted;
* large objects: PUT then GET of OBJECT-MiB objects at concurrency 1
  (4 objects) and 4 (8 objects), MiB/s of object bytes. Every PUT's ETag must
  be the body's md5; every GET's body is kept and its md5 checked after the
  timed span;
* small objects: SMALL-COUNT PUTs of 4 KiB at concurrency 16, then as many
  GETs (each body compared), then DELETEs; ops/s and p50/p99 latency.

The client is aiohttp, one event loop in this process; requests are signed
with botocore's SigV4 signer (``UNSIGNED-PAYLOAD``, so bodies stream), signed
before the timed spans where they can be. It runs on the same machine as the
cluster and competes with it for the CPUs: every phase prints the seconds of
CPU used by this client and by the gateway, and how busy the whole machine
was.

It prints numbers and never asserts timings. A wrong byte (md5 or ETag
mismatch, wrong length) or a failed request is an error: it is printed (with
the tail of the gateway's log) and the exit status is 1; a phase goes on past
failed requests (up to 20) and its row says how many failed. A cluster this
script started is always stopped and its directory removed, also on Ctrl-C or
SIGTERM (after errors its logs are copied to a ``nimbus-bench-logs-*``
directory first); objects and the bucket it created are deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    KIB,
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
    get,
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
from services.common.config import GatewayConfig
from services.local import cluster

SMALL_BYTES = 4 * KIB
SMALL_CONCURRENCY = 16
LARGE_LEVELS = (1, 4)
SAMPLE_INTERVAL_S = 0.1
NODES, K = 6, 4
#: Started when ``--dir`` names no running cluster.
CLUSTER = ClusterSpec(f"a {NODES}-node cluster (k={K})", nodes=NODES, k=K)


# --- measuring the gateway process and the machine ----------------------------


def proc_status_kib(pid: int, field_name: str) -> int | None:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/<pid>/status, in KiB; None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_hwm(pid: int) -> bool:
    """Reset the process's VmHWM to its current RSS (Linux clear_refs "5")."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssSampler:
    """Samples the gateway's VmRSS every 100 ms in a thread (the event loop may be busy)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak_kib = 0
        self.samples = 0

    def _sample(self) -> None:
        rss = proc_status_kib(self._pid, "VmRSS")
        if rss is not None:
            self.peak_kib = max(self.peak_kib, rss)
            self.samples += 1

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


@dataclass
class Usage:
    """What one timed span cost: wall time, CPU of client and gateway, machine load, RSS."""

    seconds: float = 0.0
    client_cpu_s: float = 0.0
    gateway_cpu_s: float = 0.0
    machine_busy_pct: float = 0.0
    rss_before_kib: int = 0
    rss_peak_kib: int = 0
    rss_samples: int = 0
    hwm_end_kib: int | None = None
    hwm_was_reset: bool = False

    def line(self, cpus: int) -> str:
        return (
            f"cpu: client {self.client_cpu_s:.1f} s, gateway {self.gateway_cpu_s:.1f} s, "
            f"machine {self.machine_busy_pct:.0f}% of {cpus} cpus busy; gateway RSS "
            f"{self.rss_before_kib / KIB:.0f} -> peak {self.rss_peak_kib / KIB:.0f} MiB"
        )


@contextlib.asynccontextmanager
async def measured(pid: int, reset_peak: bool = False) -> AsyncIterator[Usage]:
    """Time the body of the ``async with`` and fill the yielded Usage on exit."""
    usage = Usage()
    if reset_peak:
        usage.hwm_was_reset = reset_hwm(pid)
    usage.rss_before_kib = proc_status_kib(pid, "VmRSS") or 0
    busy0, total0 = machine_ticks()
    client0, gateway0 = time.process_time(), proc_cpu_s(pid)
    started = time.perf_counter()
    with RssSampler(pid) as sampler:
        yield usage
        usage.seconds = time.perf_counter() - started
    usage.client_cpu_s = time.process_time() - client0
    usage.gateway_cpu_s = proc_cpu_s(pid) - gateway0
    busy1, total1 = machine_ticks()
    usage.machine_busy_pct = 100.0 * (busy1 - busy0) / max(1, total1 - total0)
    usage.rss_peak_kib = sampler.peak_kib
    usage.rss_samples = sampler.samples
    usage.hwm_end_kib = proc_status_kib(pid, "VmHWM")


# --- results --------------------------------------------------------------------


@dataclass
class Row:
    phase: str
    concurrency: int
    object_bytes: int
    usage: Usage
    outcome: Outcome[Any]

    @property
    def count(self) -> int:
        return len(self.outcome.succeeded)

    @property
    def failed(self) -> int:
        return len(self.outcome.errors)

    @property
    def total_bytes(self) -> int:
        return self.count * self.object_bytes

    @property
    def mib_per_s(self) -> float:
        return self.total_bytes / MIB / self.usage.seconds

    @property
    def ops_per_s(self) -> float:
        return self.count / self.usage.seconds

    def percentile_ms(self, pct: int) -> float:
        latencies = self.outcome.latencies
        if len(latencies) < 2:
            return 1000 * (latencies[0] if latencies else float("nan"))
        return 1000 * statistics.quantiles(latencies, n=100, method="inclusive")[pct - 1]

    @property
    def size_label(self) -> str:
        if self.object_bytes >= MIB:
            return f"{self.object_bytes / MIB:g} MiB"
        return f"{self.object_bytes / KIB:g} KiB"

    @property
    def failure_note(self) -> str:
        if not self.failed:
            return ""
        return f"  [{self.failed} of {self.outcome.attempted} FAILED: not a valid measurement]"

    def line(self, cpus: int) -> str:
        head = (
            f"{self.phase:<7} {self.size_label:>9} x {self.count:<5} concurrency "
            f"{self.concurrency:>2}: "
        )
        if self.object_bytes >= MIB:
            rate = (
                f"{self.mib_per_s:>7.1f} MiB/s, p50 {self.percentile_ms(50) / 1000:.2f} s "
                f"per object ({self.total_bytes / MIB:.0f} MiB"
            )
        else:
            rate = (
                f"{self.ops_per_s:>7.0f} ops/s, p50 {self.percentile_ms(50):.1f} ms, "
                f"p99 {self.percentile_ms(99):.1f} ms ({self.count} ops"
            )
        return (
            f"{head}{rate} in {self.usage.seconds:.2f} s){self.failure_note}\n"
            f"    {self.usage.line(cpus)}"
        )


@dataclass
class BigResult:
    size: int
    put: Usage | None = None
    get: Usage | None = None


@dataclass
class Report:
    cpus: int
    rows: list[Row] = field(default_factory=list)
    big: BigResult | None = None
    errors: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(row.line(self.cpus), flush=True)
        if row.failed:
            first = "\n      ".join(row.outcome.errors[:3])
            self.error(
                f"{row.phase} {row.size_label}: {row.failed} request(s) failed; first: {first}"
            )

    def error(self, message: str) -> None:
        record_error(self.errors, message)


# --- phases -----------------------------------------------------------------------


async def large_objects(
    s3: S3, bucket: str, pattern: Pattern, object_bytes: int, report: Report
) -> None:
    for concurrency in LARGE_LEVELS:
        count = max(4, 2 * concurrency)
        keys = [f"large/c{concurrency}/{j}" for j in range(count)]
        try:
            await large_level(s3, bucket, pattern, object_bytes, concurrency, keys, report)
        finally:
            await delete_all(s3, bucket, keys, 4, report)


async def large_level(
    s3: S3,
    bucket: str,
    pattern: Pattern,
    object_bytes: int,
    concurrency: int,
    keys: Sequence[str],
    report: Report,
) -> None:
    """PUT ``keys`` (timed), then GET the stored ones (timed) and verify their md5 (untimed)."""
    pid, count = s3.endpoint.pid, len(keys)
    urls = [s3.url(bucket, key) for key in keys]
    bodies = [pattern.body(1000 * concurrency + j, object_bytes) for j in range(count)]
    digests = [hashlib.md5(body).hexdigest() for body in bodies]
    puts = [
        functools.partial(put, s3, url, s3.sign("PUT", url), body, object_bytes, digest, key)
        for url, body, digest, key in zip(urls, bodies, digests, keys, strict=True)
    ]
    async with measured(pid) as usage:
        outcome: Outcome[Any] = await run_workers(puts, concurrency)
    report.add(Row("PUT", concurrency, object_bytes, usage, outcome))
    del bodies, puts
    stored = sorted(outcome.succeeded)
    if not stored:
        return

    got: dict[int, bytes] = {}

    async def fetch(j: int, headers: dict[str, str]) -> None:
        got[j] = await get(s3, urls[j], headers, keys[j])

    gets = [functools.partial(fetch, j, s3.sign("GET", urls[j])) for j in stored]
    async with measured(pid) as usage:
        outcome = await run_workers(gets, concurrency)
    for j, body in got.items():  # verified outside the timed span
        digest = hashlib.md5(body).hexdigest()
        if len(body) != object_bytes or digest != digests[j]:
            report.error(
                f"WRONG BYTES: GET {keys[j]}: {len(body)} bytes with md5 {digest}, "
                f"stored {object_bytes} bytes with md5 {digests[j]}"
            )
    report.add(Row("GET", concurrency, object_bytes, usage, outcome))


async def delete_all(
    s3: S3, bucket: str, keys: Sequence[str], concurrency: int, report: Report
) -> Outcome[None]:
    """DELETE every key (a missing one is fine); failures are reported."""
    outcome = await run_workers(deletions(s3, bucket, keys), concurrency)
    for error in outcome.errors[:3]:
        report.error(error)
    return outcome


async def small_objects(s3: S3, bucket: str, count: int, report: Report) -> None:
    """PUT ``count`` 4 KiB objects, GET the stored ones back (each compared), DELETE all."""
    pid = s3.endpoint.pid
    keys = [f"small/{i:06d}" for i in range(count)]
    urls = [s3.url(bucket, key) for key in keys]
    bodies = [os.urandom(SMALL_BYTES) for _ in keys]
    puts = [
        functools.partial(
            put, s3, url, s3.sign("PUT", url), body, SMALL_BYTES, hashlib.md5(body).hexdigest(), key
        )
        for url, body, key in zip(urls, bodies, keys, strict=True)
    ]
    async with measured(pid) as usage:
        outcome: Outcome[Any] = await run_workers(puts, SMALL_CONCURRENCY)
    report.add(Row("PUT", SMALL_CONCURRENCY, SMALL_BYTES, usage, outcome))

    wrong: list[str] = []

    async def fetch(i: int, headers: dict[str, str]) -> None:
        got = await get(s3, urls[i], headers, keys[i])
        if got != bodies[i]:
            wrong.append(keys[i])
            raise BenchError(
                f"WRONG BYTES: GET {keys[i]}: {len(got)} bytes differ from the {SMALL_BYTES} stored"
            )

    stored = sorted(outcome.succeeded)
    gets = [functools.partial(fetch, i, s3.sign("GET", urls[i])) for i in stored]
    if gets:
        async with measured(pid) as usage:
            outcome = await run_workers(gets, SMALL_CONCURRENCY)
        report.add(Row("GET", SMALL_CONCURRENCY, SMALL_BYTES, usage, outcome))
        if wrong:
            report.error(f"WRONG BYTES in {len(wrong)} small object(s): {', '.join(wrong[:5])}")

    async with measured(pid) as usage:
        outcome = await run_workers(deletions(s3, bucket, keys), SMALL_CONCURRENCY)
    report.add(Row("DELETE", SMALL_CONCURRENCY, SMALL_BYTES, usage, outcome))


async def big_object(s3: S3, bucket: str, pattern: Pattern, size: int, report: Report) -> None:
    pid = s3.endpoint.pid
    key, stream = "big/0", 7
    url = s3.url(bucket, key)
    report.big = big = BigResult(size)
    print(f"computing the md5 of the {size / MIB:g} MiB stream (untimed) ...", flush=True)
    md5_hex = pattern.md5(stream, size)

    async def body() -> AsyncIterator[bytes]:
        for piece in pattern.chunks(stream, size):
            yield piece

    try:
        async with measured(pid, reset_peak=True) as usage:
            await put(s3, url, s3.sign("PUT", url), body(), size, md5_hex, key)
        big.put = usage
        print(big_line("PUT", size, usage), flush=True)

        async with measured(pid, reset_peak=True) as usage:
            received, digest = await get_md5(s3, url, s3.sign("GET", url), key)
        if received != size or digest != md5_hex:
            raise BenchError(
                f"GET {key}: {received} bytes with md5 {digest}, "
                f"stored {size} bytes with md5 {md5_hex}"
            )
        big.get = usage
        print(big_line("GET", size, usage), flush=True)
    except BenchError as exc:
        report.error(str(exc))
    finally:
        await delete_all(s3, bucket, [key], 1, report)


def big_line(method: str, size: int, usage: Usage) -> str:
    hwm = "?" if usage.hwm_end_kib is None else f"{usage.hwm_end_kib / KIB:.0f}"
    return (
        f"{method:<7} {size / MIB:>5g} MiB x 1     streamed:       "
        f"{size / MIB / usage.seconds:>7.1f} MiB/s ({usage.seconds:.1f} s)\n"
        f"    gateway RSS: before {usage.rss_before_kib / KIB:.1f} MiB, peak during "
        f"{usage.rss_peak_kib / KIB:.1f} MiB ({usage.rss_samples} samples), "
        f"peak - before {(usage.rss_peak_kib - usage.rss_before_kib) / KIB:+.1f} MiB; "
        f"VmHWM at end {hwm} MiB"
        f" ({'reset before' if usage.hwm_was_reset else 'lifetime: reset not allowed'})\n"
        f"    cpu: client {usage.client_cpu_s:.1f} s, gateway {usage.gateway_cpu_s:.1f} s, "
        f"machine {usage.machine_busy_pct:.0f}% busy"
    )


# --- the benchmark ------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    object_bytes: int
    small_count: int
    big_bytes: int
    skip_big: bool


async def measure(endpoint: Endpoint, options: Options, report: Report) -> None:
    async with client_session() as session:
        s3 = S3(endpoint, session)
        bucket = f"bench-{uuid.uuid4().hex[:12]}"
        await simple(s3, "PUT", s3.url(bucket), (200,), f"bucket {bucket}")
        try:
            pattern = Pattern()
            # Warm-up (untimed): connections, database pool, first value files.
            warm = pattern.body(1, MIB)
            warm_url = s3.url(bucket, "warm-up")
            digest = hashlib.md5(warm).hexdigest()
            await put(s3, warm_url, s3.sign("PUT", warm_url), warm, MIB, digest, "warm-up")
            if await get(s3, warm_url, s3.sign("GET", warm_url), "warm-up") != warm:
                raise BenchError("GET warm-up: the body differs from what was stored")
            await simple(s3, "DELETE", warm_url, (204, 200), "warm-up")

            # The streamed object first: the gateway has done nothing but the
            # warm-up, so its RSS baseline holds no memory the allocator kept
            # from the concurrent 64 MiB uploads.
            if not options.skip_big:
                await big_object(s3, bucket, pattern, options.big_bytes, report)
            await large_objects(s3, bucket, pattern, options.object_bytes, report)
            await small_objects(s3, bucket, options.small_count, report)
        finally:
            with contextlib.suppress(BenchError):
                await simple(s3, "DELETE", s3.url(bucket), (204, 200), f"bucket {bucket}")


def print_header(
    directory: Path, description: dict[str, Any], endpoint: Endpoint, options: Options
) -> None:
    sequence = description["gateway"].get("sequence_size", GatewayConfig.sequence_size)
    print("Nimbus gateway benchmark (MiB = 2^20 bytes; MiB/s = MiB of object bytes per second)")
    print_machine_facts()
    print(
        f"  cluster:    {len(description['nodes'])} nodes, k={description['k']} "
        f"n={description['n']}, sequence size {sequence / MIB:g} MiB, in {directory}"
    )
    print(f"  gateway:    {endpoint.url} (pid {endpoint.pid})")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"  load avg:   {load} (1, 5, 15 min) at start; other work on the machine skews results")
    print(
        "  client:     aiohttp in this process, requests signed with botocore SigV4 "
        "(UNSIGNED-PAYLOAD);\n              it runs on the same machine and competes "
        "with the cluster for the CPUs"
    )
    big = "skipped" if options.skip_big else f"one {options.big_bytes / MIB:g} MiB object"
    print(
        f"  workload:   {options.object_bytes / MIB:g} MiB objects at concurrency "
        f"{', '.join(str(c) for c in LARGE_LEVELS)}; {options.small_count} x "
        f"{SMALL_BYTES // KIB} KiB at concurrency {SMALL_CONCURRENCY}; streamed: {big}"
    )
    print(flush=True)


def print_summary(report: Report) -> None:
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print()
    print(f"load avg at the end: {load} (1, 5, 15 min)")
    print("Summary (cpu = seconds of CPU used during the timed span; busy = whole machine)")
    print(
        f"  {'op':<7} {'size':>9} {'conc':>4} {'ok':>5} {'failed':>6} {'MiB/s':>7} "
        f"{'ops/s':>6} {'p50 ms':>7} {'p99 ms':>7} {'client cpu':>10} {'gw cpu':>7} "
        f"{'busy':>5} {'gw RSS peak':>11}"
    )
    for row in report.rows:
        usage = row.usage
        print(
            f"  {row.phase:<7} {row.size_label:>9} {row.concurrency:>4} {row.count:>5} "
            f"{row.failed:>6} {row.mib_per_s:>7.1f} {row.ops_per_s:>6.0f} "
            f"{row.percentile_ms(50):>7.1f} {row.percentile_ms(99):>7.1f} "
            f"{usage.client_cpu_s:>9.1f}s {usage.gateway_cpu_s:>6.1f}s "
            f"{usage.machine_busy_pct:>4.0f}% {usage.rss_peak_kib / KIB:>7.0f} MiB"
        )
    big = report.big
    if big is None:
        return
    print(f"  one {big.size / MIB:g} MiB object, streamed (gateway RSS sampled every 100 ms):")
    for method, result in (("PUT", big.put), ("GET", big.get)):
        if result is None:
            print(f"  {method:<7} failed (see the errors)")
            continue
        hwm = "?" if result.hwm_end_kib is None else f"{result.hwm_end_kib / KIB:.0f}"
        print(
            f"  {method:<7} {big.size / MIB / result.seconds:7.1f} MiB/s in "
            f"{result.seconds:.1f} s; gateway RSS before {result.rss_before_kib / KIB:.0f} MiB, "
            f"peak {result.rss_peak_kib / KIB:.0f} MiB, peak - before "
            f"{(result.rss_peak_kib - result.rss_before_kib) / KIB:+.0f} MiB, VmHWM {hwm} MiB; "
            f"cpu client {result.client_cpu_s:.1f} s, gateway {result.gateway_cpu_s:.1f} s, "
            f"busy {result.machine_busy_pct:.0f}%"
        )


# --- the gateway process; main ----------------------------------------------------


def gateway_log_tail(directory: Path, lines: int = 30) -> str:
    try:
        text = (directory / "logs" / "gateway.log").read_text(errors="replace")
    except OSError as exc:
        return f"(no gateway log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def parse_args(argv: Sequence[str] | None) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.gateway", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--object-mib", type=float, default=64, help="size of large objects")
    parser.add_argument("--small-count", type=int, default=2000, help="number of 4 KiB objects")
    parser.add_argument(
        "--big-mib", type=float, default=2048, help="size of the streamed object (default 2 GiB)"
    )
    parser.add_argument("--skip-2gib", action="store_true", help="skip the streamed object")
    add_dir_argument(parser)
    args = parser.parse_args(argv)
    options = Options(
        int(args.object_mib * MIB), args.small_count, int(args.big_mib * MIB), args.skip_2gib
    )
    if options.object_bytes < 1 or options.small_count < 1 or options.big_bytes < 1:
        parser.error("--object-mib, --small-count and --big-mib must be positive")
    return options, args.dir


def main(argv: Sequence[str] | None = None) -> int:
    options, given_dir = parse_args(argv)

    def body(directory: Path, description: dict[str, Any]) -> int:
        report = Report(os.cpu_count() or 1)
        endpoint = gateway_endpoint(directory, description)
        print_header(directory, description, endpoint, options)
        try:
            asyncio.run(measure(endpoint, options, report))
        except BenchError as exc:
            report.error(str(exc))
        if not cluster.process_table(directory).get("gateway", {}).get("alive"):
            report.error("the gateway process is no longer running")
        print_summary(report)
        if report.errors:
            print_errors(report.errors, blank_line_before=True)
            print(f"\ntail of {directory}/logs/gateway.log:", file=sys.stderr)
            print(gateway_log_tail(directory), file=sys.stderr)
            return 1
        return 0

    resolved = None if given_dir is None else given_dir.resolve()
    return run_on_cluster(resolved, CLUSTER, body, keep_logs_on_error=True)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
