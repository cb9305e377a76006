"""Shares stored on a real local cluster read back byte-identical."""

from __future__ import annotations

import asyncio
import os
import uuid

from services.common import codec, erasure, messages
from services.common.messages import FileInfo, SegmentRef
from services.common.rpc import RpcClient
from services.common.unified_id import UnifiedIdGenerator
from tests.integration.conftest import LocalCluster
from tests.integration.storage import ok, retrieve, store_entire, store_in_pieces

KIB = 1024
MIB = 1024 * KIB


async def test_entire_640k_share_answers_final_reply_and_reads_back(
    clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    share = os.urandom(640 * KIB)
    ref = SegmentRef(collection_id=1, key="entire/640k", unified_id=ids.next_id(), segment_num=0)
    reply = await store_entire(clients["node01-writer"], ref, share)
    assert reply.header["message-type"] == "archive-key-final-reply"
    assert reply.header["result"] == "success"
    first, data = await retrieve(clients["node01-reader"], ref)
    assert first.header["result"] == "success"
    assert first.header["completed"] is True
    assert first.header["file-size"] == len(share)
    assert data == share


async def test_10mib_share_in_1mib_pieces_reads_back(
    clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    share = os.urandom(10 * MIB)
    pieces = [share[i : i + MIB] for i in range(0, len(share), MIB)]
    ref = SegmentRef(collection_id=1, key="pieces/10m", unified_id=ids.next_id(), segment_num=1)
    reply = await store_in_pieces(clients["node02-writer"], ref, pieces, FileInfo.of(share))
    assert reply.header["message-type"] == "archive-key-final-reply"
    first, data = await retrieve(clients["node02-reader"], ref)
    assert first.header["sequence-count"] == 10
    assert data == share


async def test_pipelined_pieces_are_applied_in_order(
    clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    """Many requests in flight on one connection: all pieces sent before any reply."""
    pieces = [os.urandom(256 * KIB) for _ in range(8)]
    whole = b"".join(pieces)
    ref = SegmentRef(collection_id=1, key="pipelined", unified_id=ids.next_id(), segment_num=2)
    writer = clients["node03-writer"]
    requests = []
    for num, piece in enumerate(pieces):
        kind = {0: "archive-key-start", 7: "archive-key-final"}.get(num, "archive-key-next")
        file = FileInfo.of(whole) if num == 7 else None
        requests.append(writer.request(messages.archive(kind, ref, piece, num, file=file), [piece]))
    replies = await asyncio.gather(*requests)
    assert [r.header["result"] for r in replies] == ["success"] * 8
    _, data = await retrieve(clients["node03-reader"], ref)
    assert data == whole


async def test_erasure_coded_object_on_every_node_decodes_from_any_k(
    local_cluster: LocalCluster, clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    """The whole spine: cut, encode, one share per node, read back from k nodes."""
    k, n = local_cluster.k, local_cluster.n
    body = os.urandom(3 * 64 * KIB + 12345)
    sequence_size = 64 * KIB
    unified_id = ids.next_id()
    spans = erasure.sequence_spans(len(body), sequence_size)
    encoded = [await codec.encode(body[o : o + length], k, n) for o, length in spans]
    file = FileInfo.of(body)
    names = [node["name"] for node in local_cluster.nodes]

    async def store(segment_num: int) -> None:
        ref = SegmentRef(2, "coded/object", unified_id, segment_num)
        pieces = [shares[segment_num] for shares in encoded]
        writer = clients[f"{names[segment_num]}-writer"]
        for num, piece in enumerate(pieces):
            kind = "archive-key-start" if num == 0 else "archive-key-next"
            if num == len(pieces) - 1:
                kind = "archive-key-final"
            pad = erasure.padding_size(spans[num][1], k)
            header = messages.archive(
                kind,
                ref,
                piece,
                num,
                zfec_padding_size=pad,
                file=file if kind.endswith("final") else None,
            )
            ok(await writer.request(header, [piece]))

    await asyncio.gather(*(store(i) for i in range(n)))

    # Read from the last k nodes only: parity shares must be decoded.
    chosen = list(range(n - k, n))
    fetched = {}
    for segment_num in chosen:
        _, data = await retrieve(
            clients[f"{names[segment_num]}-reader"],
            SegmentRef(2, "coded/object", unified_id, segment_num),
        )
        fetched[segment_num] = data
    rebuilt = []
    offset = 0
    for _, length in spans:
        size = erasure.share_size(length, k)
        shares = {s: fetched[s][offset : offset + size] for s in chosen}
        rebuilt.append(await codec.decode(shares, k, n, length))
        offset += size
    assert b"".join(rebuilt) == body


async def test_range_of_sequences_is_retrieved(
    clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    pieces = [bytes([i]) * 1000 for i in range(5)]
    ref = SegmentRef(1, "ranges", ids.next_id(), 0)
    await store_in_pieces(clients["node04-writer"], ref, pieces, FileInfo.of(b"".join(pieces)))
    rid = uuid.uuid4().hex
    reader = clients["node04-reader"]
    first = ok(await reader.request(messages.retrieve_start(rid, ref, 2, 3)))
    assert (first.header["sequence-num"], first.header["completed"]) == (2, False)
    assert first.payloads[0] == pieces[2]
    second = ok(await reader.request(messages.retrieve_next(rid)))
    assert (second.header["sequence-num"], second.header["completed"]) == (3, True)
    assert second.payloads[0] == pieces[3]
    gone = await reader.request(messages.retrieve_next(rid))
    assert gone.header["result"] == "unknown-retrieve"


async def test_destroy_key_makes_the_key_unreadable(
    clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    share = os.urandom(10 * KIB)
    ref = SegmentRef(1, "to/destroy", ids.next_id(), 0)
    ok(await store_entire(clients["node05-writer"], ref, share))
    _, data = await retrieve(clients["node05-reader"], ref)
    assert data == share
    tombstone = SegmentRef(1, "to/destroy", ids.next_id(), 0)
    reply = ok(await clients["node05-writer"].request(messages.destroy(tombstone)))
    assert reply.header["destroyed-count"] == 1
    first, data = await retrieve(clients["node05-reader"], ref)
    assert first.header["result"] == "not-found"
    assert first.payloads == ()


async def test_retried_entire_archive_is_idempotent(
    clients: dict[str, RpcClient], ids: UnifiedIdGenerator
) -> None:
    share = os.urandom(4 * KIB)
    ref = SegmentRef(1, "retried", ids.next_id(), 0)
    ok(await store_entire(clients["node06-writer"], ref, share))
    ok(await store_entire(clients["node06-writer"], ref, share))
    other = os.urandom(4 * KIB)
    reply = await store_entire(clients["node06-writer"], ref, other)
    assert reply.header["result"] == "already-exists"
    _, data = await retrieve(clients["node06-reader"], ref)
    assert data == share
