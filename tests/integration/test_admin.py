"""Users and keys made with `nimbus admin` work through S3, and see only their own buckets."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import boto3
import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import LocalCluster, nimbus


def client_for(cluster: LocalCluster, access_key: str, secret_key: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=cluster.gateway["url"],
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=cluster.gateway["region"],
    )


async def test_admin_user_and_key(local_cluster: LocalCluster) -> None:
    name = f"user-{uuid.uuid4().hex[:8]}"
    directory = str(local_cluster.directory)
    created = json.loads(nimbus("admin", "user", "create", name, "--dir", directory).stdout)
    assert created["user"] == name
    key = json.loads(nimbus("admin", "key", "create", name, "--dir", directory).stdout)
    user = client_for(local_cluster, key["access_key"], key["secret_key"])
    bucket = f"owned-{uuid.uuid4().hex[:8]}"
    user.create_bucket(Bucket=bucket)
    user.put_object(Bucket=bucket, Key="k", Body=b"mine")
    assert [b["Name"] for b in user.list_buckets()["Buckets"]] == [bucket]

    other = json.loads(
        nimbus(
            "admin", "user", "create", f"other-{uuid.uuid4().hex[:8]}", "--dir", directory
        ).stdout
    )
    other_key = json.loads(
        nimbus("admin", "key", "create", other["user"], "--dir", directory).stdout
    )
    stranger = client_for(local_cluster, other_key["access_key"], other_key["secret_key"])
    assert stranger.list_buckets()["Buckets"] == []
    with pytest.raises(ClientError) as caught:
        stranger.get_object(Bucket=bucket, Key="k")
    assert caught.value.response["Error"]["Code"] == "AccessDenied"

    # The secret is stored encrypted, never in plain text.
    conn = await asyncpg.connect(local_cluster.description["database_url"])
    try:
        sealed = await conn.fetchval(
            "SELECT secret_encrypted FROM access_key WHERE access_key_id = $1", key["access_key"]
        )
    finally:
        await conn.close()
    assert key["secret_key"].encode() not in bytes(sealed)


def test_key_for_unknown_user_fails(local_cluster: LocalCluster) -> None:
    result = nimbus(
        "admin", "key", "create", "nobody-here", "--dir", str(local_cluster.directory), check=False
    )
    assert result.returncode == 1
    assert "no user" in result.stderr
