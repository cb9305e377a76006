"""Builders for the writer's and reader's request headers.

The one place that knows which fields an archive or retrieve request carries,
so the gateway, handoff and tests build them alike. Checksums of a share are
computed here from its bytes: md5 as base64 of the raw digest, adler32 as an
integer, as in the original system.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from services.common import protocol
from services.common.protocol import Header


@dataclass(frozen=True)
class SegmentRef:
    """Which share of which object version a request is about."""

    collection_id: int
    key: str
    unified_id: int
    segment_num: int
    conjoined_part: int = 0
    handoff_node_name: str | None = None

    def group(self, n: int) -> list[SegmentRef]:
        """The refs of all ``n`` shares of this (unified id, conjoined part)."""
        return [dataclasses.replace(self, segment_num=num) for num in range(n)]

    def fields(self) -> Header:
        header: Header = {
            "collection-id": self.collection_id,
            "key": self.key,
            "unified-id": self.unified_id,
            "conjoined-part": self.conjoined_part,
            "segment-num": self.segment_num,
        }
        if self.handoff_node_name:
            header["handoff-node-name"] = self.handoff_node_name
        return header


@dataclass(frozen=True)
class FileInfo:
    """What a final/entire archive says of the whole file."""

    size: int
    md5: bytes
    adler32: int
    user_meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, data: bytes, user_meta: dict[str, Any] | None = None) -> FileInfo:
        return cls(len(data), hashlib.md5(data).digest(), zlib.adler32(data), user_meta or {})

    def fields(self) -> Header:
        return {
            "file-size": self.size,
            "file-adler32": self.adler32,
            "file-hash": protocol.b64(self.md5),
            "file-user-meta": self.user_meta,
        }


def share_fields(share: bytes, sequence_num: int, zfec_padding_size: int = 0) -> Header:
    return {
        "sequence-num": sequence_num,
        "segment-size": len(share),
        "segment-md5-digest": protocol.b64(hashlib.md5(share).digest()),
        "segment-adler32": zlib.adler32(share),
        "zfec-padding-size": zfec_padding_size,
    }


def archive(
    message_type: str,
    ref: SegmentRef,
    share: bytes,
    sequence_num: int,
    *,
    zfec_padding_size: int = 0,
    file: FileInfo | None = None,
    timestamp_s: float | None = None,
    source_node_name: str | None = None,
    user_request_id: str | None = None,
) -> Header:
    """Header of an ``archive-key-{entire,start,next,final}`` request."""
    header: Header = {
        "message-type": message_type,
        "timestamp": time.time() if timestamp_s is None else timestamp_s,
        **ref.fields(),
        **share_fields(share, sequence_num, zfec_padding_size),
    }
    if message_type in ("archive-key-entire", "archive-key-final"):
        if file is None:
            raise ValueError(f"{message_type} needs the file summary")
        header.update(file.fields())
    if source_node_name:
        header["source-node-name"] = source_node_name
    if user_request_id:
        header["user-request-id"] = user_request_id
    return header


def cancel(ref: SegmentRef) -> Header:
    return {"message-type": "archive-key-cancel", **ref.fields()}


def destroy(
    ref: SegmentRef,
    unified_id_to_delete: int | None = None,
    timestamp_s: float | None = None,
    conjoined_part_to_delete: int | None = None,
) -> Header:
    """``destroy-key``: ``ref.unified_id`` is the tombstone's own id.

    Without ``unified_id_to_delete`` every older version of the key dies;
    ``conjoined_part_to_delete`` limits it to one part of that version.
    """
    header: Header = {
        "message-type": "destroy-key",
        "timestamp": time.time() if timestamp_s is None else timestamp_s,
        **ref.fields(),
    }
    if unified_id_to_delete is not None:
        header["unified-id-to-delete"] = unified_id_to_delete
    if conjoined_part_to_delete is not None:
        header["destroy-conjoined-part"] = conjoined_part_to_delete
    return header


def retrieve_start(
    retrieve_id: str, ref: SegmentRef, first_sequence: int = 0, last_sequence: int | None = None
) -> Header:
    header: Header = {
        "message-type": "retrieve-key-start",
        "retrieve-id": retrieve_id,
        **ref.fields(),
        "sequence-num": first_sequence,
    }
    header.pop("handoff-node-name", None)
    if last_sequence is not None:
        header["end-sequence-num"] = last_sequence
    return header


def retrieve_next(retrieve_id: str) -> Header:
    return {"message-type": "retrieve-key-next", "retrieve-id": retrieve_id}
