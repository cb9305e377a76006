"""The object resource: put, get, head, delete, copy."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.utils import format_datetime

from aiohttp import web
from multidict import CIMultiDict

from services.gateway import errors, objects, usage, xmlio
from services.gateway.conditions import check_preconditions, parse_range
from services.gateway.request import S3Request, xml_response
from services.gateway.store import Stored

log = logging.getLogger(__name__)

#: Headers S3 stores with an object and returns on GET/HEAD.
STORED_HEADERS = (
    "cache-control",
    "content-disposition",
    "content-encoding",
    "content-language",
    "expires",
)
MAX_USER_METADATA_BYTES = 2048
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
#: Marks a request whose response has started streaming: errors can no longer
#: become an XML response, the connection is dropped instead.
STREAMING = web.RequestKey("streaming", bool)
#: A GET body goes to the connection in pieces of at most this size; bytes
#: retrieved are counted per piece the connection accepted.
WRITE_STEP_BYTES = 256 * 1024


def stored_headers(headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """(content type, the headers kept with the object) from request headers."""
    kept = {name: value for name, value in headers.items() if name in STORED_HEADERS}
    if "content-encoding" in kept:
        # aws-chunked describes how this request's body was framed, not the
        # object: S3 strips it and keeps the rest (``aws-chunked,gzip``).
        codings = [
            coding.strip()
            for coding in kept.pop("content-encoding").split(",")
            if coding.strip() and coding.strip().lower() != "aws-chunked"
        ]
        if codings:
            kept["content-encoding"] = ",".join(codings)
    meta = {name: value for name, value in headers.items() if name.startswith("x-amz-meta-")}
    size = sum(len(name) - len("x-amz-meta-") + len(value) for name, value in meta.items())
    if size > MAX_USER_METADATA_BYTES:
        raise errors.MetadataTooLarge(
            details={"Size": size, "MaxSizeAllowed": MAX_USER_METADATA_BYTES}
        )
    kept.update(meta)
    return headers.get("content-type") or DEFAULT_CONTENT_TYPE, kept


def http_date(when: datetime) -> str:
    return format_datetime(when.astimezone(UTC).replace(microsecond=0), usegmt=True)


def version_headers(version: objects.Version) -> CIMultiDict[str]:
    """The response headers of a version; case-insensitive, so that a
    ``response-*`` override replaces the stored header instead of doubling it."""
    headers = CIMultiDict(
        {
            "ETag": f'"{version.etag}"',
            "Last-Modified": http_date(version.last_modified),
            "Content-Type": version.content_type,
            "Accept-Ranges": "bytes",
        }
    )
    headers.update(version.headers)
    return headers


async def put_object(req: S3Request) -> web.StreamResponse:
    bucket = await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    objects.check_key(req.key)
    content_type, headers = stored_headers(req.headers)
    body = req.body()
    etag, stored = await objects.put(
        req.gw,
        bucket,
        req.key,
        body.chunks(),
        body.finish_check,
        content_type,
        headers,
        req.request_id,
    )
    return web.Response(headers={"ETag": f'"{etag}"', **shares_header(stored)})


def shares_header(stored: Stored) -> dict[str, str]:
    """``x-nimbus-shares: home=5; handoff=1``: where the shares of a write went."""
    home = stored.shares - stored.handed_off
    return {"x-nimbus-shares": f"home={home}; handoff={stored.handed_off}"}


def _part_range(req: S3Request, version: objects.Version) -> tuple[int, int] | None:
    number = req.int_query("partNumber", 0, 1, 10000)
    if not number:
        return None
    if number > len(version.parts):
        raise errors.InvalidPartNumber()
    part = version.parts[number - 1]
    return part.offset, part.offset + part.size - 1


async def get_object(req: S3Request) -> web.StreamResponse:
    return await _read(req, with_body=True)


async def head_object(req: S3Request) -> web.StreamResponse:
    return await _read(req, with_body=False)


async def _read(req: S3Request, with_body: bool) -> web.StreamResponse:
    bucket = await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    version = await objects.find(req.gw, bucket, req.key)
    headers = version_headers(version)
    try:
        check_preconditions(req.headers, version.etag, version.last_modified)
    except errors.NotModified as not_modified:
        # RFC 7232: a 304 carries the validators a cache would have sent.
        for name in ("ETag", "Last-Modified", "Cache-Control", "Expires"):
            if name in headers:
                not_modified.headers[name] = headers[name]
        raise
    by_part = _part_range(req, version)
    if by_part is not None:
        # As AWS: the parts count only answers a request for one part.
        headers["x-amz-mp-parts-count"] = str(len(version.parts))
    wanted = by_part or parse_range(req.headers.get("range"), version.size)
    status = 200
    first, last = 0, version.size - 1
    if wanted is not None:
        first, last = wanted
        status = 206
        headers["Content-Range"] = f"bytes {first}-{last}/{version.size}"
    length = last - first + 1 if version.size else 0
    for name, override in (
        ("response-content-type", "Content-Type"),
        ("response-content-disposition", "Content-Disposition"),
        ("response-content-encoding", "Content-Encoding"),
        ("response-content-language", "Content-Language"),
        ("response-cache-control", "Cache-Control"),
        ("response-expires", "Expires"),
    ):
        if name in req.query:
            headers[override] = req.query[name]
    if not with_body or length == 0:
        headers["Content-Length"] = str(length)
        return web.Response(status=status, headers=headers)
    chunks = objects.read(req.gw, version, first, last)
    # The first sequence is read before any header goes out: an object that
    # cannot be read gets a clean 503, never a partial body.
    first_chunk = await anext(chunks)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    req.http[STREAMING] = True
    # Usage counts the bytes the connection took, also when the client goes
    # away (or a node fails) halfway: one detail, once the body ends. A write
    # that fails may have sent part of its bytes, uncounted: writing in steps
    # keeps that under one step.
    sent = 0

    async def send(chunk: bytes) -> None:
        nonlocal sent
        view = memoryview(chunk)
        for start in range(0, len(view), WRITE_STEP_BYTES):
            piece = view[start : start + WRITE_STEP_BYTES]
            await response.write(piece)
            sent += len(piece)

    try:
        await response.prepare(req.http)
        await send(first_chunk)
        async for chunk in chunks:
            await send(chunk)
        await response.write_eof()
    finally:
        await usage.count_retrieved(req.gw, bucket.id, sent)
    return response


async def delete_object(req: S3Request) -> web.StreamResponse:
    bucket = await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    objects.check_key(req.key)
    await objects.delete(req.gw, bucket, req.key)
    return web.Response(status=204)


def parse_copy_source(value: str) -> tuple[str, str]:
    """(bucket, key) of ``x-amz-copy-source`` (URL-encoded, optional leading /).

    >>> parse_copy_source("/photos/2024/cat%20one.jpg")
    ('photos', '2024/cat one.jpg')
    """
    path, _, query = value.partition("?")
    if query and not query.startswith("versionId=null"):
        raise errors.NotImplemented("copying a specific version is not implemented")
    bucket, _, key = urllib.parse.unquote(path).lstrip("/").partition("/")
    if not bucket or not key:
        raise errors.InvalidArgument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey",
            argument_name="x-amz-copy-source",
            argument_value=value,
        )
    return bucket, key


async def copy_source(req: S3Request) -> objects.Version:
    bucket_name, key = parse_copy_source(req.headers["x-amz-copy-source"])
    bucket = await objects.bucket_for(req.gw, bucket_name, req.auth.principal.user_id)
    version = await objects.find(req.gw, bucket, key)
    check_preconditions(req.headers, version.etag, version.last_modified, "x-amz-copy-source-")
    return version


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""


def read_all(
    req: S3Request, version: objects.Version, first: int, last: int
) -> AsyncIterator[bytes]:
    if last < first:
        return _nothing()
    return objects.read(req.gw, version, first, last)


async def copy_object(req: S3Request) -> web.StreamResponse:
    source = await copy_source(req)
    bucket = await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    objects.check_key(req.key)
    directive = req.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise errors.InvalidArgument(
            "Unknown metadata directive.",
            argument_name="x-amz-metadata-directive",
            argument_value=directive,
        )
    if directive == "COPY":
        if source.bucket.id == bucket.id and source.key == req.key:
            raise errors.InvalidRequest(
                "This copy request is illegal because it is trying to copy an object to itself "
                "without changing the object's metadata, storage class, website redirect "
                "location or encryption attributes."
            )
        content_type, headers = source.content_type, source.headers
    else:
        content_type, headers = stored_headers(req.headers)
    etag, _ = await objects.put(
        req.gw,
        bucket,
        req.key,
        read_all(req, source, 0, source.size - 1),
        lambda size, md5: None,
        content_type,
        headers,
        req.request_id,
    )
    return xml_response(xmlio.copy_object_result(datetime.now(UTC), etag))
