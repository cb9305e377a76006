"""The Docker Compose cluster as a test fixture: real images, real containers.

The project gets its own name (its own containers, network and volumes) and a
free host port for the gateway, is brought up with `scripts/cluster up` (which
builds what is missing and waits for every health check), and is wiped,
volumes included, at the end.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]


def env_file() -> dict[str, str]:
    values = {}
    for line in (ROOT / ".env").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


@dataclass
class ComposeCluster:
    project: str
    env: dict[str, str]

    def cluster(self, *args: str, timeout_s: float = 1800) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(ROOT / "scripts" / "cluster"), "-p", self.project, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if result.returncode != 0:
            raise AssertionError(
                f"scripts/cluster {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        return result

    def compose(self, *args: str) -> str:
        return self.cluster("compose", *args).stdout

    @property
    def url(self) -> str:
        address = self.compose("port", "gateway", "9000").strip().splitlines()[-1]
        return "http://" + address.replace("0.0.0.0", "127.0.0.1")

    def s3(self, **config: Any) -> Any:
        keys = env_file()
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=keys["NIMBUS_ROOT_ACCESS_KEY"],
            aws_secret_access_key=keys["NIMBUS_ROOT_SECRET_KEY"],
            region_name="us-east-1",
            config=Config(**config) if config else None,
        )

    def wait_healthy(self, timeout_s: float = 300) -> None:
        self.cluster("wait", "--timeout", str(int(timeout_s)))

    def wait_gateway_sees(self, node: str, service: str, up: bool, timeout_s: float = 60) -> None:
        """Until the gateway's health report shows ``node``'s ``service`` up (or down)."""
        import json
        import urllib.request

        deadline = time.monotonic() + timeout_s
        delay = 0.1
        while True:
            try:
                with urllib.request.urlopen(self.url + "/-/health", timeout=5) as response:
                    state = json.load(response)["nodes"][node][service]
            except OSError:
                state = None
            if state is up:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"gateway sees {node} {service} as {state} after {timeout_s} s"
                )
            time.sleep(delay)  # poll interval until the gateway's view changes
            delay = min(delay * 2, 1.0)


@pytest.fixture(scope="session")
def compose_cluster() -> Iterator[ComposeCluster]:
    project = f"nimbus-test-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "NIMBUS_GATEWAY_BIND": "127.0.0.1:"}
    cluster = ComposeCluster(project, env)
    try:
        cluster.cluster("up")
        yield cluster
    finally:
        subprocess.run(
            [str(ROOT / "scripts" / "cluster"), "-p", project, "wipe"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=600,
        )
