"""Benchmark of the storage spine: one writer's archive and one reader's retrieve.

    python -m bench.spine [--total-mib 64] [--piece-kib 1024] [--concurrency 1,4] [--dir DIR]

Brings up a one-node local cluster (k=1, n=1) in a fresh temporary directory
(or uses the cluster already running in ``--dir`` when DIR/cluster.json
exists), then, for every concurrency level C:

* writer, start/next/final: TOTAL bytes of random shares as C concurrent
  archives of TOTAL/C each, sent piece by piece (each piece awaited before
  the next, as a gateway does); the writer fsyncs before answering a final;
* writer, entire: TOTAL bytes as many 1 MiB ``archive-key-entire`` messages,
  C in flight (each fsynced before its reply);
* reader: everything just stored, retrieved with start/next until completed,
  the same C, and compared byte for byte with what was sent.

It prints numbers and never asserts timings. A share that does not read back
identical, or a request that fails, is a correctness error: it is printed and
the exit status is 1. The random bytes, the requests' headers (md5, adler32)
and the comparison are all prepared or done outside the timed spans. Reads
come right after the writes, so they are served from the page cache.

A cluster this script started is always stopped and its directory removed,
also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    KIB,
    MIB,
    BenchError,
    ClusterSpec,
    add_dir_argument,
    print_errors,
    print_machine_facts,
    run_on_cluster,
)
from services.common import messages
from services.common.messages import FileInfo, SegmentRef
from services.common.protocol import Header, Message
from services.common.rpc import RpcClient, RpcTimeout
from services.common.unified_id import UnifiedIdGenerator

ENTIRE_BYTES = 1 * MIB
COLLECTION_ID = 1
REQUEST_TIMEOUT_S = 60.0
PING_TIMEOUT_S = 10.0
#: Started when ``--dir`` names no running cluster.
CLUSTER = ClusterSpec("a 1-node cluster", nodes=1, k=1, n=1)


@dataclass(frozen=True)
class Planned:
    """One archive, ready to send: its requests in order, headers prebuilt."""

    ref: SegmentRef
    offset: int
    size: int
    requests: list[tuple[Header, bytes]]


@dataclass(frozen=True)
class Stored:
    """One archive that was stored: where its bytes lie in the source data."""

    ref: SegmentRef
    offset: int
    size: int
    pieces: int


@dataclass(frozen=True)
class Row:
    role: str
    variant: str
    piece_bytes: int
    concurrency: int
    total_bytes: int
    pieces: int
    seconds: float

    @property
    def mib_per_s(self) -> float:
        return self.total_bytes / MIB / self.seconds

    @property
    def pieces_per_s(self) -> float:
        return self.pieces / self.seconds

    def line(self) -> str:
        return (
            f"{self.role:<16} {self.variant:<17} pieces {self.piece_bytes // KIB:>5} KiB  "
            f"concurrency {self.concurrency:>2}: {self.mib_per_s:>8.1f} MiB/s  "
            f"{self.pieces_per_s:>8.1f} pieces/s  "
            f"({self.total_bytes / MIB:.0f} MiB, {self.pieces} pieces in {self.seconds:.3f} s)"
        )


# --- planning (untimed) -------------------------------------------------------


def _kind(index: int, count: int) -> str:
    if count == 1:
        return "archive-key-entire"
    if index == 0:
        return "archive-key-start"
    return "archive-key-final" if index == count - 1 else "archive-key-next"


def plan_archive(data: bytes, ref: SegmentRef, offset: int, size: int, piece_bytes: int) -> Planned:
    """start/next.../final (or one entire) requests for ``data[offset:offset+size]``."""
    whole = data[offset : offset + size]
    file = FileInfo.of(whole)
    pieces = [whole[i : i + piece_bytes] for i in range(0, size, piece_bytes)]
    requests: list[tuple[Header, bytes]] = []
    for num, piece in enumerate(pieces):
        kind = _kind(num, len(pieces))
        final = kind in ("archive-key-entire", "archive-key-final")
        header = messages.archive(kind, ref, piece, num, file=file if final else None)
        requests.append((header, piece))
    return Planned(ref, offset, size, requests)


def split_evenly(total_bytes: int, piece_bytes: int, parts: int) -> list[tuple[int, int]]:
    """(offset, size) of ``parts`` contiguous spans, cut on piece boundaries."""
    piece_count = -(-total_bytes // piece_bytes)
    base, extra = divmod(piece_count, parts)
    spans: list[tuple[int, int]] = []
    first_piece = 0
    for part in range(parts):
        count = base + (1 if part < extra else 0)
        start = first_piece * piece_bytes
        end = min((first_piece + count) * piece_bytes, total_bytes)
        spans.append((start, end - start))
        first_piece += count
    return spans


def _ref(ids: UnifiedIdGenerator, key: str) -> SegmentRef:
    return SegmentRef(COLLECTION_ID, key, ids.next_id(), segment_num=0)


def plan_pieces(
    data: bytes, ids: UnifiedIdGenerator, run: str, piece_bytes: int, concurrency: int
) -> list[Planned]:
    return [
        plan_archive(data, _ref(ids, f"bench/{run}/{i}"), offset, size, piece_bytes)
        for i, (offset, size) in enumerate(split_evenly(len(data), piece_bytes, concurrency))
    ]


def plan_entire(data: bytes, ids: UnifiedIdGenerator, run: str) -> list[Planned]:
    return [
        plan_archive(
            data,
            _ref(ids, f"bench/{run}/{i}"),
            offset,
            min(ENTIRE_BYTES, len(data) - offset),
            ENTIRE_BYTES,
        )
        for i, offset in enumerate(range(0, len(data), ENTIRE_BYTES))
    ]


# --- requests -----------------------------------------------------------------


def _ok(reply: Message, what: str) -> Message:
    if reply.header.get("result") != "success":
        raise BenchError(
            f"{what}: {reply.header.get('message-type')} {reply.header.get('result')}: "
            f"{reply.header.get('error-message')}"
        )
    return reply


async def archive_all(writer: RpcClient, archives: Sequence[Planned], concurrency: int) -> float:
    """Send every archive, ``concurrency`` at a time; seconds of wall time."""
    queue = iter(archives)

    async def worker() -> None:
        for archive in queue:  # shared: each archive goes to exactly one worker
            for header, payload in archive.requests:
                reply = await writer.request(header, [payload])
                _ok(reply, f"archive {archive.ref.key}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def retrieve_one(reader: RpcClient, ref: SegmentRef) -> list[bytes]:
    """All of a segment's shares, in order: start, then next until completed."""
    retrieve_id = uuid.uuid4().hex
    reply = _ok(await reader.request(messages.retrieve_start(retrieve_id, ref)), ref.key)
    chunks = [reply.payloads[0]]
    while not reply.header.get("completed"):
        reply = _ok(await reader.request(messages.retrieve_next(retrieve_id)), ref.key)
        chunks.append(reply.payloads[0])
    return chunks


