"""Killed processes, rotten bytes and shutdowns lose and corrupt nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.parse
from pathlib import Path

import asyncpg

from services.common import db, messages
from services.common.messages import FileInfo, SegmentRef
from services.common.rpc import RpcClient
from services.common.unified_id import UnifiedIdGenerator
from services.common.valuefile import value_file_path
from services.local import postgres
from services.local.processes import free_port
from tests.integration.conftest import LocalCluster, nimbus
from tests.integration.storage import ok, retrieve, store_entire, store_in_pieces

KIB = 1024


def assert_port_free(port: int) -> None:
    """Nothing listens on ``port`` (TIME_WAIT of closed connections aside)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


async def fetch_statuses(cluster: LocalCluster, unified_id: int) -> list[str]:
    statuses: list[str] = []
    for node in cluster.nodes:
        conn = await asyncpg.connect(node["database_url"])
        try:
            rows = await conn.fetch("SELECT status FROM segment WHERE unified_id = $1", unified_id)
        finally:
            await conn.close()
        statuses += [row["status"] for row in rows]
    return statuses


async def test_writer_killed_mid_archive_leaves_nothing_final(
    local_cluster: LocalCluster, ids: UnifiedIdGenerator
) -> None:
    node = local_cluster.node("node03")
    writer = await RpcClient.connect(node["writer"], timeout_s=10)
    reader = await RpcClient.connect(node["reader"], timeout_s=10)
    try:
        # Earlier, finished archives.
        earlier = []
        for i in range(3):
            share = os.urandom(300 * KIB)
            ref = SegmentRef(3, f"before-kill/{i}", ids.next_id(), 2)
            if i % 2:
                ok(await store_entire(writer, ref, share))
            else:
                pieces = [share[j : j + 64 * KIB] for j in range(0, len(share), 64 * KIB)]
                await store_in_pieces(writer, ref, pieces, FileInfo.of(share))
            earlier.append((ref, share))

        # An archive cut off between start/next and final.
        pieces = [os.urandom(64 * KIB) for _ in range(3)]
        ref = SegmentRef(3, "killed/mid-archive", ids.next_id(), 2)
        ok(
            await writer.request(
                messages.archive("archive-key-start", ref, pieces[0], 0), [pieces[0]]
            )
        )
        ok(
            await writer.request(
                messages.archive("archive-key-next", ref, pieces[1], 1), [pieces[1]]
            )
        )
        os.kill(local_cluster.pid("node03-writer"), signal.SIGKILL)
        local_cluster.local("start-node", "node03")

        statuses = await fetch_statuses(local_cluster, ref.unified_id)
        assert statuses and "F" not in statuses and "A" not in statuses, statuses
        final = messages.archive(
            "archive-key-final", ref, pieces[2], 2, file=FileInfo.of(b"".join(pieces))
        )
        late = await writer.request(final, [pieces[2]])
        assert late.header["result"] == "unknown-archive"
        first, _ = await retrieve(reader, ref)
        assert first.header["result"] == "not-found"

        for earlier_ref, share in earlier:
            _, data = await retrieve(reader, earlier_ref)
            assert data == share

        fresh = os.urandom(10 * KIB)
        fresh_ref = SegmentRef(3, "after-kill", ids.next_id(), 2)
        ok(await store_entire(writer, fresh_ref, fresh))
        assert (await retrieve(reader, fresh_ref))[1] == fresh
    finally:
        await writer.close()
        await reader.close()


