"""What this node holds for others, as Prometheus gauges and ``handoff-backlog`` events.

After each worker step (and at the first) the worker hands the current
holdings to :class:`BacklogReport`. The gauges always show them; an event is
sent only when they differ from the last one sent, so an idle node sends
nothing. A home whose backlog is gone keeps its gauges at 0 rather than
vanishing, so a graph of its drain ends at zero.

Event ``handoff-backlog``: ``holdings`` ({home: {"segments", "bytes",
"tombstones", "damaged"}}, only homes with something held), and the totals
``segments`` and ``bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Gauge

from services.handoff.model import Holding

if TYPE_CHECKING:
    from services.common.events import EventSender

HANDOFF_BACKLOG = "handoff-backlog"

BACKLOG_SEGMENTS = Gauge(
    "nimbus_handoff_backlog_segments",
    "Final shares this node holds for another node, by home node",
    ["home"],
)
BACKLOG_BYTES = Gauge(
    "nimbus_handoff_backlog_bytes",
    "Bytes of the shares this node holds for another node, by home node",
    ["home"],
)


def backlog_event(holdings: Mapping[str, Holding]) -> dict[str, Any]:
    """The fields of a ``handoff-backlog`` event.

    >>> backlog_event({"node02": Holding(segments=2, bytes=10)})["segments"]
    2
    """
    return {
        "holdings": {home: held.as_json() for home, held in sorted(holdings.items())},
        "segments": sum(held.segments for held in holdings.values()),
        "bytes": sum(held.bytes for held in holdings.values()),
    }


class BacklogReport:
    def __init__(self, events: EventSender | None = None) -> None:
        self._events = events
        self._last: dict[str, Any] | None = None
        self._homes: set[str] = set()

    def update(self, holdings: Mapping[str, Holding]) -> bool:
        """Set the gauges; send an event if the backlog changed. True if it did."""
        for home in self._homes - set(holdings):
            BACKLOG_SEGMENTS.labels(home).set(0)
            BACKLOG_BYTES.labels(home).set(0)
        for home, held in holdings.items():
            BACKLOG_SEGMENTS.labels(home).set(held.segments)
            BACKLOG_BYTES.labels(home).set(held.bytes)
        self._homes |= set(holdings)
        fields = backlog_event(holdings)
        if fields == self._last:
            return False
        self._last = fields
        if self._events is not None:
            self._events.send(HANDOFF_BACKLOG, **fields)
        return True
