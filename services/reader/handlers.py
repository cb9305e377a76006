"""Decode reader requests, call the retriever, encode the replies."""

from __future__ import annotations

from services.common import protocol
from services.common.protocol import ErrorCode, Message, ProtocolError, field, optional_field
from services.common.rpc import Handler, Reply
from services.reader.retrieve import Retriever, SegmentKey, SegmentMeta, ShareOut


def _share_fields(share: ShareOut) -> dict[str, object]:
    return {
        "sequence_num": share.sequence_num,
        "segment_md5_digest": protocol.b64(share.md5),
        "segment_adler32": share.adler32,
        "segment_size": len(share.data),
        "zfec_padding_size": share.zfec_padding_size,
        "completed": share.completed,
    }


def _meta_fields(meta: SegmentMeta) -> dict[str, object]:
    return {
        "file_size": meta.file_size,
        "file_adler32": meta.file_adler32,
        "file_hash": protocol.b64(meta.file_hash),
        "file_user_meta": meta.user_meta,
        "sequence_count": meta.sequence_count,
        "handoff_node_name": meta.handoff_node_name,
    }


def make_handlers(retriever: Retriever) -> dict[str, Handler]:
    async def retrieve_start(message: Message) -> Reply:
        h = message.header
        retrieve_id = field(h, "retrieve-id", str)
        segment = SegmentKey(
            collection_id=protocol.non_negative(h, "collection-id"),
            key=field(h, "key", str),
            unified_id=protocol.non_negative(h, "unified-id"),
            conjoined_part=optional_field(h, "conjoined-part", int, 0),
            segment_num=protocol.non_negative(h, "segment-num"),
        )
        first = optional_field(h, "sequence-num", int, 0)
        last = h.get("end-sequence-num")
        if last is not None:
            last = protocol.non_negative(h, "end-sequence-num")
        if first < 0:
            raise ProtocolError(ErrorCode.BAD_FIELD, "sequence-num must be >= 0")
        meta, share = await retriever.start(retrieve_id, segment, first, last)
        header = protocol.reply_header(h, **_meta_fields(meta), **_share_fields(share))
        return header, (share.data,)

    async def retrieve_next(message: Message) -> Reply:
        h = message.header
        share = await retriever.next(field(h, "retrieve-id", str))
        return protocol.reply_header(h, **_share_fields(share)), (share.data,)

    return {"retrieve-key-start": retrieve_start, "retrieve-key-next": retrieve_next}
