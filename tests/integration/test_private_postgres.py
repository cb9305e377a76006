"""A private PostgreSQL server: init, start, databases, stop, restart, and refusals.

As root, PostgreSQL runs as the `postgres` user, which cannot enter pytest's
own temporary root (`/tmp/pytest-of-root` is 0700). Data directories then go
under a directory of our own in the system temporary directory, searchable
by others (0711) but not listable.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from services.local.postgres import (
    PostgresError,
    PrivatePostgres,
    ensure_database,
    find_pg_bindir,
    init_postgres,
    is_running,
    start_postgres,
    stop_postgres,
    wait_for_postgres,
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory the PostgreSQL processes can reach, removed afterwards."""
    if os.geteuid() != 0:
        yield tmp_path_factory.mktemp("pg")
        return
    path = Path(tempfile.mkdtemp(prefix="nimbus-test-pg-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def pg(base_dir: Path) -> Iterator[PrivatePostgres]:
    server = init_postgres(base_dir / "data", _free_port())
    start_postgres(server)
    yield server
    stop_postgres(server)


def test_find_pg_bindir_has_the_tools() -> None:
    bindir = find_pg_bindir()
    assert (bindir / "initdb").is_file()
    assert (bindir / "pg_ctl").is_file()


def test_find_pg_bindir_rejects_bad_override(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("NIMBUS_PG_BINDIR", str(tmp_path))
    with pytest.raises(PostgresError, match="apt-get install postgresql"):
        find_pg_bindir()


async def test_select_one(pg: PrivatePostgres) -> None:
    conn = await asyncpg.connect(pg.url)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_database()") == "nimbus"
        assert await conn.fetchval("SELECT current_user") == "nimbus"
        assert await conn.fetchval("SHOW fsync") == "on"
        assert await conn.fetchval("SHOW max_connections") == "300"
    finally:
        await conn.close()


def test_start_is_idempotent(pg: PrivatePostgres) -> None:
    start_postgres(pg)
    assert is_running(pg)


def test_start_refuses_other_port(pg: PrivatePostgres) -> None:
    other = PrivatePostgres(data_dir=pg.data_dir, port=pg.port + 1, run_as=pg.run_as)
    with pytest.raises(PostgresError, match="already running"):
        start_postgres(other)


async def test_ensure_database_is_idempotent(pg: PrivatePostgres) -> None:
    first = await ensure_database(pg.url, "node_1")
    second = await ensure_database(pg.url, "node_1")
    assert first == second == pg.database_url("node_1")
    conn = await asyncpg.connect(first)
    try:
        assert await conn.fetchval("SELECT current_database()") == "node_1"
    finally:
        await conn.close()


async def test_ensure_database_concurrent_creators(pg: PrivatePostgres) -> None:
    urls = await asyncio.gather(*(ensure_database(pg.url, "node_race") for _ in range(5)))
    assert set(urls) == {pg.database_url("node_race")}


@pytest.mark.parametrize("name", ["", "Node", "1node", "a-b", 'x"; DROP', "a" * 64])
async def test_ensure_database_rejects_bad_names(pg: PrivatePostgres, name: str) -> None:
    with pytest.raises(ValueError, match="invalid database name"):
        await ensure_database(pg.url, name)


async def test_restart_keeps_data(pg: PrivatePostgres) -> None:
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute("CREATE TABLE survivor (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO survivor VALUES (42)")
    finally:
        await conn.close()

    await asyncio.to_thread(stop_postgres, pg)
    assert not is_running(pg)
    assert not _accepts_connections(pg.port)
    await asyncio.to_thread(stop_postgres, pg)  # stopping a stopped server is fine

    await asyncio.to_thread(start_postgres, pg)
    conn = await asyncpg.connect(pg.url)
    try:
        assert await conn.fetchval("SELECT id FROM survivor") == 42
    finally:
        await conn.close()


async def test_wait_for_postgres_times_out_on_closed_port() -> None:
    with pytest.raises(PostgresError, match="not ready"):
        await wait_for_postgres(f"postgresql://nimbus@127.0.0.1:{_free_port()}/nimbus", 0.3)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the data dir to another user")
def test_init_refuses_untraversable_parent(base_dir: Path) -> None:
    private = base_dir / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    with pytest.raises(PostgresError, match="--dir outside") as excinfo:
        init_postgres(private / "deep" / "data", _free_port())
    assert str(private) in str(excinfo.value)
    assert not (private / "deep").exists()
