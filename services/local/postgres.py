"""A private PostgreSQL server for the local cluster (`nimbus local up`) and tests.

The server is an ordinary PostgreSQL cluster in a data directory of our
choosing, started with the distribution's `initdb` / `pg_ctl` binaries. It
never touches a system-wide PostgreSQL installation.

Invariants:

- It listens on 127.0.0.1 only, on the port it was given, and on no Unix
  socket (`unix_socket_directories = ''`), so deep pytest temporary paths
  never hit the 107-byte socket path limit and nothing outside this host can
  reach it.
- Authentication is `trust` for the superuser `nimbus`, and `pg_hba.conf`
  admits 127.0.0.1 only. A database `nimbus` exists once `start_postgres`
  returns.
- The cluster uses UTF-8 with the C collation (`--no-locale`): text sorts by
  byte, which is the UTF-8 binary order S3 lists keys in.
- `fsync` stays on: the local cluster keeps its promise that an acknowledged
  write is durable.
- PostgreSQL refuses to run as root. When we are root, the data directory
  belongs to the `postgres` system user and every PostgreSQL tool runs as that
  user (through `runuser`, else `setpriv`); every parent of the data directory
  must then be searchable by that user.
- Functions that run external processes are synchronous; those that talk to
  the server through asyncpg are coroutines. `start_postgres` runs its
  coroutines on a private thread, so it is safe to call with or without a
  running event loop and never replaces the caller's loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import os
import pwd
import shutil
import stat
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from services.common.db import ensure_database, validate_dbname

__all__ = ["ensure_database"]

SUPERUSER = "nimbus"
"""The PostgreSQL superuser created by initdb; trusted on 127.0.0.1."""

DEFAULT_DATABASE = "nimbus"
"""The database `start_postgres` guarantees to exist."""

SYSTEM_USER = "postgres"
"""The system account PostgreSQL runs as when we are root."""

HOST = "127.0.0.1"
LOG_FILE_NAME = "postgres.log"
_CONF_FILE_NAME = "nimbus.conf"
_INCLUDE_LINE = f"include '{_CONF_FILE_NAME}'"
_LOG_TAIL_LINES = 30
_EXTRA_SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin"
_INSTALL_HINT = (
    "install the PostgreSQL server (Debian/Ubuntu: `apt-get install postgresql`) "
    "or set NIMBUS_PG_BINDIR to the directory holding initdb and pg_ctl"
)

_T = TypeVar("_T")


class PostgresError(RuntimeError):
    """The private PostgreSQL server could not be found, set up, started or stopped."""


@dataclass(frozen=True)
class PrivatePostgres:
    """One private PostgreSQL cluster: where its data lives and how to reach it.

    `run_as` is the system user the PostgreSQL tools run as, or None to run
    them as the current user.
    """

    data_dir: Path
    port: int
    run_as: str | None

    @property
    def url(self) -> str:
        """URL of the `nimbus` database as the `nimbus` superuser."""
        return self.database_url(DEFAULT_DATABASE)

    @property
    def log_file(self) -> Path:
        """The server log written by `pg_ctl start`."""
        return self.data_dir / LOG_FILE_NAME

    def database_url(self, dbname: str) -> str:
        """URL of database `dbname` on this server as the `nimbus` superuser."""
        validate_dbname(dbname)
        return f"postgresql://{SUPERUSER}@{HOST}:{self.port}/{dbname}"


# --- locating the binaries -------------------------------------------------


def find_pg_bindir() -> Path:
    """Return the directory holding `initdb` and `pg_ctl`.

    Looks, in order, at $NIMBUS_PG_BINDIR, `pg_config --bindir`, the newest
    `/usr/lib/postgresql/<version>/bin`, and the directory of `initdb` on PATH.
    """
    override = os.environ.get("NIMBUS_PG_BINDIR")
    if override:
        if not _has_initdb(Path(override)):
            raise PostgresError(f"NIMBUS_PG_BINDIR={override} holds no initdb; {_INSTALL_HINT}")
        return Path(override)
    for candidate in (_pg_config_bindir(), _newest_debian_bindir(), _initdb_on_path_dir()):
        if candidate is not None and _has_initdb(candidate):
            return candidate
    raise PostgresError(f"no PostgreSQL server binaries (initdb, pg_ctl) found; {_INSTALL_HINT}")


def _has_initdb(bindir: Path) -> bool:
    return (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file()


def _pg_config_bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    try:
        done = subprocess.run(
            [pg_config, "--bindir"], check=True, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(done.stdout.strip())


def _newest_debian_bindir() -> Path | None:
    """The bin directory of the highest version under /usr/lib/postgresql."""
    versions = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _version_key(p.parent.name)]
    if not versions:
        return None
    return max(versions, key=lambda p: _version_key(p.parent.name))


def _version_key(name: str) -> tuple[int, ...]:
    """`_version_key("9.6") == (9, 6)`; `()` for a name that is not a version."""
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return ()


def _initdb_on_path_dir() -> Path | None:
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


# --- running tools ---------------------------------------------------------


def _as_user(run_as: str | None, argv: Sequence[str]) -> list[str]:
    """Prefix `argv` so that it runs as `run_as` (no prefix for None)."""
    if run_as is None:
        return list(argv)
    search_path = f"{os.environ.get('PATH', '')}:{_EXTRA_SBIN_PATH}"
    runuser = shutil.which("runuser", path=search_path)
    if runuser is not None:
        return [runuser, "-u", run_as, "--", *argv]
    setpriv = shutil.which("setpriv", path=search_path)
    if setpriv is not None:
        account = pwd.getpwnam(run_as)
        return [
            setpriv,
            f"--reuid={account.pw_uid}",
            f"--regid={account.pw_gid}",
            "--init-groups",
            "--",
            *argv,
        ]
    raise PostgresError(f"cannot run PostgreSQL as {run_as!r}: neither runuser nor setpriv found")


def _run(
    pg_tool: Sequence[str],
    *,
    run_as: str | None,
    timeout_s: float,
    log_file: Path | None = None,
    new_session: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool; on failure raise PostgresError with its output and log tail.

    The working directory is `/` because PostgreSQL tools fail when they
    cannot read their current directory (root's home, for the postgres user).
    """
    argv = _as_user(run_as, pg_tool)
    try:
        return subprocess.run(
            argv,
            check=True,
            capture_output=True,
            text=True,
            cwd="/",
            timeout=timeout_s,
            start_new_session=new_session,
        )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip() or (exc.stdout or "").strip()
        raise PostgresError(
            _failure(f"{' '.join(pg_tool)} exited {exc.returncode}: {detail}", log_file)
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise PostgresError(
            _failure(f"{' '.join(pg_tool)} took longer than {timeout_s:.0f} s", log_file)
        ) from exc
    except OSError as exc:
        raise PostgresError(f"cannot run {argv[0]}: {exc}") from exc


def _failure(message: str, log_file: Path | None) -> str:
    tail = _log_tail(log_file) if log_file is not None else ""
    return f"{message}\n--- last lines of {log_file} ---\n{tail}" if tail else message


def _log_tail(log_file: Path) -> str:
    try:
        lines = log_file.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-_LOG_TAIL_LINES:])