async def retrieve_all(
    reader: RpcClient, stored: Sequence[Stored], concurrency: int
) -> tuple[float, list[list[bytes]]]:
    """Retrieve every segment, ``concurrency`` at a time; seconds and the chunks."""
    results: list[list[bytes]] = [[] for _ in stored]
    queue = iter(enumerate(stored))

    async def worker() -> None:
        for index, segment in queue:
            results[index] = await retrieve_one(reader, segment.ref)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, results


def verify(data: bytes, stored: Sequence[Stored], results: Sequence[list[bytes]]) -> None:
    for segment, chunks in zip(stored, results, strict=True):
        got = b"".join(chunks)
        want = data[segment.offset : segment.offset + segment.size]
        if got != want:
            first_diff = next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                min(len(got), len(want)),
            )
            raise BenchError(
                f"{segment.ref.key} (unified-id {segment.ref.unified_id}) read back wrong: "
                f"{len(got)} bytes in {len(chunks)} replies, expected {segment.size} bytes "
                f"in {segment.pieces}; first difference at byte {first_diff}"
            )
        if len(chunks) != segment.pieces:
            raise BenchError(
                f"{segment.ref.key}: {len(chunks)} retrieve replies, stored {segment.pieces} pieces"
            )


# --- the benchmark ------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    total_bytes: int
    piece_bytes: int
    concurrency: list[int]


async def ping(endpoint: str) -> None:
    client = await RpcClient.connect(endpoint, timeout_s=PING_TIMEOUT_S)
    try:
        _ok(await client.request({"message-type": "ping"}), f"ping {endpoint}")
    except RpcTimeout as exc:
        raise BenchError(f"{endpoint} does not answer ping: {exc}") from exc
    finally:
        await client.close()


