"""Postgres access: connection pools and forward-only schema migrations.

Migrations are the numbered files ``sql/<kind>/NNNN_name.sql`` (kind is
``central`` or ``node``). ``migrate`` applies, in order, each one not yet in
the database's ``schema_migration`` table, each in its own transaction under
an advisory lock, so running it twice, or from two processes at once, is safe.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

KINDS = ("central", "node")
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
#: Any constant; it serialises concurrent migrators of one database.
_MIGRATION_LOCK = 0x6E696D62
_DBNAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def sql_dir() -> Path:
    """Where the migration files are (``NIMBUS_SQL_DIR`` overrides for installs)."""
    override = os.environ.get("NIMBUS_SQL_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "sql"


def migrations(kind: str, root: Path | None = None) -> list[Migration]:
    if kind not in KINDS:
        raise ValueError(f"unknown database kind {kind!r}; expected one of {KINDS}")
    found: list[Migration] = []
    for path in sorted((root or sql_dir()).joinpath(kind).glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path} is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two {kind} migrations share a number: {versions}")
    return found


async def migrate(url: str, kind: str) -> list[str]:
    """Apply the missing migrations of ``kind`` to the database at ``url``."""
    applied: list[str] = []
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migration (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        for migration in migrations(kind):
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                done = await conn.fetchval(
                    "SELECT 1 FROM schema_migration WHERE version = $1", migration.version
                )
                if done:
                    continue
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migration (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied.append(migration.name)
                log.info("applied %s migration %s", kind, migration.name)
    finally:
        await conn.close()
    return applied


async def create_pool(url: str, wait_s: float = 60.0, **kwargs: Any) -> asyncpg.Pool:
    """A pool, retrying while the server is still starting (up to ``wait_s``)."""
    deadline = time.monotonic() + wait_s
    delay = 0.1
    while True:
        try:
            options: dict[str, Any] = {"min_size": 1, "max_size": 10, **kwargs}
            pool = await asyncpg.create_pool(url, **options)
            assert pool is not None
            return pool
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError):
            if time.monotonic() > deadline:
                raise
            log.info("database not reachable yet; retrying in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def ensure_database(server_url: str, dbname: str) -> str:
    """Create database `dbname` on the server of `server_url` unless it exists.

    Safe against a concurrent creator. Returns `server_url` with its path
    replaced by `dbname`.
    """
    validate_dbname(dbname)
    conn = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", dbname):
            await _create_database(conn, dbname)
    finally:
        await conn.close()
    return with_database(server_url, dbname)


async def _create_database(conn: asyncpg.Connection, dbname: str) -> None:
    try:
        await conn.execute(f"CREATE DATABASE {_quote_ident(dbname)}")
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        # Someone created it between our check and our CREATE; a race on the
        # catalog index shows up as a unique violation rather than a duplicate.
        pass


def validate_dbname(dbname: str) -> None:
    if not _DBNAME_RE.fullmatch(dbname):
        raise ValueError(
            f"invalid database name {dbname!r}: want lower-case letters, digits and _, "
            "not starting with a digit, at most 63 characters"
        )


def _quote_ident(name: str) -> str:
    """`_quote_ident('node_1') == '"node_1"'`; embedded quotes are doubled."""
    return '"' + name.replace('"', '""') + '"'


def with_database(url: str, dbname: str) -> str:
    """`with_database("postgresql://u@h:5/a?x=1", "b") == "postgresql://u@h:5/b?x=1"`."""
    return urllib.parse.urlsplit(url)._replace(path=f"/{dbname}").geturl()


def redact(url: str) -> str:
    """The URL without its password, for logs and output.

    >>> redact("postgresql://nimbus:secret@db:5432/nimbus")
    'postgresql://nimbus:***@db:5432/nimbus'
    """
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


async def setup_databases(central_url: str, node_names: list[str]) -> tuple[str, dict[str, str]]:
    """Create (if missing) and migrate the central database of ``central_url``
    and one database per node beside it, named ``<central>_<node>``.

    Returns the central URL and each node's database URL. Idempotent.
    """
    parts = urllib.parse.urlsplit(central_url)
    central_name = parts.path.lstrip("/") or "nimbus"
    central = await ensure_database(central_url, central_name)
    await migrate(central, "central")
    nodes: dict[str, str] = {}
    for name in node_names:
        nodes[name] = await ensure_database(central_url, f"{central_name}_{name}")
        await migrate(nodes[name], "node")
    return central, nodes


async def register_cluster(
    central_url: str,
    k: int,
    n: int,
    nodes: list[tuple[str, str, str]],
    name: str = "local",
    handoffs: dict[str, str] | None = None,
) -> None:
    """Record the cluster's code and its nodes' (name, writer, reader) endpoints,
    and each node's handoff service endpoint from ``handoffs`` where given.

    The gateway reads them at start. Idempotent: re-registering updates the
    endpoints; the node order is the order given.
    """
    conn = await asyncpg.connect(central_url)
    try:
        async with conn.transaction():
            cluster_id = await conn.fetchval(
                """INSERT INTO cluster (name, k, n) VALUES ($1, $2, $3)
                   ON CONFLICT (name) DO UPDATE SET k = $2, n = $3 RETURNING id""",
                name,
                k,
                n,
            )
            # Renumber in two steps so a reordering never trips the unique index.
            await conn.execute(
                "UPDATE node SET node_number = -1 - node_number WHERE cluster_id = $1", cluster_id
            )
            for number, (node_name, writer, reader) in enumerate(nodes):
                await conn.execute(
                    """INSERT INTO node (cluster_id, name, writer_endpoint, reader_endpoint,
                                         node_number, handoff_endpoint)
                       VALUES ($1, $2, $3, $4, $5, $6)
                       ON CONFLICT (name) DO UPDATE
                       SET writer_endpoint = $3, reader_endpoint = $4, node_number = $5,
                           handoff_endpoint = $6""",
                    cluster_id,
                    node_name,
                    writer,
                    reader,
                    number,
                    (handoffs or {}).get(node_name),
                )
    finally:
        await conn.close()
