"""Rendezvous placement: stable, balanced, and minimal movement."""

from __future__ import annotations

import doctest
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from services.common import placement

NODES = [f"node{i:02d}" for i in range(1, 7)]


def test_docstring_example() -> None:
    assert doctest.testmod(placement).failed == 0


@given(st.text(min_size=1), st.text())
def test_preference_list_is_a_permutation_and_stable(bucket: str, key: str) -> None:
    order = placement.preference_list(NODES, bucket, key)
    assert sorted(order) == NODES
    assert placement.preference_list(list(reversed(NODES)), bucket, key) == order
    assert placement.homes(NODES, bucket, key, 4) == order[:4]


def test_first_home_is_balanced() -> None:
    counts = Counter(placement.homes(NODES, "b", f"key-{i}", 1)[0] for i in range(6000))
    assert all(800 < count < 1200 for count in counts.values()), counts


@given(st.text())
def test_removing_a_node_keeps_the_others_in_order(key: str) -> None:
    order = placement.preference_list(NODES, "bucket", key)
    without = placement.preference_list([n for n in NODES if n != "node03"], "bucket", key)
    assert without == [n for n in order if n != "node03"]
