"""The gateway's SQL against the central database: every statement, named."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

Record = Any
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy
Db = asyncpg.Pool | Conn


# --- cluster ----------------------------------------------------------------


async def cluster_nodes(db: Db) -> list[Record]:
    return await db.fetch(
        """SELECT name, node_number, writer_endpoint, reader_endpoint, handoff_endpoint
           FROM node ORDER BY node_number"""
    )


# --- users and keys -----------------------------------------------------------


async def ensure_user(db: Db, name: str) -> int:
    user_id: int = await db.fetchval(
        """INSERT INTO app_user (name) VALUES ($1)
           ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id""",
        name,
    )
    return user_id


async def user_id(db: Db, name: str) -> int | None:
    found: int | None = await db.fetchval("SELECT id FROM app_user WHERE name = $1", name)
    return found


async def put_access_key(db: Db, access_key_id: str, user: int, secret_encrypted: bytes) -> None:
    await db.execute(
        """INSERT INTO access_key (access_key_id, user_id, secret_encrypted) VALUES ($1, $2, $3)
           ON CONFLICT (access_key_id) DO UPDATE
           SET user_id = $2, secret_encrypted = $3, disabled = false""",
        access_key_id,
        user,
        secret_encrypted,
    )


async def access_key(db: Db, access_key_id: str) -> Record | None:
    return await db.fetchrow(
        """SELECT k.user_id, u.name AS user_name, k.secret_encrypted
           FROM access_key k JOIN app_user u ON u.id = k.user_id
           WHERE k.access_key_id = $1 AND NOT k.disabled""",
        access_key_id,
    )


# --- buckets ------------------------------------------------------------------


async def buckets_of(db: Db, owner_id: int) -> list[Record]:
    return await db.fetch(
        "SELECT name, created_at FROM bucket WHERE owner_id = $1 ORDER BY name", owner_id
    )


async def bucket(db: Db, name: str) -> Record | None:
    return await db.fetchrow(
        "SELECT id, name, owner_id, created_at, k, n, sequence_size FROM bucket WHERE name = $1",
        name,
    )


async def create_bucket(
    db: Db, name: str, owner_id: int, k: int, n: int, sequence_size: int
) -> bool:
    """False if the name is taken."""
    created = await db.fetchval(
        """INSERT INTO bucket (name, owner_id, k, n, sequence_size) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (name) DO NOTHING RETURNING id""",
        name,
        owner_id,
        k,
        n,
        sequence_size,
    )
    return created is not None


async def delete_bucket_if_empty(db: Conn, bucket_id: int) -> bool:
    """Delete the bucket unless it holds a live object or an open upload."""
    async with db.transaction():
        await db.execute("SELECT 1 FROM bucket WHERE id = $1 FOR UPDATE", bucket_id)
        busy = await db.fetchval(
            """SELECT EXISTS (SELECT 1 FROM object_version WHERE bucket_id = $1 AND state = 'live')
                   OR EXISTS (SELECT 1 FROM multipart_upload
                              WHERE bucket_id = $1 AND state = 'open')""",
            bucket_id,
        )
        if busy:
            return False
        await db.execute("DELETE FROM object_part WHERE bucket_id = $1", bucket_id)
        await db.execute("DELETE FROM object_version WHERE bucket_id = $1", bucket_id)
        await db.execute(
            """DELETE FROM multipart_part WHERE upload_id IN
               (SELECT upload_id FROM multipart_upload WHERE bucket_id = $1)""",
            bucket_id,
        )
        await db.execute("DELETE FROM multipart_upload WHERE bucket_id = $1", bucket_id)
        await db.execute("DELETE FROM bucket WHERE id = $1", bucket_id)
        return True


# --- versions -------------------------------------------------------------------


@dataclass(frozen=True)
class NewVersion:
    bucket_id: int
    key: str
    unified_id: int
    size: int
    etag: str
    content_md5: bytes | None
    content_type: str
    headers: dict[str, str]
    k: int
    n: int
    sequence_size: int
    homes: Sequence[str]
    part_count: int = 0
    #: segment-num -> holders, for shares handed off at write time.
    handoffs: Mapping[int, Sequence[str]] = dataclasses.field(default_factory=dict)


def handoffs_json(handoffs: Mapping[int, Sequence[str]]) -> str:
    return json.dumps({str(num): list(holders) for num, holders in handoffs.items()})


def parse_handoffs(value: Any) -> dict[int, list[str]]:
    """``handoffs`` as stored (jsonb text or an already decoded dict)."""
    raw = json.loads(value) if isinstance(value, str) else (value or {})
    return {int(num): list(holders) for num, holders in raw.items()}


async def _lock_key(db: Conn, bucket_id: int, key: str) -> None:
    await db.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", int(bucket_id % 2**31), key)


async def _retire(db: Conn, bucket_id: int, key: str, unified_id: int) -> None:
    """Mark one version dead and queue its segments for destruction.

    The garbage row carries the version's size: those bytes were counted as
    added when the version committed, and are counted as removed when the
    reaper has destroyed them on every node (see :func:`forget_garbage`).
    """
    retired = await db.fetchrow(
        """UPDATE object_version SET state = 'dead', destroyed_at = now()
           WHERE bucket_id = $1 AND key = $2 AND unified_id = $3 RETURNING homes, size""",
        bucket_id,
        key,
        unified_id,
    )
    assert retired is not None, "only a version just seen under the key's lock is retired"
    await db.execute(
        """INSERT INTO garbage_segment (bucket_id, key, unified_id, homes, size)
           VALUES ($1, $2, $3, $4, $5)""",
        bucket_id,
        key,
        unified_id,
        retired["homes"],
        retired["size"],
    )


async def commit_version(
    db: Conn, version: NewVersion, parts: Sequence[tuple[int, int, int, int, str, str]] = ()
) -> bool:
    """Make ``version`` the live version of its key (newest unified id wins).

    ``parts``: (part_number, conjoined_part, offset, size, etag, handoffs json) of a multipart
    version. Returns False when a newer version was already live (this one is
    then recorded dead at once).
    """
    async with db.transaction():
        await _lock_key(db, version.bucket_id, version.key)
        live = await db.fetchval(
            """SELECT unified_id FROM object_version
               WHERE bucket_id = $1 AND key = $2 AND state = 'live'""",
            version.bucket_id,
            version.key,
        )
        wins = live is None or live < version.unified_id
        if live is not None and wins:
            await _retire(db, version.bucket_id, version.key, live)
        await db.execute(
            """INSERT INTO object_version (bucket_id, key, unified_id, state, size, etag,
                   content_md5, content_type, headers, k, n, sequence_size, homes, part_count,
                   handoffs)
               VALUES ($1, $2, $3, 'live', $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13,
                       $14::jsonb)""",
            version.bucket_id,
            version.key,
            version.unified_id,
            version.size,
            version.etag,
            version.content_md5,
            version.content_type,
            json.dumps(version.headers),
            version.k,
            version.n,
            version.sequence_size,
            list(version.homes),
            version.part_count,
            handoffs_json(version.handoffs),
        )
        await db.executemany(
            """INSERT INTO object_part (bucket_id, key, unified_id, part_number, conjoined_part,
                                        offset_bytes, size, etag, handoffs)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)""",
            [(version.bucket_id, version.key, version.unified_id, *part) for part in parts],
        )
        # Counted as added even when it loses: it is then retired at once, and
        # its bytes come back as removed once the reaper has destroyed them.
        await queue_usage(db, version.bucket_id, BYTES_ADDED, version.size)
        if not wins:
            await _retire(db, version.bucket_id, version.key, version.unified_id)
        return wins


async def live_version(db: Db, bucket_id: int, key: str) -> Record | None:
    return await db.fetchrow(
        """SELECT unified_id, size, etag, content_md5, content_type, headers, k, n,
                  sequence_size, homes, part_count, created_at, handoffs
           FROM object_version WHERE bucket_id = $1 AND key = $2 AND state = 'live'""",
        bucket_id,
        key,
    )


async def version_parts(db: Db, bucket_id: int, key: str, unified_id: int) -> list[Record]:
    return await db.fetch(
        """SELECT part_number, conjoined_part, offset_bytes, size, etag, handoffs FROM object_part
           WHERE bucket_id = $1 AND key = $2 AND unified_id = $3 ORDER BY part_number""",
        bucket_id,
        key,
        unified_id,
    )


async def delete_live(db: Conn, bucket_id: int, key: str) -> bool:
    """Retire the live version of ``key``; False if there was none."""
    async with db.transaction():
        await _lock_key(db, bucket_id, key)
        live = await db.fetchval(
            "SELECT unified_id FROM object_version WHERE bucket_id = $1 AND key = $2 "
            "AND state = 'live'",
            bucket_id,
            key,
        )
        if live is None:
            return False
        await _retire(db, bucket_id, key, live)
        return True


async def list_live(
    db: Db, bucket_id: int, prefix: str, start: str, inclusive: bool, limit: int
) -> list[Record]:
    """Live versions with key > ``start`` (>= when ``inclusive``) and key >= ``prefix``.

    In key order. Rows past the prefix may come back: the caller stops at the first one.
    """
    after = ">=" if inclusive else ">"  # one of two fixed operators, never user input
    return await db.fetch(
        f"""SELECT key, size, etag, created_at FROM object_version
           WHERE bucket_id = $1 AND state = 'live' AND key {after} $2 AND key >= $3
           ORDER BY key LIMIT $4""",
        bucket_id,
        start,
        prefix,
        limit,
    )


async def garbage(db: Db, limit: int) -> list[Record]:
    return await db.fetch(
        "SELECT id, bucket_id, key, unified_id, conjoined_part, homes FROM garbage_segment "
        "ORDER BY id LIMIT $1",
        limit,
    )


async def forget_garbage(db: Db, ids: Sequence[int]) -> None:
    """Forget garbage destroyed on every node, and queue the space it frees.

    One statement, so one transaction: a row's bytes are queued as removed
    exactly when the row goes. When two reapers forget the same row, only the
    one whose DELETE removed it gets it back from ``RETURNING``.
    """
    await db.execute(
        """WITH gone AS (
               DELETE FROM garbage_segment WHERE id = ANY($1::bigint[])
               RETURNING bucket_id, size)
           INSERT INTO accounting_outbox (bucket_id, event, value)
           SELECT bucket_id, 'bytes-removed', size FROM gone WHERE size > 0""",
        list(ids),
    )


# --- accounting -------------------------------------------------------------------

BYTES_ADDED = "bytes-added"
BYTES_REMOVED = "bytes-removed"
BYTES_RETRIEVED = "bytes-retrieved"
USAGE_EVENTS = (BYTES_ADDED, BYTES_REMOVED, BYTES_RETRIEVED)


async def queue_usage(db: Db, bucket_id: int, event: str, value: int) -> None:
    """Queue one usage detail in the outbox (nothing for 0 bytes).

    Called inside the transaction of the change it counts, so that the detail
    exists if and only if the change does.
    """
    if value <= 0:
        return
    await db.execute(
        "INSERT INTO accounting_outbox (bucket_id, event, value) VALUES ($1, $2, $3)",
        bucket_id,
        event,
        value,
    )


async def claim_outbox(db: Conn, limit: int) -> list[Record]:
    """The oldest queued details, locked for this transaction.

    ``SKIP LOCKED``: what another gateway is delivering right now is left to it.
    """
    return await db.fetch(
        """SELECT id, bucket_id, event, value, extract(epoch FROM occurred_at)::float8 AS at
           FROM accounting_outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )


