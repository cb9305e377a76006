"""Multipart uploads: create, upload part (or copy), complete, abort, list.

A multipart object is one version (its unified id is chosen at create time)
whose parts are its conjoined parts. Every part upload gets a fresh
conjoined-part number, so re-uploading a part never collides with the shares
of the attempt it replaces; replaced and unlisted attempts become garbage.
"""

from __future__ import annotations

import json
import re
import secrets
from datetime import UTC, datetime

from aiohttp import web

from services.gateway import errors, objects, queries, xmlio
from services.gateway.handlers.object import copy_source, read_all, stored_headers
from services.gateway.request import S3Request, xml_response
from services.gateway.store import Layout

MIN_PART_BYTES = 5 * 1024 * 1024
MAX_PARTS = 1000
_COPY_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


async def _upload(req: S3Request) -> tuple[objects.Bucket, queries.Record]:
    bucket = await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    upload_id = req.query.get("uploadId", "")
    upload = await queries.open_upload(req.gw.pool, upload_id, bucket.id, req.key)
    if upload is None:
        raise errors.NoSuchUpload(upload_id=upload_id)
    return bucket, upload


def _layout(upload: queries.Record) -> Layout:
    return Layout(upload["k"], upload["n"], upload["sequence_size"], tuple(upload["homes"]))


async def create_multipart_upload(req: S3Request) -> web.StreamResponse:
    bucket = await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    objects.check_key(req.key)
    content_type, headers = stored_headers(req.headers)
    layout = req.gw.layout_for(bucket.name, req.key, bucket.k, bucket.n, bucket.sequence_size)
    upload_id = secrets.token_urlsafe(24)
    await queries.create_upload(
        req.gw.pool,
        upload_id,
        bucket.id,
        req.key,
        req.gw.ids.next_id(),
        req.auth.principal.user_id,
        content_type,
        headers,
        layout.homes,
        layout.k,
        layout.n,
        layout.sequence_size,
    )
    return xml_response(xmlio.initiate_multipart_upload_result(bucket.name, req.key, upload_id))


async def _store_part(req: S3Request, copy: bool) -> tuple[str, int]:
    part_number = req.int_query("partNumber", 0, 1, 10000)
    source = await copy_source(req) if copy else None
    bucket, upload = await _upload(req)
    conjoined = await queries.next_conjoined(req.gw.pool, upload["upload_id"])
    if conjoined is None:
        raise errors.NoSuchUpload(upload_id=upload["upload_id"])
    if source is not None:
        first, last = _copy_range(req.headers.get("x-amz-copy-source-range"), source.size)
        chunks = read_all(req, source, first, last)
        check = _no_check
    else:
        body = req.body()
        chunks, check = body.chunks(), body.finish_check
    stored = await objects.store_part(
        req.gw,
        bucket,
        req.key,
        _layout(upload),
        upload["unified_id"],
        conjoined,
        chunks,
        check,
        req.request_id,
    )
    etag = stored.md5.hex()
    async with req.gw.pool.acquire() as conn:
        recorded = await queries.put_part(
            conn,
            upload["upload_id"],
            part_number,
            conjoined,
            stored.size,
            etag,
            (bucket.id, req.key, upload["unified_id"], upload["homes"]),
            stored.handoffs,
        )
    if not recorded:
        raise errors.NoSuchUpload(upload_id=upload["upload_id"])
    return etag, part_number


def _no_check(size: int, md5: bytes) -> None:
    return None


def _copy_range(value: str | None, size: int) -> tuple[int, int]:
    if value is None:
        return 0, size - 1
    match = _COPY_RANGE.match(value.strip())
    if match is None or int(match.group(2)) < int(match.group(1)):
        raise errors.InvalidArgument(
            "The x-amz-copy-source-range value must be of the form bytes=first-last "
            "where first and last are the zero-based offsets of the first and last bytes to copy",
            argument_name="x-amz-copy-source-range",
            argument_value=value,
        )
    first, last = int(match.group(1)), int(match.group(2))
    if last >= size:
        raise errors.InvalidRange(range_requested=value, actual_object_size=size)
    return first, last


async def upload_part(req: S3Request) -> web.StreamResponse:
    etag, _ = await _store_part(req, copy=False)
    return web.Response(headers={"ETag": f'"{etag}"'})


async def upload_part_copy(req: S3Request) -> web.StreamResponse:
    etag, _ = await _store_part(req, copy=True)
    return xml_response(xmlio.copy_part_result(datetime.now(UTC), etag))