async def measure(description: dict[str, Any], options: Options, rows: list[Row]) -> list[str]:
    """Append a row per finished run to ``rows``; return the errors met.

    A failed or unanswered archive stops the writer runs (a writer that does
    not answer serves nothing more), but what was stored is still retrieved.
    """
    node = description["nodes"][0]
    await ping(node["writer"])
    await ping(node["reader"])
    ids = UnifiedIdGenerator(shard=random.randrange(1024))
    data = os.urandom(options.total_bytes)
    writer = await RpcClient.connect(node["writer"], timeout_s=REQUEST_TIMEOUT_S)
    reader = await RpcClient.connect(node["reader"], timeout_s=REQUEST_TIMEOUT_S)
    errors: list[str] = []
    try:
        # Warm-up (untimed): first value file, database connections, sockets.
        warm = plan_entire(data[:ENTIRE_BYTES], ids, "warm-up")
        await archive_all(writer, warm, 1)
        await retrieve_one(reader, warm[0].ref)

        runs: list[tuple[str, int, list[Stored]]] = []
        variants = [("start/next/final", c) for c in options.concurrency]
        variants += [("entire", c) for c in options.concurrency]
        for variant, concurrency in variants:
            run = f"{variant.replace('/', '-')}-c{concurrency}-{uuid.uuid4().hex[:8]}"
            if variant == "entire":
                planned, piece_bytes = plan_entire(data, ids, run), ENTIRE_BYTES
            else:
                planned = plan_pieces(data, ids, run, options.piece_bytes, concurrency)
                piece_bytes = options.piece_bytes
            pieces = sum(len(p.requests) for p in planned)
            try:
                seconds = await archive_all(writer, planned, concurrency)
            except (BenchError, RpcTimeout) as exc:
                errors.append(f"writer archive {variant} concurrency {concurrency}: {exc}")
                print(f"ERROR: {errors[-1]}", file=sys.stderr, flush=True)
                break
            row = Row(
                "writer archive", variant, piece_bytes, concurrency, len(data), pieces, seconds
            )
            print(row.line(), flush=True)
            rows.append(row)
            stored = [Stored(p.ref, p.offset, p.size, len(p.requests)) for p in planned]
            runs.append((variant, concurrency, stored))
            del planned

        for variant, concurrency, stored in runs:
            label = "entire (start)" if variant == "entire" else "start/next"
            try:
                seconds, results = await retrieve_all(reader, stored, concurrency)
                verify(data, stored, results)
            except (BenchError, RpcTimeout) as exc:
                errors.append(f"reader retrieve {label} concurrency {concurrency}: {exc}")
                print(f"ERROR: {errors[-1]}", file=sys.stderr, flush=True)
                continue
            piece_bytes = ENTIRE_BYTES if variant == "entire" else options.piece_bytes
            pieces = sum(len(chunks) for chunks in results)
            row = Row(
                "reader retrieve", label, piece_bytes, concurrency, len(data), pieces, seconds
            )
            print(row.line(), flush=True)
            rows.append(row)
            del results
    finally:
        await writer.close()
        await reader.close()
    return errors


def _filesystem_of(path: Path) -> str:
    """``type device`` of the mount holding ``path`` (best effort)."""
    best: tuple[int, str] = (-1, "unknown")
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    resolved = str(path.resolve())
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mount_point, fs_type = fields[0], fields[1], fields[2]
        inside = resolved == mount_point or resolved.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > best[0]:
            best = (len(mount_point), f"{fs_type} ({device} on {mount_point})")
    return best[1]


def print_machine(directory: Path, options: Options) -> None:
    print("Nimbus spine benchmark (MiB = 2^20 bytes; MiB/s = MiB of share bytes per second)")
    print_machine_facts()
    print(f"  data dir:   {directory} on {_filesystem_of(directory)}")
    print(
        f"  workload:   {options.total_bytes / MIB:g} MiB per run, pieces of "
        f"{options.piece_bytes // KIB} KiB, entire messages of {ENTIRE_BYTES // KIB} KiB, "
        f"concurrency {','.join(str(c) for c in options.concurrency)}"
    )
    print("  cluster:    1 node, k=1 n=1, writer fsyncs before answering final/entire")
    print(flush=True)


def print_table(rows: Sequence[Row]) -> None:
    print()
    print("Summary")
    for row in rows:
        print(
            f"  {row.role:<16} {row.variant:<17} pieces {row.piece_bytes // KIB:>5} KiB  "
            f"concurrency {row.concurrency:>2}: {row.mib_per_s:>8.1f} MiB/s  "
            f"{row.pieces_per_s:>8.1f} pieces/s"
        )


# --- main ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.spine", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--total-mib", type=float, default=64, help="MiB stored per run")
    parser.add_argument("--piece-kib", type=int, default=1024, help="size of one piece")
    parser.add_argument(
        "--concurrency", default="1,4", help="comma-separated concurrency levels (default 1,4)"
    )
    add_dir_argument(parser)
    args = parser.parse_args(argv)
    try:
        levels = [int(part) for part in args.concurrency.split(",") if part.strip()]
    except ValueError:
        parser.error(f"--concurrency must be integers separated by commas: {args.concurrency!r}")
    total_bytes = int(args.total_mib * MIB)
    piece_bytes = args.piece_kib * KIB
    if not levels or min(levels) < 1:
        parser.error("--concurrency levels must be >= 1")
    if total_bytes < 1 or piece_bytes < 1:
        parser.error("--total-mib and --piece-kib must be positive")
    if -(-total_bytes // piece_bytes) < max(levels):
        parser.error(
            "fewer pieces than concurrent archives: raise --total-mib or lower --piece-kib"
        )
    if total_bytes < ENTIRE_BYTES:
        parser.error(f"--total-mib must be at least {ENTIRE_BYTES / MIB:g}")
    return Options(total_bytes, piece_bytes, levels), args.dir


def main(argv: Sequence[str] | None = None) -> int:
    options, given_dir = parse_args(argv)

    def body(directory: Path, description: dict[str, Any]) -> int:
        print_machine(directory, options)
        rows: list[Row] = []
        errors = asyncio.run(measure(description, options, rows))
        print_table(rows)
        if errors:
            print_errors(errors)
            return 1
        return 0

    return run_on_cluster(given_dir, CLUSTER, body)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
