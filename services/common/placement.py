"""Where an object's shares live: rendezvous (highest random weight) hashing.

Every node gets a score for ``(bucket, key)``; the nodes sorted by score,
highest first, are the object's *preference list*. Its first ``n`` entries
are the homes: share *i* lives on ``preference[i]``. The rest are where
handed-off shares go first. Adding or removing a node moves only the shares
that node gains or loses, and every gateway computes the same list with no
shared state.

>>> preference_list(["node01", "node02", "node03"], "photos", "cat.jpg")
['node01', 'node03', 'node02']
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _score(node: str, bucket: str, key: str) -> int:
    digest = hashlib.blake2b(
        b"\0".join((node.encode(), bucket.encode(), key.encode("utf-8", "surrogatepass"))),
        digest_size=8,
    ).digest()
    return int.from_bytes(digest, "big")


def preference_list(nodes: Sequence[str], bucket: str, key: str) -> list[str]:
    """All nodes, in the order this object prefers them (ties broken by name)."""
    return sorted(nodes, key=lambda node: (-_score(node, bucket, key), node))


def homes(nodes: Sequence[str], bucket: str, key: str, n: int) -> list[str]:
    """The ``n`` home nodes: share *i* belongs on ``homes(...)[i]``."""
    if n > len(nodes):
        raise ValueError(f"{n} shares need at least {n} nodes, have {len(nodes)}")
    return preference_list(nodes, bucket, key)[:n]
