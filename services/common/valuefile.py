"""Append-only value files: where a node's share bytes live.

A share is addressed by (value file id, offset, size); keys never become file
names. The writer appends to one open file at a time and rolls over to a new
one past ``max_bytes``. Appends run in threads at offsets allocated on the
event loop, so concurrent archives interleave safely. ``sync`` is a group
commit: one ``fsync`` covers every append completed before it started, and
callers arriving while one runs share the next.

Invariants:
- A file is never rewritten in place; bytes whose rows never committed are
  garbage that compaction reclaims, never read.
- ``sync(file)`` returns only once every append to that file that completed
  before the call is on stable storage (fsync of the file, and of the
  directory when the file was created).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

VALUES_DIR = "values"


def value_file_path(data_dir: Path, file_id: int) -> Path:
    return data_dir / VALUES_DIR / f"{file_id:016x}.nvf"


@dataclass
class _OpenFile:
    id: int
    fd: int
    size: int = 0
    completed_writes: int = 0
    synced_writes: int = 0
    inflight: set[asyncio.Future[None]] = field(default_factory=set)
    sync_task: asyncio.Future[int] | None = None
    closed: bool = False


@dataclass(frozen=True)
class Location:
    file_id: int
    offset: int
    size: int


class ValueFileWriter:
    """Appends shares to the node's current value file."""

    def __init__(
        self,
        data_dir: Path,
        max_bytes: int,
        allocate_id: Callable[[], Awaitable[int]],
        on_close: Callable[[int, int], Awaitable[None]],
    ) -> None:
        self._dir = data_dir / VALUES_DIR
        self._data_dir = data_dir
        self._max_bytes = max_bytes
        self._allocate_id = allocate_id
        self._on_close = on_close
        self._current: _OpenFile | None = None
        self._files: dict[int, _OpenFile] = {}
        self._roll_lock = asyncio.Lock()

    async def append(self, data: bytes) -> Location:
        """Write ``data`` at the end of the current file (not yet synced)."""
        async with self._roll_lock:
            current = self._current
            if current is None or (current.size and current.size + len(data) > self._max_bytes):
                current = await self._roll_over()
            offset = current.size
            current.size += len(data)
            write: asyncio.Future[None] = asyncio.ensure_future(
                asyncio.to_thread(_pwrite_all, current.fd, data, offset)
            )
            current.inflight.add(write)
        try:
            await write
        finally:
            current.inflight.discard(write)
        current.completed_writes += 1
        return Location(current.id, offset, len(data))

    async def sync(self, file_id: int) -> None:
        """Make every append to ``file_id`` completed so far durable."""
        f = self._files.get(file_id)
        if f is None or f.closed:
            return  # closed files were fsynced before closing
        target = f.completed_writes
        while f.synced_writes < target and not f.closed:
            task = f.sync_task
            if task is None:
                task = asyncio.ensure_future(_fsync_then(f.fd, f.completed_writes))
                f.sync_task = task
            # Advance from the awaited result, not a done-callback: a callback
            # runs one loop turn later, and a caller arriving in that gap would
            # find a finished task, await it without yielding, and spin forever.
            covered = await asyncio.shield(task)
            f.synced_writes = max(f.synced_writes, covered)
            if f.sync_task is task:
                f.sync_task = None

    async def _roll_over(self) -> _OpenFile:
        if self._current is not None:
            await self._close_file(self._current)
        self._dir.mkdir(parents=True, exist_ok=True)
        file_id = await self._allocate_id()
        path = value_file_path(self._data_dir, file_id)
        fd = await asyncio.to_thread(_create, path)
        opened = _OpenFile(id=file_id, fd=fd)
        self._files[file_id] = opened
        self._current = opened
        return opened

    async def _close_file(self, f: _OpenFile) -> None:
        if f.inflight:
            await asyncio.gather(*f.inflight, return_exceptions=True)
        if f.sync_task is not None:
            await asyncio.gather(f.sync_task, return_exceptions=True)
        await asyncio.to_thread(os.fsync, f.fd)
        f.closed = True
        f.synced_writes = f.completed_writes
        os.close(f.fd)
        self._files.pop(f.id, None)
        await self._on_close(f.id, f.size)

    async def close(self) -> None:
        async with self._roll_lock:
            if self._current is not None:
                await self._close_file(self._current)
                self._current = None


async def _fsync_then(fd: int, covered: int) -> int:
    await asyncio.to_thread(os.fsync, fd)
    return covered


def _create(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return fd


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def read_range(data_dir: Path, location: Location) -> bytes:
    """The bytes at ``location`` (blocking: call it in a thread)."""
    with open(value_file_path(data_dir, location.file_id), "rb") as f:
        data = os.pread(f.fileno(), location.size, location.offset)
    if len(data) != location.size:
        raise EOFError(
            f"value file {location.file_id:016x} ends before offset "
            f"{location.offset} + {location.size}"
        )
    return data


async def read(data_dir: Path, location: Location) -> bytes:
    return await asyncio.to_thread(read_range, data_dir, location)
