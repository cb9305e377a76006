"""Accounting, events and metrics in the compose cluster: usage counted exactly
once across a killed accounting container, events readable with `nimbus
events`, and every container's /metrics in the Prometheus format."""

from __future__ import annotations

import json
import os
import random
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from prometheus_client.parser import text_string_to_metric_families

from tests.compose.conftest import ComposeCluster, env_file
from tests.compose.test_chaos import container

KIB = 1024
SIZES = [0, 1, 4 * KIB, 100 * KIB, 1024 * KIB, 3 * 1024 * KIB]


@pytest.fixture(scope="module")
def docker_client() -> Iterator[docker.DockerClient]:
    client = docker.from_env()
    yield client
    client.close()


def usage(cluster: ComposeCluster, bucket: str) -> dict[str, Any]:
    """The gateway's usage endpoint, signed with the root key as any S3 request."""
    keys = env_file()
    url = f"{cluster.url}/-/usage/{bucket}"
    request = AWSRequest(method="GET", url=url)
    credentials = Credentials(keys["NIMBUS_ROOT_ACCESS_KEY"], keys["NIMBUS_ROOT_SECRET_KEY"])
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    signed = urllib.request.Request(url, headers=dict(request.headers.items()))
    with urllib.request.urlopen(signed, timeout=10) as response:
        document: dict[str, Any] = json.load(response)
    return document


def wait_usage(
    cluster: ComposeCluster, bucket: str, expected: dict[str, int], timeout_s: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    while True:
        got = usage(cluster, bucket)
        if all(got[name] == value for name, value in expected.items()):
            return got
        assert all(got[name] <= value for name, value in expected.items()), (got, expected)
        assert time.monotonic() < deadline, f"usage {got} never reached {expected}"
        time.sleep(delay)  # poll until the outbox has been delivered and counted
        delay = min(delay * 2, 2.0)


def test_usage_is_exact_across_a_killed_accounting_container(
    compose_cluster: ComposeCluster, docker_client: docker.DockerClient
) -> None:
    s3 = compose_cluster.s3(retries={"max_attempts": 4})
    bucket = f"usage-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    rng = random.Random(6)
    bodies = {f"obj-{i:03d}": os.urandom(rng.choice(SIZES)) for i in range(60)}
    accounting = container(docker_client, compose_cluster, "accounting")

    def put(key: str) -> None:
        s3.put_object(Bucket=bucket, Key=key, Body=bodies[key])

    keys = sorted(bodies)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, keys[:30]))
        accounting.kill()  # SIGKILL, while the rest are uploaded
        list(pool.map(put, keys[30:]))
    accounting.reload()
    if accounting.status != "running":
        accounting.start()
    compose_cluster.wait_healthy()

    retrieved = sum(len(s3.get_object(Bucket=bucket, Key=key)["Body"].read()) for key in keys[:20])
    removed_keys = keys[40:]
    for key in removed_keys:
        s3.delete_object(Bucket=bucket, Key=key)
    expected = {
        "bytes_added": sum(len(body) for body in bodies.values()),
        "bytes_retrieved": retrieved,
        "bytes_removed": sum(len(bodies[key]) for key in removed_keys),
    }
    assert retrieved == sum(len(bodies[key]) for key in keys[:20])
    wait_usage(compose_cluster, bucket, expected)


def test_events_are_listed_by_nimbus_events(
    compose_cluster: ComposeCluster, docker_client: docker.DockerClient
) -> None:
    s3 = compose_cluster.s3()
    bucket = f"events-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="watched", Body=b"x" * 1000)
    gateway = container(docker_client, compose_cluster, "gateway")
    deadline = time.monotonic() + 60
    while True:
        # stdout only: a note that older events were left out goes to stderr.
        result = gateway.exec_run(
            ["nimbus", "events", "--type", "object-created", "--limit", "50"], demux=True
        )
        stdout, stderr = result.output
        assert result.exit_code == 0, stderr
        assert isinstance(stdout, bytes | None)
        events = [json.loads(line) for line in (stdout or b"").decode().splitlines() if line]
        mine = [e for e in events if e.get("bucket") == bucket and e.get("key") == "watched"]
        if mine:
            assert mine[0]["size"] == 1000
            break
        assert time.monotonic() < deadline, events[-5:]
        time.sleep(0.5)  # poll: the event travels gateway → events service


def test_every_container_serves_prometheus_metrics(
    compose_cluster: ComposeCluster, docker_client: docker.DockerClient
) -> None:
    services = ["gateway", "events", "accounting"] + [
        f"node{n:02d}-{service}" for n in range(1, 7) for service in ("writer", "reader", "handoff")
    ]
    fetch = (
        "import urllib.request;"
        "print(urllib.request.urlopen('http://127.0.0.1:9100/metrics', timeout=10).read().decode())"
    )
    for service in services:
        result = container(docker_client, compose_cluster, service).exec_run(
            ["python", "-c", fetch]
        )
        output = result.output
        assert isinstance(output, bytes)
        assert result.exit_code == 0, (service, output[-2000:])
        names = {family.name for family in text_string_to_metric_families(output.decode())}
        expected = "nimbus_http_requests" if service == "gateway" else "nimbus_rpc_requests"
        assert expected in names, (service, sorted(names))
