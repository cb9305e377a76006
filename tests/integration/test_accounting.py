"""The accounting service counts every detail exactly once, durably.

The service runs as `nimbus local up` starts it, on the session cluster;
every test uses buckets (collection ids) of its own. Details go in on the PULL
pipeline (a plain PUSH socket here) or acknowledged on the ROUTER; totals are
read back with ``space-usage-request``. Waiting is always on replies, with a
deadline: a *marker* detail sent last on the same PUSH connection shows that
everything sent before it has been counted (one connection delivers in order
and the service counts in arrival order).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import asyncpg
import pytest
import zmq
import zmq.asyncio
from prometheus_client.parser import text_string_to_metric_families

from services.accounting.model import Detail, Event, detail_header, hour_of
from services.common.protocol import Header
from services.common.rpc import RpcClient, RpcTimeout
from services.local.processes import free_port
from tests.integration.conftest import LocalCluster

MIB = 1024 * 1024
HOUR_S = 3600


# --- helpers ----------------------------------------------------------------


def new_bucket() -> int:
    """A collection id no other test (nor an earlier run's leftovers) uses."""
    return random.randrange(10**12, 2**62)


def accounting(cluster: LocalCluster) -> dict[str, str]:
    entry: dict[str, str] = cluster.description["accounting"]
    return entry


@pytest.fixture
async def query(local_cluster: LocalCluster) -> AsyncIterator[RpcClient]:
    client = await RpcClient.connect(accounting(local_cluster)["query"], timeout_s=10)
    yield client
    await client.close()


@contextlib.asynccontextmanager
async def pusher(endpoint: str) -> AsyncIterator[zmq.asyncio.Socket]:
    """A PUSH socket to the pipeline, as the services' senders use."""
    context = zmq.asyncio.Context.instance()
    sock = context.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 5000)  # what is queued still goes out after close
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close()


async def push(sock: zmq.asyncio.Socket, header: dict[str, Any]) -> None:
    await sock.send_json(header)


async def usage(client: RpcClient, bucket: int, **fields: Any) -> Header:
    reply = await client.request(
        {"message-type": "space-usage-request", "collection-id": bucket, **fields}
    )
    assert reply.header["result"] == "success", reply.header
    assert reply.header["message-type"] == "space-usage-reply"
    return reply.header


def totals(reply: Header) -> tuple[int, int, int]:
    return reply["bytes-added"], reply["bytes-removed"], reply["bytes-retrieved"]


async def poll_usage(
    client: RpcClient,
    bucket: int,
    until: Callable[[Header], bool],
    timeout_s: float = 60.0,
) -> Header:
    """Ask for ``bucket``'s usage until ``until(reply)``; each try waits on its reply."""
    deadline = time.monotonic() + timeout_s
    while True:
        reply = await usage(client, bucket)
        if until(reply):
            return reply
        if time.monotonic() > deadline:
            raise AssertionError(f"usage of {bucket} not reached within {timeout_s} s: {reply}")


async def send_marker(sock: zmq.asyncio.Socket, client: RpcClient) -> None:
    """Push a detail of a fresh bucket and wait until it is counted: by then
    everything pushed before it on ``sock`` has been counted too."""
    marker = new_bucket()
    await push(sock, detail_header(Detail(marker, Event.BYTES_ADDED, 1, time.time())))
    await poll_usage(client, marker, lambda reply: reply["bytes-added"] == 1)


def acknowledged(bucket: int, value: int, detail_id: str, event: Event = Event.BYTES_ADDED) -> Any:
    return detail_header(Detail(bucket, event, value, time.time(), detail_id))


def metric_samples(text: str) -> dict[str, float]:
    """``{"name{label=value}": value}`` of every sample in a /metrics page."""
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return samples


async def scrape(cluster: LocalCluster) -> str:
    url = f"http://{accounting(cluster)['metrics']}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return await response.text()


