"""The handoff service returns shares held for a down node to it when it is back.

Shares are handed off here the way the gateway does it: archive messages with
``handoff-node-name`` sent to two other nodes' writers while the home's
processes are stopped. The tests run on a cluster of their own, since they
stop and start nodes; every node runs a handoff process, as `nimbus local up`
starts them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.common import messages
from services.common.config import HandoffConfig
from services.common.messages import FileInfo, SegmentRef
from services.common.rpc import RpcClient
from services.common.unified_id import UnifiedIdGenerator
from services.common.valuefile import value_file_path
from services.handoff import queries
from services.handoff.forward import HomeWriter
from services.handoff.transport import RpcHomeWriter
from services.handoff.worker import HandoffWorker
from services.local import processes
from services.local.processes import Running, free_port
from tests.integration.conftest import LocalCluster, nimbus
from tests.integration.storage import ok

KIB = 1024


@pytest.fixture(scope="module")
def cluster(reachable_tmp: Path) -> Iterator[LocalCluster]:
    directory = reachable_tmp / "handoff-cluster"
    nimbus("local", "up", "--nodes", "6", "--k", "4", "--dir", str(directory))
    try:
        yield LocalCluster(directory, json.loads((directory / "cluster.json").read_text()))
    finally:
        nimbus("local", "down", "--wipe", "--dir", str(directory), check=False)


# --- helpers ----------------------------------------------------------------


@dataclass
class Share:
    """One segment's share as the gateway would send it: sequences and their padding."""

    ref: SegmentRef
    pieces: list[bytes]
    paddings: list[int]
    user_meta: dict[str, Any] = field(default_factory=dict)
    timestamp_s: float = field(default_factory=time.time)
    user_request_id: str = "req-handoff"

    @property
    def data(self) -> bytes:
        return b"".join(self.pieces)

    @property
    def file(self) -> FileInfo:
        return FileInfo.of(self.data, self.user_meta)


def make_share(ids: UnifiedIdGenerator, key: str, segment_num: int, sizes: list[int]) -> Share:
    pieces = [os.urandom(size) for size in sizes]
    # Only the last sequence of an object is padded, as the gateway does.
    paddings = [0] * (len(sizes) - 1) + [1 + len(sizes) % 3]
    ref = SegmentRef(7, key, ids.next_id(), segment_num)
    return Share(ref, pieces, paddings, {"origin": key, "n": len(sizes)})


async def hand_off(writer: RpcClient, share: Share, home: str) -> None:
    """Store ``share`` on ``writer`` as a copy held for ``home``."""
    held = dataclasses.replace(share.ref, handoff_node_name=home)
    last = len(share.pieces) - 1
    for num, piece in enumerate(share.pieces):
        if last == 0:
            kind = "archive-key-entire"
        else:
            kind = {0: "archive-key-start", last: "archive-key-final"}.get(num, "archive-key-next")
        header = messages.archive(
            kind,
            held,
            piece,
            num,
            zfec_padding_size=share.paddings[num],
            file=share.file if num == last else None,
            timestamp_s=share.timestamp_s,
            source_node_name="gateway",
            user_request_id=share.user_request_id,
        )
        ok(await writer.request(header, [piece]))


async def connect(cluster: LocalCluster, node: str, service: str) -> RpcClient:
    return await RpcClient.connect(cluster.node(node)[service], timeout_s=30)


async def handoff_status(cluster: LocalCluster, node: str) -> dict[str, Any]:
    client = await connect(cluster, node, "handoff")
    try:
        return ok(await client.request({"message-type": "handoff-status"})).header
    finally:
        await client.close()


async def held(cluster: LocalCluster, holder: str, home: str) -> dict[str, int]:
    holdings: dict[str, dict[str, int]] = (await handoff_status(cluster, holder))["holdings"]
    return holdings.get(home, {"segments": 0, "bytes": 0, "tombstones": 0, "damaged": 0})


