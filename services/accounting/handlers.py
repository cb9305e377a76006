"""Decode accounting requests, count or look up, encode the replies.

- ``space-accounting-detail`` (``collection-id``, ``event``, ``value``,
  ``timestamp``, ``detail-id`` required) → ``space-accounting-detail-reply``,
  sent only after the detail's transaction committed, with ``duplicate``
  (true when its detail-id had been counted before: counted once all the same).
- ``space-usage-request`` (``collection-id``, optional ``hours`` > 0: only
  the last that many hours, the current one included) → ``space-usage-reply``
  with ``collection-id``, ``bytes-added``, ``bytes-removed``,
  ``bytes-retrieved`` (totals over the window) and ``hourly``: a list of
  ``{"hour": "2024-05-01T13:00:00Z", "bytes-added", "bytes-removed",
  "bytes-retrieved"}`` for each hour with usage, oldest first. At most
  :data:`MAX_HOURLY` hours are listed (the newest; a reply header must stay
  under the peers' 64 KiB limit); ``hourly-truncated`` says whether older
  ones were left out (the totals include them).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Final

from services.accounting.model import (
    DETAIL,
    USAGE_REQUEST,
    Usage,
    hour_datetime,
    parse_detail,
    window_start,
)
from services.accounting.tally import Tally
from services.common import protocol
from services.common.protocol import ErrorCode, Message, ProtocolError, optional_field
from services.common.rpc import Handler, Reply

#: Hours listed in one usage reply at most (about 110 bytes of JSON each).
MAX_HOURLY: Final = 400
#: Largest ``hours`` accepted: a century.
MAX_WINDOW_HOURS: Final = 100 * 366 * 24

LookUpUsage = Callable[[int, datetime | None, int], Awaitable[Usage]]


def make_handlers(
    tally: Tally, look_up: LookUpUsage, clock: Callable[[], float] = time.time
) -> dict[str, Handler]:
    async def space_accounting_detail(message: Message) -> Reply:
        detail = parse_detail(message.header, require_id=True)
        counted = await tally.count(detail)
        return protocol.reply_header(message.header, duplicate=not counted), ()

    async def space_usage_request(message: Message) -> Reply:
        header = message.header
        collection_id = protocol.non_negative(header, "collection-id")
        hours = optional_field(header, "hours", int, 0)
        if "hours" in header and header["hours"] is not None and not 0 < hours:
            raise ProtocolError(ErrorCode.BAD_FIELD, "hours must be > 0", field="hours")
        if hours > MAX_WINDOW_HOURS:
            raise ProtocolError(
                ErrorCode.BAD_FIELD, f"hours must be at most {MAX_WINDOW_HOURS}", field="hours"
            )
        since = hour_datetime(window_start(clock(), hours)) if hours else None
        usage = await look_up(collection_id, since, MAX_HOURLY)
        # Named as in the original system: space-usage-reply, not
        # space-usage-request-reply (error replies keep the generic name).
        reply = protocol.reply_header(
            {**header, "message-type": "space-usage"},
            collection_id=collection_id,
            hourly=[hour.as_json() for hour in usage.hourly],
            hourly_truncated=usage.truncated,
        )
        reply.update(usage.totals.as_json())
        return reply, ()

    return {DETAIL: space_accounting_detail, USAGE_REQUEST: space_usage_request}