async def drop_outbox(db: Db, ids: Sequence[int]) -> None:
    await db.execute("DELETE FROM accounting_outbox WHERE id = ANY($1::bigint[])", list(ids))


async def pending_usage(db: Db, bucket_id: int) -> dict[str, int]:
    """Bytes per event queued for ``bucket_id`` and not yet delivered."""
    rows = await db.fetch(
        """SELECT event, sum(value)::bigint AS total FROM accounting_outbox
           WHERE bucket_id = $1 GROUP BY event""",
        bucket_id,
    )
    pending = dict.fromkeys(USAGE_EVENTS, 0)
    pending.update({row["event"]: int(row["total"]) for row in rows})
    return pending


# --- multipart ------------------------------------------------------------------


async def create_upload(
    db: Db,
    upload_id: str,
    bucket_id: int,
    key: str,
    unified_id: int,
    owner_id: int,
    content_type: str,
    headers: dict[str, str],
    homes: Sequence[str],
    k: int,
    n: int,
    sequence_size: int,
) -> None:
    await db.execute(
        """INSERT INTO multipart_upload (upload_id, bucket_id, key, unified_id, owner_id,
               content_type, headers, homes, k, n, sequence_size)
           VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11)""",
        upload_id,
        bucket_id,
        key,
        unified_id,
        owner_id,
        content_type,
        json.dumps(headers),
        list(homes),
        k,
        n,
        sequence_size,
    )


