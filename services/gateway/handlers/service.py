"""The service resource: ListBuckets."""

from __future__ import annotations

from aiohttp import web

from services.gateway import queries, xmlio
from services.gateway.request import S3Request, xml_response


async def list_buckets(req: S3Request) -> web.StreamResponse:
    rows = await queries.buckets_of(req.gw.pool, req.auth.principal.user_id)
    buckets = [xmlio.BucketEntry(row["name"], row["created_at"]) for row in rows]
    return xml_response(xmlio.list_buckets_result(req.owner, buckets))
