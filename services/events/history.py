"""The last events received, for ``recent-events-request`` (no sockets in here).

A ring buffer of at most ``size`` event headers in arrival order; older ones
fall off. Lookups filter by type and return the newest ``limit`` matches,
oldest first (the order a follower would have printed them).
"""

from __future__ import annotations

from collections import deque
from typing import Any


class History:
    def __init__(self, size: int) -> None:
        if size < 0:
            raise ValueError(f"history size must be >= 0, got {size}")
        self._events: deque[dict[str, Any]] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._events)

    def add(self, header: dict[str, Any]) -> None:
        self._events.append(header)

    def recent(
        self, event_type: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` events (all when None) of ``event_type`` (any when None).

        >>> h = History(3)
        >>> for n, kind in enumerate(["a", "b", "a", "a"]):
        ...     h.add({"event-type": kind, "n": n})
        >>> [e["n"] for e in h.recent()]
        [1, 2, 3]
        >>> [e["n"] for e in h.recent("a", limit=1)]
        [3]
        """
        if limit is not None and limit <= 0:
            return []
        matches: list[dict[str, Any]] = []
        for header in reversed(self._events):
            if event_type is None or header.get("event-type") == event_type:
                matches.append(header)
                if limit is not None and len(matches) >= limit:
                    break
        matches.reverse()
        return matches