async def open_upload(db: Db, upload_id: str, bucket_id: int, key: str) -> Record | None:
    return await db.fetchrow(
        """SELECT upload_id, unified_id, owner_id, content_type, headers, homes, k, n,
                  sequence_size, created_at
           FROM multipart_upload
           WHERE upload_id = $1 AND bucket_id = $2 AND key = $3 AND state = 'open'""",
        upload_id,
        bucket_id,
        key,
    )


async def next_conjoined(db: Db, upload_id: str) -> int | None:
    value: int | None = await db.fetchval(
        """UPDATE multipart_upload SET next_conjoined = next_conjoined + 1
           WHERE upload_id = $1 AND state = 'open' RETURNING next_conjoined - 1""",
        upload_id,
    )
    return value


async def put_part(
    db: Conn,
    upload_id: str,
    part_number: int,
    conjoined_part: int,
    size: int,
    etag: str,
    garbage_of: tuple[int, str, int, Sequence[str]],
    handoffs: Mapping[int, Sequence[str]] | None = None,
) -> bool:
    """Record a stored part (replacing an earlier attempt); False if the upload closed."""
    bucket_id, key, unified_id, homes = garbage_of
    async with db.transaction():
        state = await db.fetchval(
            "SELECT state FROM multipart_upload WHERE upload_id = $1 FOR UPDATE", upload_id
        )
        if state != "open":
            await db.execute(
                """INSERT INTO garbage_segment (bucket_id, key, unified_id, conjoined_part, homes)
                   VALUES ($1, $2, $3, $4, $5)""",
                bucket_id,
                key,
                unified_id,
                conjoined_part,
                list(homes),
            )
            return False
        replaced = await db.fetchval(
            "SELECT conjoined_part FROM multipart_part WHERE upload_id = $1 AND part_number = $2",
            upload_id,
            part_number,
        )
        if replaced is not None:
            await db.execute(
                """INSERT INTO garbage_segment (bucket_id, key, unified_id, conjoined_part, homes)
                   VALUES ($1, $2, $3, $4, $5)""",
                bucket_id,
                key,
                unified_id,
                replaced,
                list(homes),
            )
        await db.execute(
            """INSERT INTO multipart_part (upload_id, part_number, conjoined_part, size, etag,
                                           handoffs)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb)
               ON CONFLICT (upload_id, part_number) DO UPDATE
               SET conjoined_part = $3, size = $4, etag = $5, handoffs = $6::jsonb,
                   created_at = now()""",
            upload_id,
            part_number,
            conjoined_part,
            size,
            etag,
            handoffs_json(handoffs or {}),
        )
        return True


