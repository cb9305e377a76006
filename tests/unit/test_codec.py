"""Round trips through zfec via services.common.codec."""

from __future__ import annotations

import itertools
import random
import threading

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.common import codec
from services.common.codec import decode_sync, encode_sync
from services.common.erasure import sequence_spans, share_size, split_data

CODES = [(4, 6), (8, 10), (1, 3)]
MAX_N = max(n for _, n in CODES)


def _body(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def _subset(order: list[int], k: int, n: int) -> list[int]:
    """The first ``k`` share numbers below ``n`` in ``order`` (a permutation)."""
    return [num for num in order if num < n][:k]


PARITY_FIRST = list(range(MAX_N - 1, -1, -1))
DATA_FIRST = list(range(MAX_N))


@pytest.mark.parametrize(("k", "n"), CODES)
@settings(max_examples=150, deadline=None)
@given(
    sequence_size=st.integers(64, 1024),
    size_fraction=st.floats(0, 4.2),
    seed=st.integers(0, 2**16),
    orders=st.lists(st.permutations(range(MAX_N)), min_size=1, max_size=6),
)
@example(sequence_size=64, size_fraction=0.0, seed=0, orders=[PARITY_FIRST])
@example(sequence_size=64, size_fraction=0.0, seed=0, orders=[DATA_FIRST])
@example(sequence_size=64, size_fraction=1 / 64, seed=0, orders=[PARITY_FIRST])  # 1
@example(sequence_size=64, size_fraction=2 / 64, seed=0, orders=[PARITY_FIRST])  # 2
@example(sequence_size=64, size_fraction=3 / 64, seed=0, orders=[PARITY_FIRST])  # 3 = 4-1
@example(sequence_size=64, size_fraction=4 / 64, seed=0, orders=[PARITY_FIRST])  # 4
@example(sequence_size=64, size_fraction=5 / 64, seed=0, orders=[PARITY_FIRST])  # 5 = 4+1
@example(sequence_size=64, size_fraction=7 / 64, seed=0, orders=[PARITY_FIRST])  # 7 = 8-1
@example(sequence_size=64, size_fraction=8 / 64, seed=0, orders=[PARITY_FIRST])  # 8
@example(sequence_size=64, size_fraction=9 / 64, seed=0, orders=[PARITY_FIRST])  # 9 = 8+1
@example(sequence_size=64, size_fraction=63 / 64, seed=0, orders=[PARITY_FIRST])  # ss-1
@example(sequence_size=64, size_fraction=1.0, seed=0, orders=[PARITY_FIRST])  # ss
@example(sequence_size=64, size_fraction=65 / 64, seed=0, orders=[PARITY_FIRST])  # ss+1
@example(sequence_size=64, size_fraction=65 / 64, seed=0, orders=[DATA_FIRST])
@example(sequence_size=100, size_fraction=4.0, seed=0, orders=[PARITY_FIRST, DATA_FIRST])
@example(sequence_size=100, size_fraction=4.01, seed=0, orders=[PARITY_FIRST])
def test_any_k_shares_rebuild_every_sequence(
    k: int,
    n: int,
    sequence_size: int,
    size_fraction: float,
    seed: int,
    orders: list[list[int]],
) -> None:
    size = round(size_fraction * sequence_size)
    body = _body(size, seed)
    rebuilt = []
    for seq, (offset, length) in enumerate(sequence_spans(size, sequence_size)):
        data = body[offset : offset + length]
        shares = encode_sync(data, k, n)
        assert len(shares) == n
        assert {len(share) for share in shares} == {share_size(length, k)}
        assert shares[:k] == split_data(data, k)  # systematic
        nums = _subset(orders[seq % len(orders)], k, n)
        rebuilt.append(decode_sync({num: shares[num] for num in nums}, k, n, length))
    assert b"".join(rebuilt) == body


@pytest.mark.parametrize(("k", "n"), CODES)
@pytest.mark.parametrize("size", [0, 1, 3, 7, 8, 9, 100])
def test_every_k_subset_decodes(k: int, n: int, size: int) -> None:
    data = _body(size, size)
    shares = encode_sync(data, k, n)
    for nums in itertools.combinations(range(n), k):
        for order in (nums, nums[::-1]):
            assert decode_sync({num: shares[num] for num in order}, k, n, size) == data


def test_replication_shares_are_full_copies() -> None:
    data = b"hello world"
    assert encode_sync(data, 1, 3) == [data, data, data]


def test_k_equals_n_has_no_parity() -> None:
    assert encode_sync(b"abcdefg", 3, 3) == [b"abc", b"def", b"g\x00\x00"]


def test_more_than_k_shares_prefers_data_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _body(1000)
    shares = encode_sync(data, 4, 6)

    def _no_zfec(*args: object) -> None:
        raise AssertionError("zfec must not be called when data shares are present")

    monkeypatch.setattr("services.common.codec.zfec.Decoder", _no_zfec)
    assert decode_sync(dict(enumerate(shares)), 4, 6, len(data)) == data


def test_decode_errors() -> None:
    shares = encode_sync(b"0123456789", 4, 6)
    with pytest.raises(ValueError, match="need 4 shares"):
        decode_sync({0: shares[0], 5: shares[5], 2: shares[2]}, 4, 6, 10)
    with pytest.raises(ValueError, match="unequal sizes"):
        decode_sync({0: shares[0], 1: shares[1], 2: shares[2], 4: shares[4][:-1]}, 4, 6, 10)
    with pytest.raises(ValueError, match="out of range"):
        decode_sync({0: shares[0], 1: shares[1], 2: shares[2], 6: shares[5]}, 4, 6, 10)
    with pytest.raises(ValueError, match="does not fit"):
        decode_sync(dict(enumerate(shares)), 4, 6, 13)
    with pytest.raises(ValueError, match="does not fit"):
        decode_sync(dict(enumerate(shares)), 4, 6, 8)


@pytest.mark.parametrize(("k", "n"), [(0, 3), (4, 3), (2, 257)])
def test_invalid_codes(k: int, n: int) -> None:
    with pytest.raises(ValueError):
        encode_sync(b"abc", k, n)


async def test_async_wrappers_round_trip_off_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[int] = []
    real_encode = codec.encode_sync

    def _recording_encode(data: bytes, k: int, n: int) -> list[bytes]:
        threads.append(threading.get_ident())
        return real_encode(data, k, n)

    monkeypatch.setattr(codec, "encode_sync", _recording_encode)
    data = _body(5000)
    shares = await codec.encode(data, 8, 10)
    assert threads and threads[0] != threading.get_ident()
    picked = {num: shares[num] for num in (2, 3, 4, 5, 6, 7, 8, 9)}
    assert await codec.decode(picked, 8, 10, len(data)) == data
