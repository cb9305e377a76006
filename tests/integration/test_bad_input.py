"""Bad requests get an error reply naming the problem, store nothing, and the
service keeps serving."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiozmq
import asyncpg
import pytest
import zmq

from services.common import messages, protocol
from services.common.messages import FileInfo, SegmentRef
from services.common.rpc import RpcClient
from services.common.unified_id import UnifiedIdGenerator
from tests.integration.conftest import LocalCluster
from tests.integration.storage import ok, retrieve

NODE = "node01"


async def segment_rows(cluster: LocalCluster, unified_id: int) -> int:
    conn = await asyncpg.connect(cluster.node(NODE)["database_url"])
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM segment WHERE unified_id = $1", unified_id
        )
        return count
    finally:
        await conn.close()


async def assert_nothing_stored(
    cluster: LocalCluster, clients: dict[str, RpcClient], ref: SegmentRef
) -> None:
    assert await segment_rows(cluster, ref.unified_id) == 0
    first, _ = await retrieve(clients[f"{NODE}-reader"], ref)
    assert first.header["result"] == "not-found"
    pong = await clients[f"{NODE}-writer"].request({"message-type": "ping"})
    assert pong.header["result"] == "success"


def entire(ref: SegmentRef, share: bytes, **changes: Any) -> dict[str, Any]:
    header = messages.archive("archive-key-entire", ref, share, 0, file=FileInfo.of(share))
    header.update(changes)
    return {k: v for k, v in header.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "payload_size", "code", "names"),
    [
        (
            {"segment-md5-digest": base64.b64encode(hashlib.md5(b"x").digest()).decode()},
            1000,
            "md5-mismatch",
            "md5",
        ),
        ({"segment-size": 999}, 1000, "size-mismatch", "999"),
        ({"segment-adler32": 1}, 1000, "adler32-mismatch", "adler32"),
        ({"key": None}, 1000, "missing-field", "'key'"),
        ({"unified-id": "12"}, 1000, "bad-field", "'unified-id'"),
        ({"segment-md5-digest": "not base64!"}, 1000, "bad-field", "segment-md5-digest"),
        ({"file-hash": None}, 1000, "missing-field", "'file-hash'"),
        ({"key": "k" * 1025}, 1000, "bad-field", "key"),
        (
            {"message-type": "archive-key-sideways"},
            1000,
            "unknown-message-type",
            "archive-key-sideways",
        ),
    ],
)
async def test_bad_archive_header_is_refused(
    local_cluster: LocalCluster,
    clients: dict[str, RpcClient],
    ids: UnifiedIdGenerator,
    changes: dict[str, Any],
    payload_size: int,
    code: str,
    names: str,
) -> None:
    share = os.urandom(payload_size)
    ref = SegmentRef(7, "bad/header", ids.next_id(), 0)
    reply = await clients[f"{NODE}-writer"].request(entire(ref, share, **changes), [share])
    assert reply.header["result"] == code
    assert names in reply.header["error-message"]
    if changes.get("key") is None:
        await assert_nothing_stored(local_cluster, clients, ref)


async def test_too_many_frames_are_refused(
    local_cluster: LocalCluster, clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    share = os.urandom(100)
    ref = SegmentRef(7, "bad/frames", ids.next_id(), 0)
    reply = await clients[f"{NODE}-writer"].request(entire(ref, share), [share, share, share])
    assert reply.header["result"] == "too-many-frames"
    assert "3 payload frames" in reply.header["error-message"]
    await assert_nothing_stored(local_cluster, clients, ref)


async def test_missing_payload_is_refused(
    local_cluster: LocalCluster, clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    ref = SegmentRef(7, "bad/nopayload", ids.next_id(), 0)
    reply = await clients[f"{NODE}-writer"].request(entire(ref, b"abc"), [])
    assert reply.header["result"] == "invalid-message"
    assert "payload frame" in reply.header["error-message"]
    await assert_nothing_stored(local_cluster, clients, ref)


async def test_oversized_frame_is_refused(
    local_cluster: LocalCluster, clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    limit = protocol.MAX_FRAME_BYTES
    share = bytes(limit + 1)
    ref = SegmentRef(7, "bad/huge", ids.next_id(), 0)
    reply = await clients[f"{NODE}-writer"].request(entire(ref, share), [share])
    assert reply.header["result"] == "frame-too-large"
    assert str(limit) in reply.header["error-message"]
    await assert_nothing_stored(local_cluster, clients, ref)


async def test_next_without_start_is_refused(
    local_cluster: LocalCluster, clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    share = os.urandom(100)
    ref = SegmentRef(7, "bad/nostart", ids.next_id(), 0)
    header = messages.archive("archive-key-next", ref, share, 1)
    reply = await clients[f"{NODE}-writer"].request(header, [share])
    assert reply.header["result"] == "unknown-archive"
    await assert_nothing_stored(local_cluster, clients, ref)


async def test_out_of_sequence_piece_is_refused_and_archive_continues(
    clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    pieces = [os.urandom(100) for _ in range(3)]
    ref = SegmentRef(7, "bad/order", ids.next_id(), 0)
    writer = clients[f"{NODE}-writer"]
    ok(await writer.request(messages.archive("archive-key-start", ref, pieces[0], 0), [pieces[0]]))
    skipped = await writer.request(
        messages.archive("archive-key-next", ref, pieces[2], 2), [pieces[2]]
    )
    assert skipped.header["result"] == "out-of-sequence"
    assert "expected sequence 1" in skipped.header["error-message"]
    ok(await writer.request(messages.archive("archive-key-next", ref, pieces[1], 1), [pieces[1]]))
    final = messages.archive(
        "archive-key-final", ref, pieces[2], 2, file=FileInfo.of(b"".join(pieces))
    )
    ok(await writer.request(final, [pieces[2]]))
    _, data = await retrieve(clients[f"{NODE}-reader"], ref)
    assert data == b"".join(pieces)


async def test_cancelled_archive_is_not_readable(
    clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    piece = os.urandom(100)
    ref = SegmentRef(7, "bad/cancel", ids.next_id(), 0)
    writer = clients[f"{NODE}-writer"]
    ok(await writer.request(messages.archive("archive-key-start", ref, piece, 0), [piece]))
    ok(await writer.request(messages.cancel(ref)))
    first, _ = await retrieve(clients[f"{NODE}-reader"], ref)
    assert first.header["result"] == "not-found"
    late = await writer.request(
        messages.archive("archive-key-final", ref, piece, 1, file=FileInfo.of(piece)), [piece]
    )
    assert late.header["result"] == "unknown-archive"


@pytest.fixture
async def raw_writer(local_cluster: LocalCluster) -> AsyncIterator[aiozmq.ZmqStream]:
    stream = await aiozmq.create_zmq_stream(zmq.DEALER, connect=local_cluster.node(NODE)["writer"])
    yield stream
    stream.close()


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"\xff\xfe not json"], "invalid-message"),
        ([b"[1, 2, 3]"], "invalid-message"),
        ([json.dumps({"message-id": "x"}).encode()], "missing-field"),
        ([b"{" * 70000], "frame-too-large"),
    ],
)
async def test_undecodable_header_gets_error_reply(
    raw_writer: aiozmq.ZmqStream, clients: dict[str, RpcClient], frames: list[bytes], code: str
) -> None:
    raw_writer.write(frames)
    reply = json.loads((await raw_writer.read())[0])
    assert reply["result"] == code
    assert reply["error-message"]
    pong = await clients[f"{NODE}-writer"].request({"message-type": "ping"})
    assert pong.header["result"] == "success"


async def test_reader_refuses_bad_requests(clients: dict[str, RpcClient]) -> None:
    reader = clients[f"{NODE}-reader"]
    reply = await reader.request({"message-type": "retrieve-key-start", "retrieve-id": "r"})
    assert reply.header["result"] == "missing-field"
    reply = await reader.request(messages.retrieve_next("never-opened"))
    assert reply.header["result"] == "unknown-retrieve"
    reply = await reader.request({"message-type": "archive-key-entire"})
    assert reply.header["result"] == "unknown-message-type"
