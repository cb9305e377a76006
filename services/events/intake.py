"""Checking one message received on the events pipeline (no sockets in here).

A valid event is exactly one frame: a UTF-8 JSON object of at most
``max_header_bytes`` bytes whose ``event-type`` is a short kebab-case name
(it becomes the PUB topic and a metric label, so it is bounded). Anything
else raises :class:`BadEvent`, whose ``reason`` is one of :data:`REASONS`
(the label of the dropped-events counter, so also bounded).

>>> parse([b'{"event-type": "node-down", "node-name": "node03"}'], 1024)["node-name"]
'node03'
>>> parse([b'[1, 2]'], 1024)
Traceback (most recent call last):
...
services.events.intake.BadEvent: not-object: the event is not a JSON object
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

#: Why an event was dropped (bounded label values).
REASONS = (
    "empty",
    "extra-frames",
    "too-large",
    "not-json",
    "not-object",
    "bad-event-type",
)

#: What an event type may look like: it is a topic and a metric label.
EVENT_TYPE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class BadEvent(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def parse(frames: Sequence[bytes], max_header_bytes: int) -> dict[str, Any]:
    """The event header carried by ``frames``, or :class:`BadEvent`."""
    if not frames:
        raise BadEvent("empty", "a message with no frames")
    if len(frames) > 1:
        raise BadEvent("extra-frames", f"{len(frames)} frames, an event is exactly one")
    raw = frames[0]
    if len(raw) > max_header_bytes:
        raise BadEvent("too-large", f"{len(raw)} bytes, limit {max_header_bytes}")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadEvent("not-json", f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise BadEvent("not-object", "the event is not a JSON object")
    event_type = header.get("event-type")
    if not isinstance(event_type, str) or not EVENT_TYPE.fullmatch(event_type):
        raise BadEvent(
            "bad-event-type",
            f"event-type must be a short lower-case name, got {str(event_type)[:80]!r}",
        )
    return header