def assert_port_free(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


# --- the pipeline -------------------------------------------------------------


async def test_a_stream_of_small_details_is_counted_exactly(
    local_cluster: LocalCluster, query: RpcClient
) -> None:
    bucket = new_bucket()
    now = time.time()
    # Three hours: what was added two hours ago, removed one hour ago, retrieved now.
    stream = (
        [(Event.BYTES_ADDED, 42 * MIB, now - 2 * HOUR_S)] * 1000
        + [(Event.BYTES_REMOVED, 21 * MIB, now - HOUR_S)] * 50
        + [(Event.BYTES_RETRIEVED, 66 * MIB, now)] * 25
    )
    random.shuffle(stream)
    expected = (42 * MIB * 1000, 21 * MIB * 50, 66 * MIB * 25)
    async with pusher(accounting(local_cluster)["pipeline"]) as sock:
        for event, value, timestamp_s in stream:
            await push(sock, detail_header(Detail(bucket, event, value, timestamp_s)))
        # Batched, a thousand details take well under a second; a minute is a bug.
        reply = await poll_usage(query, bucket, lambda r: totals(r) == expected, timeout_s=60)
        await send_marker(sock, query)

    # Everything has been counted now; it stays exact (nothing counted twice).
    for _ in range(3):
        assert totals(await usage(query, bucket)) == expected
    hourly = reply["hourly"]
    assert [hour["hour"] for hour in hourly] == sorted(hour["hour"] for hour in hourly)
    assert [(h["bytes-added"], h["bytes-removed"], h["bytes-retrieved"]) for h in hourly] == [
        (expected[0], 0, 0),
        (0, expected[1], 0),
        (0, 0, expected[2]),
    ]
    assert hourly[-1]["hour"] == time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(hour_of(now)))
    assert reply["collection-id"] == bucket
    assert reply["hourly-truncated"] is False

    # ``hours``: only the last hours, the current one included.
    while True:
        hour_before = hour_of(time.time())
        last_two = await usage(query, bucket, hours=2)
        last_one = await usage(query, bucket, hours=1)
        if hour_of(time.time()) == hour_before:
            break  # an hour did not begin meanwhile (else ask again)
    if hour_before == hour_of(now):
        assert totals(last_one) == (0, 0, expected[2])
        assert totals(last_two) == (0, expected[1], expected[2])
        assert len(last_two["hourly"]) == 2
    everything = await usage(query, bucket, hours=10 * 24)
    assert totals(everything) == expected


async def test_malformed_details_are_dropped_and_the_service_goes_on(
    local_cluster: LocalCluster, query: RpcClient
) -> None:
    bucket = new_bucket()
    valid = detail_header(Detail(bucket, Event.BYTES_ADDED, 1000, time.time()))
    before = metric_samples(await scrape(local_cluster))
    malformed: list[list[bytes]] = [
        [b"not json at all"],
        [b"\xff\xfe"],
        [b"[1, 2, 3]"],
        [b'{"collection-id": 1}'],  # no message-type
        [_encode({**valid, "message-type": "space-usage-request"})],
        [_encode({k: v for k, v in valid.items() if k != "value"})],
        [_encode({**valid, "value": -5})],
        [_encode({**valid, "value": "5"})],
        [_encode({**valid, "event": "bytes-eaten"})],
        [_encode({**valid, "collection-id": "abc"})],
        [_encode({**valid, "timestamp": "yesterday"})],
        [_encode(valid), b"an extra frame"],
    ]
    async with pusher(accounting(local_cluster)["pipeline"]) as sock:
        for frames in malformed:
            await sock.send_multipart(frames)
        for _ in range(5):
            await push(sock, valid)
        await send_marker(sock, query)
    assert totals(await usage(query, bucket)) == (5000, 0, 0)

    ping = await query.request({"message-type": "ping"})
    assert ping.header["result"] == "success"
    after = metric_samples(await scrape(local_cluster))
    dropped = {
        name: value - before.get(name, 0.0)
        for name, value in after.items()
        if name.startswith("nimbus_accounting_details_dropped_total")
    }
    assert sum(dropped.values()) == len(malformed), dropped
    assert dropped["nimbus_accounting_details_dropped_total{reason=bad-field}"] == 5
    assert dropped["nimbus_accounting_details_dropped_total{reason=too-many-frames}"] == 1


def _encode(header: dict[str, Any]) -> bytes:
    return json.dumps(header).encode()


# --- the acknowledged path ---------------------------------------------------


async def test_an_acknowledged_detail_counts_once_and_is_committed_when_answered(
    query: RpcClient,
) -> None:
    bucket = new_bucket()
    detail_id = f"test-{uuid.uuid4()}"
    first = await query.request(acknowledged(bucket, 1000, detail_id))
    assert first.header["message-type"] == "space-accounting-detail-reply"
    assert first.header["result"] == "success", first.header
    assert first.header["duplicate"] is False
    # Answered only after the commit: visible at once, no waiting.
    assert totals(await usage(query, bucket)) == (1000, 0, 0)

    again = await query.request(acknowledged(bucket, 1000, detail_id))
    assert again.header["result"] == "success"
    assert again.header["duplicate"] is True
    assert totals(await usage(query, bucket)) == (1000, 0, 0)

    # The same new detail sent ten times at once still counts once.
    racing = f"test-{uuid.uuid4()}"
    replies = await asyncio.gather(
        *(query.request(acknowledged(bucket, 7, racing, Event.BYTES_RETRIEVED)) for _ in range(10))
    )
    assert all(reply.header["result"] == "success" for reply in replies)
    assert sorted(reply.header["duplicate"] for reply in replies) == [False] + [True] * 9
    assert totals(await usage(query, bucket)) == (1000, 0, 7)


