"""The bucket resource: create, head, delete, list objects, bulk delete, uploads."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re

from aiohttp import web

from services.gateway import errors, objects, queries, xmlio
from services.gateway.listing import Page, list_page
from services.gateway.request import S3Request, xml_response

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_KEYS = 1000


def check_bucket_name(name: str) -> None:
    """S3's naming rules for new buckets.

    >>> check_bucket_name("my-photos.2024")
    >>> check_bucket_name("My_Bucket")
    Traceback (most recent call last):
    ...
    services.gateway.errors.InvalidBucketName: InvalidBucketName: The specified bucket is not valid.
    """
    bad = (
        not _BUCKET_NAME.match(name)
        or ".." in name
        or ".-" in name
        or "-." in name
        or name.startswith(("xn--", "sthree-"))
        or name.endswith(("-s3alias", "--ol-s3"))
        or _is_ip(name)
    )
    if bad:
        raise errors.InvalidBucketName(bucket_name=name)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


async def create_bucket(req: S3Request) -> web.StreamResponse:
    name = req.bucket
    check_bucket_name(name)
    xmlio.parse_create_bucket(await req.small_body())
    cfg = req.gw.cfg
    user_id = req.auth.principal.user_id
    if not await queries.create_bucket(req.gw.pool, name, user_id, cfg.k, cfg.n, cfg.sequence_size):
        existing = await queries.bucket(req.gw.pool, name)
        if existing is not None and existing["owner_id"] == user_id:
            raise errors.BucketAlreadyOwnedByYou(bucket_name=name)
        raise errors.BucketAlreadyExists(bucket_name=name)
    return web.Response(headers={"Location": f"/{name}"})


async def head_bucket(req: S3Request) -> web.StreamResponse:
    await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    return web.Response(headers={"x-amz-bucket-region": req.gw.cfg.region})


async def delete_bucket(req: S3Request) -> web.StreamResponse:
    bucket = await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    async with req.gw.pool.acquire() as conn:
        if not await queries.delete_bucket_if_empty(conn, bucket.id):
            raise errors.BucketNotEmpty(bucket_name=bucket.name)
    return web.Response(status=204)


async def get_bucket_location(req: S3Request) -> web.StreamResponse:
    await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    region = req.gw.cfg.region
    return xml_response(xmlio.location_constraint(None if region == "us-east-1" else region))


async def get_bucket_versioning(req: S3Request) -> web.StreamResponse:
    await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    return xml_response(xmlio.versioning_configuration())


def _entries(rows: list[queries.Record], owner: xmlio.Owner | None) -> list[xmlio.ObjectEntry]:
    return [
        xmlio.ObjectEntry(row["key"], row["created_at"], row["etag"], row["size"], owner=owner)
        for row in rows
    ]


async def _page(req: S3Request, resume_after: str) -> tuple[objects.Bucket, Page]:
    bucket = await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    prefix = req.query.get("prefix", "")
    delimiter = req.query.get("delimiter", "")
    max_keys = min(req.int_query("max-keys", MAX_KEYS), MAX_KEYS)

    async def fetch(start: str, inclusive: bool, limit: int) -> list[queries.Record]:
        return await queries.list_live(req.gw.pool, bucket.id, prefix, start, inclusive, limit)

    page = await list_page(fetch, prefix, delimiter, resume_after, max_keys)
    return bucket, page


async def list_objects_v2(req: S3Request) -> web.StreamResponse:
    token = req.query.get("continuation-token")
    start_after = req.query.get("start-after", "")
    resume = max(_decode_token(token) if token is not None else "", start_after)
    encoding = xmlio.encoding_type(req.query.get("encoding-type"))
    fetch_owner = req.query.get("fetch-owner", "").lower() == "true"
    bucket, page = await _page(req, resume)
    return xml_response(
        xmlio.list_objects_v2_result(
            bucket.name,
            contents=_entries(page.entries, req.owner if fetch_owner else None),
            common_prefixes=page.common_prefixes,
            is_truncated=page.is_truncated,
            prefix=req.query.get("prefix", ""),
            delimiter=req.query.get("delimiter") or None,
            max_keys=min(req.int_query("max-keys", MAX_KEYS), MAX_KEYS),
            continuation_token=token,
            next_continuation_token=_encode_token(page.last) if page.is_truncated else None,
            start_after=req.query.get("start-after"),
            encoding=encoding,
            fetch_owner=fetch_owner,
        )
    )


async def list_objects(req: S3Request) -> web.StreamResponse:
    marker = req.query.get("marker", "")
    encoding = xmlio.encoding_type(req.query.get("encoding-type"))
    bucket, page = await _page(req, marker)
    return xml_response(
        xmlio.list_objects_v1_result(
            bucket.name,
            contents=_entries(page.entries, req.owner),
            common_prefixes=page.common_prefixes,
            is_truncated=page.is_truncated,
            prefix=req.query.get("prefix", ""),
            delimiter=req.query.get("delimiter") or None,
            max_keys=min(req.int_query("max-keys", MAX_KEYS), MAX_KEYS),
            marker=marker,
            next_marker=page.last if page.is_truncated else None,
            encoding=encoding,
        )
    )


def _encode_token(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode("utf-8", "surrogatepass")).decode()


def _decode_token(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode("utf-8", "surrogatepass")
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidArgument(
            "The continuation token provided is incorrect",
            argument_name="continuation-token",
            argument_value=token,
        ) from exc


async def delete_objects(req: S3Request) -> web.StreamResponse:
    bucket = await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    if "content-md5" not in req.headers and not any(
        name.startswith("x-amz-checksum-") for name in req.headers
    ):
        raise errors.InvalidRequest("Missing required header for this request: Content-MD5")
    keys, quiet = xmlio.parse_delete(await req.small_body())
    deleted: list[xmlio.DeletedEntry] = []
    failed: list[xmlio.DeleteError] = []
    for key in keys:
        try:
            objects.check_key(key)
            await objects.delete(req.gw, bucket, key)
        except errors.S3Error as error:
            failed.append(xmlio.DeleteError(key, error.code, error.message))
            continue
        deleted.append(xmlio.DeletedEntry(key))
    return xml_response(xmlio.delete_result(deleted, failed, quiet=quiet))
