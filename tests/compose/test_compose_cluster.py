"""The compose cluster serves S3, survives a killed reader, and rejoins a restarted node."""

from __future__ import annotations

import hashlib
import os
import uuid

from tests.compose.conftest import ComposeCluster

MIB = 1024 * 1024


def test_boto3_round_trip_and_reads_with_a_killed_reader(compose_cluster: ComposeCluster) -> None:
    s3 = compose_cluster.s3(retries={"max_attempts": 1})
    bucket = f"compose-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    bodies = {f"object-{size}": os.urandom(size) for size in (0, 1024, 9 * MIB + 17)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    listed = [entry["Key"] for entry in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(bodies)

    compose_cluster.compose("kill", "node03-reader")
    for key, body in bodies.items():
        got = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert hashlib.sha256(got).digest() == hashlib.sha256(body).digest(), key

    compose_cluster.compose("restart", "node03-writer", "node03-reader")
    compose_cluster.wait_healthy()
    compose_cluster.wait_gateway_sees("node03", "reader", up=True)
    for key, body in bodies.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == body
    # The restarted node takes writes again (a PUT needs every home writer).
    s3.put_object(Bucket=bucket, Key="after-restart", Body=b"x" * 1000)
    assert s3.get_object(Bucket=bucket, Key="after-restart")["Body"].read() == b"x" * 1000
