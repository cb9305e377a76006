"""The accounting handlers' replies, with the database replaced by fakes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from services.accounting.handlers import MAX_HOURLY, make_handlers
from services.accounting.model import Detail, HourUsage, Totals, Usage
from services.accounting.tally import Tally
from services.common.protocol import ErrorCode, Message, ProtocolError

NOW_S = 1_700_000_000.0  # 2023-11-14T22:13:20Z


class Recorder:
    def __init__(self) -> None:
        self.asked: list[tuple[int, datetime | None, int]] = []

    async def look_up(self, bucket_id: int, since: datetime | None, max_hours: int) -> Usage:
        self.asked.append((bucket_id, since, max_hours))
        hour = datetime(2023, 11, 14, 22, tzinfo=UTC)
        return Usage(Totals(5, 2, 9), [HourUsage(hour, Totals(5, 2, 9))])


async def no_counting(details: Sequence[Detail]) -> list[int]:
    raise AssertionError("nothing is counted here")


def handlers(recorder: Recorder) -> Any:
    return make_handlers(Tally(no_counting), recorder.look_up, clock=lambda: NOW_S)


async def test_usage_reply() -> None:
    recorder = Recorder()
    request = {"message-type": "space-usage-request", "message-id": "m1", "collection-id": 3}
    header, payloads = await handlers(recorder)["space-usage-request"](Message(request))
    assert payloads == ()
    assert header == {
        "message-type": "space-usage-reply",
        "message-id": "m1",
        "result": "success",
        "error-message": "",
        "collection-id": 3,
        "bytes-added": 5,
        "bytes-removed": 2,
        "bytes-retrieved": 9,
        "hourly": [
            {
                "hour": "2023-11-14T22:00:00Z",
                "bytes-added": 5,
                "bytes-removed": 2,
                "bytes-retrieved": 9,
            }
        ],
        "hourly-truncated": False,
    }
    assert recorder.asked == [(3, None, MAX_HOURLY)]


async def test_hours_start_the_window_that_many_hours_back() -> None:
    recorder = Recorder()
    request = {"message-type": "space-usage-request", "collection-id": 3, "hours": 2}
    await handlers(recorder)["space-usage-request"](Message(request))
    assert recorder.asked == [(3, datetime(2023, 11, 14, 21, tzinfo=UTC), MAX_HOURLY)]


@pytest.mark.parametrize("hours", [0, -1, True, 1.5, "2", 10**9])
async def test_bad_hours_are_refused(hours: object) -> None:
    request = {"message-type": "space-usage-request", "collection-id": 3, "hours": hours}
    with pytest.raises(ProtocolError) as caught:
        await handlers(Recorder())["space-usage-request"](Message(request))
    assert caught.value.code == ErrorCode.BAD_FIELD
