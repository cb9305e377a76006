"""What the benchmarks share: the cluster's lifetime, signals, the machine header,
and for the S3 benchmarks (gateway, handoff) the test data, CPU accounting and
a small signed S3 client that runs batches of requests.

A benchmark parses its options, then hands :func:`run_on_cluster` the body
that measures. ``run_on_cluster`` starts a local cluster in a fresh temporary
directory (or in ``--dir``, or uses the cluster already running there), runs
the body, and always stops a cluster it started, also on Ctrl-C or SIGTERM,
printing how long each step took.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import os
import platform
import shutil
import signal
import struct
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiohttp
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from services.local import cluster, postgres

KIB = 1024
MIB = 1024 * KIB

#: What the body of a benchmark is given: the cluster's directory and its
#: description (cluster.json); it returns the exit status.
Body = Callable[[Path, dict[str, Any]], int]

#: The size of the chunks :class:`Pattern` makes and GETs are streamed in.
CHUNK_BYTES = 1 * MIB
#: The random block :class:`Pattern` slices its chunks from.
PATTERN_BYTES = 16 * MIB
#: Failures after which :func:`run_workers` starts no new request.
MAX_ERRORS = 20
#: The S3 client's timeouts: no limit on a whole request, 5 minutes of silence.
TIMEOUT = aiohttp.ClientTimeout(total=None, connect=30, sock_connect=30, sock_read=300)

T = TypeVar("T")


class BenchError(Exception):
    """A request failed or data read back differently: the run is not valid."""


# --- options ------------------------------------------------------------------


def add_dir_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--dir``, the cluster directory every benchmark accepts."""
    parser.add_argument(
        "--dir",
        type=Path,
        help="cluster directory: an existing cluster (DIR/cluster.json) is used and left "
        "running; otherwise one is started there and stopped afterwards (DIR is kept)",
    )


# --- the machine --------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def print_machine_facts() -> None:
    """Print the header's ``cpus``, ``python`` and ``platform`` lines."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"  cpus:       {os.cpu_count()} ({usable} usable), {cpu_model()}")
    print(f"  python:     {platform.python_implementation()} {platform.python_version()}")
    print(f"  platform:   {platform.platform()}")


def print_errors(errors: Sequence[str], *, blank_line_before: bool = False) -> None:
    """Print the count of ``errors`` and each of them to stderr."""
    heading = f"{len(errors)} error(s):"
    print("\n" + heading if blank_line_before else heading, file=sys.stderr)
    for error in errors:
        print(f"  ERROR: {error}", file=sys.stderr)


def record_error(errors: list[str], message: str) -> None:
    """Append ``message`` to ``errors`` and print it to stderr at once, as ``ERROR: ...``."""
    errors.append(message)
    print(f"ERROR: {message}", file=sys.stderr, flush=True)


# --- cluster lifetime ---------------------------------------------------------


@dataclass(frozen=True)
class ClusterSpec:
    """The cluster a benchmark starts when ``--dir`` names no running one."""

    #: How the start-up message names it: "starting {label} in DIR ...".
    label: str
    nodes: int
    k: int
    #: None: as many shares as nodes.
    n: int | None = None


@dataclass(frozen=True)
class ClusterPlace:
    """Where the cluster lives and what this run must do with it afterwards."""

    directory: Path
    #: This run starts the cluster, so it stops it too.
    owned: bool
    #: This run created the directory, so it removes it too.
    wipe: bool


def choose_place(given_dir: Path | None) -> ClusterPlace:
    """Use ``given_dir``'s running cluster, start one there, or in a new temporary directory."""
    if given_dir is not None and (given_dir / "cluster.json").exists():
        return ClusterPlace(given_dir, owned=False, wipe=False)
    if given_dir is not None:
        return ClusterPlace(given_dir, owned=True, wipe=False)
    directory = Path(tempfile.mkdtemp(prefix="nimbus-bench-"))
    directory.chmod(0o711)  # Postgres runs as `postgres` when we are root
    return ClusterPlace(directory, owned=True, wipe=True)


