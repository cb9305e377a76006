"""Pure arithmetic of cutting object bodies into sequences and shares.

Role: everything Nimbus needs to know about the *layout* of erasure-coded
data, with no I/O and no zfec. ``services.common.codec`` does the coding
itself; the gateway, readers and anti-entropy use these helpers to decide
which bytes go where and which share bytes serve a ranged GET.

Invariants:

* A body of ``object_size`` bytes is cut into sequences of ``sequence_size``
  bytes; only the last one may be short. An empty body has exactly one
  sequence, of length 0, so every object version has at least one sequence.
* A sequence of ``length`` bytes is padded with ``padding_size(length, k)``
  zero bytes (always ``< k``) to a multiple of ``k`` and split into ``k``
  equal data blocks of ``share_size(length, k)`` bytes.
* zfec is systematic: share ``j < k`` of sequence ``s`` *is* data block
  ``j``, i.e. object bytes
  ``[s * sequence_size + j * share_size, ... + share_size)``. Padding bytes at
  the end of the last data block of a sequence are never object bytes.
* All offsets are 0-based; ``(offset, length)`` pairs and ``ShareSlice`` use
  exclusive ends; S3 byte ranges ``[first, last]`` are inclusive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ShareSlice",
    "byte_range_to_shares",
    "join_data",
    "padding_size",
    "sequence_spans",
    "sequences_for_byte_range",
    "share_size",
    "split_data",
]


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def _check_sequence_size(sequence_size: int) -> None:
    if sequence_size < 1:
        raise ValueError(f"sequence_size must be >= 1, got {sequence_size}")


def sequence_spans(object_size: int, sequence_size: int) -> list[tuple[int, int]]:
    """Return ``(offset, length)`` of each sequence a body is cut into.

    An empty body has exactly one sequence of length 0; otherwise there are
    ``ceil(object_size / sequence_size)`` sequences and only the last may be
    short.

    >>> sequence_spans(10, 4)
    [(0, 4), (4, 4), (8, 2)]
    >>> sequence_spans(0, 4)
    [(0, 0)]
    """
    _check_sequence_size(sequence_size)
    if object_size < 0:
        raise ValueError(f"object_size must be >= 0, got {object_size}")
    if object_size == 0:
        return [(0, 0)]
    return [
        (offset, min(sequence_size, object_size - offset))
        for offset in range(0, object_size, sequence_size)
    ]


def padding_size(length: int, k: int) -> int:
    """Zero bytes appended to ``length`` bytes to reach a multiple of ``k``.

    >>> padding_size(10, 4), padding_size(12, 4), padding_size(0, 4)
    (2, 0, 0)
    """
    _check_k(k)
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    return (-length) % k


def share_size(length: int, k: int) -> int:
    """Size of each of the ``n`` shares of a sequence of ``length`` bytes.

    >>> share_size(10, 4), share_size(12, 4), share_size(0, 4)
    (3, 3, 0)
    """
    return (length + padding_size(length, k)) // k


def split_data(data: bytes, k: int) -> list[bytes]:
    """Pad ``data`` with zeros and split it into ``k`` equal data blocks.

    These are the ``k`` primary zfec blocks, i.e. data shares ``0..k-1``.

    >>> split_data(b"abcdefghij", 4)
    [b'abc', b'def', b'ghi', b'j\\x00\\x00']
    >>> split_data(b"", 2)
    [b'', b'']
    """
    size = share_size(len(data), k)
    padded = bytes(data) + bytes(padding_size(len(data), k))
    return [padded[j * size : (j + 1) * size] for j in range(k)]


def join_data(blocks: Sequence[bytes], length: int) -> bytes:
    """Inverse of :func:`split_data`: concatenate and drop the padding.

    >>> join_data([b'abc', b'def', b'ghi', b'j\\x00\\x00'], 10)
    b'abcdefghij'
    """
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    joined = b"".join(blocks)
    if length > len(joined):
        raise ValueError(f"length {length} exceeds the {len(joined)} bytes of the blocks")
    return joined[:length]


@dataclass(frozen=True, slots=True)
class ShareSlice:
    """Bytes ``[start, end)`` of data share ``share_num`` of ``sequence_num``."""

    sequence_num: int
    share_num: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start


def _check_range(first: int, last: int) -> None:
    if first < 0:
        raise ValueError(f"invalid byte range: first {first} is negative")
    if first > last:
        raise ValueError(f"invalid byte range: first {first} > last {last}")


def sequences_for_byte_range(first: int, last: int, sequence_size: int) -> range:
    """Sequence numbers touched by the inclusive byte range ``[first, last]``.

    >>> sequences_for_byte_range(100, 700, 512)
    range(0, 2)
    >>> sequences_for_byte_range(512, 1023, 512)
    range(1, 2)
    """
    _check_sequence_size(sequence_size)
    _check_range(first, last)
    return range(first // sequence_size, last // sequence_size + 1)


def byte_range_to_shares(
    first: int, last: int, object_size: int, sequence_size: int, k: int
) -> list[ShareSlice]:
    """Slices of data shares that hold object bytes ``[first, last]`` (inclusive).

    The slices come in object order; concatenating those slices of the data
    shares gives exactly ``object[first:last + 1]``. Padding is never
    included, and only sequences touched by the range appear.

    Example: a 30-byte object, 16-byte sequences, ``k = 4``. Sequence 0 holds
    bytes 0..15 in four 4-byte shares; sequence 1 holds bytes 16..29, padded
    with 2 zeros to 16, also in four 4-byte shares, the last of which holds
    only 2 object bytes. Bytes 5..29 are then:

    >>> for s in byte_range_to_shares(5, 29, 30, 16, 4):
    ...     print(s.sequence_num, s.share_num, s.start, s.end)
    0 1 1 4
    0 2 0 4
    0 3 0 4
    1 0 0 4
    1 1 0 4
    1 2 0 4
    1 3 0 2

    Raises ``ValueError`` if ``first > last``, ``first < 0`` or
    ``last >= object_size``.
    """
    _check_k(k)
    _check_range(first, last)
    if last >= object_size:
        raise ValueError(f"invalid byte range: last {last} >= object size {object_size}")
    slices: list[ShareSlice] = []
    for seq in sequences_for_byte_range(first, last, sequence_size):
        seq_offset = seq * sequence_size
        seq_length = min(sequence_size, object_size - seq_offset)
        size = share_size(seq_length, k)
        # The wanted bytes relative to this sequence, end exclusive.
        lo = max(first, seq_offset) - seq_offset
        hi = min(last + 1, seq_offset + seq_length) - seq_offset
        for j in range(lo // size, (hi - 1) // size + 1):
            share_lo = j * size
            share_hi = min(share_lo + size, seq_length)  # excludes padding
            start = max(lo, share_lo)
            end = min(hi, share_hi)
            if start < end:
                slices.append(ShareSlice(seq, j, start - share_lo, end - share_lo))
    return slices