async def test_flipped_byte_is_reported_damaged_and_not_sent(
    local_cluster: LocalCluster, clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    node = local_cluster.node("node04")
    pieces = [os.urandom(32 * KIB) for _ in range(3)]
    ref = SegmentRef(4, "rotten", ids.next_id(), 3)
    await store_in_pieces(clients["node04-writer"], ref, pieces, FileInfo.of(b"".join(pieces)))
    conn = await asyncpg.connect(node["database_url"])
    try:
        row = await conn.fetchrow(
            """SELECT s.id, q.value_file_id, q.value_file_offset FROM segment s
               JOIN segment_sequence q ON q.segment_id = s.id
               WHERE s.unified_id = $1 AND q.sequence_num = 1""",
            ref.unified_id,
        )
        assert row is not None
        path = value_file_path(Path(node["data_dir"]), row["value_file_id"])
        with open(path, "r+b") as f:
            f.seek(row["value_file_offset"] + 1000)
            byte = f.read(1)
            f.seek(row["value_file_offset"] + 1000)
            f.write(bytes([byte[0] ^ 0x01]))

        reader = clients["node04-reader"]
        rid = "rotten-1"
        first = ok(await reader.request(messages.retrieve_start(rid, ref)))
        assert first.payloads[0] == pieces[0]
        damaged = await reader.request(messages.retrieve_next(rid))
        assert damaged.header["result"] == "damaged"
        assert damaged.header["sequence-num"] == 1
        assert "sequence 1" in damaged.header["error-message"]
        assert damaged.payloads == ()
        recorded = await conn.fetchval(
            "SELECT sequence_num FROM damaged_segment WHERE segment_id = $1", row["id"]
        )
        assert recorded == 1
        # Reading only the sound sequences still works.
        tail = ok(await reader.request(messages.retrieve_start("rotten-2", ref, 2)))
        assert tail.payloads[0] == pieces[2]
    finally:
        await conn.close()


async def test_sigterm_finishes_in_flight_work_exits_zero_and_frees_the_port(
    local_cluster: LocalCluster, reachable_tmp: Path, ids: UnifiedIdGenerator
) -> None:
    server = local_cluster.description["database_url"]
    node_db = await postgres.ensure_database(server, "nimbus_sigterm")
    await db.migrate(node_db, "node")
    port = free_port()
    endpoint = f"tcp://127.0.0.1:{port}"
    env = {
        **os.environ,
        "NIMBUS_NODE_NAME": "sigterm",
        "NIMBUS_BIND": endpoint,
        "NIMBUS_NODE_DATABASE_URL": node_db,
        "NIMBUS_DATA_DIR": str(reachable_tmp / "sigterm"),
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.writer.main"], env=env)
    writer = await RpcClient.connect(endpoint, timeout_s=30)
    try:
        ok(await writer.request({"message-type": "ping"}))
        share = os.urandom(8 * 1024 * KIB)
        ref = SegmentRef(5, "in-flight", ids.next_id(), 0)
        in_flight = asyncio.ensure_future(store_entire(writer, ref, share))
        await asyncio.sleep(0)  # a yield, no delay: run the task until its request is sent
        # One connection delivers in order: once the ping behind it is answered,
        # the server has read the archive request.
        ok(await writer.request({"message-type": "ping"}))
        proc.send_signal(signal.SIGTERM)
        reply = await in_flight
        assert reply.header["result"] == "success"
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        await writer.close()
        if proc.poll() is None:
            proc.kill()
    assert_port_free(port)


async def test_stop_node_and_start_node_keep_addresses_and_data(
    local_cluster: LocalCluster, ids: UnifiedIdGenerator
) -> None:
    node = local_cluster.node("node05")
    share = os.urandom(50 * KIB)
    ref = SegmentRef(6, "survives/restart", ids.next_id(), 4)
    writer = await RpcClient.connect(node["writer"], timeout_s=10)
    try:
        ok(await store_entire(writer, ref, share))
    finally:
        await writer.close()
    out = local_cluster.local("stop-node", "node05").stdout
    assert "node05-writer" in out and "node05-reader" in out
    port = int(urllib.parse.urlsplit(node["reader"].replace("tcp", "http")).port or 0)
    assert_port_free(port)
    status = local_cluster.local("status").stdout
    assert "node05-reader" in status and "stopped" in status
    local_cluster.local("start-node", "node05")
    reader = await RpcClient.connect(node["reader"], timeout_s=10)
    try:
        _, data = await retrieve(reader, ref)
        assert data == share
    finally:
        await reader.close()


def test_db_migrate_is_idempotent(local_cluster: LocalCluster) -> None:
    out = nimbus("db", "migrate", "--dir", str(local_cluster.directory)).stdout
    assert "applied 0 migration(s)" in out
    assert out.count("node:") == len(local_cluster.nodes)
