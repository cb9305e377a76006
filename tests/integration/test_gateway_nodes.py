"""The gateway's view of nodes: quick to see a writer gone or paused, and its return.

Against the session cluster, through the gateway's ``GET /-/health``: a writer
killed with SIGKILL is reported down within 2.5 s of the kill, one paused with
SIGSTOP within 3 s, and each is reported up again once restarted or resumed;
the gateway announces both changes on the events service. Against single
``RpcServer`` processes of the test's own: the same for ``NodeSet`` itself
(with the events it sends), and a process answering as another node is not
trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from services.common.events import EventSender
from services.common.rpc import RpcClient
from services.gateway.nodes import NODE_DOWN, NODE_UP, NodeSet
from services.local.processes import free_port
from tests.integration.conftest import LocalCluster
from tests.integration.storage import ok

#: How soon the gateway must see a killed writer down, from the kill.
KILL_DETECTED_S = 2.5
#: How soon the gateway must see a paused (SIGSTOPped) writer down, from the stop.
STOP_DETECTED_S = 3.0
#: How long a restarted or resumed writer may take to be seen up again (a start
#: of the process is in it; generous for a busy machine).
BACK_UP_S = 30.0
#: The node whose writer these tests kill and pause.
NODE = "node04"


# --- the gateway's view ------------------------------------------------------------


async def health(session: aiohttp.ClientSession, cluster: LocalCluster) -> dict[str, Any]:
    async with session.get(
        cluster.gateway["url"] + "/-/health", timeout=aiohttp.ClientTimeout(total=5)
    ) as response:
        document: dict[str, Any] = await response.json()
        return document


async def writer_up(session: aiohttp.ClientSession, cluster: LocalCluster, node: str) -> bool:
    return bool((await health(session, cluster))["nodes"][node]["writer"])


async def wait_until(
    check: Callable[[], Awaitable[bool]], deadline_s: float, what: str, since: float | None = None
) -> float:
    """Poll ``await check()`` until true; seconds from ``since`` (default: now) until then."""
    began = time.monotonic() if since is None else since
    while True:
        if await check():
            return time.monotonic() - began
        if time.monotonic() - began > deadline_s:
            raise AssertionError(f"{what}: not within {deadline_s} s")
        await asyncio.sleep(0.02)  # poll interval, far below the deadlines


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


async def node_up(session: aiohttp.ClientSession, cluster: LocalCluster, node: str) -> bool:
    try:
        states = (await health(session, cluster))["nodes"][node]
    except (aiohttp.ClientError, TimeoutError):
        return False
    return bool(states["writer"] and states["reader"])


async def recent_events(cluster: LocalCluster, event_type: str) -> list[dict[str, Any]]:
    client = await RpcClient.connect(cluster.description["events"]["query"], timeout_s=10)
    try:
        reply = ok(
            await client.request(
                {"message-type": "recent-events-request", "event-type": event_type}
            )
        )
    finally:
        await client.close()
    found: list[dict[str, Any]] = reply.header["events"]
    return found


async def announced(cluster: LocalCluster, event_type: str, node: str, after: float) -> bool:
    """The gateway sent ``event_type`` about ``node``'s writer at or after ``after`` (epoch s)."""
    return any(
        event.get("service") == "gateway"
        and event.get("node-name") == node
        and event.get("node-service") == "writer"
        and float(event.get("timestamp", 0)) >= after
        for event in await recent_events(cluster, event_type)
    )


# --- the session cluster, through the gateway ----------------------------------------


async def test_a_killed_writer_is_down_within_2_5_s_and_up_again_after_a_restart(
    local_cluster: LocalCluster, session: aiohttp.ClientSession
) -> None:
    await wait_until(
        lambda: node_up(session, local_cluster, NODE), BACK_UP_S, f"{NODE} up at the start"
    )
    began_epoch = time.time()
    killed_at = time.monotonic()
    os.kill(local_cluster.pid(f"{NODE}-writer"), signal.SIGKILL)
    try:
        took = await wait_until(
            lambda: _not(writer_up(session, local_cluster, NODE)),
            KILL_DETECTED_S,
            f"the gateway reports {NODE}'s killed writer down",
            since=killed_at,
        )
        print(f"killed writer seen down after {took:.3f} s")
        # The reader of the node was not touched.
        assert (await health(session, local_cluster))["nodes"][NODE]["reader"] is True
    finally:
        local_cluster.local("start-node", NODE)
        await wait_until(
            lambda: node_up(session, local_cluster, NODE),
            BACK_UP_S,
            f"the gateway reports {NODE} up after the restart",
        )
    await wait_until(
        lambda: announced(local_cluster, NODE_DOWN, NODE, began_epoch), 10, "node-down event"
    )
    await wait_until(
        lambda: announced(local_cluster, NODE_UP, NODE, began_epoch), 10, "node-up event"
    )
    down = [
        event
        for event in await recent_events(local_cluster, NODE_DOWN)
        if event.get("node-name") == NODE and float(event["timestamp"]) >= began_epoch
    ]
    assert down[0]["reason"], down


async def test_a_paused_writer_is_down_within_3_s_and_up_again_when_resumed(
    local_cluster: LocalCluster, session: aiohttp.ClientSession
) -> None:
    await wait_until(
        lambda: node_up(session, local_cluster, NODE), BACK_UP_S, f"{NODE} up at the start"
    )
    pid = local_cluster.pid(f"{NODE}-writer")
    stopped_at = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        took = await wait_until(
            lambda: _not(writer_up(session, local_cluster, NODE)),
            STOP_DETECTED_S,
            f"the gateway reports {NODE}'s paused writer down",
            since=stopped_at,
        )
        print(f"paused writer seen down after {took:.3f} s")
    finally:
        os.kill(pid, signal.SIGCONT)
    took = await wait_until(
        lambda: node_up(session, local_cluster, NODE),
        BACK_UP_S,
        f"the gateway reports {NODE}'s resumed writer up",
    )
    print(f"resumed writer seen up after {took:.3f} s")


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


