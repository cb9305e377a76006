"""Decode events-service requests, read the history, encode the replies.

``recent-events-request`` (optional ``event-type``: only events of that type;
optional ``limit``: at most that many, the newest) → ``recent-events-reply``
with ``events``: the headers, oldest first, and ``truncated``: true when
older matching events were left out because the reply header must stay under
the 64 KiB every client accepts (the newest ``REPLY_BUDGET_BYTES`` of them are
sent; ``--follow`` sees everything).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from services.common import protocol
from services.common.protocol import ErrorCode, Message, ProtocolError
from services.common.rpc import Handler, Reply
from services.events.history import History

RECENT = "recent-events-request"
#: Bytes of JSON events one reply carries at most (the header limit is 64 KiB).
REPLY_BUDGET_BYTES = 48 * 1024


def newest_within(events: Sequence[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """The newest ``events`` whose JSON fits in ``budget`` bytes, oldest first."""
    kept: list[dict[str, Any]] = []
    used = 0
    for event in reversed(events):
        used += len(json.dumps(event)) + 2
        if used > budget:
            break
        kept.append(event)
    kept.reverse()
    return kept


def make_handlers(history: History) -> dict[str, Handler]:
    async def recent_events(message: Message) -> Reply:
        h = message.header
        event_type = protocol.optional_field(h, "event-type", str, "") or None
        limit: int | None = None
        if h.get("limit") is not None:
            limit = protocol.field(h, "limit", int)
            if limit < 0:
                raise ProtocolError(ErrorCode.BAD_FIELD, "limit must be >= 0", field="limit")
        events = history.recent(event_type, limit)
        kept = newest_within(events, REPLY_BUDGET_BYTES)
        return protocol.reply_header(h, events=kept, truncated=len(kept) < len(events)), ()

    return {RECENT: recent_events}