async def wait_until(
    check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 60.0
) -> None:
    """Poll ``check`` until it holds (the workers act on their own schedule)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(delay)  # poll interval
        delay = min(delay * 2, 0.5)


async def drained(cluster: LocalCluster, holders: list[str], home: str) -> None:
    async def empty() -> bool:
        for holder in holders:
            holding = await held(cluster, holder, home)
            if holding["segments"] or holding["tombstones"]:
                return False
        return True

    await wait_until(empty, f"{holders} to hand everything back to {home}")


async def fetch(cluster: LocalCluster, node: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(cluster.node(node)["database_url"])
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def read_home(cluster: LocalCluster, home: str, ref: SegmentRef) -> tuple[Any, list[Any]]:
    """The home reader's replies, sequence by sequence (``[]`` if it has no copy)."""
    reader = await connect(cluster, home, "reader")
    try:
        retrieve_id = os.urandom(8).hex()
        first = await reader.request(messages.retrieve_start(retrieve_id, ref))
        if first.header["result"] != "success":
            return first.header, []
        replies = [first]
        while not replies[-1].header["completed"]:
            replies.append(ok(await reader.request(messages.retrieve_next(retrieve_id))))
        return first.header, replies
    finally:
        await reader.close()


async def assert_home_has(
    cluster: LocalCluster, home: str, share: Share, sources: set[str]
) -> None:
    """The home serves ``share`` as its own copy, byte-identical, metadata intact."""
    first, replies = await read_home(cluster, home, share.ref)
    assert first["result"] == "success", first
    assert first["handoff-node-name"] is None  # its own copy, not one it holds
    assert b"".join(r.payloads[0] for r in replies) == share.data
    assert [r.header["sequence-num"] for r in replies] == list(range(len(share.pieces)))
    assert [r.header["zfec-padding-size"] for r in replies] == share.paddings
    assert first["file-size"] == len(share.data)
    assert first["file-hash"] == messages.FileInfo.of(share.data).fields()["file-hash"]
    assert first["file-user-meta"] == share.user_meta
    rows = await fetch(
        cluster,
        home,
        """SELECT status, handoff_node_name, source_node_name, timestamp_s, user_request_id
           FROM segment WHERE unified_id = $1 AND segment_num = $2 AND status = 'F'""",
        share.ref.unified_id,
        share.ref.segment_num,
    )
    assert len(rows) == 1, rows
    assert rows[0]["handoff_node_name"] is None
    assert rows[0]["source_node_name"] in sources
    assert rows[0]["timestamp_s"] == share.timestamp_s
    assert rows[0]["user_request_id"] == share.user_request_id


async def statuses(cluster: LocalCluster, node: str, ref: SegmentRef) -> list[str]:
    rows = await fetch(
        cluster,
        node,
        "SELECT status FROM segment WHERE unified_id = $1 AND segment_num = $2 ORDER BY id",
        ref.unified_id,
        ref.segment_num,
    )
    return [row["status"] for row in rows]


# --- tests ------------------------------------------------------------------


async def test_held_shares_go_home_byte_identical_and_holders_purge_them(
    cluster: LocalCluster, ids: UnifiedIdGenerator
) -> None:
    home, holders = "node03", ["node01", "node02"]
    shares = [
        make_share(ids, "back/entire", 2, [100 * KIB]),
        make_share(ids, "back/two", 2, [64 * KIB, 10 * KIB]),
        make_share(ids, "back/five", 2, [256 * KIB] * 4 + [3 * KIB]),
        make_share(ids, "back/empty", 2, [0]),
    ]
    cluster.local("stop-node", home)
    try:
        writers = [await connect(cluster, holder, "writer") for holder in holders]
        for share in shares:
            for writer in writers:
                await hand_off(writer, share, home)
        for writer in writers:
            await writer.close()
        total = sum(len(share.data) for share in shares)
        for holder in holders:
            holding = await held(cluster, holder, home)
            assert (holding["segments"], holding["bytes"]) == (len(shares), total)
        before = (await handoff_status(cluster, "node01"))["forwarded"]
    finally:
        cluster.local("start-node", home)

    await drained(cluster, holders, home)
    for share in shares:
        await assert_home_has(cluster, home, share, set(holders))
        for holder in holders:
            assert await statuses(cluster, holder, share.ref) == ["P"]
    after = (await handoff_status(cluster, "node01"))["forwarded"]
    assert after["segments"] - before["segments"] == len(shares)
    assert after["bytes"] - before["bytes"] == total


