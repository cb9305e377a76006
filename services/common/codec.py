"""zfec behind one small interface; the only module in Nimbus that imports zfec.

A sequence of bytes is encoded into ``n`` shares of which any ``k`` rebuild
it. zfec is systematic, so shares ``0..k-1`` are the (zero-padded) data
itself and a read that has them all decodes nothing. The async wrappers run
the CPU-bound work in a thread, never on the event loop.

zfec 1.6 requires ``1 <= k <= n <= 256`` and blocks of equal length; ``k == 1``
is replication (every share is a full copy) and ``k == n`` has no parity.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import zfec

from services.common.erasure import join_data, split_data

__all__ = ["MAX_SHARES", "decode", "decode_sync", "encode", "encode_sync"]

MAX_SHARES = 256


def _check_code(k: int, n: int) -> None:
    if not 1 <= k <= n <= MAX_SHARES:
        raise ValueError(f"need 1 <= k <= n <= {MAX_SHARES}, got k={k}, n={n}")


def encode_sync(data: bytes, k: int, n: int) -> list[bytes]:
    """Encode ``data`` into ``n`` equal shares; shares ``0..k-1`` are the data."""
    _check_code(k, n)
    blocks = split_data(data, k)
    if not data:
        return [b""] * n
    if k == n:
        return blocks
    parity = zfec.Encoder(k, n).encode(tuple(blocks), list(range(k, n)))
    return blocks + [bytes(share) for share in parity]


def decode_sync(shares: Mapping[int, bytes], k: int, n: int, length: int) -> bytes:
    """Rebuild the ``length`` original bytes from any ``k`` of the ``n`` shares.

    ``shares`` maps share number to share bytes. With more than ``k`` shares,
    the ``k`` lowest share numbers are used, which prefers data shares; if
    those are exactly ``0..k-1`` they are joined without calling zfec.
    """
    _check_code(k, n)
    bad = sorted(num for num in shares if not 0 <= num < n)
    if bad:
        raise ValueError(f"share numbers {bad} out of range 0..{n - 1}")
    if len(shares) < k:
        raise ValueError(f"need {k} shares to decode, got {len(shares)}: {sorted(shares)}")
    nums = sorted(shares)[:k]
    chosen = [shares[num] for num in nums]
    sizes = {len(share) for share in chosen}
    if len(sizes) != 1:
        raise ValueError(f"shares {nums} have unequal sizes {sorted(sizes)}")
    size = sizes.pop()
    if not 0 <= length <= k * size or k * size - length >= k:
        raise ValueError(f"length {length} does not fit {k} shares of {size} bytes")
    if nums == list(range(k)):
        return join_data(chosen, length)
    blocks = zfec.Decoder(k, n).decode(chosen, nums)
    return join_data([bytes(block) for block in blocks], length)


async def encode(data: bytes, k: int, n: int) -> list[bytes]:
    """:func:`encode_sync` in a worker thread."""
    return await asyncio.to_thread(encode_sync, data, k, n)


async def decode(shares: Mapping[int, bytes], k: int, n: int, length: int) -> bytes:
    """:func:`decode_sync` in a worker thread."""
    return await asyncio.to_thread(decode_sync, shares, k, n, length)
