"""Listing keys with prefix, delimiter and a resume point, as S3 does.

Keys come from ``fetch(after, limit)`` in byte order (the index's key column
is ``COLLATE "C"``). With a delimiter, every key whose remainder after the
prefix contains it is rolled into one common prefix, and the scan jumps past
that whole prefix instead of reading its keys. A key never disappears into a
common prefix it does not belong to (the original dropped plain keys).

The resume point (``marker`` / ``start-after`` / continuation token) is the
last key or common prefix a page returned; a common prefix at or before it
is not returned again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Sorts after every string that starts with the same prefix (in UTF-8 order).
_AFTER_ALL = "\U0010ffff"


@dataclass
class Page:
    entries: list[Any] = field(default_factory=list)
    common_prefixes: list[str] = field(default_factory=list)
    is_truncated: bool = False
    #: The last key or common prefix returned (the next page's resume point).
    last: str = ""

    @property
    def count(self) -> int:
        return len(self.entries) + len(self.common_prefixes)


Fetch = Callable[[str, int], Awaitable[Sequence[Any]]]


async def list_page(
    fetch: Fetch,
    prefix: str,
    delimiter: str,
    resume_after: str,
    max_keys: int,
    key_of: Callable[[Any], str] = lambda row: str(row["key"]),
    batch: int = 1000,
) -> Page:
    page = Page()
    if max_keys <= 0:
        return page
    after = resume_after
    while True:
        rows = await fetch(after, batch)
        if not rows:
            return page
        for row in rows:
            key = key_of(row)
            if not key.startswith(prefix):
                if key > prefix:
                    return page  # past every key with this prefix
                after = key
                continue
            common = _common_prefix(key, prefix, delimiter)
            if common is not None:
                after = common + _AFTER_ALL
                if common <= resume_after:
                    break  # returned on an earlier page
                if page.count == max_keys:
                    page.is_truncated = True
                    return page
                page.common_prefixes.append(common)
                page.last = common
                break  # refetch past the whole prefix
            if page.count == max_keys:
                page.is_truncated = True
                return page
            page.entries.append(row)
            page.last = key
            after = key
        else:
            if len(rows) < batch:
                return page


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    """``_common_prefix("a/b/c", "a/", "/") == "a/b/"``; None for a plain key."""
    if not delimiter:
        return None
    at = key.find(delimiter, len(prefix))
    if at < 0:
        return None
    return key[: at + len(delimiter)]