async def test_held_tombstones_go_home_and_destroy_there(
    cluster: LocalCluster, ids: UnifiedIdGenerator
) -> None:
    home, holder = "node06", "node04"
    # Versions the home stored while it was up: x, y (two parts), z.
    x = make_share(ids, "tomb/x", 5, [4 * KIB])
    y = ids.next_id()
    y1 = Share(SegmentRef(7, "tomb/y", y, 5, conjoined_part=1), [b"part one"], [0])
    y2 = Share(SegmentRef(7, "tomb/y", y, 5, conjoined_part=2), [b"part two"], [0])
    z = make_share(ids, "tomb/z", 5, [4 * KIB])
    writer = await connect(cluster, home, "writer")
    try:
        for share in (x, y1, y2, z):
            header = messages.archive(
                "archive-key-entire", share.ref, share.pieces[0], 0, file=share.file
            )
            ok(await writer.request(header, share.pieces))
    finally:
        await writer.close()

    cluster.local("stop-node", home)
    try:
        writer = await connect(cluster, holder, "writer")
        try:
            tombstones = [
                # x: that version; y: only its part 1; z: every version older than the tombstone.
                messages.destroy(
                    SegmentRef(7, "tomb/x", ids.next_id(), 5, 0, home), x.ref.unified_id
                ),
                messages.destroy(
                    SegmentRef(7, "tomb/y", ids.next_id(), 5, 0, home),
                    y1.ref.unified_id,
                    conjoined_part_to_delete=1,
                ),
                messages.destroy(SegmentRef(7, "tomb/z", ids.next_id(), 5, 0, home)),
            ]
            for tombstone in tombstones:
                ok(await writer.request({**tombstone, "user-request-id": "req-delete"}))
        finally:
            await writer.close()
        assert (await held(cluster, holder, home))["tombstones"] == 3
    finally:
        cluster.local("start-node", home)

    await drained(cluster, [holder], home)
    for share in (x, y1, z):
        first, _ = await read_home(cluster, home, share.ref)
        assert first["result"] == "not-found", (share.ref, first)
    first, replies = await read_home(cluster, home, y2.ref)
    assert first["result"] == "success" and replies[0].payloads[0] == b"part two"
    rows = await fetch(
        cluster,
        home,
        """SELECT key, unified_id, destroyed_unified_id, destroyed_conjoined_part,
                  handoff_node_name, source_node_name, user_request_id, timestamp_s
           FROM segment WHERE status = 'T' AND key LIKE 'tomb/%' ORDER BY key""",
    )
    by_key = {row["key"]: row for row in rows}
    for tombstone in tombstones:
        row = by_key[tombstone["key"]]
        assert row["unified_id"] == tombstone["unified-id"]
        assert row["destroyed_unified_id"] == tombstone.get("unified-id-to-delete")
        assert row["destroyed_conjoined_part"] == tombstone.get("destroy-conjoined-part")
        assert row["timestamp_s"] == tombstone["timestamp"]
        assert row["handoff_node_name"] is None
        assert (row["source_node_name"], row["user_request_id"]) == (holder, "req-delete")
    held_rows = await fetch(
        cluster,
        holder,
        "SELECT status FROM segment WHERE key LIKE 'tomb/%' AND handoff_node_name = $1",
        home,
    )
    assert [row["status"] for row in held_rows] == ["P", "P", "P"]


