"""The events service's pure parts: which pipeline messages are events, the history."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common import events
from services.events import intake
from services.events.history import History
from services.events.intake import BadEvent

LIMIT = 1024


def test_an_event_header_from_the_sender_is_accepted() -> None:
    header = events.event_header("share-forwarded", "handoff", "node02", key="a/b", bytes=10)
    assert intake.parse([json.dumps(header).encode()], LIMIT) == header


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([], "empty"),
        ([b'{"event-type": "x"}', b"payload"], "extra-frames"),
        ([b" " * (LIMIT + 1)], "too-large"),
        ([b"not json"], "not-json"),
        ([b"\xff\xfe"], "not-json"),
        ([b'["event-type"]'], "not-object"),
        ([b"7"], "not-object"),
        ([b"{}"], "bad-event-type"),
        ([b'{"event-type": 3}'], "bad-event-type"),
        ([b'{"event-type": ""}'], "bad-event-type"),
        ([b'{"event-type": "Node Down"}'], "bad-event-type"),
        ([json.dumps({"event-type": "a" * 65}).encode()], "bad-event-type"),
    ],
)
def test_malformed_messages_are_refused_with_a_bounded_reason(
    frames: list[bytes], reason: str
) -> None:
    with pytest.raises(BadEvent) as caught:
        intake.parse(frames, LIMIT)
    assert caught.value.reason == reason
    assert reason in intake.REASONS


@given(st.lists(st.binary(max_size=200), max_size=3))
def test_parse_never_fails_otherwise(frames: list[bytes]) -> None:
    try:
        header = intake.parse(frames, LIMIT)
    except BadEvent as exc:
        assert exc.reason in intake.REASONS
    else:
        assert isinstance(header["event-type"], str)


def _events(kinds: list[str]) -> list[dict[str, Any]]:
    return [{"event-type": kind, "n": n} for n, kind in enumerate(kinds)]


def test_history_keeps_the_newest_in_arrival_order() -> None:
    history = History(3)
    for event in _events(["a", "b", "a", "c", "a"]):
        history.add(event)
    assert len(history) == 3
    assert [e["n"] for e in history.recent()] == [2, 3, 4]
    assert [e["n"] for e in history.recent("a")] == [2, 4]
    assert [e["n"] for e in history.recent("a", limit=1)] == [4]
    assert history.recent("b") == []
    assert history.recent(limit=0) == []


@given(
    st.lists(st.sampled_from("abc"), max_size=30),
    st.integers(0, 10),
    st.sampled_from([None, "a", "b"]),
    st.one_of(st.none(), st.integers(0, 12)),
)
def test_history_is_the_tail_of_what_was_added(
    kinds: list[str], size: int, kind: str | None, limit: int | None
) -> None:
    history = History(size)
    added = _events(kinds)
    for event in added:
        history.add(event)
    kept = added[max(0, len(added) - size) :] if size else []
    expected = [e for e in kept if kind is None or e["event-type"] == kind]
    if limit is not None:
        expected = expected[max(0, len(expected) - limit) :] if limit else []
    assert history.recent(kind, limit) == expected


def test_recent_events_reply_keeps_the_newest_that_fit() -> None:
    from services.events.handlers import newest_within

    events = [{"event-type": "object-created", "n": i, "pad": "x" * 100} for i in range(1000)]
    kept = newest_within(events, 48 * 1024)
    assert kept == events[-len(kept) :]
    assert 0 < len(kept) < 1000
    assert len(json.dumps(kept)) <= 48 * 1024
    assert newest_within(events[:3], 48 * 1024) == events[:3]