def _tool(name: str) -> str:
    return str(find_pg_bindir() / name)


# --- initdb ------------------------------------------------------------------


def init_postgres(data_dir: Path, port: int) -> PrivatePostgres:
    """Create (if needed) and configure a private cluster in `data_dir`.

    Runs initdb only when `data_dir` holds no PG_VERSION; always (re)writes
    our settings, so a new `port` takes effect at the next start.
    """
    data_dir = data_dir.resolve()
    run_as = SYSTEM_USER if os.geteuid() == 0 else None
    pg = PrivatePostgres(data_dir=data_dir, port=port, run_as=run_as)
    if run_as is None:
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        _prepare_dir_for(data_dir, run_as)
    if not (data_dir / "PG_VERSION").exists():
        _initdb(pg)
    _write_settings(pg)
    return pg


def _initdb(pg: PrivatePostgres) -> None:
    argv = [
        _tool("initdb"),
        "-D",
        str(pg.data_dir),
        "-U",
        SUPERUSER,
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-locale",
    ]
    _run(argv, run_as=pg.run_as, timeout_s=300)


def _prepare_dir_for(data_dir: Path, user: str) -> None:
    """As root: check `user` can reach `data_dir`, create it, and give it to `user`."""
    _check_traversable(data_dir, user)
    _make_parents_searchable(data_dir)
    data_dir.mkdir(mode=0o700, exist_ok=True)
    account = pwd.getpwnam(user)
    if data_dir.stat().st_uid != account.pw_uid:
        _chown_tree(data_dir, account.pw_uid, account.pw_gid)