async def test_a_corrupted_held_share_is_never_forwarded(
    cluster: LocalCluster, ids: UnifiedIdGenerator
) -> None:
    home = "node05"
    rotten = make_share(ids, "rot/only-copy", 4, [32 * KIB] * 3)
    sound = make_share(ids, "rot/sound", 4, [32 * KIB] * 2)
    # Rotten on node01, sound on node02: the home gets node02's.
    both = make_share(ids, "rot/two-holders", 4, [32 * KIB] * 3)
    cluster.local("stop-node", home)
    try:
        writers = {name: await connect(cluster, name, "writer") for name in ("node01", "node02")}
        await hand_off(writers["node01"], rotten, home)
        await hand_off(writers["node01"], sound, home)
        await hand_off(writers["node01"], both, home)
        await hand_off(writers["node02"], both, home)
        for writer in writers.values():
            await writer.close()
        node01 = cluster.node("node01")
        for share in (rotten, both):
            (row,) = await fetch(
                cluster,
                "node01",
                """SELECT q.value_file_id, q.value_file_offset FROM segment s
                   JOIN segment_sequence q ON q.segment_id = s.id
                   WHERE s.unified_id = $1 AND q.sequence_num = 1""",
                share.ref.unified_id,
            )
            path = value_file_path(Path(node01["data_dir"]), row["value_file_id"])
            with open(path, "r+b") as f:
                f.seek(row["value_file_offset"] + 100)
                byte = f.read(1)
                f.seek(row["value_file_offset"] + 100)
                f.write(bytes([byte[0] ^ 0xFF]))
    finally:
        cluster.local("start-node", home)

    async def settled() -> bool:
        on_node01 = await held(cluster, "node01", home)
        on_node02 = await held(cluster, "node02", home)
        return (on_node01["segments"], on_node01["damaged"], on_node02["segments"]) == (2, 2, 0)

    await wait_until(settled, "node01 to keep only its two damaged copies")
    await assert_home_has(cluster, home, sound, {"node01"})
    await assert_home_has(cluster, home, both, {"node02"})
    first, _ = await read_home(cluster, home, rotten.ref)
    assert first["result"] == "not-found"
    # Sequence 0 may have gone out before sequence 1 was found rotten: cancelled, never final.
    assert set(await statuses(cluster, home, rotten.ref)) <= {"C"}
    damage = await fetch(
        cluster,
        "node01",
        """SELECT s.unified_id, d.sequence_num, d.detected_by, s.status FROM damaged_segment d
           JOIN segment s ON s.id = d.segment_id WHERE s.key LIKE 'rot/%' ORDER BY s.unified_id""",
    )
    assert [
        (r["unified_id"], r["sequence_num"], r["detected_by"], r["status"]) for r in damage
    ] == [
        (rotten.ref.unified_id, 1, "handoff", "F"),
        (both.ref.unified_id, 1, "handoff", "F"),
    ]


def _process(cluster: LocalCluster, name: str) -> Running:
    entry = cluster.processes()[name]
    return Running(entry["pid"], entry["start_ticks"])


async def _worker_for(
    cluster: LocalCluster, node: str, **settings: Any
) -> tuple[HandoffWorker, Callable[[], Awaitable[None]]]:
    """A handoff worker for ``node`` in this process, as the service would run it."""
    described = cluster.node(node)
    cfg = HandoffConfig(
        node_name=node,
        bind="tcp://127.0.0.1:0",
        node_database_url=described["database_url"],
        data_dir=Path(described["data_dir"]),
        database_url=cluster.description["database_url"],
        **settings,
    )
    pool = await asyncpg.create_pool(cfg.node_database_url, min_size=1, max_size=2)
    central = await asyncpg.create_pool(cfg.database_url, min_size=1, max_size=1)
    assert pool is not None and central is not None

    async def connect_home(endpoint: str) -> HomeWriter:
        return await RpcHomeWriter.connect(endpoint, cfg.forward_timeout_s)

    worker = HandoffWorker(cfg, pool, lambda: queries.writer_endpoints(central), connect_home)

    async def close() -> None:
        await worker.close()
        await pool.close()
        await central.close()

    return worker, close


