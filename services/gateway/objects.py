"""Object logic: store, find, read and delete versions (no HTTP in here).

A version is stored by ``store.store_stream`` and becomes visible only when
``queries.commit_version`` commits its index row; whatever happens before
that leaves nothing listed or readable. Replaced and deleted versions are
queued as garbage and destroyed on their nodes by the reaper.

Once the index commits, an ``object-created`` (a version stored) or
``object-removed`` (a key's live version deleted) event is sent, best effort.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.common.messages import SegmentRef
from services.gateway import errors, queries
from services.gateway.context import Gateway
from services.gateway.fetch import Part, fetch_range
from services.gateway.store import Layout, Stored, store_stream

log = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024

OBJECT_CREATED = "object-created"
OBJECT_REMOVED = "object-removed"


@dataclass(frozen=True)
class Bucket:
    id: int
    name: str
    owner_id: int
    created_at: datetime
    k: int
    n: int
    sequence_size: int


@dataclass(frozen=True)
class Version:
    bucket: Bucket
    key: str
    unified_id: int
    size: int
    etag: str
    content_type: str
    headers: dict[str, str]
    layout: Layout
    parts: tuple[Part, ...]
    part_etags: tuple[str, ...]
    last_modified: datetime


def check_key(key: str) -> None:
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise errors.KeyTooLongError(
            details={"Size": len(key.encode("utf-8", "surrogatepass")), "MaxSizeAllowed": 1024}
        )


async def bucket_for(gw: Gateway, name: str, user_id: int) -> Bucket:
    row = await queries.bucket(gw.pool, name)
    if row is None:
        raise errors.NoSuchBucket(bucket_name=name)
    if row["owner_id"] != user_id and user_id != gw.root.user_id:
        raise errors.AccessDenied()
    return Bucket(**dict(row))


async def find(gw: Gateway, bucket: Bucket, key: str) -> Version:
    row = await queries.live_version(gw.pool, bucket.id, key)
    if row is None:
        raise errors.NoSuchKey(key=key)
    layout = Layout(row["k"], row["n"], row["sequence_size"], tuple(row["homes"]))
    if row["part_count"]:
        part_rows = await queries.version_parts(gw.pool, bucket.id, key, row["unified_id"])
        parts = tuple(
            Part(
                p["conjoined_part"],
                p["offset_bytes"],
                p["size"],
                queries.parse_handoffs(p["handoffs"]),
            )
            for p in part_rows
        )
        part_etags = tuple(p["etag"] for p in part_rows)
    else:
        parts = (Part(0, 0, row["size"], queries.parse_handoffs(row["handoffs"])),)
        part_etags = ()
    headers = row["headers"]
    return Version(
        bucket=bucket,
        key=key,
        unified_id=row["unified_id"],
        size=row["size"],
        etag=row["etag"],
        content_type=row["content_type"],
        headers=json.loads(headers) if isinstance(headers, str) else dict(headers),
        layout=layout,
        parts=parts,
        part_etags=part_etags,
        last_modified=row["created_at"],
    )


def read(gw: Gateway, version: Version, first: int, last: int) -> AsyncIterator[bytes]:
    """Bytes ``first..last`` of ``version`` (inclusive), streamed."""
    return fetch_range(
        gw.nodes,
        version.layout,
        version.bucket.id,
        version.key,
        version.unified_id,
        version.parts,
        first,
        last,
    )


async def put(
    gw: Gateway,
    bucket: Bucket,
    key: str,
    body: AsyncIterator[bytes],
    finish_check: Callable[[int, bytes], None],
    content_type: str,
    headers: dict[str, str],
    request_id: str = "",
) -> tuple[str, Stored]:
    """Store and commit a whole object; returns its etag and where its shares went."""
    check_key(key)
    layout = gw.layout_for(bucket.name, key, bucket.k, bucket.n, bucket.sequence_size)
    unified_id = gw.ids.next_id()
    stored = await store_stream(
        gw.nodes,
        layout,
        SegmentRef(bucket.id, key, unified_id, 0),
        body,
        finish_check,
        gw.cfg.max_object_bytes,
        _segment_meta(bucket.name, content_type, headers),
        request_id,
    )
    etag = stored.md5.hex()
    async with gw.pool.acquire() as conn:
        live = await queries.commit_version(
            conn,
            queries.NewVersion(
                bucket_id=bucket.id,
                key=key,
                unified_id=unified_id,
                size=stored.size,
                etag=etag,
                content_md5=stored.md5,
                content_type=content_type,
                headers=headers,
                k=layout.k,
                n=layout.n,
                sequence_size=layout.sequence_size,
                homes=layout.homes,
                handoffs=stored.handoffs,
            ),
        )
    announce_created(
        gw,
        bucket.name,
        key,
        unified_id,
        stored.size,
        etag,
        shares_home=stored.shares - stored.handed_off,
        shares_handed_off=stored.handed_off,
        live=live,
    )
    return etag, stored


def announce_created(
    gw: Gateway,
    bucket: str,
    key: str,
    unified_id: int,
    size: int,
    etag: str,
    shares_home: int,
    shares_handed_off: int,
    live: bool = True,
) -> None:
    """The ``object-created`` event of a version whose index row has committed.

    ``shares-home`` and ``shares-handed-off`` count the object's shares stored
    at their home and held by other nodes for a down home; ``live`` is false
    when a newer version had already committed (this one is then dead at once).
    """
    gw.events.send(
        OBJECT_CREATED,
        **{
            "bucket": bucket,
            "key": key,
            "unified-id": unified_id,
            "size": size,
            "etag": etag,
            "shares-home": shares_home,
            "shares-handed-off": shares_handed_off,
            "live": live,
        },
    )


async def store_part(
    gw: Gateway,
    bucket: Bucket,
    key: str,
    layout: Layout,
    unified_id: int,
    conjoined_part: int,
    body: AsyncIterator[bytes],
    finish_check: Callable[[int, bytes], None],
    request_id: str = "",
) -> Stored:
    return await store_stream(
        gw.nodes,
        layout,
        SegmentRef(bucket.id, key, unified_id, 0, conjoined_part),
        body,
        finish_check,
        gw.cfg.max_object_bytes,
        {"bucket": bucket.name, "part": conjoined_part},
        request_id,
    )


async def delete(gw: Gateway, bucket: Bucket, key: str) -> bool:
    """Retire the live version of ``key``; False (and no event) if there was none."""
    async with gw.pool.acquire() as conn:
        removed = await queries.delete_live(conn, bucket.id, key)
    if removed:
        gw.events.send(OBJECT_REMOVED, bucket=bucket.name, key=key)
    return removed


def multipart_etag(part_etags: list[str]) -> str:
    """S3's multipart ETag: md5 of the parts' binary md5s, then ``-N``."""
    digest = hashlib.md5(b"".join(bytes.fromhex(etag) for etag in part_etags)).hexdigest()
    return f"{digest}-{len(part_etags)}"


def _segment_meta(bucket: str, content_type: str, headers: dict[str, str]) -> dict[str, Any]:
    """What each node keeps of the object, so the index can be rebuilt from nodes."""
    return {"bucket": bucket, "content-type": content_type, "headers": headers}