async def test_malformed_requests_get_error_replies(
    local_cluster: LocalCluster, query: RpcClient
) -> None:
    bucket = new_bucket()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"message-type": "space-usage-request"}, "missing-field"),
        ({"message-type": "space-usage-request", "collection-id": "x"}, "bad-field"),
        ({"message-type": "space-usage-request", "collection-id": -1}, "bad-field"),
        ({"message-type": "space-usage-request", "collection-id": 1, "hours": 0}, "bad-field"),
        ({"message-type": "space-usage-request", "collection-id": 1, "hours": True}, "bad-field"),
        ({"message-type": "space-usage-request", "collection-id": 1, "hours": 1.5}, "bad-field"),
        (
            {k: v for k, v in acknowledged(bucket, 1, "x").items() if k != "detail-id"},
            "missing-field",
        ),
        ({**acknowledged(bucket, 1, "y"), "value": -1}, "bad-field"),
        ({**acknowledged(bucket, 1, "z"), "event": "bytes-eaten"}, "bad-field"),
        ({"message-type": "space-accounting-nonsense"}, "unknown-message-type"),
    ]
    for header, code in cases:
        reply = await query.request(header)
        assert reply.header["result"] == code, (header, reply.header)
        assert reply.header["error-message"]
        assert reply.header["message-type"] == f"{header['message-type']}-reply"
    extra = await query.request(acknowledged(bucket, 1, "w"), [b"payload"])
    assert extra.header["result"] == "too-many-frames"

    # Not JSON at all, from a raw DEALER socket.
    sock = zmq.asyncio.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(accounting(local_cluster)["query"])
    try:
        await sock.send(b"\x00 not json")
        frames = await asyncio.wait_for(sock.recv_multipart(), timeout=10)
    finally:
        sock.close()
    header = json.loads(frames[0])
    assert header["result"] == "invalid-message"

    assert totals(await usage(query, bucket)) == (0, 0, 0)
    assert (await usage(query, bucket))["hourly"] == []


# --- a crash ---------------------------------------------------------------


async def test_kill_9_during_a_stream_of_acknowledged_details_loses_and_doubles_nothing(
    local_cluster: LocalCluster, query: RpcClient
) -> None:
    bucket = new_bucket()
    values = [random.randrange(1, 10**9) for _ in range(400)]
    ids = [f"kill-{bucket}-{i}" for i in range(len(values))]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(values)):
        queue.put_nowait(i)
    acked: set[int] = set()
    failures: list[str] = []
    enough = asyncio.Event()
    client = await RpcClient.connect(accounting(local_cluster)["query"], timeout_s=2)
    concurrency = 16

    async def sender() -> None:
        # Resend every detail until it is acknowledged, as the gateway's outbox does.
        while (i := await queue.get()) >= 0:
            try:
                reply = await client.request(acknowledged(bucket, values[i], ids[i]))
            except (RpcTimeout, ConnectionError) as exc:
                failures.append(type(exc).__name__)
                queue.put_nowait(i)
                continue
            if reply.header["result"] != "success":
                failures.append(str(reply.header["result"]))
                queue.put_nowait(i)
                continue
            acked.add(i)
            if len(acked) >= len(values) // 4:
                enough.set()
            if len(acked) == len(values):
                for _ in range(concurrency):
                    queue.put_nowait(-1)  # every sender stops

    senders = [asyncio.create_task(sender()) for _ in range(concurrency)]
    try:
        await asyncio.wait_for(enough.wait(), timeout=60)
        old_pid = local_cluster.pid("accounting")
        os.kill(old_pid, signal.SIGKILL)
        killed_at = len(acked)
        await asyncio.to_thread(local_cluster.local, "up", "--nodes", "6", "--k", "4")
        assert local_cluster.pid("accounting") != old_pid
        await asyncio.wait_for(asyncio.gather(*senders), timeout=120)
    finally:
        for task in senders:
            task.cancel()
        await client.close()
    assert killed_at < len(values), "the stream ended before the kill"
    assert failures, "no request failed: the kill did not interrupt the stream"
    assert len(acked) == len(values)
    assert totals(await usage(query, bucket)) == (sum(values), 0, 0)

    # Resending everything once more changes nothing.
    replies = await asyncio.gather(
        *(query.request(acknowledged(bucket, v, i)) for v, i in zip(values, ids, strict=True))
    )
    assert all(reply.header["duplicate"] is True for reply in replies)
    assert totals(await usage(query, bucket)) == (sum(values), 0, 0)


