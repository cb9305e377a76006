"""``GET /-/usage/{bucket}?hours=N``: a bucket's usage, as the accounting service counted it.

Signed like any S3 request (SigV4 header or presigned URL); answered for the
bucket's owner and root. The totals and the per-hour rows come from the
accounting service; ``pending`` is what the gateways' outbox still holds for
the bucket (queued, not yet delivered), per event. The two are read one
after the other, so a detail delivered in between may show in both or in
neither: ``pending`` says how far behind the totals are, it is not to be
added to them. The accounting service not answering is 503.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from services.gateway import errors, objects, queries
from services.gateway.auth import authenticate
from services.gateway.context import GATEWAY
from services.gateway.usage import Accounting, AccountingUnavailable

ACCOUNTING = web.AppKey("accounting", Accounting)

#: Longest history one request may ask for: a century, as the accounting service.
MAX_HOURS = 100 * 366 * 24

_FIELDS = {
    "bytes-added": "bytes_added",
    "bytes-removed": "bytes_removed",
    "bytes-retrieved": "bytes_retrieved",
}


def _hours(request: web.Request) -> int | None:
    value = request.query.get("hours")
    if value is None or value == "":
        return None
    try:
        hours = int(value)
    except ValueError:
        hours = 0
    if not 1 <= hours <= MAX_HOURS:
        raise errors.InvalidArgument(
            f"hours must be an integer between 1 and {MAX_HOURS}",
            argument_name="hours",
            argument_value=value,
        )
    return hours


def _snake(entry: dict[str, Any]) -> dict[str, Any]:
    return {_FIELDS.get(name, name): value for name, value in entry.items()}


async def get_usage(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    auth = await authenticate(gw, request)
    bucket = await objects.bucket_for(gw, request.match_info["bucket"], auth.principal.user_id)
    hours = _hours(request)
    try:
        reply = await request.app[ACCOUNTING].usage(bucket.id, hours)
    except AccountingUnavailable as exc:
        raise errors.ServiceUnavailable(
            "The accounting service does not answer; retry later.",
            headers={"Retry-After": "1"},
        ) from exc
    pending = await queries.pending_usage(gw.pool, bucket.id)
    document: dict[str, Any] = {"bucket": bucket.name, "bucket_id": bucket.id}
    for event, name in _FIELDS.items():
        document[name] = int(reply.get(event, 0))
    document["hourly"] = [_snake(dict(entry)) for entry in reply.get("hourly") or []]
    # Only the newest hours are listed; the totals include any left out.
    document["hourly_truncated"] = bool(reply.get("hourly-truncated", False))
    document["pending"] = {_FIELDS[event]: value for event, value in pending.items()}
    return web.json_response(document)
