"""Usage details and hourly totals as values; decoding and arithmetic, no I/O.

A detail is validated once, where it enters (:func:`parse_detail`); from then
on it is a :class:`Detail` whose fields are known to fit the database. Values
are capped at :data:`MAX_VALUE` (2**53 bytes, 8 PiB) so that a batch of
details sums without overflowing a bigint.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from services.common import protocol
from services.common.protocol import ErrorCode, ProtocolError, field, optional_field

DETAIL: Final = "space-accounting-detail"
USAGE_REQUEST: Final = "space-usage-request"

#: The largest value one detail may carry.
MAX_VALUE: Final = 2**53
#: Timestamps from the epoch up to the year 9999 (what a timestamptz can hold and Python can print).
MAX_TIMESTAMP_S: Final = 253_402_300_799.0
MAX_DETAIL_ID_CHARS: Final = 200
SECONDS_PER_HOUR: Final = 3600


class Event(StrEnum):
    BYTES_ADDED = "bytes-added"
    BYTES_REMOVED = "bytes-removed"
    BYTES_RETRIEVED = "bytes-retrieved"


@dataclasses.dataclass(frozen=True, slots=True)
class Detail:
    """One usage detail: ``value`` bytes of ``event`` in bucket ``collection_id``."""

    collection_id: int
    event: Event
    value: int
    timestamp_s: float
    #: Idempotency key; None = counted without deduplication (pipeline only).
    detail_id: str | None = None

    @property
    def hour_s(self) -> int:
        return hour_of(self.timestamp_s)


def _bad(name: str, message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FIELD, message, field=name)


def parse_detail(header: Mapping[str, Any], require_id: bool) -> Detail:
    """Validate a ``space-accounting-detail`` header (``ProtocolError`` if unfit).

    >>> parse_detail({"collection-id": 7, "event": "bytes-added", "value": 10,
    ...               "timestamp": 3600.5}, require_id=False).hour_s
    3600
    """
    collection_id = protocol.non_negative(header, "collection-id")
    if collection_id >= 2**63:
        raise _bad("collection-id", "collection-id does not fit 64 bits")
    raw_event = field(header, "event", str)
    try:
        event = Event(raw_event)
    except ValueError:
        known = ", ".join(e.value for e in Event)
        raise _bad("event", f"unknown event {raw_event!r}; expected one of {known}") from None
    value = protocol.non_negative(header, "value")
    if value > MAX_VALUE:
        raise _bad("value", f"value {value} is over {MAX_VALUE}")
    timestamp_s = field(header, "timestamp", float)
    if not math.isfinite(timestamp_s) or not 0 <= timestamp_s <= MAX_TIMESTAMP_S:
        raise _bad("timestamp", f"timestamp {timestamp_s!r} is not seconds since the epoch")
    if require_id:
        detail_id: str | None = field(header, "detail-id", str)
    else:
        detail_id = optional_field(header, "detail-id", str, "") or None
    if detail_id is not None and not 0 < len(detail_id) <= MAX_DETAIL_ID_CHARS:
        raise _bad("detail-id", f"detail-id must be 1 to {MAX_DETAIL_ID_CHARS} characters")
    return Detail(collection_id, event, value, timestamp_s, detail_id)


def detail_header(detail: Detail) -> dict[str, Any]:
    """The header that sends ``detail`` (what senders and tests build)."""
    header: dict[str, Any] = {
        "message-type": DETAIL,
        "collection-id": detail.collection_id,
        "event": detail.event.value,
        "value": detail.value,
        "timestamp": detail.timestamp_s,
    }
    if detail.detail_id is not None:
        header["detail-id"] = detail.detail_id
    return header


def hour_of(timestamp_s: float) -> int:
    """The start of the UTC hour holding ``timestamp_s``: ``hour_of(7199.9) == 3600``."""
    return int(timestamp_s // SECONDS_PER_HOUR) * SECONDS_PER_HOUR


def window_start(now_s: float, hours: int) -> int:
    """Start of the last ``hours`` hours, the current (unfinished) one included.

    ``window_start(7300.0, 1) == 7200``; ``window_start(7300.0, 2) == 3600``.
    """
    return hour_of(now_s) - (hours - 1) * SECONDS_PER_HOUR


def hour_datetime(hour_s: int) -> datetime:
    return datetime.fromtimestamp(hour_s, UTC)


def iso_hour(hour: datetime) -> str:
    """``2024-05-01T13:00:00Z`` for any aware datetime in that UTC hour."""
    return hour.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(slots=True)
class Totals:
    bytes_added: int = 0
    bytes_removed: int = 0
    bytes_retrieved: int = 0

    def add(self, event: Event, value: int) -> None:
        if event is Event.BYTES_ADDED:
            self.bytes_added += value
        elif event is Event.BYTES_REMOVED:
            self.bytes_removed += value
        else:
            self.bytes_retrieved += value

    def plus(self, other: Totals) -> Totals:
        return Totals(
            self.bytes_added + other.bytes_added,
            self.bytes_removed + other.bytes_removed,
            self.bytes_retrieved + other.bytes_retrieved,
        )

    def as_json(self) -> dict[str, int]:
        return {
            "bytes-added": self.bytes_added,
            "bytes-removed": self.bytes_removed,
            "bytes-retrieved": self.bytes_retrieved,
        }


def aggregate(details: Iterable[Detail]) -> dict[tuple[int, int], Totals]:
    """Sum details per (bucket, hour start), sorted by key.

    Sorted so that every transaction takes the row locks of ``accounting_hourly``
    in the same order, which keeps concurrent batches from deadlocking.
    """
    sums: dict[tuple[int, int], Totals] = {}
    for detail in details:
        key = (detail.collection_id, detail.hour_s)
        sums.setdefault(key, Totals()).add(detail.event, detail.value)
    return dict(sorted(sums.items()))


@dataclasses.dataclass(frozen=True, slots=True)
class DedupePlan:
    """A batch split by detail-id: what to count, and what repeats an earlier detail."""

    #: Every detail-id of the batch, once each, sorted (the order locks are taken in).
    detail_ids: list[str]
    #: Index in the batch of the first detail of each detail-id.
    first_of: dict[str, int]


def plan_dedupe(details: Sequence[Detail]) -> DedupePlan:
    """Within one batch, the first detail of each detail-id stands for all of them."""
    first_of: dict[str, int] = {}
    for index, detail in enumerate(details):
        if detail.detail_id is not None:
            first_of.setdefault(detail.detail_id, index)
    return DedupePlan(sorted(first_of), first_of)


def counted_indices(details: Sequence[Detail], plan: DedupePlan, new_ids: set[str]) -> list[int]:
    """Indices of the details to count: no detail-id, or the first of an id not seen before."""
    return [
        index
        for index, detail in enumerate(details)
        if detail.detail_id is None
        or (detail.detail_id in new_ids and plan.first_of[detail.detail_id] == index)
    ]


@dataclasses.dataclass(frozen=True, slots=True)
class HourUsage:
    hour: datetime
    totals: Totals

    def as_json(self) -> dict[str, Any]:
        return {"hour": iso_hour(self.hour), **self.totals.as_json()}


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """One bucket's usage: totals over the window and its hours, oldest first."""

    totals: Totals
    hourly: list[HourUsage]
    #: True when more hours had usage than the reply lists (the oldest were left out).
    truncated: bool = False


class DetailsRejected(Exception):
    """The database refused to count these details (e.g. a total would overflow).

    Unlike the database being away, trying again cannot help.
    """