# --- observability and shutdown ----------------------------------------------


async def test_metrics_parse_and_count_details(
    local_cluster: LocalCluster, query: RpcClient
) -> None:
    bucket = new_bucket()
    detail_id = f"metrics-{uuid.uuid4()}"
    for _ in range(2):
        reply = await query.request(acknowledged(bucket, 10, detail_id, Event.BYTES_REMOVED))
        assert reply.header["result"] == "success"
    text = await scrape(local_cluster)
    families = {family.name for family in text_string_to_metric_families(text)}
    assert {
        "nimbus_accounting_details_counted",
        "nimbus_accounting_details_duplicate",
        "nimbus_accounting_details_dropped",
        "nimbus_accounting_bytes_counted",
        "nimbus_rpc_requests",
    } <= families
    samples = metric_samples(text)
    assert samples["nimbus_accounting_details_counted_total{event=bytes-removed}"] >= 1
    assert samples["nimbus_accounting_details_duplicate_total{}"] >= 1
    assert (
        samples["nimbus_rpc_requests_total{message_type=space-accounting-detail,result=success}"]
        >= 2
    )


async def test_sigterm_answers_what_is_in_flight_exits_zero_and_frees_the_ports(
    local_cluster: LocalCluster,
) -> None:
    ports = [free_port() for _ in range(3)]
    pipeline, query_endpoint = (f"tcp://127.0.0.1:{port}" for port in ports[:2])
    env = {
        **os.environ,
        "NIMBUS_DATABASE_URL": local_cluster.description["database_url"],
        "NIMBUS_PIPELINE_BIND": pipeline,
        "NIMBUS_BIND": query_endpoint,
        "NIMBUS_METRICS_BIND": f"127.0.0.1:{ports[2]}",
        "NIMBUS_EVENTS_ENDPOINT": "",
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.accounting.main"], env=env)
    bucket = new_bucket()
    ids = [f"sigterm-{bucket}-{i}" for i in range(300)]
    client = await RpcClient.connect(query_endpoint, timeout_s=10)
    try:
        await _wait_ready(client, proc)
        requests = [
            asyncio.ensure_future(client.request(acknowledged(bucket, 1 + i, detail_id)))
            for i, detail_id in enumerate(ids)
        ]
        await asyncio.wait(requests, return_when=asyncio.FIRST_COMPLETED)
        proc.send_signal(signal.SIGTERM)
        outcomes = await asyncio.gather(*requests, return_exceptions=True)
        assert await asyncio.to_thread(proc.wait, 60) == 0
    finally:
        await client.close()
        if proc.poll() is None:
            proc.kill()
    for port in ports:
        assert_port_free(port)

    answered = [
        detail_id
        for detail_id, outcome in zip(ids, outcomes, strict=True)
        if not isinstance(outcome, BaseException) and outcome.header["result"] == "success"
    ]
    refused = [
        outcome.header["result"]
        for outcome in outcomes
        if not isinstance(outcome, BaseException) and outcome.header["result"] != "success"
    ]
    assert answered, "nothing was answered before the stop"
    assert set(refused) <= {"shutting-down"}, refused
    # Exactly once across the stop: the totals are the sum of the details whose
    # ids were recorded, and every acknowledged one is among them.
    conn = await asyncpg.connect(local_cluster.description["database_url"])
    try:
        recorded = {
            row["detail_id"]
            for row in await conn.fetch(
                "SELECT detail_id FROM accounting_detail WHERE detail_id = any($1::text[])", ids
            )
        }
        total = await conn.fetchval(
            "SELECT coalesce(sum(bytes_added), 0) FROM accounting_hourly WHERE bucket_id = $1",
            bucket,
        )
    finally:
        await conn.close()
    assert set(answered) <= recorded
    assert total == sum(1 + i for i, detail_id in enumerate(ids) if detail_id in recorded)


async def _wait_ready(client: RpcClient, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, "the accounting service exited during start-up"
        try:
            reply = await client.request({"message-type": "ping"}, timeout_s=0.5)
        except RpcTimeout:
            if time.monotonic() > deadline:
                raise
            continue
        if reply.header["result"] == "success":
            return
