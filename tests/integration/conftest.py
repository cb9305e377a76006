"""Fixtures for integration tests: a real local cluster of real processes.

The cluster is brought up with the `nimbus local up` command itself, in a
directory the ``postgres`` user can enter (pytest's own temporary root is
0700 when we are root), and torn down with `nimbus local down --wipe`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.common.rpc import RpcClient
from services.common.unified_id import UnifiedIdGenerator


def nimbus(
    *args: str, check: bool = True, timeout_s: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the `nimbus` command as a user would."""
    result = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"nimbus {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


@pytest.fixture(scope="session")
def reachable_tmp() -> Iterator[Path]:
    """A temporary directory that the postgres user can enter, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="nimbus-test-"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class LocalCluster:
    directory: Path
    description: dict[str, Any]

    @property
    def nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self.description["nodes"]
        return nodes

    @property
    def k(self) -> int:
        return int(self.description["k"])

    @property
    def n(self) -> int:
        return int(self.description["n"])

    @property
    def gateway(self) -> dict[str, Any]:
        """``url``, ``access_key``, ``secret_key``, ``region`` of the S3 gateway."""
        gateway: dict[str, Any] = self.description["gateway"]
        return gateway

    def s3(self, **config: Any) -> Any:
        """A boto3 S3 client for the gateway, with boto3's default settings."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.gateway["url"],
            aws_access_key_id=self.gateway["access_key"],
            aws_secret_access_key=self.gateway["secret_key"],
            region_name=self.gateway["region"],
            config=Config(**config) if config else None,
        )

    def node(self, name: str) -> dict[str, Any]:
        return next(node for node in self.nodes if node["name"] == name)

    def processes(self) -> dict[str, Any]:
        table: dict[str, Any] = json.loads((self.directory / "processes.json").read_text())
        return table

    def pid(self, process_name: str) -> int:
        pid: int = self.processes()[process_name]["pid"]
        return pid

    def local(self, *args: str) -> subprocess.CompletedProcess[str]:
        return nimbus("local", *args, "--dir", str(self.directory))


@pytest.fixture(scope="session")
def local_cluster(reachable_tmp: Path) -> Iterator[LocalCluster]:
    directory = reachable_tmp / "cluster"
    nimbus("local", "up", "--nodes", "6", "--k", "4", "--dir", str(directory))
    description = json.loads((directory / "cluster.json").read_text())
    try:
        yield LocalCluster(directory, description)
    finally:
        nimbus("local", "down", "--wipe", "--dir", str(directory), check=False)


@pytest.fixture(scope="session")
def s3(local_cluster: LocalCluster) -> Any:
    """boto3 (newest, default settings) against the session cluster's gateway."""
    return local_cluster.s3()


@pytest.fixture(scope="session")
def ids() -> UnifiedIdGenerator:
    return UnifiedIdGenerator(shard=random.randrange(1024))


@pytest.fixture
async def clients(local_cluster: LocalCluster) -> AsyncIterator[dict[str, RpcClient]]:
    """One DEALER client per service endpoint, keyed 'node01-writer' etc."""
    opened: dict[str, RpcClient] = {}
    for node in local_cluster.nodes:
        for service in ("writer", "reader"):
            opened[f"{node['name']}-{service}"] = await RpcClient.connect(
                node[service], timeout_s=30
            )
    yield opened
    for client in opened.values():
        await client.close()


os.environ.setdefault("NIMBUS_LOG_LEVEL", "INFO")
