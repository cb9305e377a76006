"""Reads survive up to n - k stopped nodes; beyond that, a clean 503."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import LocalCluster

MIB = 1024 * 1024
SIZES = [0, 1024, 4 * MIB, 9 * MIB + 123]


def wait_for_gateway_view(
    cluster: LocalCluster, node: str, up: bool, timeout_s: float = 30
) -> None:
    """Until the gateway's health endpoint shows ``node``'s reader up (or down)."""
    import json
    import urllib.request

    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        with urllib.request.urlopen(cluster.gateway["url"] + "/-/health", timeout=5) as response:
            nodes = json.load(response)["nodes"]
        if nodes[node]["reader"] is up and nodes[node]["writer"] is up:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"gateway still sees {node} as {nodes[node]} after {timeout_s} s")
        time.sleep(delay)  # poll interval until the gateway's view changes
        delay = min(delay * 2, 0.5)


@pytest.fixture
def stopped_nodes(local_cluster: LocalCluster) -> Iterator[list[str]]:
    """Nodes a test stops; all are started again, and seen up, afterwards."""
    stopped: list[str] = []
    yield stopped
    for name in stopped:
        local_cluster.local("start-node", name)
    for name in stopped:
        wait_for_gateway_view(local_cluster, name, up=True)


def test_reads_with_one_two_then_three_nodes_stopped(
    local_cluster: LocalCluster, stopped_nodes: list[str]
) -> None:
    s3: Any = local_cluster.s3(retries={"max_attempts": 1})
    bucket = f"degraded-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    bodies = {f"object-{size}": os.urandom(size) for size in SIZES}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)

    def read_all() -> None:
        for key, body in bodies.items():
            got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            assert hashlib.md5(got).digest() == hashlib.md5(body).digest(), key
            if len(body) > 100:
                part = s3.get_object(Bucket=bucket, Key=key, Range="bytes=50-4194400")
                assert part["Body"].read() == body[50:4194401]

    names = [node["name"] for node in local_cluster.nodes]
    # First node: read at once, before the heartbeat noticed (timeouts, then parity).
    local_cluster.local("stop-node", names[0])
    stopped_nodes.append(names[0])
    read_all()
    # Second node: n - k = 2 down, still every byte.
    local_cluster.local("stop-node", names[1])
    stopped_nodes.append(names[1])
    wait_for_gateway_view(local_cluster, names[1], up=False)
    read_all()
    # Third node: fewer than k shares remain.
    local_cluster.local("stop-node", names[2])
    stopped_nodes.append(names[2])
    wait_for_gateway_view(local_cluster, names[2], up=False)
    with pytest.raises(ClientError) as caught:
        s3.get_object(Bucket=bucket, Key="object-1024")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503


async def test_unreadable_object_gets_503_and_no_partial_body(
    local_cluster: LocalCluster, stopped_nodes: list[str]
) -> None:
    s3: Any = local_cluster.s3(retries={"max_attempts": 1}, signature_version="s3v4")
    bucket = f"unreadable-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    body = os.urandom(9 * MIB)
    s3.put_object(Bucket=bucket, Key="big", Body=body)
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "big"})
    for node in local_cluster.nodes[3:]:
        local_cluster.local("stop-node", node["name"])
        stopped_nodes.append(node["name"])
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        data = await response.read()
        assert response.status == 503
        assert response.headers["Content-Type"] == "application/xml"
        assert b"<Code>ServiceUnavailable</Code>" in data
        assert body[:1000] not in data