async def test_restart_mid_way_and_running_twice_are_harmless(
    cluster: LocalCluster, ids: UnifiedIdGenerator
) -> None:
    home, holders = "node02", ["node05", "node06"]
    shares = [make_share(ids, f"again/{i}", 1, [16 * KIB] * (1 + i % 3)) for i in range(10)]
    # The holders' handoff processes are stopped: this test plays node05's part
    # step by step, then restarts them.
    processes.stop([_process(cluster, f"{holder}-handoff") for holder in holders])
    cluster.local("stop-node", home)
    try:
        writers = [await connect(cluster, holder, "writer") for holder in holders]
        for share in shares:
            for writer in writers:
                await hand_off(writer, share, home)
        for writer in writers:
            await writer.close()
    finally:
        cluster.local("start-node", home)

    worker, close = await _worker_for(cluster, "node05", batch_segments=4)
    try:
        # One bounded batch, then the "crash".
        assert await worker.run_once()
        assert (await worker.status()).holdings[home].segments == len(shares) - 4
        purged = await fetch(
            cluster,
            "node05",
            "SELECT id FROM segment WHERE status = 'P' AND handoff_node_name = $1",
            home,
        )
        assert len(purged) == 4
        # Killed after the home confirmed but before the purge committed:
        await fetch(
            cluster, "node05", "UPDATE segment SET status = 'F' WHERE id = $1", purged[0]["id"]
        )
        # ... and killed in the middle of an archive, leaving it open at the home.
        open_share = next(s for s in shares[4:] if len(s.pieces) > 1)
        home_writer = await connect(cluster, home, "writer")
        try:
            piece = open_share.pieces[0]
            ok(
                await home_writer.request(
                    messages.archive("archive-key-start", open_share.ref, piece, 0), [piece]
                )
            )
        finally:
            await home_writer.close()

        # The restarted services resume from their node databases, both at once.
        for holder in holders:
            cluster.local("start-node", holder)
        await drained(cluster, holders, home)
        for share in shares:
            await assert_home_has(cluster, home, share, set(holders))

        # Running it again finds nothing to do and changes nothing at the home.
        finals = await fetch(cluster, home, "SELECT count(*) AS n FROM segment WHERE status = 'F'")
        assert not await worker.run_once()
        assert (
            await fetch(cluster, home, "SELECT count(*) AS n FROM segment WHERE status = 'F'")
            == finals
        )
        status = await handoff_status(cluster, "node05")
        assert home not in status["holdings"]
    finally:
        await close()


async def test_sigterm_stops_the_service_cleanly(
    cluster: LocalCluster, reachable_tmp: Path
) -> None:
    """A second handoff process for node04 (safe: forwards are idempotent)."""
    node = cluster.node("node04")
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    env = {
        **os.environ,
        "NIMBUS_NODE_NAME": "node04",
        "NIMBUS_BIND": endpoint,
        "NIMBUS_NODE_DATABASE_URL": node["database_url"],
        "NIMBUS_DATA_DIR": node["data_dir"],
        "NIMBUS_DATABASE_URL": cluster.description["database_url"],
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.handoff.main"], env=env)
    try:
        client = await RpcClient.connect(endpoint, timeout_s=30)
        try:
            ok(await client.request({"message-type": "ping"}))
            reply = ok(await client.request({"message-type": "handoff-status"}))
            assert reply.header["node-name"] == "node04"
        finally:
            await client.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize("late", ["final", "cancel"])
async def test_pieces_queued_behind_a_final_never_undo_it(
    cluster: LocalCluster, ids: UnifiedIdGenerator, late: str
) -> None:
    """What two holders sending one share at once do to the home writer.

    Pipelined on one connection, so the writer handles them in this order: a
    second ``final`` of the same archive is out of sequence (not an internal
    error), and a cancel that waited behind the final leaves the copy final.
    """
    share = make_share(ids, f"race/{late}", 0, [8 * KIB, 8 * KIB])
    start = messages.archive("archive-key-start", share.ref, share.pieces[0], 0)
    final = messages.archive("archive-key-final", share.ref, share.pieces[1], 1, file=share.file)
    if late == "final":
        queued, queued_payloads, expected = final, [share.pieces[1]], "out-of-sequence"
    else:
        queued, queued_payloads, expected = messages.cancel(share.ref), [], "success"
    writer = await connect(cluster, "node01", "writer")
    try:
        replies = await asyncio.gather(
            writer.request(start, [share.pieces[0]]),
            writer.request(final, [share.pieces[1]]),
            writer.request(queued, queued_payloads),
        )
    finally:
        await writer.close()
    assert [r.header["result"] for r in replies] == ["success", "success", expected]
    assert await statuses(cluster, "node01", share.ref) == ["F"]
    _, replies_read = await read_home(cluster, "node01", share.ref)
    assert b"".join(r.payloads[0] for r in replies_read) == share.data
