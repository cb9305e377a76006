"""Decode events-service requests, read the history, encode the replies.

``recent-events-request`` (optional ``event-type``: only events of that type;
optional ``limit``: at most that many, the newest) → ``recent-events-reply``
with ``events``: the headers, oldest first.
"""

from __future__ import annotations

from services.common import protocol
from services.common.protocol import ErrorCode, Message, ProtocolError
from services.common.rpc import Handler, Reply
from services.events.history import History

RECENT = "recent-events-request"


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
        return protocol.reply_header(h, events=events), ()

    return {RECENT: recent_events}
