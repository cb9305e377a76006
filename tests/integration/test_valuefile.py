"""Value files on a real file system: concurrent appends, group fsync, roll-over."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from services.common import valuefile
from services.common.valuefile import ValueFileWriter


@pytest.mark.timeout(60)
async def test_concurrent_append_and_sync_complete_and_read_back(tmp_path: Path) -> None:
    next_id = iter(range(1, 1000))
    closed: list[tuple[int, int]] = []

    async def allocate() -> int:
        return next(next_id)

    async def on_close(file_id: int, size: int) -> None:
        closed.append((file_id, size))

    writer = ValueFileWriter(tmp_path, 256 * 1024, allocate, on_close)
    payloads = [os.urandom(1000 + i) for i in range(300)]

    async def store(data: bytes) -> valuefile.Location:
        location = await writer.append(data)
        await writer.sync(location.file_id)
        return location

    # Many archives in flight at once, as with pipelined clients: every sync
    # must return (a group-commit bug once spun forever here).
    locations = await asyncio.wait_for(asyncio.gather(*(store(p) for p in payloads)), 60)
    await writer.close()
    for data, location in zip(payloads, locations, strict=True):
        assert await valuefile.read(tmp_path, location) == data
    files = {location.file_id for location in locations}
    assert len(files) > 1, "256 KiB files must have rolled over"
    assert {file_id for file_id, _ in closed} == files
    for file_id, size in closed:
        assert valuefile.value_file_path(tmp_path, file_id).stat().st_size == size


async def test_read_past_the_end_is_an_error(tmp_path: Path) -> None:
    async def allocate() -> int:
        return 7

    async def on_close(file_id: int, size: int) -> None:
        return None

    writer = ValueFileWriter(tmp_path, 1 << 20, allocate, on_close)
    location = await writer.append(b"abc")
    await writer.close()
    try:
        await valuefile.read(tmp_path, valuefile.Location(location.file_id, 2, 5))
    except EOFError as exc:
        assert "ends before" in str(exc)
    else:
        raise AssertionError("reading past the end must fail")
