"""What the benchmarks share: the cluster's lifetime, signals, the machine header.

A benchmark parses its options, then hands :func:`run_on_cluster` the body
that measures. ``run_on_cluster`` starts a local cluster in a fresh temporary
directory (or in ``--dir``, or uses the cluster already running there), runs
the body, and always stops a cluster it started, also on Ctrl-C or SIGTERM,
printing how long each step took.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.local import cluster, postgres

KIB = 1024
MIB = 1024 * KIB

#: What the body of a benchmark is given: the cluster's directory and its
#: description (cluster.json); it returns the exit status.
Body = Callable[[Path, dict[str, Any]], int]


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