def _check_traversable(data_dir: Path, user: str) -> None:
    """Raise PostgresError unless `user` may search every existing parent of `data_dir`.

    Judged from mode bits (ACLs are not consulted).
    """
    account = pwd.getpwnam(user)
    groups = set(os.getgrouplist(user, account.pw_gid))
    for parent in reversed(data_dir.parents):
        if not parent.exists():
            return
        if not _can_search(parent.stat(), account.pw_uid, groups):
            raise PostgresError(
                f"PostgreSQL runs as the {user!r} user (it refuses to run as root), "
                f"and {user!r} cannot enter {parent} (mode {stat.filemode(parent.stat().st_mode)})"
                f", so it cannot use {data_dir}. Use a --dir outside {parent}, "
                "e.g. under /var/tmp or /srv."
            )


def _can_search(st: os.stat_result, uid: int, groups: set[int]) -> bool:
    if uid == 0:
        return True
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _make_parents_searchable(data_dir: Path) -> None:
    """Create missing parents as 0755 whatever the umask, so others can pass through."""
    for parent in reversed(data_dir.parents):
        if not parent.exists():
            parent.mkdir()
            parent.chmod(0o755)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


def _settings(port: int) -> str:
    return "\n".join(
        [
            "# Written by services/local/postgres.py on every init; edits are lost.",
            f"listen_addresses = '{HOST}'",
            f"port = {port}",
            "unix_socket_directories = ''",
            "max_connections = 300",
            "shared_buffers = '128MB'",
            "fsync = on",
            "",
        ]
    )


def _hba() -> str:
    return "\n".join(
        [
            "# Written by services/local/postgres.py: trust on 127.0.0.1 only.",
            f"host all all {HOST}/32 trust",
            "",
        ]
    )


def _write_settings(pg: PrivatePostgres) -> None:
    """Write our settings file and pg_hba.conf, and include the settings once."""
    _write_owned(pg.data_dir / _CONF_FILE_NAME, _settings(pg.port), pg.run_as)
    _write_owned(pg.data_dir / "pg_hba.conf", _hba(), pg.run_as)
    main_conf = pg.data_dir / "postgresql.conf"
    text = main_conf.read_text()
    if _INCLUDE_LINE not in text.splitlines():
        # Appended last, so our values win over initdb's.
        _write_owned(main_conf, f"{text.rstrip()}\n{_INCLUDE_LINE}\n", pg.run_as)


def _write_owned(path: Path, text: str, owner: str | None) -> None:
    path.write_text(text)
    path.chmod(0o600)
    if owner is not None:
        account = pwd.getpwnam(owner)
        os.chown(path, account.pw_uid, account.pw_gid)


# --- start / stop ------------------------------------------------------------


