"""Pure HTTP semantics of GET/HEAD/copy: byte ranges and preconditions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from services.gateway import errors

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte range a ``Range`` header asks for, or None for all.

    >>> parse_range("bytes=0-99", 1000), parse_range("bytes=-10", 1000)
    ((0, 99), (990, 999))
    >>> parse_range("bytes=900-", 1000), parse_range("bytes=5-2000", 1000)
    ((900, 999), (5, 999))

    Syntax S3 ignores (several ranges, other units) serves the whole object;
    a range that starts past the end raises InvalidRange (416).
    """
    if not value:
        return None
    match = _RANGE.match(value.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(value, size)
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        raise _unsatisfiable(value, size)
    return first, min(last, size - 1)


def _unsatisfiable(value: str, size: int) -> errors.InvalidRange:
    return errors.InvalidRange(
        range_requested=value,
        actual_object_size=size,
        headers={"Content-Range": f"bytes */{size}"},
    )


def _http_date(value: str | None) -> datetime | None:
    """An HTTP date, always timezone-aware; None for a missing or unparsable one.

    >>> _http_date("Tue, 15 Nov 1994 08:12:31 -0000").tzinfo
    datetime.timezone.utc
    >>> _http_date("yesterday") is None
    True
    """
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    # "-0000" (and a missing zone) parse as naive; HTTP dates are UTC.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _etag_matches(header: str, etag: str) -> bool:
    candidates = [item.strip().removeprefix("W/").strip('"') for item in header.split(",")]
    return "*" in candidates or etag in candidates


def check_preconditions(
    headers: Mapping[str, str], etag: str, last_modified: datetime, prefix: str = ""
) -> None:
    """RFC 7232 as S3 applies it; ``prefix`` is ``x-amz-copy-source-`` for copies.

    If-Match true beats If-Unmodified-Since false (200); If-None-Match false
    beats If-Modified-Since true (304 for reads, 412 for copies).
    """
    modified = last_modified.replace(microsecond=0)
    if_match = headers.get(f"{prefix}if-match")
    if_unmodified = _http_date(headers.get(f"{prefix}if-unmodified-since"))
    if_none_match = headers.get(f"{prefix}if-none-match")
    if_modified = _http_date(headers.get(f"{prefix}if-modified-since"))
    failed = errors.PreconditionFailed
    not_modified: type[errors.S3Error] = failed if prefix else errors.NotModified
    if if_match is not None:
        if not _etag_matches(if_match, etag):
            raise failed(condition="If-Match")
    elif if_unmodified is not None and modified > if_unmodified:
        raise failed(condition="If-Unmodified-Since")
    if if_none_match is not None:
        if _etag_matches(if_none_match, etag):
            raise not_modified(condition="If-None-Match")
    elif if_modified is not None and modified <= if_modified:
        raise not_modified(condition="If-Modified-Since")
