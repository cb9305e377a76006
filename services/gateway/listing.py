"""Listing keys with prefix, delimiter and a resume point, as S3 does.

Keys come from ``fetch(start, inclusive, limit)``: rows whose key is after
``start`` (or equal to it when ``inclusive``) and not before the prefix, in
byte order (the index's key column is ``COLLATE "C"``; for UTF-8 that is
code-point order, Python's ``str`` order). With a delimiter, every key whose
remainder after the prefix contains it is rolled into one common prefix,
and the scan jumps to :func:`prefix_successor` of that prefix instead of
reading its keys. A key never disappears into a common prefix it does not
belong to (the original dropped plain keys).

The resume point (``marker`` / ``start-after`` / continuation token) is the
last key or common prefix a page returned; a common prefix at or before it
is not returned again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

_MAX_CODE_POINT = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


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


#: ``fetch(start, inclusive, limit)``: see the module docstring.
Fetch = Callable[[str, bool, int], Awaitable[Sequence[Any]]]


def prefix_successor(prefix: str) -> str | None:
    """The least string greater than every string that starts with ``prefix``.

    None when there is none (``prefix`` is empty or all U+10FFFF). No
    "after everything" sentinel can do this with ``key > sentinel``: a key
    may itself continue with U+10FFFF.

    >>> prefix_successor("photos/"), prefix_successor("a\U0010ffff")
    ('photos0', 'b')
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code <= _MAX_CODE_POINT:
            if code in _SURROGATES:  # not characters: UTF-8 has no bytes for them
                code = _SURROGATES.stop
            return "".join(chars) + chr(code)
    return None


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
    start, inclusive = resume_after, False
    while True:
        rows = await fetch(start, inclusive, batch)
        if not rows:
            return page
        for row in rows:
            key = key_of(row)
            if not key.startswith(prefix):
                return page  # rows are not before the prefix: this one is past it
            common = _common_prefix(key, prefix, delimiter)
            if common is not None:
                if common > resume_after:  # else it was returned on an earlier page
                    if page.count == max_keys:
                        page.is_truncated = True
                        return page
                    page.common_prefixes.append(common)
                    page.last = common
                following = prefix_successor(common)
                if following is None:
                    return page
                start, inclusive = following, True
                break  # refetch past the whole common prefix
            if page.count == max_keys:
                page.is_truncated = True
                return page
            page.entries.append(row)
            page.last = key
            start, inclusive = key, False
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
