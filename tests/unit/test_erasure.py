"""Properties of the pure layout arithmetic in services.common.erasure."""

from __future__ import annotations

import doctest
import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.common import erasure
from services.common.erasure import (
    ShareSlice,
    byte_range_to_shares,
    join_data,
    padding_size,
    sequence_spans,
    sequences_for_byte_range,
    share_size,
    split_data,
)


def _body(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def test_docstring_examples() -> None:
    failed, attempted = doctest.testmod(erasure)
    assert attempted > 0
    assert failed == 0


def test_empty_object_has_one_empty_sequence() -> None:
    assert sequence_spans(0, 4096) == [(0, 0)]


@given(size=st.integers(0, 10_000), sequence_size=st.integers(1, 2_000))
def test_sequence_spans_tile_the_body(size: int, sequence_size: int) -> None:
    spans = sequence_spans(size, sequence_size)
    expected_count = max(1, -(-size // sequence_size))
    assert len(spans) == expected_count
    offset = 0
    for i, (start, length) in enumerate(spans):
        assert start == offset
        if i < len(spans) - 1:
            assert length == sequence_size
        else:
            assert 0 < length <= sequence_size or size == 0
        offset += length
    assert offset == size


@given(length=st.integers(0, 10_000), k=st.integers(1, 256))
def test_padding_and_share_size(length: int, k: int) -> None:
    pad = padding_size(length, k)
    assert 0 <= pad < k
    assert (length + pad) % k == 0
    assert share_size(length, k) * k == length + pad


@given(data=st.binary(max_size=600), k=st.integers(1, 20))
@example(data=b"", k=4)
def test_split_join_round_trip(data: bytes, k: int) -> None:
    blocks = split_data(data, k)
    assert len(blocks) == k
    assert {len(b) for b in blocks} == {share_size(len(data), k)}
    assert b"".join(blocks)[len(data) :] == bytes(padding_size(len(data), k))
    assert join_data(blocks, len(data)) == data


@st.composite
def _ranges(draw: st.DrawFn) -> tuple[int, int, int, int, int]:
    object_size = draw(st.integers(1, 3_000))
    sequence_size = draw(st.integers(1, 700))
    k = draw(st.integers(1, 12))
    first = draw(st.integers(0, object_size - 1))
    last = draw(st.integers(first, object_size - 1))
    return first, last, object_size, sequence_size, k


@settings(max_examples=500, deadline=None)
@given(case=_ranges(), seed=st.integers(0, 2**16))
@example(case=(0, 0, 1, 1, 1), seed=0)
@example(case=(0, 29, 30, 16, 4), seed=0)
@example(case=(29, 29, 30, 16, 4), seed=0)
@example(case=(100, 700, 1000, 512, 4), seed=0)
@example(case=(0, 9, 10, 64, 8), seed=0)
def test_byte_range_to_shares_reproduces_range(
    case: tuple[int, int, int, int, int], seed: int
) -> None:
    first, last, object_size, sequence_size, k = case
    body = _body(object_size, seed)
    spans = sequence_spans(object_size, sequence_size)
    data_shares = [split_data(body[offset : offset + length], k) for offset, length in spans]
    slices = byte_range_to_shares(first, last, object_size, sequence_size, k)
    got = b"".join(data_shares[s.sequence_num][s.share_num][s.start : s.end] for s in slices)
    assert got == body[first : last + 1]

    touched = sequences_for_byte_range(first, last, sequence_size)
    assert sorted({s.sequence_num for s in slices}) == list(touched)
    positions = [(s.sequence_num, s.share_num) for s in slices]
    assert positions == sorted(set(positions))  # object order, no repeats
    for s in slices:
        assert 0 <= s.share_num < k
        seq_length = spans[s.sequence_num][1]
        size = share_size(seq_length, k)
        assert 0 <= s.start < s.end <= size
        assert s.share_num * size + s.end <= seq_length  # never padding
        assert s.length == s.end - s.start


def test_byte_range_to_shares_small_example() -> None:
    assert byte_range_to_shares(5, 20, 30, 16, 4) == [
        ShareSlice(0, 1, 1, 4),
        ShareSlice(0, 2, 0, 4),
        ShareSlice(0, 3, 0, 4),
        ShareSlice(1, 0, 0, 4),
        ShareSlice(1, 1, 0, 1),
    ]


@pytest.mark.parametrize(
    ("first", "last", "object_size"),
    [(5, 4, 10), (-1, 4, 10), (0, 10, 10), (3, 12, 10), (0, 0, 0)],
)
def test_byte_range_to_shares_rejects_invalid_range(
    first: int, last: int, object_size: int
) -> None:
    with pytest.raises(ValueError, match="invalid byte range"):
        byte_range_to_shares(first, last, object_size, 16, 4)


def test_sequences_for_byte_range() -> None:
    assert sequences_for_byte_range(100, 700, 512) == range(0, 2)
    assert sequences_for_byte_range(0, 511, 512) == range(0, 1)
    assert sequences_for_byte_range(512, 512, 512) == range(1, 2)
    with pytest.raises(ValueError):
        sequences_for_byte_range(3, 2, 512)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        sequence_spans(10, 0)
    with pytest.raises(ValueError):
        sequence_spans(-1, 10)
    with pytest.raises(ValueError):
        padding_size(10, 0)
    with pytest.raises(ValueError):
        join_data([b"ab"], 3)