def is_running(pg: PrivatePostgres) -> bool:
    """Whether a postmaster is running on `pg.data_dir` (per `pg_ctl status`)."""
    if not pg.data_dir.is_dir():
        return False
    argv = _as_user(pg.run_as, [_tool("pg_ctl"), "-D", str(pg.data_dir), "status"])
    try:
        done = subprocess.run(
            argv, check=False, capture_output=True, text=True, cwd="/", timeout=30
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PostgresError(f"pg_ctl status failed: {exc}") from exc
    return done.returncode == 0


def start_postgres(pg: PrivatePostgres, timeout_s: float = 60) -> None:
    """Start the server if it is not running, wait until it accepts connections,
    and make sure the `nimbus` database exists."""
    deadline = time.monotonic() + timeout_s
    if is_running(pg):
        _check_running_port(pg)
    else:
        _pg_ctl_start(pg, timeout_s)
    remaining_s = max(deadline - time.monotonic(), 1.0)
    try:
        _run_coroutine(lambda: _await_ready(pg, remaining_s))
    except PostgresError as exc:
        raise PostgresError(_failure(str(exc), pg.log_file)) from exc


def _pg_ctl_start(pg: PrivatePostgres, timeout_s: float) -> None:
    argv = [
        _tool("pg_ctl"),
        "-D",
        str(pg.data_dir),
        "-l",
        str(pg.log_file),
        "-w",
        "-t",
        str(max(1, math.ceil(timeout_s))),
        "-o",
        f"-p {pg.port}",
        "start",
    ]
    # A new session keeps the server out of our terminal's process group, so a
    # Ctrl-C meant for us does not also kill it half-way through a write.
    _run(argv, run_as=pg.run_as, timeout_s=timeout_s + 30, log_file=pg.log_file, new_session=True)


def _check_running_port(pg: PrivatePostgres) -> None:
    """Fail clearly if the running server listens on another port than `pg.port`."""
    try:
        lines = (pg.data_dir / "postmaster.pid").read_text().splitlines()
    except OSError:
        return
    # Line 4 of postmaster.pid is the port.
    if len(lines) > 3 and lines[3].strip().isdigit() and int(lines[3]) != pg.port:
        raise PostgresError(
            f"PostgreSQL in {pg.data_dir} is already running on port {lines[3].strip()}, "
            f"not {pg.port}; stop it first"
        )


async def _await_ready(pg: PrivatePostgres, timeout_s: float) -> None:
    await wait_for_postgres(pg.database_url("postgres"), timeout_s)
    await ensure_database(pg.database_url("postgres"), DEFAULT_DATABASE)


def _run_coroutine(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion on a private thread and event loop.

    `asyncio.run` on the caller's thread would fail under a running loop and
    would reset the thread's current loop when done.
    """
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def stop_postgres(pg: PrivatePostgres, timeout_s: float = 60) -> None:
    """Stop the server (fast mode: roll back sessions, checkpoint); no-op if not running."""
    if not is_running(pg):
        return
    argv = [
        _tool("pg_ctl"),
        "-D",
        str(pg.data_dir),
        "-m",
        "fast",
        "-w",
        "-t",
        str(max(1, math.ceil(timeout_s))),
        "stop",
    ]
    _run(argv, run_as=pg.run_as, timeout_s=timeout_s + 30, log_file=pg.log_file)


# --- asyncpg -----------------------------------------------------------------

_RETRYABLE = (
    OSError,
    TimeoutError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.PostgresConnectionError,
)
"""Errors of a server that is not up yet; anything else (bad auth, no such
database) will not cure itself and fails at once."""


async def wait_for_postgres(url: str, timeout_s: float) -> None:
    """Return once `url` accepts a connection and answers a query.

    Retries with a growing poll interval (20 ms up to 500 ms) until
    `timeout_s` has passed, then raises PostgresError with the last error.
    """
    deadline = time.monotonic() + timeout_s
    delay_s = 0.02
    while True:
        remaining_s = deadline - time.monotonic()
        try:
            await _probe(url, max(remaining_s, 0.1))
            return
        except _RETRYABLE as exc:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise PostgresError(
                    f"PostgreSQL at {_redact(url)} not ready after {timeout_s:.1f} s: {exc!r}"
                ) from exc
        await asyncio.sleep(min(delay_s, remaining_s))
        delay_s = min(delay_s * 2, 0.5)


async def _probe(url: str, timeout_s: float) -> None:
    conn = await asyncpg.connect(url, timeout=min(timeout_s, 10.0))
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def _redact(url: str) -> str:
    """The URL without its password, for error messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
