"""Plain values the writer's handlers decode messages into."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SegmentIdentity:
    """Which share this is, and for whom this node holds it."""

    collection_id: int
    key: str
    unified_id: int
    conjoined_part: int
    segment_num: int
    #: The home node this share is held for, when handed off; None when at home.
    handoff_node_name: str | None = None


@dataclass(frozen=True)
class SegmentInfo:
    timestamp_s: float
    source_node_name: str | None = None
    user_request_id: str | None = None


@dataclass(frozen=True)
class ShareIn:
    """One sequence's share as received, with what the sender says it is."""

    sequence_num: int
    data: bytes
    size: int
    md5: bytes
    adler32: int
    zfec_padding_size: int = 0


@dataclass(frozen=True)
class FileSummary:
    """What the final message says of the whole file (for index rebuilds)."""

    file_size: int
    file_adler32: int
    file_hash: bytes
    user_meta: dict[str, Any] = field(default_factory=dict)
