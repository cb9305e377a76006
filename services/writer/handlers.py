"""Decode writer requests, call the archiver, encode the replies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.common import protocol
from services.common.protocol import ErrorCode, Message, ProtocolError, field, optional_field
from services.common.rpc import Handler, Reply
from services.writer.archive import Archiver
from services.writer.model import FileSummary, SegmentIdentity, SegmentInfo, ShareIn

MAX_KEY_BYTES = 1024


def identity_of(header: Mapping[str, Any]) -> SegmentIdentity:
    key = field(header, "key", str)
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"key is over {MAX_KEY_BYTES} bytes", field="key")
    handoff = optional_field(header, "handoff-node-name", str, "") or None
    return SegmentIdentity(
        collection_id=protocol.non_negative(header, "collection-id"),
        key=key,
        unified_id=protocol.non_negative(header, "unified-id"),
        conjoined_part=optional_field(header, "conjoined-part", int, 0),
        segment_num=protocol.non_negative(header, "segment-num"),
        handoff_node_name=handoff,
    )


def info_of(header: Mapping[str, Any]) -> SegmentInfo:
    return SegmentInfo(
        timestamp_s=field(header, "timestamp", float),
        source_node_name=optional_field(header, "source-node-name", str, "") or None,
        user_request_id=optional_field(header, "user-request-id", str, "") or None,
    )


def share_of(message: Message, default_sequence: int | None = None) -> ShareIn:
    header = message.header
    if len(message.payloads) != 1:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"{message.message_type} needs exactly one payload frame, got {len(message.payloads)}",
        )
    if default_sequence is None or "sequence-num" in header:
        sequence_num = protocol.non_negative(header, "sequence-num")
    else:
        sequence_num = default_sequence
    padding = optional_field(header, "zfec-padding-size", int, 0)
    if padding < 0:
        raise ProtocolError(ErrorCode.BAD_FIELD, "zfec-padding-size must be >= 0")
    return ShareIn(
        sequence_num=sequence_num,
        data=message.payloads[0],
        size=protocol.non_negative(header, "segment-size"),
        md5=protocol.digest_field(header, "segment-md5-digest"),
        adler32=protocol.non_negative(header, "segment-adler32"),
        zfec_padding_size=padding,
    )


def summary_of(header: Mapping[str, Any]) -> FileSummary:
    meta = optional_field(header, "file-user-meta", dict, {})
    return FileSummary(
        file_size=protocol.non_negative(header, "file-size"),
        file_adler32=protocol.non_negative(header, "file-adler32"),
        file_hash=protocol.digest_field(header, "file-hash"),
        user_meta=meta,
    )


def make_handlers(archiver: Archiver) -> dict[str, Handler]:
    async def archive_entire(message: Message) -> Reply:
        h = message.header
        identity, info = identity_of(h), info_of(h)
        await archiver.entire(identity, info, share_of(message, 0), summary_of(h))
        # As in the original, an entire archive is answered like a final one.
        return protocol.reply_header({**h, "message-type": "archive-key-final"}), ()

    async def archive_start(message: Message) -> Reply:
        h = message.header
        await archiver.start(identity_of(h), info_of(h), share_of(message))
        return protocol.reply_header(h), ()

    async def archive_next(message: Message) -> Reply:
        h = message.header
        await archiver.next(identity_of(h), share_of(message))
        return protocol.reply_header(h), ()

    async def archive_final(message: Message) -> Reply:
        h = message.header
        await archiver.final(identity_of(h), share_of(message), summary_of(h))
        return protocol.reply_header(h), ()

    async def archive_cancel(message: Message) -> Reply:
        h = message.header
        await archiver.cancel(identity_of(h))
        return protocol.reply_header(h), ()

    async def destroy_key(message: Message) -> Reply:
        h = message.header
        to_delete = h.get("unified-id-to-delete")
        if to_delete is not None:
            to_delete = protocol.non_negative(h, "unified-id-to-delete")
        part = h.get("destroy-conjoined-part")
        if part is not None:
            part = protocol.non_negative(h, "destroy-conjoined-part")
        count = await archiver.destroy(identity_of(h), info_of(h), to_delete, part)
        return protocol.reply_header(h, destroyed_count=count), ()

    return {
        "archive-key-entire": archive_entire,
        "archive-key-start": archive_start,
        "archive-key-next": archive_next,
        "archive-key-final": archive_final,
        "archive-key-cancel": archive_cancel,
        "destroy-key": destroy_key,
    }
