"""Usage accounting end to end: every byte added, removed and retrieved, once.

Objects of known sizes are written (PUT, CopyObject, multipart with a
replaced, an unlisted and an aborted part), read (whole, a range, one part)
and deleted; the gateway's ``/-/usage/BUCKET`` must then report exactly those
bytes, removed ones only once the reaper has destroyed them on every node.
Also: `nimbus usage` prints the same numbers; unsigned requests, strangers
and unknown buckets are refused; nothing is lost while the accounting service
is away, and nothing is lost or counted twice when the gateway is killed.
Each test works in its own bucket: the cluster is shared by the session.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import asyncpg
import boto3
import yarl
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from services.common import sigv4_client
from services.common.rpc import RpcClient
from tests.integration.conftest import LocalCluster, nimbus

MiB = 1024 * 1024
TOTALS = ("bytes_added", "bytes_removed", "bytes_retrieved")
#: The reaper runs every 5 s and the outbox is flushed every second; this is
#: how long the totals may take to settle (several reaper rounds, a loaded host).
SETTLE_S = 120.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def usage_url(cluster: LocalCluster, bucket: str, hours: int | None = None) -> str:
    query = {"hours": str(hours)} if hours is not None else None
    return sigv4_client.url_for(cluster.gateway["url"], f"/-/usage/{bucket}", query)


async def get_usage(
    cluster: LocalCluster,
    bucket: str,
    *,
    hours: int | None = None,
    keys: tuple[str, str] | None = None,
    signed: bool = True,
) -> tuple[int, bytes]:
    """(HTTP status, body) of ``GET /-/usage/BUCKET``, signed with ``keys`` (default: root)."""
    url = usage_url(cluster, bucket, hours)
    access_key, secret_key = keys or (cluster.gateway["access_key"], cluster.gateway["secret_key"])
    credentials = sigv4_client.Credentials(access_key, secret_key, cluster.gateway["region"])
    headers = sigv4_client.sign("GET", url, credentials) if signed else {}
    return await fetch(url, headers)


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(yarl.URL(url, encoded=True), headers=headers or {}) as response,
    ):
        return response.status, await response.read()


def totals_of(document: dict[str, Any]) -> dict[str, int]:
    return {name: document[name] for name in TOTALS}


async def settled_usage(
    cluster: LocalCluster, bucket: str, expected: dict[str, int], hours: int | None = None
) -> dict[str, Any]:
    """The usage document once its totals are ``expected`` and nothing is pending."""
    deadline = time.monotonic() + SETTLE_S
    last: Any = None
    while True:
        status, body = await get_usage(cluster, bucket, hours=hours)
        last = (status, body[:2000])
        if status == 200:
            document: dict[str, Any] = json.loads(body)
            last = document
            if totals_of(document) == expected and not any(document["pending"].values()):
                return document
            overshoot = [name for name in TOTALS if document[name] > expected[name]]
            assert not overshoot, f"counted more than happened: {document} vs {expected}"
        if time.monotonic() > deadline:
            raise AssertionError(f"usage of {bucket} not {expected} after {SETTLE_S} s: {last}")
        await asyncio.sleep(0.25)  # poll interval


def s3_error_code(body: bytes) -> str:
    text = body.decode()
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else text


# ---------------------------------------------------------------- exact totals


async def test_every_byte_added_removed_and_retrieved_counts_once(
    local_cluster: LocalCluster, s3: Any
) -> None:
    bucket = unique("usage")
    s3.create_bucket(Bucket=bucket)
    big = data_of(9 * MiB + 123, 1)
    s3.put_object(Bucket=bucket, Key="small", Body=data_of(1000, 2))
    s3.put_object(Bucket=bucket, Key="big", Body=big)
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "small"})

    # Multipart: part 1 uploaded twice (the first attempt is replaced), part 3
    # uploaded but left out of the completed object: neither counts as added.
    upload = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    part = {"Bucket": bucket, "Key": "mp", "UploadId": upload}
    s3.upload_part(**part, PartNumber=1, Body=data_of(5 * MiB, 3))
    first = s3.upload_part(**part, PartNumber=1, Body=data_of(5 * MiB, 4))["ETag"]
    second = s3.upload_part(**part, PartNumber=2, Body=data_of(MiB + 7, 5))["ETag"]
    s3.upload_part(**part, PartNumber=3, Body=data_of(100, 6))
    s3.complete_multipart_upload(
        **part,
        MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": first}, {"PartNumber": 2, "ETag": second}]
        },
    )
    mp_size = 6 * MiB + 7
    # An aborted upload never became a version: nothing added, nothing removed.
    aborted = s3.create_multipart_upload(Bucket=bucket, Key="gone")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="gone", UploadId=aborted, PartNumber=1, Body=b"x" * MiB)
    s3.abort_multipart_upload(Bucket=bucket, Key="gone", UploadId=aborted)

    # Reads: whole, a range, one part of the multipart object; HEAD sends no body.
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == big
    ranged = s3.get_object(Bucket=bucket, Key="big", Range="bytes=100-1099")["Body"].read()
    assert ranged == big[100:1100]
    assert len(s3.get_object(Bucket=bucket, Key="mp", PartNumber=2)["Body"].read()) == MiB + 7
    s3.head_object(Bucket=bucket, Key="small")
    assert s3.get_object(Bucket=bucket, Key="empty")["Body"].read() == b""

    # Removals: an overwrite, a delete, a bulk delete (of a 0-byte object).
    s3.put_object(Bucket=bucket, Key="small", Body=data_of(2000, 7))
    s3.delete_object(Bucket=bucket, Key="copy")
    s3.delete_object(Bucket=bucket, Key="big")
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "empty"}]})
    s3.delete_object(Bucket=bucket, Key="never-existed")

    expected = {
        "bytes_added": 1000 + len(big) + 0 + 1000 + mp_size + 2000,
        "bytes_removed": 1000 + 1000 + len(big),
        "bytes_retrieved": len(big) + 1000 + MiB + 7,
    }
    document = await settled_usage(local_cluster, bucket, expected)
    assert document["bucket"] == bucket
    stored = sum(item["Size"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert document["bytes_added"] - document["bytes_removed"] == stored == mp_size + 2000

    # The last two hours hold all of it, and the hours add up to the totals.
    recent = await settled_usage(local_cluster, bucket, expected, hours=2)
    assert 1 <= len(recent["hourly"]) <= 2
    for name in TOTALS:
        assert sum(hour[name] for hour in recent["hourly"]) == expected[name]

    # `nimbus usage` signs its request and prints the same numbers.
    directory = str(local_cluster.directory)
    printed = json.loads(nimbus("usage", bucket, "--json", "--dir", directory).stdout)
    assert totals_of(printed) == expected
    assert printed["bucket_id"] == document["bucket_id"]
    table = nimbus("usage", bucket, "--hours", "2", "--dir", directory).stdout
    assert "total" in table and str(expected["bytes_added"]) in table


# ---------------------------------------------------------------- who may ask


async def test_usage_endpoint_is_signed_and_private(local_cluster: LocalCluster, s3: Any) -> None:
    bucket = unique("usage-private")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"12345")

    status, body = await get_usage(local_cluster, bucket, signed=False)
    assert (status, s3_error_code(body)) == (403, "AccessDenied")
    status, body = await get_usage(local_cluster, unique("no-such-bucket"))
    assert (status, s3_error_code(body)) == (404, "NoSuchBucket")
    status, body = await get_usage(local_cluster, bucket, hours=0)
    assert (status, s3_error_code(body)) == (400, "InvalidArgument")
    wrong = (local_cluster.gateway["access_key"], "not-the-secret")
    status, body = await get_usage(local_cluster, bucket, keys=wrong)
    assert (status, s3_error_code(body)) == (403, "SignatureDoesNotMatch")

    # Another user may not read root's bucket; they may read their own.
    directory = str(local_cluster.directory)
    user = json.loads(nimbus("admin", "user", "create", unique("u"), "--dir", directory).stdout)
    key = json.loads(nimbus("admin", "key", "create", user["user"], "--dir", directory).stdout)
    keys = (key["access_key"], key["secret_key"])
    status, body = await get_usage(local_cluster, bucket, keys=keys)
    assert (status, s3_error_code(body)) == (403, "AccessDenied")
    own = unique("usage-own")
    mine = boto3.client(
        "s3",
        endpoint_url=local_cluster.gateway["url"],
        aws_access_key_id=keys[0],
        aws_secret_access_key=keys[1],
        region_name=local_cluster.gateway["region"],
    )
    mine.create_bucket(Bucket=own)
    mine.put_object(Bucket=own, Key="k", Body=b"x" * 77)
    status, body = await get_usage(local_cluster, own, keys=keys)
    assert status == 200, body
    assert json.loads(body)["bucket"] == own

    # A presigned URL (botocore's own signer) works as well.
    request = AWSRequest(method="GET", url=usage_url(local_cluster, bucket, hours=3))
    S3SigV4QueryAuth(
        BotoCredentials(local_cluster.gateway["access_key"], local_cluster.gateway["secret_key"]),
        "s3",
        local_cluster.gateway["region"],
        expires=300,
    ).add_auth(request)
    assert request.url is not None
    status, body = await fetch(request.url)
    assert status == 200, body

    # The command: an unknown bucket fails plainly; --url takes the keys from the environment.
    failed = nimbus("usage", unique("nope"), "--dir", directory, check=False)
    assert failed.returncode == 1 and "NoSuchBucket" in failed.stderr
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": keys[0],
        "AWS_SECRET_ACCESS_KEY": keys[1],
        "AWS_DEFAULT_REGION": local_cluster.gateway["region"],
    }
    gateway_url = local_cluster.gateway["url"]
    by_url = subprocess.run(
        [sys.executable, "-m", "services.cli", "usage", own, "--json", "--url", gateway_url],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert by_url.returncode == 0, by_url.stderr
    assert json.loads(by_url.stdout)["bucket"] == own
    await settled_usage(
        local_cluster, own, {"bytes_added": 77, "bytes_removed": 0, "bytes_retrieved": 0}
    )


# ---------------------------------------------------------------- partial reads


async def test_a_client_going_away_counts_what_was_sent(
    local_cluster: LocalCluster, s3: Any
) -> None:
    bucket = unique("usage-cut")
    s3.create_bucket(Bucket=bucket)
    size = 48 * MiB
    s3.put_object(Bucket=bucket, Key="large", Body=data_of(size, 8))
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "large"}, ExpiresIn=300
    )
    async with aiohttp.ClientSession() as session:
        response = await session.get(url)
        assert response.status == 200
        await response.content.readexactly(256 * 1024)
        response.close()  # drop the connection with most of the body unread

    deadline = time.monotonic() + SETTLE_S
    while True:
        status, body = await get_usage(local_cluster, bucket)
        document = json.loads(body) if status == 200 else {}
        if document.get("bytes_retrieved") and not any(document["pending"].values()):
            break
        assert time.monotonic() < deadline, f"no retrieved bytes counted: {status} {body[:500]!r}"
        await asyncio.sleep(0.25)  # poll interval
    assert 256 * 1024 <= document["bytes_retrieved"] < size
    assert document["bytes_added"] == size


# ---------------------------------------------------------------- failures


async def test_usage_waits_for_the_accounting_service(local_cluster: LocalCluster, s3: Any) -> None:
    bucket = unique("usage-outage")
    s3.create_bucket(Bucket=bucket)
    os.kill(local_cluster.pid("accounting"), signal.SIGKILL)
    try:
        for i in range(5):
            s3.put_object(Bucket=bucket, Key=f"k{i}", Body=data_of(1000 + i, i))
        assert s3.get_object(Bucket=bucket, Key="k0")["Body"].read() == data_of(1000, 0)
        status, body = await get_usage(local_cluster, bucket)
        assert (status, s3_error_code(body)) == (503, "ServiceUnavailable")
        conn = await asyncpg.connect(local_cluster.description["database_url"])
        try:
            queued = await conn.fetchval(
                """SELECT sum(value) FROM accounting_outbox o JOIN bucket b ON b.id = o.bucket_id
                   WHERE b.name = $1""",
                bucket,
            )
        finally:
            await conn.close()
        assert queued == sum(1000 + i for i in range(5)) + 1000
    finally:
        await asyncio.to_thread(local_cluster.local, "up", "--nodes", "6", "--k", "4")
    await settled_usage(
        local_cluster,
        bucket,
        {"bytes_added": 5010, "bytes_removed": 0, "bytes_retrieved": 1000},
    )


async def test_exactly_once_across_a_gateway_kill(local_cluster: LocalCluster) -> None:
    s3: Any = local_cluster.s3(retries={"max_attempts": 1})
    bucket = unique("usage-kill")
    s3.create_bucket(Bucket=bucket)
    sizes = [random.Random(i).randrange(1, 300_000) for i in range(40)]

    def put(i: int) -> None:
        s3.put_object(Bucket=bucket, Key=f"k{i}", Body=data_of(sizes[i], i))

    def get(i: int) -> int:
        return len(s3.get_object(Bucket=bucket, Key=f"k{i}")["Body"].read())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(len(sizes))))
        retrieved = sum(pool.map(get, range(0, len(sizes), 3)))
    # Every PUT and GET has been answered. Freeze the gateway where it is
    # (perhaps in the middle of a delivery), then play a gateway that
    # delivered half of what is still queued and died before it could forget
    # those rows: they are counted now, and will be sent again.
    gateway = local_cluster.pid("gateway")
    os.kill(gateway, signal.SIGSTOP)
    try:
        conn = await asyncpg.connect(local_cluster.description["database_url"])
        try:
            queued = await conn.fetch(
                """SELECT o.id, o.bucket_id, o.event, o.value,
                          extract(epoch FROM o.occurred_at)::float8 AS at
                   FROM accounting_outbox o JOIN bucket b ON b.id = o.bucket_id
                   WHERE b.name = $1 ORDER BY o.id""",
                bucket,
            )
        finally:
            await conn.close()
        client = await RpcClient.connect(local_cluster.description["accounting"]["query"], 30)
        try:
            for row in queued[::2]:
                reply = await client.request(
                    {
                        "message-type": "space-accounting-detail",
                        "collection-id": row["bucket_id"],
                        "event": row["event"],
                        "value": row["value"],
                        "timestamp": row["at"],
                        "detail-id": f"outbox-{row['id']}",
                    }
                )
                assert reply.header["result"] == "success", reply.header
        finally:
            await client.close()
    finally:
        os.kill(gateway, signal.SIGKILL)
    await asyncio.to_thread(local_cluster.local, "up", "--nodes", "6", "--k", "4")
    await settled_usage(
        local_cluster,
        bucket,
        {"bytes_added": sum(sizes), "bytes_removed": 0, "bytes_retrieved": retrieved},
    )
