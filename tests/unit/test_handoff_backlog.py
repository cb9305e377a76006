"""The handoff backlog report: gauges always current, an event only on change."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from services.common.events import EventSender
from services.handoff.backlog import HANDOFF_BACKLOG, BacklogReport
from services.handoff.model import Holding


class Recorder(EventSender):
    """An event sender with no socket that keeps what it was asked to send."""

    def __init__(self) -> None:
        super().__init__("", "handoff", "node01")
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, event_type: str, **fields: Any) -> None:
        self.sent.append((event_type, fields))


def gauge(name: str, home: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"home": home})


def test_the_first_report_is_sent_even_when_nothing_is_held() -> None:
    events = Recorder()
    report = BacklogReport(events)
    assert report.update({}) is True
    assert events.sent == [(HANDOFF_BACKLOG, {"holdings": {}, "segments": 0, "bytes": 0})]
    assert report.update({}) is False
    assert len(events.sent) == 1


def test_changes_are_sent_and_gauges_follow_every_home() -> None:
    events = Recorder()
    report = BacklogReport(events)
    held = {
        "unit-a": Holding(segments=3, bytes=300, tombstones=1),
        "unit-b": Holding(segments=1, bytes=10),
    }
    report.update(held)
    assert events.sent[-1][1] == {
        "holdings": {home: h.as_json() for home, h in held.items()},
        "segments": 4,
        "bytes": 310,
    }
    assert gauge("nimbus_handoff_backlog_segments", "unit-a") == 3
    assert gauge("nimbus_handoff_backlog_bytes", "unit-b") == 10

    assert report.update(dict(held)) is False  # the same backlog: no event
    assert len(events.sent) == 1

    report.update({"unit-a": Holding(segments=2, bytes=200)})
    assert len(events.sent) == 2
    assert events.sent[-1][1]["segments"] == 2
    # A home drained completely stays visible at zero.
    assert gauge("nimbus_handoff_backlog_segments", "unit-b") == 0
    assert gauge("nimbus_handoff_backlog_bytes", "unit-b") == 0
    assert gauge("nimbus_handoff_backlog_bytes", "unit-a") == 200


def test_without_a_sender_only_the_gauges_change() -> None:
    report = BacklogReport()
    assert report.update({"unit-c": Holding(segments=5, bytes=50)}) is True
    assert gauge("nimbus_handoff_backlog_segments", "unit-c") == 5
