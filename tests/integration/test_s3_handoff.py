"""Writes go on with up to n - k homes down: hinted handoff in the gateway.

Shares whose home writer is down go to two other live writers; the index
records where, reads find them there, more than n - k homes down refuses the
write before anything is stored, and a delete while a home is down reaches
that home once it is back.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import LocalCluster
from tests.integration.test_s3_degraded import wait_for_gateway_view

MIB = 1024 * 1024


@pytest.fixture
def stopped(local_cluster: LocalCluster) -> Iterator[list[str]]:
    """Nodes a test stops; started again, and seen up by the gateway, afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        local_cluster.local("start-node", name)
    for name in names:
        wait_for_gateway_view(local_cluster, name, up=True)


def stop(cluster: LocalCluster, stopped: list[str], name: str) -> None:
    cluster.local("stop-node", name)
    stopped.append(name)
    wait_for_gateway_view(cluster, name, up=False)


def start(cluster: LocalCluster, stopped: list[str], name: str) -> None:
    cluster.local("start-node", name)
    stopped.remove(name)
    wait_for_gateway_view(cluster, name, up=True)


async def index_row(cluster: LocalCluster, bucket: str, key: str) -> Any:
    conn = await asyncpg.connect(cluster.description["database_url"])
    try:
        return await conn.fetchrow(
            """SELECT v.homes, v.handoffs FROM object_version v JOIN bucket b ON b.id = v.bucket_id
               WHERE b.name = $1 AND v.key = $2 AND v.state = 'live'""",
            bucket,
            key,
        )
    finally:
        await conn.close()


async def segment_states(cluster: LocalCluster, node: str, key: str) -> list[tuple[str, Any]]:
    conn = await asyncpg.connect(cluster.node(node)["database_url"])
    try:
        rows = await conn.fetch(
            "SELECT status, handoff_node_name FROM segment WHERE key = $1 ORDER BY id", key
        )
    finally:
        await conn.close()
    return [(row["status"], row["handoff_node_name"]) for row in rows]


async def test_writes_with_homes_down_are_handed_off_and_read_back(
    local_cluster: LocalCluster, stopped: list[str]
) -> None:
    s3: Any = local_cluster.s3(retries={"max_attempts": 1})
    bucket = f"handoff-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    names = [node["name"] for node in local_cluster.nodes]
    down = names[0]
    stop(local_cluster, stopped, down)

    bodies = {f"one-down-{size}": os.urandom(size) for size in (0, 1024, 9 * MIB + 5)}
    for key, body in bodies.items():
        response = s3.put_object(Bucket=bucket, Key=key, Body=body)
        headers = response["ResponseMetadata"]["HTTPHeaders"]
        assert headers["x-nimbus-shares"] == "home=5; handoff=1", key
        row = await index_row(local_cluster, bucket, key)
        handoffs = json.loads(row["handoffs"])
        ((segment_num, holders),) = handoffs.items()
        assert row["homes"][int(segment_num)] == down
        assert len(holders) == 2 and down not in holders
        for holder in holders:
            held = await segment_states(local_cluster, holder, key)
            assert ("F", down) in held, (holder, held)
    for key, body in bodies.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body

    # Two homes down is still n - k; three is refused before a byte is stored.
    stop(local_cluster, stopped, names[1])
    two_down = os.urandom(5 * MIB)
    response = s3.put_object(Bucket=bucket, Key="two-down", Body=two_down)
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-nimbus-shares"] == "home=4; handoff=2"
    stop(local_cluster, stopped, names[2])
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=bucket, Key="three-down", Body=b"x" * 1000)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    for node in names[3:]:
        assert await segment_states(local_cluster, node, "three-down") == []

    # The homes come back without their shares: reads use the holders (or
    # parity), never a 404 or a wrong byte.
    for name in list(stopped):
        start(local_cluster, stopped, name)
    for key, body in {**bodies, "two-down": two_down}.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body


async def test_a_handed_off_share_is_read_from_its_holder(
    local_cluster: LocalCluster, stopped: list[str]
) -> None:
    """With the home back but empty and two other nodes down, only the holder has it."""
    s3: Any = local_cluster.s3(retries={"max_attempts": 1})
    bucket = f"holder-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    names = [node["name"] for node in local_cluster.nodes]
    missed = names[3]
    stop(local_cluster, stopped, missed)
    body = os.urandom(6 * MIB + 3)
    s3.put_object(Bucket=bucket, Key="k", Body=body)
    holders = next(
        iter(json.loads((await index_row(local_cluster, bucket, "k"))["handoffs"]).values())
    )
    start(local_cluster, stopped, missed)
    others = [name for name in names if name != missed and name not in holders][:2]
    for name in others:
        stop(local_cluster, stopped, name)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == body


async def test_delete_while_a_home_is_down_reaches_it_later(
    local_cluster: LocalCluster, stopped: list[str]
) -> None:
    s3: Any = local_cluster.s3(retries={"max_attempts": 1})
    bucket = f"late-delete-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="doomed", Body=b"d" * 4096)
    home = local_cluster.nodes[4]["name"]
    assert [state for state, _ in await segment_states(local_cluster, home, "doomed")] == ["F"]
    stop(local_cluster, stopped, home)
    s3.delete_object(Bucket=bucket, Key="doomed")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="doomed")
    start(local_cluster, stopped, home)
    deadline = time.monotonic() + 60
    delay = 0.1
    while [state for state, _ in await segment_states(local_cluster, home, "doomed")] != ["D", "T"]:
        assert time.monotonic() < deadline, await segment_states(local_cluster, home, "doomed")
        await asyncio.sleep(delay)  # poll until the reaper's retry reaches the node
        delay = min(delay * 2, 1.0)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="doomed")


def handoff_backlog(cluster: LocalCluster) -> dict[str, Any]:
    from tests.integration.conftest import nimbus

    out = nimbus("status", "--dir", str(cluster.directory), "--json").stdout
    document: dict[str, Any] = json.loads(out)
    return document


async def test_handoff_backlog_drains_home_by_itself(
    local_cluster: LocalCluster, stopped: list[str]
) -> None:
    """Shares held for a stopped node reach it when it returns; then the
    holders can go away and every object still reads back."""
    s3: Any = local_cluster.s3(retries={"max_attempts": 1})
    bucket = f"drain-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    names = [node["name"] for node in local_cluster.nodes]
    away = names[2]
    stop(local_cluster, stopped, away)
    bodies = {f"k{i}": os.urandom(i * 700_000) for i in range(8)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    status = handoff_backlog(local_cluster)
    assert status["handoff_backlog"]["segments"] >= 2 * len(bodies)
    holding = {
        name: node["holds_for_others"][away]["segments"]
        for name, node in status["nodes"].items()
        if (node["holds_for_others"] or {}).get(away)
    }
    assert sum(holding.values()) >= 2 * len(bodies), holding

    start(local_cluster, stopped, away)
    deadline = time.monotonic() + 120
    delay = 0.2
    while handoff_backlog(local_cluster)["handoff_backlog"]["segments"] > 0:
        assert time.monotonic() < deadline, handoff_backlog(local_cluster)
        await asyncio.sleep(delay)  # poll until the handoff services have drained
        delay = min(delay * 2, 2.0)

    # The shares really are at home now: stop two nodes other than `away`.
    for name in [n for n in names if n != away][:2]:
        stop(local_cluster, stopped, name)
    for key, body in bodies.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