# --- NodeSet against processes of the test's own --------------------------------------


class RecordingEvents(EventSender):
    """Keeps what would be sent."""

    def __init__(self) -> None:
        super().__init__("", "gateway")
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def send(self, event_type: str, **fields: Any) -> None:
        self.sent.append((event_type, fields))


SERVER = """
import asyncio, signal, sys, time
from services.common.rpc import RpcServer

# SIGUSR1 blocks the event loop for a while: connected, ZeroMQ's I/O thread
# answering transport heartbeats, but no ping answered.
signal.signal(signal.SIGUSR1, lambda *_: time.sleep(float(sys.argv[3])))

async def main() -> None:
    server = RpcServer(sys.argv[1], {})
    print(await server.start(sys.argv[2]), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""

#: How long SIGUSR1 keeps a test server from answering (longer than the
#: deadline for seeing it down).
WEDGED_S = 6.0


@contextlib.contextmanager
def server_process(service: str, endpoint: str) -> Iterator[subprocess.Popen[str]]:
    """An RpcServer (it answers only pings) as ``service`` on ``endpoint``, killed afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, service, endpoint, str(WEDGED_S)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == endpoint
        yield process
    finally:
        process.kill()  # SIGKILL works on a stopped process too
        process.wait()


def rows_for(writer: str, reader: str) -> list[Any]:
    return [
        {
            "name": "node01",
            "node_number": 0,
            "writer_endpoint": writer,
            "reader_endpoint": reader,
            "handoff_endpoint": None,
        }
    ]


@contextlib.asynccontextmanager
async def heartbeat(nodes: NodeSet, interval_s: float) -> AsyncIterator[None]:
    """What the gateway's worker does: a round every interval."""

    async def rounds() -> None:
        while True:
            await nodes.run_once()
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(rounds())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def writer_is(nodes: NodeSet, up: bool) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return nodes.is_up("node01", "writer") is up

    return check


async def test_nodeset_sees_a_pause_a_stall_and_a_kill_and_announces_every_change() -> None:
    """With the gateway's defaults: pings every 0.5 s waiting 1 s, three missed: down."""
    writer = f"tcp://127.0.0.1:{free_port()}"
    reader = f"tcp://127.0.0.1:{free_port()}"
    events = RecordingEvents()
    with server_process("reader node01", reader):
        with server_process("writer node01", writer) as process:
            nodes = await NodeSet.connect(
                rows_for(writer, reader), 5.0, 1.0, 3, heartbeat_interval_s=0.5, events=events
            )
            await nodes.run_once()
            assert nodes.is_up("node01", "writer") and nodes.is_up("node01", "reader")
            assert events.sent == []
            async with heartbeat(nodes, 0.5):
                # Paused: the connection stays open, nothing answers, not even
                # transport heartbeats, so the connection is closed.
                process.send_signal(signal.SIGSTOP)
                took = await wait_until(writer_is(nodes, False), 3.0, "paused writer down")
                reason = nodes["node01"].writer.reason
                print(f"paused writer down after {took:.3f} s: {reason}")
                process.send_signal(signal.SIGCONT)
                await wait_until(writer_is(nodes, True), 5.0, "resumed writer up")

                # Stalled: the process runs and keeps the connection (its
                # ZeroMQ I/O thread answers transport heartbeats), but its
                # Python code answers no ping: three missed in a row.
                process.send_signal(signal.SIGUSR1)
                # 1.5-2.5 s; the deadline leaves room for a busy machine, where
                # pings timing out late (the test's own loop stalled) do not count.
                took = await wait_until(writer_is(nodes, False), 4.5, "stalled writer down")
                reason = nodes["node01"].writer.reason
                print(f"stalled writer down after {took:.3f} s: {reason}")
                assert reason == "3 pings in a row unanswered within 1 s"
                took = await wait_until(writer_is(nodes, True), WEDGED_S + 5, "writer up again")
                print(f"stalled writer up again {took:.3f} s later (it stalls {WEDGED_S} s)")

                # Killed: the connection closes; down at once (well within a ping timeout).
                process.kill()
                process.wait()
                took = await wait_until(writer_is(nodes, False), 1.0, "killed writer down")
                print(f"killed writer down after {took:.3f} s")
                assert nodes["node01"].writer.reason == "connection lost"
        # Started again on the same address: up again, from an answered ping.
        try:
            with server_process("writer node01", writer):
                async with heartbeat(nodes, 0.5):
                    await wait_until(writer_is(nodes, True), 5.0, "restarted writer up")
        finally:
            await nodes.close()
    assert nodes.is_up("node01", "reader")
    kinds = [kind for kind, _ in events.sent]
    assert kinds == [NODE_DOWN, NODE_UP] * 3, events.sent
    for kind, fields in events.sent:
        assert fields["node-name"] == "node01" and fields["node-service"] == "writer"
        assert (kind == NODE_DOWN) == bool(fields.get("reason")), fields


async def test_a_process_answering_as_another_node_counts_as_down(
    local_cluster: LocalCluster,
) -> None:
    """As after a container restart whose old address now belongs to another node."""
    node01, node02 = local_cluster.node("node01"), local_cluster.node("node02")
    rows = rows_for(node02["writer"], node01["reader"])  # the writer is the wrong process
    nodes = await NodeSet.connect(rows, 5.0, 2.0, 2)
    try:
        await nodes.run_once()
        assert not nodes.is_up("node01", "writer")
        assert nodes.is_up("node01", "reader")
    finally:
        await nodes.close()