async def complete_multipart_upload(req: S3Request) -> web.StreamResponse:
    bucket, upload = await _upload(req)
    listed = xmlio.parse_complete(await req.small_body())
    stored = {
        row["part_number"]: row
        for row in await queries.upload_parts(req.gw.pool, upload["upload_id"])
    }
    numbers = [number for number, _ in listed]
    if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
        raise errors.InvalidPartOrder(upload_id=upload["upload_id"])
    parts: list[tuple[int, int, int, int, str, str]] = []
    offset = 0
    for index, (number, etag) in enumerate(listed):
        row = stored.get(number)
        if row is None or row["etag"] != etag.strip('"'):
            raise errors.InvalidPart(upload_id=upload["upload_id"], part_number=number)
        if index < len(listed) - 1 and row["size"] < MIN_PART_BYTES:
            raise errors.EntityTooSmall(
                details={
                    "PartNumber": number,
                    "ProposedSize": row["size"],
                    "MinSizeAllowed": MIN_PART_BYTES,
                }
            )
        handoffs = queries.handoffs_json(queries.parse_handoffs(row["handoffs"]))
        parts.append((number, row["conjoined_part"], offset, row["size"], row["etag"], handoffs))
        offset += row["size"]
    etag = objects.multipart_etag([part[4] for part in parts])
    layout = _layout(upload)
    headers = upload["headers"]
    version = queries.NewVersion(
        bucket_id=bucket.id,
        key=req.key,
        unified_id=upload["unified_id"],
        size=offset,
        etag=etag,
        content_md5=None,
        content_type=upload["content_type"],
        headers=headers if isinstance(headers, dict) else json.loads(headers),
        k=layout.k,
        n=layout.n,
        sequence_size=layout.sequence_size,
        homes=layout.homes,
        part_count=len(parts),
    )
    async with req.gw.pool.acquire() as conn, conn.transaction():
        if not await queries.close_upload(conn, upload["upload_id"], "completed"):
            raise errors.NoSuchUpload(upload_id=upload["upload_id"])
        live = await queries.commit_version(conn, version, parts)
        # Parts uploaded but not listed are not part of the object: collect them.
        await queries.discard_unlisted_parts(conn, upload["upload_id"], [p[1] for p in parts])
    # Shares of every part: n per part, some of them held by handoff nodes.
    handed_off = sum(len(queries.parse_handoffs(part[5])) for part in parts)
    objects.announce_created(
        req.gw,
        bucket.name,
        req.key,
        upload["unified_id"],
        offset,
        etag,
        shares_home=layout.n * len(parts) - handed_off,
        shares_handed_off=handed_off,
        live=live,
    )
    location = f"{req.http.scheme}://{req.http.host}/{bucket.name}/{req.key}"
    return xml_response(
        xmlio.complete_multipart_upload_result(location, bucket.name, req.key, etag)
    )


async def abort_multipart_upload(req: S3Request) -> web.StreamResponse:
    bucket = await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    upload_id = req.query.get("uploadId", "")
    async with req.gw.pool.acquire() as conn:
        if await queries.open_upload(conn, upload_id, bucket.id, req.key) is None or not (
            await queries.abort_upload(conn, upload_id)
        ):
            raise errors.NoSuchUpload(upload_id=upload_id)
    return web.Response(status=204)


async def list_parts(req: S3Request) -> web.StreamResponse:
    bucket, upload = await _upload(req)
    max_parts = min(req.int_query("max-parts", MAX_PARTS), MAX_PARTS)
    marker = req.int_query("part-number-marker", 0)
    rows = await queries.upload_parts(req.gw.pool, upload["upload_id"], marker, max_parts + 1)
    truncated = len(rows) > max_parts
    rows = rows[:max_parts]
    parts = [
        xmlio.PartEntry(row["part_number"], row["created_at"], row["etag"], row["size"])
        for row in rows
    ]
    return xml_response(
        xmlio.list_parts_result(
            bucket.name,
            req.key,
            upload["upload_id"],
            parts=parts,
            is_truncated=truncated,
            max_parts=max_parts,
            part_number_marker=marker,
            next_part_number_marker=rows[-1]["part_number"] if truncated and rows else None,
            initiator=req.owner,
            owner=req.owner,
        )
    )


async def list_multipart_uploads(req: S3Request) -> web.StreamResponse:
    bucket = await objects.bucket_for(req.gw, req.bucket, req.auth.principal.user_id)
    max_uploads = min(req.int_query("max-uploads", MAX_PARTS), MAX_PARTS)
    prefix = req.query.get("prefix", "")
    key_marker = req.query.get("key-marker", "")
    upload_marker = req.query.get("upload-id-marker", "")
    rows = await queries.open_uploads(
        req.gw.pool, bucket.id, prefix, key_marker, upload_marker, max_uploads + 1
    )
    rows = [row for row in rows if row["key"].startswith(prefix)]
    truncated = len(rows) > max_uploads
    rows = rows[:max_uploads]
    uploads = [
        xmlio.UploadEntry(row["key"], row["upload_id"], row["created_at"], req.owner, req.owner)
        for row in rows
    ]
    return xml_response(
        xmlio.list_multipart_uploads_result(
            bucket.name,
            uploads=uploads,
            is_truncated=truncated,
            prefix=prefix,
            max_uploads=max_uploads,
            key_marker=key_marker,
            upload_id_marker=upload_marker,
            next_key_marker=rows[-1]["key"] if truncated and rows else None,
            next_upload_id_marker=rows[-1]["upload_id"] if truncated and rows else None,
            encoding=xmlio.encoding_type(req.query.get("encoding-type")),
        )
    )
