"""Byte ranges and preconditions of GET/HEAD/copy (services.gateway.conditions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway import errors
from services.gateway.conditions import check_preconditions, parse_range

ETAG = "0123456789abcdef0123456789abcdef"
MODIFIED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def http_date(when: datetime) -> str:
    return format_datetime(when, usegmt=True)


# ---------------------------------------------------------------- ranges


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        (None, 10, None),
        ("", 10, None),
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=0-9", 10, (0, 9)),
        ("bytes=2-5", 10, (2, 5)),
        ("bytes=5-", 10, (5, 9)),
        ("bytes=9-", 10, (9, 9)),
        ("bytes=3-100", 10, (3, 9)),
        ("bytes=-1", 10, (9, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-10", 10, (0, 9)),
        ("bytes=-100", 10, (0, 9)),
        (" bytes=1-2 ", 10, (1, 2)),
        # Forms S3 ignores: the whole object is served.
        ("bytes=5-2", 10, None),
        ("bytes=-", 10, None),
        ("bytes=0-1,3-4", 10, None),
        ("items=0-1", 10, None),
        ("bytes=a-b", 10, None),
    ],
)
def test_parse_range(header: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize(
    ("header", "size"),
    [("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=-0", 10), ("bytes=0-", 0), ("bytes=-5", 0)],
)
def test_unsatisfiable_range(header: str, size: int) -> None:
    with pytest.raises(errors.InvalidRange) as excinfo:
        parse_range(header, size)
    error = excinfo.value
    assert error.status == 416
    assert error.headers["Content-Range"] == f"bytes */{size}"
    assert error.details["RangeRequested"] == header
    assert error.details["ActualObjectSize"] == str(size)


@given(size=st.integers(1, 10_000), first=st.integers(0, 20_000), length=st.integers(1, 20_000))
def test_a_satisfiable_range_lies_within_the_object(size: int, first: int, length: int) -> None:
    header = f"bytes={first}-{first + length - 1}"
    if first >= size:
        with pytest.raises(errors.InvalidRange):
            parse_range(header, size)
        return
    got = parse_range(header, size)
    assert got == (first, min(first + length - 1, size - 1))


@given(size=st.integers(1, 10_000), suffix=st.integers(1, 20_000))
def test_suffix_range_is_the_tail(size: int, suffix: int) -> None:
    first, last = parse_range(f"bytes=-{suffix}", size) or (-1, -1)
    assert last == size - 1
    assert last - first + 1 == min(suffix, size)


# ---------------------------------------------------------------- preconditions


def outcome(headers: dict[str, str], prefix: str = "") -> str:
    try:
        check_preconditions(headers, ETAG, MODIFIED, prefix)
    except errors.S3Error as error:
        return error.code
    return "ok"


BEFORE = http_date(MODIFIED - timedelta(hours=1))
SAME = http_date(MODIFIED)  # whole seconds: the stored microseconds do not count
AFTER = http_date(MODIFIED + timedelta(hours=1))
OTHER = '"ffffffffffffffffffffffffffffffff"'


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "ok"),
        ({"if-match": f'"{ETAG}"'}, "ok"),
        ({"if-match": ETAG}, "ok"),
        ({"if-match": "*"}, "ok"),
        ({"if-match": f'{OTHER}, "{ETAG}"'}, "ok"),
        ({"if-match": OTHER}, "PreconditionFailed"),
        ({"if-none-match": f'"{ETAG}"'}, "NotModified"),
        ({"if-none-match": f'W/"{ETAG}"'}, "NotModified"),
        ({"if-none-match": "*"}, "NotModified"),
        ({"if-none-match": OTHER}, "ok"),
        ({"if-modified-since": BEFORE}, "ok"),
        ({"if-modified-since": SAME}, "NotModified"),
        ({"if-modified-since": AFTER}, "NotModified"),
        ({"if-unmodified-since": BEFORE}, "PreconditionFailed"),
        ({"if-unmodified-since": SAME}, "ok"),
        ({"if-unmodified-since": AFTER}, "ok"),
        # An unparsable date is ignored, as HTTP says.
        ({"if-modified-since": "yesterday"}, "ok"),
        ({"if-unmodified-since": "not a date"}, "ok"),
        # A date without a zone (or "-0000") is UTC.
        ({"if-unmodified-since": "Mon, 06 May 2024 06:08:09 -0000"}, "PreconditionFailed"),
        ({"if-modified-since": "Mon, 06 May 2024 08:08:09 -0000"}, "NotModified"),
        # If-Match true beats If-Unmodified-Since false; If-None-Match false
        # beats If-Modified-Since true.
        ({"if-match": f'"{ETAG}"', "if-unmodified-since": BEFORE}, "ok"),
        ({"if-none-match": OTHER, "if-modified-since": AFTER}, "ok"),
        ({"if-none-match": f'"{ETAG}"', "if-modified-since": BEFORE}, "NotModified"),
        ({"if-match": OTHER, "if-none-match": f'"{ETAG}"'}, "PreconditionFailed"),
    ],
)
def test_preconditions(headers: dict[str, str], expected: str) -> None:
    assert outcome(headers) == expected


def test_copy_source_preconditions_fail_with_412() -> None:
    prefix = "x-amz-copy-source-"
    assert outcome({f"{prefix}if-none-match": f'"{ETAG}"'}, prefix) == "PreconditionFailed"
    assert outcome({f"{prefix}if-modified-since": AFTER}, prefix) == "PreconditionFailed"
    assert outcome({f"{prefix}if-match": OTHER}, prefix) == "PreconditionFailed"
    assert outcome({f"{prefix}if-match": f'"{ETAG}"'}, prefix) == "ok"
    # The plain headers do not apply to the source of a copy.
    assert outcome({"if-match": OTHER}, prefix) == "ok"


def test_failed_precondition_names_its_header() -> None:
    with pytest.raises(errors.PreconditionFailed) as excinfo:
        check_preconditions({"if-match": OTHER}, ETAG, MODIFIED)
    assert excinfo.value.details["Condition"] == "If-Match"
    with pytest.raises(errors.NotModified) as not_modified:
        check_preconditions({"if-none-match": "*"}, ETAG, MODIFIED)
    assert not not_modified.value.has_body
