"""Test helpers that drive a node's writer and reader with real messages."""

from __future__ import annotations

import uuid

from services.common import messages
from services.common.messages import FileInfo, SegmentRef
from services.common.protocol import Message
from services.common.rpc import RpcClient


def ok(reply: Message) -> Message:
    assert reply.header["result"] == "success", reply.header
    return reply


async def store_entire(writer: RpcClient, ref: SegmentRef, share: bytes) -> Message:
    header = messages.archive("archive-key-entire", ref, share, 0, file=FileInfo.of(share))
    return await writer.request(header, [share])


async def store_in_pieces(
    writer: RpcClient, ref: SegmentRef, pieces: list[bytes], file: FileInfo
) -> Message:
    """start, next..., final, each awaited before the next is sent (two pieces or more)."""
    assert len(pieces) >= 2, "one piece is an archive-key-entire"
    last = len(pieces) - 1
    reply: Message | None = None
    for num, piece in enumerate(pieces):
        kind = "archive-key-start" if num == 0 else "archive-key-next"
        if num == last and num > 0:
            kind = "archive-key-final"
        header = messages.archive(kind, ref, piece, num, file=file if num == last else None)
        reply = ok(await writer.request(header, [piece]))
    assert reply is not None
    return reply


async def retrieve(reader: RpcClient, ref: SegmentRef) -> tuple[Message, bytes]:
    """The first reply and all the segment's bytes, sequence by sequence."""
    retrieve_id = uuid.uuid4().hex
    first = await reader.request(messages.retrieve_start(retrieve_id, ref))
    if first.header["result"] != "success":
        return first, b""
    chunks = [first.payloads[0]]
    reply = first
    while not reply.header["completed"]:
        reply = ok(await reader.request(messages.retrieve_next(retrieve_id)))
        chunks.append(reply.payloads[0])
    return first, b"".join(chunks)
