"""Listing with prefix, delimiter and paging, against an in-memory index.

The in-memory ``fetch`` keeps the contract of ``queries.list_live``: rows of
keys after the start (or at it, when inclusive) and not before the prefix, in
code-point order (which is UTF-8 byte order, the index's ``COLLATE "C"``).
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway.listing import Page, list_page, prefix_successor


class Index:
    def __init__(self, keys: Sequence[str]) -> None:
        self.keys = sorted(set(keys))
        self.calls = 0

    async def fetch(self, start: str, inclusive: bool, limit: int, prefix: str) -> list[Any]:
        self.calls += 1
        if self.calls > 10_000:
            raise AssertionError("the listing does not terminate")
        rows = [
            {"key": key}
            for key in self.keys
            if (key >= start if inclusive else key > start) and key >= prefix
        ]
        return rows[:limit]


def page_of(
    index: Index,
    prefix: str = "",
    delimiter: str = "",
    resume_after: str = "",
    max_keys: int = 1000,
    batch: int = 1000,
) -> Page:
    async def fetch(start: str, inclusive: bool, limit: int) -> list[Any]:
        return await index.fetch(start, inclusive, limit, prefix)

    return run(list_page(fetch, prefix, delimiter, resume_after, max_keys, batch=batch))


def run(coroutine: Coroutine[Any, Any, Page]) -> Page:
    """Run a coroutine that never suspends (the in-memory fetch does not), loop-free."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        page: Page = stop.value
        return page
    coroutine.close()
    raise AssertionError("the listing suspended on an in-memory fetch")


def keys_of(page: Page) -> list[str]:
    return [row["key"] for row in page.entries]


def model(keys: Sequence[str], prefix: str, delimiter: str) -> tuple[list[str], list[str]]:
    """What S3 lists: plain keys, and each common prefix once, in key order."""
    plain: list[str] = []
    prefixes: list[str] = []
    for key in sorted(set(keys)):
        if not key.startswith(prefix):
            continue
        at = key.find(delimiter, len(prefix)) if delimiter else -1
        if at < 0:
            plain.append(key)
        elif key[: at + len(delimiter)] not in prefixes:
            prefixes.append(key[: at + len(delimiter)])
    return plain, prefixes


def test_delimiter_keeps_plain_keys_beside_common_prefixes() -> None:
    index = Index(["a", "a/b", "a/c/d", "a0", "b", "b/", "b/x", "c"])
    page = page_of(index, delimiter="/")
    assert keys_of(page) == ["a", "a0", "b", "c"]
    assert page.common_prefixes == ["a/", "b/"]
    assert not page.is_truncated
    page = page_of(index, prefix="a/", delimiter="/")
    assert keys_of(page) == ["a/b"]
    assert page.common_prefixes == ["a/c/"]
    page = page_of(index, prefix="b/", delimiter="/")
    assert keys_of(page) == ["b/", "b/x"]


def test_paging_resumes_after_the_last_key_or_prefix() -> None:
    index = Index(["a", "b/1", "b/2", "c", "d/1", "e"])
    first = page_of(index, delimiter="/", max_keys=2)
    assert (keys_of(first), first.common_prefixes, first.is_truncated) == (["a"], ["b/"], True)
    assert first.last == "b/"
    second = page_of(index, delimiter="/", max_keys=2, resume_after=first.last)
    assert (keys_of(second), second.common_prefixes, second.is_truncated) == (["c"], ["d/"], True)
    third = page_of(index, delimiter="/", max_keys=2, resume_after=second.last)
    assert (keys_of(third), third.common_prefixes, third.is_truncated) == (["e"], [], False)


def test_a_full_last_page_is_not_truncated() -> None:
    index = Index(["a", "b"])
    page = page_of(index, max_keys=2)
    assert keys_of(page) == ["a", "b"] and not page.is_truncated
    assert page_of(index, max_keys=0).count == 0


def test_common_prefix_is_skipped_without_reading_its_keys() -> None:
    index = Index(["a/" + str(i).zfill(4) for i in range(5000)] + ["b"])
    page = page_of(index, delimiter="/", batch=100)
    assert (keys_of(page), page.common_prefixes) == (["b"], ["a/"])
    assert index.calls <= 3


def test_keys_with_the_highest_code_point_after_a_common_prefix() -> None:
    top = "\U0010ffff"
    index = Index(["a/" + top, "a/" + top + "x", "a/" + top * 3 + "/y", "a0", top + "/z"])
    page = page_of(index, delimiter="/", max_keys=1000)
    assert keys_of(page) == ["a0"]
    assert page.common_prefixes == ["a/", top + "/"]
    # Paged one at a time, each common prefix is returned once and the listing ends.
    seen: list[str] = []
    resume = ""
    for _ in range(10):
        page = page_of(index, delimiter="/", max_keys=1, resume_after=resume)
        seen += keys_of(page) + page.common_prefixes
        if not page.is_truncated:
            break
        resume = page.last
    assert seen == ["a/", "a0", top + "/"]


@pytest.mark.parametrize(
    ("prefix", "successor"),
    [
        ("a/", "a0"),
        ("a", "b"),
        ("a\U0010ffff", "b"),
        ("\U0010ffff\U0010ffff", None),
        ("\ud7ff", "\ue000"),
        ("", None),
    ],
)
def test_prefix_successor(prefix: str, successor: str | None) -> None:
    assert prefix_successor(prefix) == successor
    if successor is not None:
        assert successor > prefix and not successor.startswith(prefix)
        assert prefix + "\U0010ffff" * 5 < successor


ALPHABET = st.sampled_from(["a", "b", "/", "-", "é", "\U0010ffff", "\U0001f600"])
KEYS = st.lists(st.text(ALPHABET, min_size=1, max_size=6), max_size=30)
PREFIXES = st.sampled_from(["", "a", "a/", "b", "/", "é"])
DELIMITERS = st.sampled_from(["", "/", "a", "-/", "\U0010ffff"])


@settings(max_examples=300, deadline=None)
@given(
    keys=KEYS,
    prefix=PREFIXES,
    delimiter=DELIMITERS,
    max_keys=st.integers(1, 8),
    batch=st.integers(1, 5),
)
def test_paging_yields_exactly_the_one_big_page(
    keys: list[str], prefix: str, delimiter: str, max_keys: int, batch: int
) -> None:
    index = Index(keys)
    whole = page_of(index, prefix, delimiter, batch=batch)
    expected_keys, expected_prefixes = model(keys, prefix, delimiter)
    assert (keys_of(whole), whole.common_prefixes) == (expected_keys, expected_prefixes)
    assert not whole.is_truncated

    got_keys: list[str] = []
    got_prefixes: list[str] = []
    resume = ""
    for _ in range(len(keys) + 2):
        page = page_of(index, prefix, delimiter, resume, max_keys, batch)
        assert page.count <= max_keys
        got_keys += keys_of(page)
        got_prefixes += page.common_prefixes
        if not page.is_truncated:
            break
        assert page.count == max_keys
        assert page.last > resume
        resume = page.last
    else:
        raise AssertionError("paging did not end")
    assert got_keys == expected_keys
    assert got_prefixes == expected_prefixes
    # Every plain key under the prefix is listed: none vanishes into a prefix.
    for key in keys:
        if key.startswith(prefix) and (not delimiter or delimiter not in key[len(prefix) :]):
            assert key in got_keys
