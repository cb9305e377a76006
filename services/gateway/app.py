"""The aiohttp application: request → endpoint → handler, errors → S3 XML.

Every response carries ``x-amz-request-id``. An :class:`errors.S3Error` (or an
error from the SigV4 and aws-chunked modules, which carry an S3 code) becomes
S3's XML error document; nodes that cannot be reached become 503
``ServiceUnavailable``; the database being away becomes 503 too; anything
else is logged with its request id and answered ``InternalError``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import Counter, Histogram

from services.common import metrics
from services.common.rpc import RpcTimeout
from services.gateway import errors, sigv4
from services.gateway.auth import authenticate
from services.gateway.context import GATEWAY
from services.gateway.endpoints import Endpoint, is_virtual_host, operation, split_target
from services.gateway.handlers import bucket, multipart, object, service, usage
from services.gateway.nodes import Node
from services.gateway.request import Handler, S3Request
from services.gateway.store import TooLarge, Unavailable

log = logging.getLogger(__name__)

HANDLERS: dict[str, Handler] = {
    "ListBuckets": service.list_buckets,
    "CreateBucket": bucket.create_bucket,
    "HeadBucket": bucket.head_bucket,
    "DeleteBucket": bucket.delete_bucket,
    "ListObjects": bucket.list_objects,
    "ListObjectsV2": bucket.list_objects_v2,
    "GetBucketLocation": bucket.get_bucket_location,
    "GetBucketVersioning": bucket.get_bucket_versioning,
    "DeleteObjects": bucket.delete_objects,
    "ListMultipartUploads": multipart.list_multipart_uploads,
    "PutObject": object.put_object,
    "GetObject": object.get_object,
    "HeadObject": object.head_object,
    "DeleteObject": object.delete_object,
    "CopyObject": object.copy_object,
    "CreateMultipartUpload": multipart.create_multipart_upload,
    "UploadPart": multipart.upload_part,
    "UploadPartCopy": multipart.upload_part_copy,
    "CompleteMultipartUpload": multipart.complete_multipart_upload,
    "AbortMultipartUpload": multipart.abort_multipart_upload,
    "ListParts": multipart.list_parts,
}

REQUEST_ID = web.RequestKey("request_id", str)
OPERATION = web.RequestKey("operation", str)

HTTP_REQUESTS = Counter(
    "nimbus_http_requests",
    "S3 requests answered, by operation and HTTP status",
    ["operation", "status"],
)
HTTP_SECONDS = Histogram(
    "nimbus_http_request_seconds",
    "Time to answer an S3 request (whole body sent), by operation",
    ["operation"],
    buckets=metrics.LATENCY_BUCKETS,
)
HTTP_BYTES_IN = Counter("nimbus_http_received_bytes", "Bytes of S3 request bodies declared")
HTTP_BYTES_OUT = Counter("nimbus_http_sent_bytes", "Bytes of S3 response bodies sent")


def _as_s3_error(exc: BaseException) -> errors.S3Error | None:
    if isinstance(exc, errors.S3Error):
        return exc
    if isinstance(exc, sigv4.SigV4Error):
        return errors.from_code(exc.code, exc.message, exc.status, details=exc.details)
    if isinstance(exc, Unavailable):
        return errors.ServiceUnavailable(
            "Not enough storage nodes are reachable right now; retry later.",
            headers={"Retry-After": "1"},
        )
    if isinstance(exc, TooLarge):
        return errors.EntityTooLarge()
    if isinstance(exc, (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)):
        return errors.ServiceUnavailable("The index database is unreachable; retry later.")
    return None


@web.middleware
async def s3_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request_id = secrets.token_hex(8).upper()
    request[REQUEST_ID] = request_id
    started = time.monotonic()
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        if request.get(object.STREAMING):
            log.warning("%s: response cut short: %s", request_id, exc)
            _observe(request, 499, started, None)
            raise
        error = _as_s3_error(exc)
        if error is None:
            log.exception("%s: %s %s failed", request_id, request.method, request.path)
            error = errors.InternalError()
        elif error.status >= 500:
            log.warning("%s: %s %s: %s", request_id, request.method, request.path, exc)
        response = web.Response(
            status=error.status,
            body=errors.render(error, request_id, request.path) if error.has_body else None,
            content_type="application/xml" if error.has_body else None,
            headers=error.headers,
        )
    response.headers["x-amz-request-id"] = request_id
    response.headers["x-amz-id-2"] = request_id
    _observe(request, response.status, started, response)
    return response


def _observe(
    request: web.Request, status: int, started: float, response: web.StreamResponse | None
) -> None:
    # S3 requests by operation; the admin routes (/-/health, ...) by path.
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else ""
    operation = request.get(OPERATION) or (path if path.startswith("/-/") else "Unrouted")
    HTTP_REQUESTS.labels(operation, str(status)).inc()
    HTTP_SECONDS.labels(operation).observe(time.monotonic() - started)
    HTTP_BYTES_IN.inc(request.content_length or 0)
    if response is not None:
        # Streamed bodies have been written by now; plain ones are about to be.
        sent = (
            response.body_length
            if response.prepared
            else len(getattr(response, "body", b"") or b"")
        )
        HTTP_BYTES_OUT.inc(sent)


async def dispatch(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    bucket_name, key = split_target(request.raw_path, request.host, gw.cfg.domain)
    headers = {name.lower(): value for name, value in request.headers.items()}
    op = operation(request.method, bucket_name, key, request.query, headers)
    request[OPERATION] = op
    in_host = bucket_name if is_virtual_host(request.host, gw.cfg.domain) else None
    auth = await authenticate(gw, request, in_host)
    endpoint = Endpoint(op, bucket_name, key)
    return await HANDLERS[op](S3Request(gw, request, auth, endpoint, request[REQUEST_ID]))


async def health(request: web.Request) -> web.Response:
    """Ready when the database answers and enough writers are up to store."""
    gw = request.app[GATEWAY]
    try:
        await gw.pool.fetchval("SELECT 1")
    except Exception as exc:
        return web.json_response({"status": "database unreachable", "error": str(exc)}, status=503)
    nodes = {
        node.name: {service: ep.up for service, ep in node.endpoints.items()}
        for node in gw.nodes.nodes
    }
    return web.json_response({"status": "ok", "nodes": nodes})


async def _holdings(node: Node) -> dict[str, Any] | None:
    """What ``node``'s handoff service holds for others (None if it does not answer)."""
    if node.handoff is None:
        return None
    try:
        reply = await node.handoff.request({"message-type": "handoff-status"})
    except (RpcTimeout, ConnectionError):
        return None
    if reply.header.get("result") != "success":
        return None
    holdings: dict[str, Any] = reply.header.get("holdings") or {}
    return holdings


