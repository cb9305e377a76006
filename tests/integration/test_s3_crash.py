"""A gateway killed in the middle of an upload leaves nothing visible."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from botocore.exceptions import ClientError

from tests.integration.conftest import LocalCluster

MIB = 1024 * 1024


async def test_gateway_killed_mid_upload_leaves_nothing_visible(
    local_cluster: LocalCluster,
) -> None:
    s3: Any = local_cluster.s3(signature_version="s3v4", retries={"max_attempts": 1})
    bucket = f"crash-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="before", Body=b"acknowledged")
    size = 64 * MIB
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": bucket, "Key": "half"}, ExpiresIn=600
    )
    sent_enough = asyncio.Event()
    killed = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        chunk = os.urandom(MIB)
        for i in range(size // MIB):
            if i == 20:
                sent_enough.set()  # five sequences are on their way to the nodes
                await killed.wait()
            yield chunk

    async def upload() -> None:
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            headers = {"Content-Length": str(size)}
            async with session.put(url, data=body(), headers=headers) as response:
                await response.read()
                raise AssertionError(f"the upload was answered: {response.status}")

    task = asyncio.create_task(upload())
    await asyncio.wait_for(sent_enough.wait(), 60)
    os.kill(local_cluster.pid("gateway"), signal.SIGKILL)
    killed.set()
    with pytest.raises((aiohttp.ClientError, ConnectionError)):
        await task

    # The same command that started the cluster starts what is not running.
    await asyncio.to_thread(local_cluster.local, "up", "--nodes", "6", "--k", "4")
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == ["before"]
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket=bucket, Key="half")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert s3.get_object(Bucket=bucket, Key="before")["Body"].read() == b"acknowledged"
    for node in local_cluster.nodes:
        conn = await asyncpg.connect(node["database_url"])
        try:
            finals = await conn.fetchval(
                "SELECT count(*) FROM segment WHERE key = 'half' AND status = 'F'"
            )
        finally:
            await conn.close()
        assert finals == 0, node["name"]
