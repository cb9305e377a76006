"""Accounting details: what is accepted, and the arithmetic of hours and batches."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.accounting.model import (
    MAX_VALUE,
    Detail,
    Event,
    aggregate,
    counted_indices,
    detail_header,
    hour_of,
    iso_hour,
    parse_detail,
    plan_dedupe,
    window_start,
)
from services.common.protocol import ErrorCode, ProtocolError

VALID: dict[str, Any] = {
    "message-type": "space-accounting-detail",
    "collection-id": 7,
    "event": "bytes-added",
    "value": 1024,
    "timestamp": 1_700_000_000.25,
    "detail-id": "d-1",
}


def test_a_valid_detail_parses() -> None:
    detail = parse_detail(VALID, require_id=True)
    assert detail == Detail(7, Event.BYTES_ADDED, 1024, 1_700_000_000.25, "d-1")
    assert parse_detail(detail_header(detail), require_id=True) == detail


def test_an_integer_timestamp_is_seconds_too() -> None:
    assert parse_detail({**VALID, "timestamp": 3600}, require_id=False).timestamp_s == 3600.0


def test_detail_id_is_optional_on_the_pipeline_only() -> None:
    without = {k: v for k, v in VALID.items() if k != "detail-id"}
    assert parse_detail(without, require_id=False).detail_id is None
    with pytest.raises(ProtocolError) as caught:
        parse_detail(without, require_id=True)
    assert caught.value.code == ErrorCode.MISSING_FIELD


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"collection-id": None}, ErrorCode.MISSING_FIELD),
        ({"collection-id": "7"}, ErrorCode.BAD_FIELD),
        ({"collection-id": -1}, ErrorCode.BAD_FIELD),
        ({"collection-id": True}, ErrorCode.BAD_FIELD),
        ({"collection-id": 2**63}, ErrorCode.BAD_FIELD),
        ({"event": "bytes-eaten"}, ErrorCode.BAD_FIELD),
        ({"event": 1}, ErrorCode.BAD_FIELD),
        ({"value": None}, ErrorCode.MISSING_FIELD),
        ({"value": -5}, ErrorCode.BAD_FIELD),
        ({"value": 1.5}, ErrorCode.BAD_FIELD),
        ({"value": MAX_VALUE + 1}, ErrorCode.BAD_FIELD),
        ({"timestamp": "now"}, ErrorCode.BAD_FIELD),
        ({"timestamp": float("nan")}, ErrorCode.BAD_FIELD),
        ({"timestamp": float("inf")}, ErrorCode.BAD_FIELD),
        ({"timestamp": -1.0}, ErrorCode.BAD_FIELD),
        ({"timestamp": 1e300}, ErrorCode.BAD_FIELD),
        ({"detail-id": ""}, ErrorCode.BAD_FIELD),
        ({"detail-id": 12}, ErrorCode.BAD_FIELD),
        ({"detail-id": "x" * 201}, ErrorCode.BAD_FIELD),
    ],
)
def test_invalid_fields_are_refused(changes: dict[str, Any], code: ErrorCode) -> None:
    header = {**VALID, **changes}
    header = {k: v for k, v in header.items() if v is not None}
    with pytest.raises(ProtocolError) as caught:
        parse_detail(header, require_id=True)
    assert caught.value.code == code


def test_hours_are_utc_hours() -> None:
    assert hour_of(7199.9) == 3600
    assert hour_of(7200.0) == 7200
    assert window_start(7300.0, 1) == 7200
    assert window_start(7300.0, 3) == 0
    assert iso_hour(datetime(2024, 5, 1, 13, tzinfo=UTC)) == "2024-05-01T13:00:00Z"


@given(st.floats(min_value=0, max_value=4e9))
def test_a_timestamp_lies_in_its_hour(timestamp_s: float) -> None:
    start = hour_of(timestamp_s)
    assert start % 3600 == 0
    assert start <= timestamp_s < start + 3600


details = st.builds(
    Detail,
    collection_id=st.integers(0, 3),
    event=st.sampled_from(Event),
    value=st.integers(0, 10**12),
    timestamp_s=st.floats(0, 4 * 3600),
    detail_id=st.none() | st.sampled_from(["a", "b", "c"]),
)


@given(st.lists(details, max_size=50))
def test_aggregate_keeps_every_byte(batch: list[Detail]) -> None:
    sums = aggregate(batch)
    assert list(sums) == sorted(sums)
    for event, name in [
        (Event.BYTES_ADDED, "bytes_added"),
        (Event.BYTES_REMOVED, "bytes_removed"),
        (Event.BYTES_RETRIEVED, "bytes_retrieved"),
    ]:
        expected = sum(d.value for d in batch if d.event is event)
        assert sum(getattr(totals, name) for totals in sums.values()) == expected


@given(st.lists(details, max_size=50), st.sets(st.sampled_from(["a", "b", "c"])))
def test_each_detail_id_counts_at_most_once(batch: list[Detail], new_ids: set[str]) -> None:
    plan = plan_dedupe(batch)
    assert plan.detail_ids == sorted({d.detail_id for d in batch if d.detail_id is not None})
    counted = [batch[i] for i in counted_indices(batch, plan, new_ids & set(plan.detail_ids))]
    with_ids = [d.detail_id for d in counted if d.detail_id is not None]
    assert sorted(with_ids) == sorted(new_ids & set(plan.detail_ids))
    assert [d for d in counted if d.detail_id is None] == [d for d in batch if d.detail_id is None]
