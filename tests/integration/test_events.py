"""The events service in the local cluster: one stream of what the services do.

A subscriber sees each upload's ``object-created``; `nimbus events` lists the
recent events and follows new ones; malformed messages on the pipeline are
dropped and counted while later events still flow; damage, handoffs and
their return home are announced; every service's ``/metrics`` parses.

ZeroMQ subscriptions take effect some time after connecting (the slow
joiner): every subscriber here first pushes probe events of its own into the
pipeline until one comes back, and only then starts what it watches.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from services.common import messages
from services.common.messages import FileInfo, SegmentRef
from services.common.rpc import RpcClient
from services.common.unified_id import UnifiedIdGenerator
from services.common.valuefile import value_file_path
from services.local.processes import free_port
from tests.integration.conftest import LocalCluster
from tests.integration.storage import ok, store_in_pieces
from tests.integration.test_faults import assert_port_free
from tests.integration.test_s3_handoff import start, stop, stopped  # noqa: F401 (fixture)

PROBE = "test-probe"
Event = dict[str, Any]


def events_of(cluster: LocalCluster) -> dict[str, str]:
    """``pipeline``, ``publish``, ``query`` and ``metrics`` of the events service."""
    entry: dict[str, str] = cluster.description["events"]
    return entry


class Pipeline:
    """A PUSH socket into the events pipeline, as services send their events."""

    def __init__(self, endpoint: str) -> None:
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, 1000)
        self.socket.connect(endpoint)

    def send_frames(self, *frames: bytes) -> None:
        self.socket.send_multipart(list(frames))

    def send(self, event_type: str, **fields: Any) -> None:
        header = {"message-type": "event", "event-type": event_type, "service": "test", **fields}
        self.send_frames(json.dumps(header).encode())

    def close(self) -> None:
        self.socket.close()


class Subscriber:
    """A SUB socket on the published stream, ready once a probe came back."""

    def __init__(self, endpoints: dict[str, str], *topics: str) -> None:
        self.socket: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        for topic in (PROBE, *topics):
            self.socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self.socket.connect(endpoints["publish"])
        self.pipeline = Pipeline(endpoints["pipeline"])
        self.seen: list[tuple[bytes, Event]] = []

    def wait_ready(self, timeout_s: float = 30) -> None:
        """Push probes until one is published back to us: the subscription holds."""
        token = uuid.uuid4().hex
        self.wait_for(
            lambda event: event.get("token") == token,
            timeout_s,
            on_idle=lambda: self.pipeline.send(PROBE, token=token),
        )

    def wait_for(
        self,
        matches: Callable[[Event], bool],
        timeout_s: float = 30,
        on_idle: Callable[[], None] | None = None,
        since: int = 0,
    ) -> Event:
        """The first event received (from the ``since``-th on) that ``matches``.

        Events from different services may arrive in any order, so events
        received while waiting for another are kept and searched too.
        ``on_idle`` runs while nothing matching comes.
        """
        for _, old in self.seen[since:]:
            if matches(old):
                return old
        deadline = time.monotonic() + timeout_s
        if on_idle is not None:
            on_idle()
        while True:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise AssertionError(f"no matching event within {timeout_s} s: {self.seen[-20:]}")
            # Wait for the next event, up to 0.2 s when probing (then probe again).
            wait_s = min(remaining_s, 0.2) if on_idle is not None else remaining_s
            if not self.socket.poll(int(wait_s * 1000)):
                if on_idle is not None:
                    on_idle()
                continue
            topic, raw = self.socket.recv_multipart()
            event: Event = json.loads(raw)
            self.seen.append((topic, event))
            assert topic == event["event-type"].encode()
            if matches(event):
                return event

    def close(self) -> None:
        self.socket.close()
        self.pipeline.close()


@pytest.fixture
def subscriber(local_cluster: LocalCluster) -> Iterator[Callable[..., Subscriber]]:
    """Ready subscribers to the given topics, closed afterwards."""
    opened: list[Subscriber] = []

    def open_subscriber(*topics: str) -> Subscriber:
        sub = Subscriber(events_of(local_cluster), *topics)
        opened.append(sub)
        sub.wait_ready()
        return sub

    yield open_subscriber
    for sub in opened:
        sub.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_bucket(s3: Any) -> str:
    name = unique("events")
    s3.create_bucket(Bucket=name)
    return name


def nimbus_events(cluster: LocalCluster, *args: str) -> list[Event]:
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", "events", "--dir", str(cluster.directory), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


async def recent(cluster: LocalCluster, **fields: Any) -> list[Event]:
    client = await RpcClient.connect(events_of(cluster)["query"], timeout_s=10)
    try:
        reply = ok(await client.request({"message-type": "recent-events-request", **fields}))
    finally:
        await client.close()
    found: list[Event] = reply.header["events"]
    return found


def scrape(host_port: str) -> dict[str, list[Any]]:
    """Sample name → samples of the ``/metrics`` page at ``host:port``."""
    with urllib.request.urlopen(f"http://{host_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


# ------------------------------------------------------------------ the tests


def test_a_subscriber_sees_the_object_created_by_an_upload(
    local_cluster: LocalCluster, s3: Any, subscriber: Callable[..., Subscriber]
) -> None:
    bucket = new_bucket(s3)
    sub = subscriber("object-created", "object-removed")
    body = os.urandom(300_000)
    s3.put_object(Bucket=bucket, Key="hello/world", Body=body)

    created = sub.wait_for(lambda e: e.get("bucket") == bucket)
    assert created["event-type"] == "object-created"
    assert created["service"] == "gateway"
    assert (created["key"], created["size"]) == ("hello/world", len(body))
    assert created["shares-home"] == local_cluster.n
    assert created["shares-handed-off"] == 0
    assert created["live"] is True
    assert isinstance(created["unified-id"], int)
    assert isinstance(created["timestamp"], float)

    s3.delete_object(Bucket=bucket, Key="hello/world")
    removed = sub.wait_for(lambda e: e["event-type"] == "object-removed" and e["bucket"] == bucket)
    assert (removed["bucket"], removed["key"]) == (bucket, "hello/world")


def test_nimbus_events_lists_every_service_started(local_cluster: LocalCluster) -> None:
    started = nimbus_events(local_cluster, "--type", "service-started")
    assert started and all(e["event-type"] == "service-started" for e in started)
    seen = {(e["service"], e["node-name"]) for e in started}
    expected = {("events", ""), ("accounting", ""), ("gateway", "")}
    expected |= {
        (service, node["name"])
        for node in local_cluster.nodes
        for service in ("writer", "reader", "handoff")
    }
    assert expected <= seen, expected - seen

    assert len(nimbus_events(local_cluster, "--type", "service-started", "--limit", "2")) == 2
    everything = nimbus_events(local_cluster)
    assert {"service-started"} <= {e["event-type"] for e in everything}


def test_nimbus_events_follow_prints_new_events_until_interrupted(
    local_cluster: LocalCluster, s3: Any
) -> None:
    bucket = new_bucket(s3)
    errors = tempfile.TemporaryFile()
    follower = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.cli",
            "events",
            "--follow",
            "--type",
            "object-created",
            "--dir",
            str(local_cluster.directory),
        ],
        stdout=subprocess.PIPE,
        stderr=errors,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert follower.stdout is not None
    stdout = follower.stdout

    def read_lines() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read_lines, daemon=True).start()
    pipeline = Pipeline(events_of(local_cluster)["pipeline"])

    def next_event(timeout_s: float) -> Event | None:
        try:
            line = lines.get(timeout=timeout_s)
        except queue.Empty:
            return None
        event: Event = json.loads(line)
        return event

    try:
        # Ready when a probe of the followed type comes out (the slow joiner).
        token = uuid.uuid4().hex
        deadline = time.monotonic() + 60
        while True:
            assert follower.poll() is None, "the follower exited"
            assert time.monotonic() < deadline, "the follower printed no probe within 60 s"
            pipeline.send("object-created", token=token)
            event = next_event(0.2)
            if event is not None and event.get("token") == token:
                break
        # Other event types are not printed: this probe must not come out.
        pipeline.send("object-removed", token=token)

        s3.put_object(Bucket=bucket, Key="followed", Body=b"x" * 1234)
        deadline = time.monotonic() + 30
        while True:
            event = next_event(max(0.0, deadline - time.monotonic()))
            assert event is not None, "the upload's event was not printed within 30 s"
            assert event["event-type"] == "object-created"
            if event.get("bucket") == bucket:
                break
        assert (event["key"], event["size"]) == ("followed", 1234)
    finally:
        pipeline.close()
        follower.send_signal(signal.SIGINT)
        code = follower.wait(timeout=30)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace")
        errors.close()
    assert code == 0, stderr


async def test_malformed_events_are_dropped_and_later_ones_still_published(
    local_cluster: LocalCluster, subscriber: Callable[..., Subscriber]
) -> None:
    metrics_at = events_of(local_cluster)["metrics"]

    def dropped() -> dict[str, float]:
        samples = scrape(metrics_at).get("nimbus_events_dropped_total", [])
        return {s.labels["reason"]: s.value for s in samples}

    before = dropped()
    sub = subscriber()
    pipeline = Pipeline(events_of(local_cluster)["pipeline"])
    try:
        pipeline.send_frames(b"not json at all")
        pipeline.send_frames(b"\xff\xfe\x00")
        pipeline.send_frames(b"[1, 2, 3]")
        pipeline.send_frames(b'{"message-type": "event"}')
        pipeline.send_frames(b'{"event-type": 42}')
        pipeline.send_frames(json.dumps({"event-type": PROBE, "pad": "x" * 70_000}).encode())
        pipeline.send_frames(json.dumps({"event-type": PROBE}).encode(), b"extra frame")
        # Sent after the malformed ones on the same connection, so received after them.
        token = uuid.uuid4().hex
        sub.wait_for(
            lambda event: event.get("token") == token,
            on_idle=lambda: pipeline.send(PROBE, token=token),
        )
    finally:
        pipeline.close()

    expected = {"not-json": 2, "not-object": 1, "bad-event-type": 2, "too-large": 1}
    expected["extra-frames"] = 1
    after = dropped()
    grown = {r: after.get(r, 0) - before.get(r, 0) for r in {*after, *expected}}
    assert {reason: count for reason, count in grown.items() if count} == expected
    # Neither the oversized probe nor the one with an extra frame was published.
    assert all("token" in event and "pad" not in event for _, event in sub.seen)
    kept = await recent(local_cluster, **{"event-type": PROBE})
    assert any(e.get("token") == token for e in kept)
    assert not any("pad" in e for e in kept)


async def test_damage_found_by_a_reader_is_announced(
    local_cluster: LocalCluster,
    clients: dict[str, RpcClient],
    ids: UnifiedIdGenerator,
    subscriber: Callable[..., Subscriber],
) -> None:
    sub = subscriber("damage-found")
    node = local_cluster.node("node03")
    pieces = [os.urandom(16 * 1024) for _ in range(3)]
    ref = SegmentRef(5, unique("rotten"), ids.next_id(), 2)
    await store_in_pieces(clients["node03-writer"], ref, pieces, FileInfo.of(b"".join(pieces)))
    conn = await asyncpg.connect(node["database_url"])
    try:
        row = await conn.fetchrow(
            """SELECT q.value_file_id, q.value_file_offset FROM segment s
               JOIN segment_sequence q ON q.segment_id = s.id
               WHERE s.unified_id = $1 AND q.sequence_num = 2""",
            ref.unified_id,
        )
    finally:
        await conn.close()
    assert row is not None
    path = value_file_path(Path(node["data_dir"]), row["value_file_id"])
    with open(path, "r+b") as f:
        f.seek(row["value_file_offset"] + 10)
        byte = f.read(1)
        f.seek(row["value_file_offset"] + 10)
        f.write(bytes([byte[0] ^ 0x80]))

    reader = clients["node03-reader"]
    ok(await reader.request(messages.retrieve_start("events-rotten", ref)))
    ok(await reader.request(messages.retrieve_next("events-rotten")))
    damaged = await reader.request(messages.retrieve_next("events-rotten"))
    assert damaged.header["result"] == "damaged"

    event = sub.wait_for(lambda e: e.get("key") == ref.key)
    assert event["event-type"] == "damage-found"
    assert (event["service"], event["node-name"], event["detected-by"]) == (
        "reader",
        "node03",
        "reader",
    )
    assert (event["collection-id"], event["unified-id"]) == (5, ref.unified_id)
    assert (event["segment-num"], event["sequence-num"]) == (2, 2)
    assert "md5" in event["reason"]


def test_handoffs_their_backlog_and_their_return_home_are_announced(
    local_cluster: LocalCluster,
    s3: Any,
    stopped: list[str],  # noqa: F811 (the fixture)
    subscriber: Callable[..., Subscriber],
) -> None:
    home = "node05"
    bucket = new_bucket(s3)
    sub = subscriber("share-handed-off", "handoff-backlog", "share-forwarded", "object-created")
    stop(local_cluster, stopped, home)
    s3.put_object(Bucket=bucket, Key="away", Body=os.urandom(100_000))

    created = sub.wait_for(lambda e: e.get("bucket") == bucket)
    assert created["shares-handed-off"] == 1
    assert created["shares-home"] == local_cluster.n - 1
    # Two live holders each hold the share for the stopped home.
    holders: set[str] = set()
    while len(holders) < 2:
        handed = sub.wait_for(
            lambda e: (
                e["event-type"] == "share-handed-off"
                and e.get("key") == "away"
                and e["node-name"] not in holders
            )
        )
        assert handed["service"] == "writer"
        assert handed["home-node"] == home
        assert handed["node-name"] != home
        holders.add(handed["node-name"])
    backlog = sub.wait_for(
        lambda e: (
            e["event-type"] == "handoff-backlog"
            and e["node-name"] in holders
            and e["holdings"].get(home, {}).get("segments", 0) > 0
        )
    )
    assert backlog["holdings"][home]["bytes"] > 0

    start(local_cluster, stopped, home)
    since = len(sub.seen)
    forwarded = sub.wait_for(
        lambda e: e["event-type"] == "share-forwarded" and e.get("key") == "away",
        timeout_s=60,
        since=since,
    )
    assert forwarded["home-node"] == home
    assert forwarded["node-name"] in holders
    assert forwarded["bytes"] > 0
    drained = sub.wait_for(
        lambda e: (
            e["event-type"] == "handoff-backlog"
            and e["node-name"] == forwarded["node-name"]
            and home not in e["holdings"]
        ),
        timeout_s=60,
        since=since,
    )
    assert drained["node-name"] in holders


async def test_every_service_serves_metrics_that_parse(
    local_cluster: LocalCluster, s3: Any
) -> None:
    s3.list_buckets()  # at least one HTTP request
    zmq_services: dict[str, tuple[str, str]] = {
        "events": (events_of(local_cluster)["query"], events_of(local_cluster)["metrics"]),
        "accounting": (
            local_cluster.description["accounting"]["query"],
            local_cluster.description["accounting"]["metrics"],
        ),
    }
    for node in local_cluster.nodes:
        for service in ("writer", "reader", "handoff"):
            zmq_services[f"{node['name']}-{service}"] = (node[service], node["metrics"][service])
    for endpoint, _ in zmq_services.values():  # at least one request each
        client = await RpcClient.connect(endpoint, timeout_s=10)
        try:
            ok(await client.request({"message-type": "ping"}))
        finally:
            await client.close()

    for name, (_, metrics_at) in zmq_services.items():
        samples = scrape(metrics_at)
        pings = [
            s
            for s in samples.get("nimbus_rpc_requests_total", [])
            if s.labels == {"message_type": "ping", "result": "success"}
        ]
        assert pings and pings[0].value >= 1, name
        assert "nimbus_rpc_request_seconds_bucket" in samples, name
        assert "nimbus_rpc_received_bytes_total" in samples, name
        assert "nimbus_rpc_sent_bytes_total" in samples, name

    gateway = scrape(local_cluster.gateway["metrics"])
    assert gateway.get("nimbus_http_requests_total"), sorted(gateway)
    assert any(name.startswith("nimbus_http_request_seconds") for name in gateway)


async def test_sigterm_stops_the_events_service_cleanly_and_frees_its_ports() -> None:
    """A service of its own (the cluster's keeps running): exit 0, every port free."""
    ports = {name: free_port() for name in ("pipeline", "publish", "query", "metrics")}
    endpoints = {name: f"tcp://127.0.0.1:{port}" for name, port in ports.items()}
    env = {
        **os.environ,
        "NIMBUS_PIPELINE_BIND": endpoints["pipeline"],
        "NIMBUS_PUBLISH_BIND": endpoints["publish"],
        "NIMBUS_BIND": endpoints["query"],
        "NIMBUS_METRICS_BIND": f"127.0.0.1:{ports['metrics']}",
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.events.main"], env=env)
    sub = Subscriber(endpoints, "service-started", "service-stopping")
    client = await RpcClient.connect(endpoints["query"], timeout_s=30)
    try:
        ok(await client.request({"message-type": "ping"}))  # answered once it serves
        sub.wait_ready()
        started = await client.request(
            {"message-type": "recent-events-request", "event-type": "service-started"}
        )
        assert [e["service"] for e in started.header["events"]] == ["events"]
        assert started.header["events"][0]["pid"] == proc.pid
        proc.send_signal(signal.SIGTERM)
        stopping = sub.wait_for(lambda e: e["event-type"] == "service-stopping")
        assert (stopping["service"], stopping["pid"]) == ("events", proc.pid)
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        await client.close()
        sub.close()
        if proc.poll() is None:
            proc.kill()
    for port in ports.values():
        assert_port_free(port)