async def status(request: web.Request) -> web.Response:
    """The cluster as this gateway sees it: every node's services, and the
    handoff backlog (shares and bytes each node holds for others)."""
    gw = request.app[GATEWAY]
    held = await asyncio.gather(*(_holdings(node) for node in gw.nodes.nodes))
    nodes: dict[str, Any] = {}
    backlog = {"segments": 0, "bytes": 0}
    for node, holdings in zip(gw.nodes.nodes, held, strict=True):
        nodes[node.name] = {
            **{service: "up" if ep.up else "down" for service, ep in node.endpoints.items()},
            "handoff": "unknown" if holdings is None else "up",
            "holds_for_others": holdings,
        }
        for counts in (holdings or {}).values():
            backlog["segments"] += int(counts.get("segments", 0))
            backlog["bytes"] += int(counts.get("bytes", 0))
    return web.json_response({"nodes": nodes, "handoff_backlog": backlog})


def make_app() -> web.Application:
    app = web.Application(middlewares=[s3_errors], client_max_size=1024**2)
    app.router.add_get("/-/health", health)
    app.router.add_get("/-/status", status)
    app.router.add_get("/-/usage/{bucket}", usage.get_usage)
    # Every other path is S3. "[\s\S]" and not ".": a key may contain a newline.
    app.router.add_route("*", "/{tail:[\\s\\S]*}", dispatch)
    return app