async def upload_parts(
    db: Db, upload_id: str, after_part: int = 0, limit: int = 10000
) -> list[Record]:
    return await db.fetch(
        """SELECT part_number, conjoined_part, size, etag, created_at, handoffs FROM multipart_part
           WHERE upload_id = $1 AND part_number > $2 ORDER BY part_number LIMIT $3""",
        upload_id,
        after_part,
        limit,
    )


async def close_upload(db: Conn, upload_id: str, state: str) -> bool:
    """Mark an open upload completed or aborted; False if it was not open."""
    closed = await db.fetchval(
        """UPDATE multipart_upload SET state = $2 WHERE upload_id = $1 AND state = 'open'
           RETURNING upload_id""",
        upload_id,
        state,
    )
    return closed is not None


async def discard_unlisted_parts(db: Conn, upload_id: str, kept_conjoined: Sequence[int]) -> None:
    """Queue the parts a completed upload did not list for destruction on the nodes."""
    await db.execute(
        """INSERT INTO garbage_segment (bucket_id, key, unified_id, conjoined_part, homes)
           SELECT u.bucket_id, u.key, u.unified_id, p.conjoined_part, u.homes
           FROM multipart_part p JOIN multipart_upload u ON u.upload_id = p.upload_id
           WHERE p.upload_id = $1 AND NOT (p.conjoined_part = ANY($2::integer[]))""",
        upload_id,
        list(kept_conjoined),
    )


async def abort_upload(db: Conn, upload_id: str) -> bool:
    async with db.transaction():
        row = await db.fetchrow(
            """UPDATE multipart_upload SET state = 'aborted' WHERE upload_id = $1
               AND state = 'open' RETURNING bucket_id, key, unified_id, homes""",
            upload_id,
        )
        if row is None:
            return False
        await db.execute(
            """INSERT INTO garbage_segment (bucket_id, key, unified_id, conjoined_part, homes)
               SELECT $2, $3, $4, conjoined_part, $5 FROM multipart_part WHERE upload_id = $1""",
            upload_id,
            row["bucket_id"],
            row["key"],
            row["unified_id"],
            row["homes"],
        )
        return True


async def open_uploads(
    db: Db, bucket_id: int, prefix: str, key_marker: str, upload_marker: str, limit: int
) -> list[Record]:
    """Open uploads after the markers, by key then upload id.

    As on S3, a key marker without an upload-id marker skips every upload of
    that key; with one, the key's uploads after that id are listed.
    """
    return await db.fetch(
        """SELECT key, upload_id, created_at FROM multipart_upload
           WHERE bucket_id = $1 AND state = 'open' AND key >= $2
             AND (key > $3 OR (key = $3 AND $4 <> '' AND upload_id > $4))
           ORDER BY key, upload_id LIMIT $5""",
        bucket_id,
        prefix,
        key_marker,
        upload_marker,
        limit,
    )


def as_datetime(value: Any) -> datetime:
    assert isinstance(value, datetime)
    return value