def start_or_load(place: ClusterPlace, spec: ClusterSpec) -> dict[str, Any]:
    """Start the cluster (if ``place`` is owned) or load the running one; its description."""
    if place.owned:
        print(f"starting {spec.label} in {place.directory} ...", flush=True)
        up_began = time.monotonic()
        description = asyncio.run(cluster.up(place.directory, nodes=spec.nodes, k=spec.k, n=spec.n))
        print(f"cluster up in {time.monotonic() - up_began:.1f} s", flush=True)
        return description
    description = cluster.load_cluster(place.directory)
    print(f"using the running cluster in {place.directory}", flush=True)
    return description


def teardown(directory: Path, wipe: bool, keep_logs: bool = False) -> None:
    """Stop the cluster we started, whatever state start-up reached; never raises.

    Ctrl-C is ignored meanwhile. ``wipe`` removes ``directory`` afterwards;
    ``keep_logs``: before wiping, copy DIR/logs to a new temporary directory.
    """
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        try:
            cluster.down(directory, wipe=False)
        except Exception as exc:
            print(f"warning: stopping the cluster failed: {exc}", file=sys.stderr)
        # An interrupted `up` may have started Postgres before writing cluster.json.
        data_dir = directory / "postgres"
        if data_dir.is_dir():
            run_as = postgres.SYSTEM_USER if os.geteuid() == 0 else None
            try:
                postgres.stop_postgres(postgres.PrivatePostgres(data_dir, 0, run_as))
            except Exception as exc:
                print(f"warning: stopping Postgres in {data_dir} failed: {exc}", file=sys.stderr)
        if wipe and keep_logs:
            keep_cluster_logs(directory)
        if wipe:
            shutil.rmtree(directory, ignore_errors=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def keep_cluster_logs(directory: Path) -> None:
    """Copy DIR/logs (if any) to a new ``nimbus-bench-logs-*`` directory; never raises."""
    if not (directory / "logs").is_dir():
        return
    kept = Path(tempfile.mkdtemp(prefix="nimbus-bench-logs-")) / "logs"
    try:
        shutil.copytree(directory / "logs", kept)
        print(f"the cluster's logs are kept in {kept}", file=sys.stderr)
    except OSError as exc:
        print(f"warning: keeping the logs failed: {exc}", file=sys.stderr)


def sigterm_interrupts() -> None:
    """Make SIGTERM end the run like Ctrl-C does, so the cluster is still torn down."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def run_on_cluster(
    given_dir: Path | None,
    spec: ClusterSpec,
    body: Body,
    *,
    keep_logs_on_error: bool = False,
) -> int:
    """Run ``body`` on a cluster and return the exit status; what ``main`` does.

    The cluster is the one running in ``given_dir``, else one started there
    (or in a new temporary directory, removed afterwards) and always stopped
    again. A BenchError or a cluster or Postgres error is printed and makes
    the status 1; Ctrl-C or SIGTERM makes it 130. ``keep_logs_on_error``: a
    failed run copies the cluster's logs before its directory is removed.
    """
    began = time.monotonic()
    sigterm_interrupts()
    place = choose_place(given_dir)
    code = 0
    try:
        description = start_or_load(place, spec)
        code = body(place.directory, description)
    except (BenchError, cluster.LocalClusterError, postgres.PostgresError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    finally:
        if place.owned:
            down_began = time.monotonic()
            teardown(place.directory, place.wipe, keep_logs=keep_logs_on_error and code != 0)
            print(f"cluster stopped in {time.monotonic() - down_began:.1f} s", flush=True)
    print(f"total wall time {time.monotonic() - began:.1f} s", flush=True)
    return code


# --- data -----------------------------------------------------------------------


class Pattern:
    """Deterministic, distinct 1 MiB chunks: a stamp plus a slice of random bytes.

    Chunk ``i`` of stream ``s`` is ``(s, i)`` packed in 16 bytes followed by
    a slice of a 16 MiB random block at an offset that depends on both, so no
    two chunks (and no two sequences) of any object are equal.
    """

    def __init__(self) -> None:
        self._random = os.urandom(PATTERN_BYTES)

    def chunk(self, stream: int, index: int, size: int = CHUNK_BYTES) -> bytes:
        """Chunk ``index`` of ``stream``, ``size`` bytes long."""
        stamp = struct.pack(">QQ", stream, index)
        offset = ((stream * 1_000_003 + index) * 4_093) % (PATTERN_BYTES - size)
        return (stamp + self._random[offset : offset + size - len(stamp)])[:size]

    def chunks(self, stream: int, size: int) -> Iterator[bytes]:
        """The chunks of the ``size``-byte body of ``stream``, the last one short."""
        for index, start in enumerate(range(0, size, CHUNK_BYTES)):
            yield self.chunk(stream, index, min(CHUNK_BYTES, size - start))

    def body(self, stream: int, size: int) -> bytes:
        """The ``size``-byte body of ``stream`` in one piece."""
        return b"".join(self.chunks(stream, size))

    def md5(self, stream: int, size: int) -> str:
        """The hex md5 of :meth:`body`, computed chunk by chunk."""
        digest = hashlib.md5()
        for piece in self.chunks(stream, size):
            digest.update(piece)
        return digest.hexdigest()


# --- CPU accounting -------------------------------------------------------------


def proc_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds used so far by ``pid`` (all its threads); NaN if it is gone."""
    if pid is None:
        return float("nan")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    # After the comm field: state is fields[0], utime is field 14 (fields[11]).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    total = sum(values[:8])  # guest time is already counted in user
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return total - idle, total


# --- S3 client --------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """The gateway's S3 address, credentials and region, and its process id."""

    url: str
    access_key: str
    secret_key: str
    region: str
    pid: int


def gateway_endpoint(directory: Path, description: dict[str, Any]) -> Endpoint:
    """The running gateway of the cluster in ``directory``; BenchError if it is not running."""
    entry = cluster.process_table(directory).get("gateway")
    if entry is None or not entry.get("alive"):
        raise BenchError(f"no running gateway in {directory}/processes.json")
    gateway = description["gateway"]
    return Endpoint(
        gateway["url"],
        gateway["access_key"],
        gateway["secret_key"],
        gateway["region"],
        int(entry["pid"]),
    )


def client_session() -> aiohttp.ClientSession:
    """A session of up to 64 connections with :data:`TIMEOUT`; use it in ``async with``."""
    connector = aiohttp.TCPConnector(limit=64)
    return aiohttp.ClientSession(connector=connector, timeout=TIMEOUT)


class S3:
    """Signed S3 requests over one aiohttp session (path-style addressing)."""

    def __init__(self, endpoint: Endpoint, session: aiohttp.ClientSession) -> None:
        self.endpoint = endpoint
        self.session = session
        self._auth = S3SigV4Auth(
            Credentials(endpoint.access_key, endpoint.secret_key), "s3", endpoint.region
        )
        # Over http botocore signs the payload's sha256 unless told not to.
        self._config = Config(s3={"payload_signing_enabled": False})

    def url(self, bucket: str, key: str = "") -> str:
        """The URL of ``bucket``, or of ``key`` in it."""
        return f"{self.endpoint.url}/{bucket}" + (f"/{key}" if key else "")

    def sign(self, method: str, url: str) -> dict[str, str]:
        """The SigV4 headers (``UNSIGNED-PAYLOAD``) of a ``method`` request to ``url``."""
        request = AWSRequest(
            method=method, url=url, headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}
        )
        request.context["client_config"] = self._config
        self._auth.add_auth(request)
        return dict(request.headers.items())

    async def admin_json(self, path: str) -> dict[str, Any]:
        """GET an unsigned admin document (``/-/health``, ``/-/status``), whatever its status."""
        try:
            async with self.session.get(
                f"{self.endpoint.url}{path}", timeout=aiohttp.ClientTimeout(total=10)
            ) as response:
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise BenchError(f"GET {path}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(document, dict):
            raise BenchError(f"GET {path}: not a JSON object: {document!r:.200}")
        return document


async def _error(response: aiohttp.ClientResponse, what: str) -> BenchError:
    """The BenchError for an unexpected answer: status, request id, start of the body."""
    body = (await response.read())[:600].decode("utf-8", "replace")
    request_id = response.headers.get("x-amz-request-id", "-")
    return BenchError(f"{what}: HTTP {response.status} (request id {request_id}): {body}")


async def put(
    s3: S3,
    url: str,
    headers: dict[str, str],
    body: bytes | AsyncIterator[bytes],
    size: int,
    md5_hex: str,
    what: str,
) -> str:
    """PUT ``body`` (``size`` bytes); the ETag must be its md5.

    Returns the answer's ``x-nimbus-shares`` header ("" if it has none).
    """
    headers = {**headers, "Content-Length": str(size), "Content-Type": "application/octet-stream"}
    try:
        async with s3.session.put(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise await _error(response, f"PUT {what}")
            await response.read()
            etag = response.headers.get("ETag", "").strip('"')
            shares = response.headers.get("x-nimbus-shares", "")
    except aiohttp.ClientError as exc:
        raise BenchError(f"PUT {what}: {type(exc).__name__}: {exc}") from exc
    if etag != md5_hex:
        raise BenchError(f"PUT {what}: ETag {etag!r}, the body's md5 is {md5_hex}")
    return shares


async def get(s3: S3, url: str, headers: dict[str, str], what: str) -> bytes:
    """GET ``url`` with the signed ``headers``; the whole body."""
    try:
        async with s3.session.get(url, headers=headers) as response:
            if response.status != 200:
                raise await _error(response, f"GET {what}")
            return await response.read()
    except aiohttp.ClientError as exc:
        raise BenchError(f"GET {what}: {type(exc).__name__}: {exc}") from exc


async def get_md5(s3: S3, url: str, headers: dict[str, str], what: str) -> tuple[int, str]:
    """Stream a GET through md5: (bytes received, hex digest)."""
    digest = hashlib.md5()
    received = 0
    try:
        async with s3.session.get(url, headers=headers) as response:
            if response.status != 200:
                raise await _error(response, f"GET {what}")
            async for piece in response.content.iter_chunked(CHUNK_BYTES):
                digest.update(piece)
                received += len(piece)
    except aiohttp.ClientError as exc:
        raise BenchError(f"GET {what} after {received} bytes: {type(exc).__name__}: {exc}") from exc
    return received, digest.hexdigest()


async def simple(s3: S3, method: str, url: str, ok: tuple[int, ...], what: str) -> None:
    """A signed ``method`` request without a body; its status must be in ``ok``."""
    try:
        async with s3.session.request(method, url, headers=s3.sign(method, url)) as response:
            if response.status not in ok:
                raise await _error(response, f"{method} {what}")
            await response.read()
    except aiohttp.ClientError as exc:
        raise BenchError(f"{method} {what}: {type(exc).__name__}: {exc}") from exc


def deletions(s3: S3, bucket: str, keys: Sequence[str]) -> list[Callable[[], Awaitable[None]]]:
    """Jobs for :func:`run_workers` that DELETE each key (a missing one is fine)."""
    return [
        functools.partial(simple, s3, "DELETE", s3.url(bucket, key), (204, 200), key)
        for key in keys
    ]


# --- running a batch --------------------------------------------------------------


@dataclass
class Outcome(Generic[T]):
    """What a batch of jobs did: per succeeded job its index, latency and result; the failures."""

    attempted: int = 0
    #: Job index -> what it returned, in the order the jobs finished.
    results: dict[int, T] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> list[int]:
        """The indexes of the jobs that succeeded, in the order they finished."""
        return list(self.results)


async def run_workers(jobs: Sequence[Callable[[], Awaitable[T]]], concurrency: int) -> Outcome[T]:
    """Run the jobs, ``concurrency`` at a time, counting failures.

    A job that raises BenchError is a failure; after MAX_ERRORS failures no
    new job starts (a broken cluster would otherwise make every one wait for
    a timeout).
    """
    outcome: Outcome[T] = Outcome()
    queue = iter(enumerate(jobs))

    async def worker() -> None:
        for index, job in queue:  # shared: each job goes to exactly one worker
            if len(outcome.errors) >= MAX_ERRORS:
                return
            outcome.attempted += 1
            started = time.perf_counter()
            try:
                result = await job()
            except BenchError as exc:
                outcome.errors.append(str(exc))
                continue
            outcome.latencies.append(time.perf_counter() - started)
            outcome.results[index] = result

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcome
