"""Plain values the handoff worker reads from its node database and reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.common.messages import SegmentRef
from services.common.valuefile import Location


@dataclass(frozen=True)
class HeldSegment:
    """A final share ('F') or a tombstone ('T') this node holds for ``home``."""

    id: int
    home: str
    status: str
    collection_id: int
    key: str
    unified_id: int
    conjoined_part: int
    segment_num: int
    timestamp_s: float
    user_request_id: str | None = None
    file_size: int | None = None
    file_adler32: int | None = None
    file_hash: bytes | None = None
    user_meta: dict[str, Any] = field(default_factory=dict)
    #: Tombstones: the version (None: every older one) and part (None: all) destroyed.
    destroyed_unified_id: int | None = None
    destroyed_conjoined_part: int | None = None

    @property
    def is_tombstone(self) -> bool:
        return self.status == "T"

    @property
    def ref(self) -> SegmentRef:
        """The share as its home stores it: the same identity, no handoff tag."""
        return SegmentRef(
            self.collection_id, self.key, self.unified_id, self.segment_num, self.conjoined_part
        )


@dataclass(frozen=True)
class HeldSequence:
    """Where one sequence's share of a held segment lies, and its stored checksums."""

    sequence_num: int
    value_file_id: int
    value_file_offset: int
    size: int
    zfec_padding_size: int
    md5: bytes
    adler32: int

    @property
    def location(self) -> Location:
        return Location(self.value_file_id, self.value_file_offset, self.size)


@dataclass(frozen=True)
class Holding:
    """What this node holds for one other node."""

    #: Final shares held (damaged ones included) and their bytes.
    segments: int = 0
    bytes: int = 0
    #: Tombstones waiting to be forwarded.
    tombstones: int = 0
    #: Held shares found damaged: never forwarded (anti-entropy rebuilds the home's copy).
    damaged: int = 0

    def as_json(self) -> dict[str, int]:
        return {
            "segments": self.segments,
            "bytes": self.bytes,
            "tombstones": self.tombstones,
            "damaged": self.damaged,
        }
