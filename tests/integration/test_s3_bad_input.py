"""Bad S3 requests get AWS's error code and status, as S3 XML, and store nothing.

Requests are signed by botocore's own SigV4 signer and sent raw (aiohttp, or
asyncio streams where the HTTP framing itself is wrong), so that each test
controls exactly what reaches the gateway. After each refusal the key is
checked absent: not readable, not listed, and no node holds a final (or
still open) share of it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import time
import uuid
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import aiohttp
import asyncpg
import boto3
import crc32c
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from botocore.httpchecksum import AwsChunkedWrapper, Crc32Checksum, Sha256Checksum

from tests.integration.conftest import LocalCluster

MiB = 1024 * 1024
SEQUENCE = 4 * MiB
UNSIGNED = "UNSIGNED-PAYLOAD"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


# ---------------------------------------------------------------- requests


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class _Signer(S3SigV4Auth):
    """botocore's S3 SigV4 signer with the payload hash chosen by the test."""

    def __init__(self, credentials: Credentials, region: str, payload_hash: str) -> None:
        super().__init__(credentials, "s3", region)
        self._payload_hash = payload_hash

    def payload(self, request: Any) -> str:
        return self._payload_hash


def sign(
    cluster: LocalCluster,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    payload_hash: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    signed_at: datetime | None = None,
) -> dict[str, str]:
    """The headers of ``method target`` signed by botocore (Host included)."""
    gateway = cluster.gateway
    request = AWSRequest(method=method, url=gateway["url"] + target, data=body, headers=headers)
    credentials = Credentials(
        access_key or gateway["access_key"], secret_key or gateway["secret_key"]
    )
    signer = _Signer(
        credentials,
        gateway["region"],
        payload_hash if payload_hash is not None else hashlib.sha256(body).hexdigest(),
    )
    moment = (signed_at or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=moment):
        signer.add_auth(request)
    signed = dict(request.headers.items())
    signed["Host"] = gateway["url"].removeprefix("http://")
    return signed


async def send(
    cluster: LocalCluster,
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    **signing: Any,
) -> Reply:
    """Sign and send one request with aiohttp."""
    signed = sign(cluster, method, target, body, headers, **signing)
    return await send_raw(cluster, method, target, body, signed)


async def send_raw(
    cluster: LocalCluster, method: str, target: str, body: bytes, headers: dict[str, str]
) -> Reply:
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.request(
            method,
            cluster.gateway["url"] + target,
            data=body,
            headers=headers,
            skip_auto_headers=["Content-Type"],
        ) as response,
    ):
        data = await response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, data)


def assert_error(reply: Reply, code: str, status: int) -> ET.Element:
    """An S3 error document with ``code``, a message, and the header's request id."""
    assert reply.status == status, (reply.status, reply.body[:500])
    assert reply.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(reply.body)
    assert root.tag == "Error"
    assert root.findtext("Code") == code, reply.body[:500]
    assert root.findtext("Message")
    request_id = root.findtext("RequestId")
    assert request_id and request_id == reply.headers["x-amz-request-id"]
    assert root.findtext("HostId") == reply.headers["x-amz-id-2"]
    return root


@pytest.fixture(scope="session")
def s3_once(local_cluster: LocalCluster) -> Any:
    """boto3 without retries: it retries BadDigest, in case the body was damaged on the way."""
    return local_cluster.s3(retries={"total_max_attempts": 1})


def client_error(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    response: Any = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


async def read_response(reader: asyncio.StreamReader) -> Reply:
    """One HTTP/1.1 response (with Content-Length) from a raw connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(int(status_line.split()[1]), headers, body)


def raw_head(method: str, target: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_raw(cluster: LocalCluster) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = cluster.gateway["url"].removeprefix("http://").rsplit(":", 1)
    return await asyncio.open_connection(host, int(port))


# ---------------------------------------------------------------- nothing stored


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    name = f"bad-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=name, Key=item["Key"])
    s3.delete_bucket(Bucket=name)


async def shares_of(cluster: LocalCluster, bucket: str, key: str) -> dict[str, int]:
    """How many segments of (bucket, key) the nodes hold, by status ('A', 'F', 'C'...)."""
    central = await asyncpg.connect(cluster.description["database_url"])
    try:
        bucket_id = await central.fetchval("SELECT id FROM bucket WHERE name = $1", bucket)
    finally:
        await central.close()
    counts: dict[str, int] = {}
    if bucket_id is None:
        return counts
    for node in cluster.nodes:
        conn = await asyncpg.connect(node["database_url"])
        try:
            rows = await conn.fetch(
                "SELECT status, count(*) AS n FROM segment "
                "WHERE collection_id = $1 AND key = $2 GROUP BY status",
                bucket_id,
                key,
            )
        finally:
            await conn.close()
        for row in rows:
            counts[row["status"]] = counts.get(row["status"], 0) + row["n"]
    return counts


async def wait_until(
    condition: Callable[[], Awaitable[bool]], timeout_s: float = 15.0, what: str = ""
) -> None:
    """Poll ``condition`` until it holds (a readiness wait, not a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.05)  # poll interval


async def assert_nothing_stored(cluster: LocalCluster, s3: Any, bucket: str, key: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key=key)
    assert client_error(excinfo)[1] == 404
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key)
    assert key not in [item["Key"] for item in listed.get("Contents", [])]

    async def settled() -> bool:
        return "A" not in await shares_of(cluster, bucket, key)

    # A refused body's archives are cancelled; none is left open or final.
    await wait_until(settled, what=f"the archives of {key!r} to be cancelled")
    assert "F" not in await shares_of(cluster, bucket, key)


def data_of(size: int) -> bytes:
    return (uuid.uuid4().bytes * (size // 16 + 1))[:size]


# ---------------------------------------------------------------- authentication


async def test_wrong_signature(local_cluster: LocalCluster, s3: Any, bucket: str) -> None:
    body = data_of(SEQUENCE + 10)
    reply = await send(local_cluster, "PUT", f"/{bucket}/k", body, secret_key="not-the-secret")
    root = assert_error(reply, "SignatureDoesNotMatch", 403)
    assert root.findtext("AWSAccessKeyId") == local_cluster.gateway["access_key"]
    await assert_nothing_stored(local_cluster, s3, bucket, "k")

    # The signature covers the headers it names: changing one after signing breaks it.
    headers = sign(local_cluster, "PUT", f"/{bucket}/k", b"abc", {"Content-Type": "text/plain"})
    headers["Content-Type"] = "text/html"
    reply = await send_raw(local_cluster, "PUT", f"/{bucket}/k", b"abc", headers)
    assert_error(reply, "SignatureDoesNotMatch", 403)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")

    bad_client = boto3.client(
        "s3",
        endpoint_url=local_cluster.gateway["url"],
        aws_access_key_id=local_cluster.gateway["access_key"],
        aws_secret_access_key="wrong-secret",
        region_name=local_cluster.gateway["region"],
    )
    with pytest.raises(ClientError) as excinfo:
        bad_client.put_object(Bucket=bucket, Key="k", Body=b"x")
    assert client_error(excinfo) == ("SignatureDoesNotMatch", 403)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


async def test_unknown_access_key(local_cluster: LocalCluster, s3: Any, bucket: str) -> None:
    reply = await send(
        local_cluster, "PUT", f"/{bucket}/k", b"data", access_key="NKUNKNOWNKEY0000000"
    )
    root = assert_error(reply, "InvalidAccessKeyId", 403)
    assert root.findtext("AWSAccessKeyId") == "NKUNKNOWNKEY0000000"
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


async def test_unsigned_request_is_refused(
    local_cluster: LocalCluster, s3: Any, bucket: str
) -> None:
    reply = await send_raw(local_cluster, "PUT", f"/{bucket}/k", b"data", {})
    assert_error(reply, "AccessDenied", 403)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


@pytest.mark.parametrize("signature_version", [None, "s3v4"])
async def test_expired_presigned_put(
    local_cluster: LocalCluster, s3: Any, bucket: str, signature_version: str | None
) -> None:
    presigner = local_cluster.s3(signature_version=signature_version) if signature_version else s3
    signed_at = datetime.now(UTC) - timedelta(hours=1)
    with (
        mock.patch(
            "botocore.auth.get_current_datetime",
            return_value=signed_at.replace(tzinfo=None),
        ),
        mock.patch("botocore.auth.time.time", return_value=signed_at.timestamp()),
    ):
        url = presigner.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": "k"}, ExpiresIn=60
        )
    target = url.removeprefix(local_cluster.gateway["url"])
    reply = await send_raw(local_cluster, "PUT", target, b"too late", {})
    root = assert_error(reply, "AccessDenied", 403)
    assert "expired" in (root.findtext("Message") or "")
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


@pytest.mark.parametrize(
    "skew", [timedelta(minutes=-20), timedelta(minutes=20)], ids=["past", "future"]
)
async def test_skewed_clock(
    local_cluster: LocalCluster, s3: Any, bucket: str, skew: timedelta
) -> None:
    when = datetime.now(UTC) + skew
    reply = await send(local_cluster, "PUT", f"/{bucket}/k", b"data", signed_at=when)
    root = assert_error(reply, "RequestTimeTooSkewed", 403)
    assert root.findtext("RequestTime") == when.strftime("%Y%m%dT%H%M%SZ")
    await assert_nothing_stored(local_cluster, s3, bucket, "k")
    # Within the allowed skew (15 minutes, as S3) the same request is accepted.
    near = datetime.now(UTC) + skew / 4
    reply = await send(local_cluster, "PUT", f"/{bucket}/near", b"data", signed_at=near)
    assert reply.status == 200, reply.body


# ---------------------------------------------------------------- body checks


@pytest.mark.parametrize("size", [10, 2 * SEQUENCE + 5], ids=["small", "two-sequences"])
async def test_wrong_content_md5(
    local_cluster: LocalCluster, s3: Any, s3_once: Any, bucket: str, size: int
) -> None:
    body = data_of(size)
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    reply = await send(local_cluster, "PUT", f"/{bucket}/k", body, {"Content-MD5": wrong})
    assert_error(reply, "BadDigest", 400)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")
    # boto3 sends the header as given.
    with pytest.raises(ClientError) as excinfo:
        s3_once.put_object(Bucket=bucket, Key="k", Body=body, ContentMD5=wrong)
    assert client_error(excinfo) == ("BadDigest", 400)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")
    # The right one is accepted.
    right = base64.b64encode(hashlib.md5(body).digest()).decode()
    s3.put_object(Bucket=bucket, Key="right", Body=body, ContentMD5=right)


@pytest.mark.parametrize(
    "content_md5",
    ["not base64!", base64.b64encode(b"fifteen bytes!!").decode(), ""],
    ids=["not-base64", "15-bytes", "empty"],
)
async def test_malformed_content_md5(
    local_cluster: LocalCluster, s3: Any, bucket: str, content_md5: str
) -> None:
    reply = await send(local_cluster, "PUT", f"/{bucket}/k", b"data", {"Content-MD5": content_md5})
    assert_error(reply, "InvalidDigest", 400)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


async def test_wrong_content_md5_on_a_part(
    local_cluster: LocalCluster, s3: Any, s3_once: Any, bucket: str
) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    wrong = base64.b64encode(hashlib.md5(b"x").digest()).decode()
    with pytest.raises(ClientError) as excinfo:
        s3_once.upload_part(
            Bucket=bucket, Key="k", UploadId=upload_id, PartNumber=1, Body=b"part", ContentMD5=wrong
        )
    assert client_error(excinfo) == ("BadDigest", 400)
    assert s3.list_parts(Bucket=bucket, Key="k", UploadId=upload_id).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=bucket, Key="k", UploadId=upload_id)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


async def test_body_not_matching_the_signed_sha256(
    local_cluster: LocalCluster, s3: Any, bucket: str
) -> None:
    body = data_of(SEQUENCE + 100)
    reply = await send(
        local_cluster,
        "PUT",
        f"/{bucket}/k",
        body,
        payload_hash=hashlib.sha256(body + b"!").hexdigest(),
    )
    assert_error(reply, "XAmzContentSHA256Mismatch", 400)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


async def test_body_shorter_than_content_length(
    local_cluster: LocalCluster, s3: Any, bucket: str
) -> None:
    """The client sends less than it declared and half-closes its side.

    aiohttp treats end-of-input as the end of the connection (it cannot write
    on a half-closed socket), so the gateway cannot answer; the body read
    fails, every archive started is cancelled, and nothing is stored. A
    client that keeps the connection open instead gets 400 RequestTimeout
    after the gateway's idle timeout (30 s; not waited for here).
    """
    declared = 2 * SEQUENCE + 1000
    target = f"/{bucket}/short"
    headers = sign(
        local_cluster,
        "PUT",
        target,
        headers={"Content-Length": str(declared)},
        payload_hash=UNSIGNED,
    )
    reader, writer = await open_raw(local_cluster)
    writer.write(raw_head("PUT", target, headers))
    sent = data_of(SEQUENCE + 500 * 1024)  # more than a sequence: archives are under way
    writer.write(sent)
    await writer.drain()
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    if answer:  # a server that can answer must say IncompleteBody
        status_line = answer.split(b"\r\n", 1)[0]
        assert b" 400 " in status_line, answer[:300]
        assert b"<Code>IncompleteBody</Code>" in answer
    await assert_nothing_stored(local_cluster, s3, bucket, "short")


async def test_aws_chunked_body_shorter_than_its_decoded_length(
    local_cluster: LocalCluster, s3: Any, bucket: str
) -> None:
    data = data_of(1000)
    body, headers = aws_chunked(data, "crc32")
    headers["x-amz-decoded-content-length"] = str(len(data) + 100)
    reply = await send(
        local_cluster, "PUT", f"/{bucket}/k", body, headers, payload_hash=UNSIGNED_TRAILER
    )
    assert_error(reply, "IncompleteBody", 400)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


async def test_body_longer_than_content_length(
    local_cluster: LocalCluster, s3: Any, bucket: str
) -> None:
    """The signed sha256 covers more bytes than Content-Length lets the server read.

    The gateway reads exactly Content-Length bytes, so their hash does not
    match the signed one: XAmzContentSHA256Mismatch. The surplus arrives as
    the start of a next request, which HTTP parsing refuses (400) and the
    connection is closed. Sent in one write, the surplus is seen while the
    first request is parsed and aiohttp answers 400 for the connection
    without running the request. Either way nothing is stored.
    """
    body = data_of(3000)
    declared = 2000
    target = f"/{bucket}/long"
    headers = sign(local_cluster, "PUT", target, body)
    headers["Content-Length"] = str(declared)

    reader, writer = await open_raw(local_cluster)
    writer.write(raw_head("PUT", target, headers) + body[:declared])
    await writer.drain()
    reply = await read_response(reader)
    assert_error(reply, "XAmzContentSHA256Mismatch", 400)
    writer.write(body[declared:])
    await writer.drain()
    rest = await reader.read()
    assert rest == b"" or b" 400 " in rest.split(b"\r\n")[0]
    writer.close()
    await assert_nothing_stored(local_cluster, s3, bucket, "long")

    reader, writer = await open_raw(local_cluster)
    writer.write(raw_head("PUT", target, headers) + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    assert b" 400 " in answer.split(b"\r\n", 1)[0], answer[:200]
    await assert_nothing_stored(local_cluster, s3, bucket, "long")


def aws_chunked(
    data: bytes, algorithm: str, chunk_size: int = 64 * 1024
) -> tuple[bytes, dict[str, str]]:
    """``data`` as an aws-chunked body with a trailing checksum, as SDKs send over TLS."""
    name = f"x-amz-checksum-{algorithm}"
    if algorithm == "crc32c":
        value = base64.b64encode(crc32c.crc32c(data).to_bytes(4, "big")).decode()
        body = AwsChunkedWrapper(io.BytesIO(data), chunk_size=chunk_size).read()
        body = body.removesuffix(b"0\r\n\r\n") + f"0\r\n{name}:{value}\r\n\r\n".encode()
    else:
        checksum_cls = {"crc32": Crc32Checksum, "sha256": Sha256Checksum}[algorithm]
        body = AwsChunkedWrapper(
            io.BytesIO(data), checksum_cls=checksum_cls, checksum_name=name, chunk_size=chunk_size
        ).read()
    headers = {
        "Content-Encoding": "aws-chunked",
        "x-amz-trailer": name,
        "x-amz-decoded-content-length": str(len(data)),
        "Content-Length": str(len(body)),
    }
    return body, headers


def corrupt_trailer(body: bytes, algorithm: str) -> bytes:
    start = body.rindex(f"x-amz-checksum-{algorithm}:".encode())
    end = body.index(b"\r\n", start)
    digest_size = 32 if algorithm == "sha256" else 4
    wrong = base64.b64encode(bytes(digest_size)).decode()
    return body[:start] + f"x-amz-checksum-{algorithm}:{wrong}".encode() + body[end:]


@pytest.mark.parametrize(
    ("algorithm", "size"),
    [("crc32", 1000), ("crc32c", 2 * SEQUENCE + 17), ("sha256", 100_000)],
)
async def test_wrong_trailing_checksum(
    local_cluster: LocalCluster, s3: Any, bucket: str, algorithm: str, size: int
) -> None:
    data = data_of(size)
    body, headers = aws_chunked(data, algorithm)
    # The same body with the right trailer is stored (and framing is not kept).
    reply = await send(
        local_cluster, "PUT", f"/{bucket}/right", body, headers, payload_hash=UNSIGNED_TRAILER
    )
    assert reply.status == 200, reply.body
    assert reply.headers["etag"] == f'"{hashlib.md5(data).hexdigest()}"'
    got = s3.get_object(Bucket=bucket, Key="right")
    assert got["Body"].read() == data
    assert "ContentEncoding" not in got

    bad = corrupt_trailer(body, algorithm)
    assert len(bad) == len(body)
    reply = await send(
        local_cluster, "PUT", f"/{bucket}/k", bad, headers, payload_hash=UNSIGNED_TRAILER
    )
    assert_error(reply, "BadDigest", 400)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


async def test_wrong_checksum_header(
    local_cluster: LocalCluster, s3: Any, s3_once: Any, bucket: str
) -> None:
    wrong = base64.b64encode(zlib.crc32(b"other").to_bytes(4, "big")).decode()
    with pytest.raises(ClientError) as excinfo:
        s3_once.put_object(Bucket=bucket, Key="k", Body=b"data", ChecksumCRC32=wrong)
    assert client_error(excinfo) == ("BadDigest", 400)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


# ---------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["UpperCase", "a_b", "ab", "x" * 64, "a..b", "10.0.0.1"])
async def test_invalid_bucket_name(local_cluster: LocalCluster, s3: Any, name: str) -> None:
    reply = await send(local_cluster, "PUT", f"/{name}")
    root = assert_error(reply, "InvalidBucketName", 400)
    assert root.findtext("BucketName") == name
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


async def test_key_too_long(local_cluster: LocalCluster, s3: Any, bucket: str) -> None:
    for key in ("k" * 1025, "é" * 513):  # 1025 and 1026 bytes of UTF-8
        with pytest.raises(ClientError) as excinfo:
            s3.put_object(Bucket=bucket, Key=key, Body=b"data")
        assert client_error(excinfo) == ("KeyTooLongError", 400)
        with pytest.raises(ClientError) as excinfo:
            s3.create_multipart_upload(Bucket=bucket, Key=key)
        assert client_error(excinfo) == ("KeyTooLongError", 400)
        await assert_nothing_stored(local_cluster, s3, bucket, key)
    s3.put_object(Bucket=bucket, Key="source", Body=b"data")
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(
            Bucket=bucket, Key="k" * 1025, CopySource={"Bucket": bucket, "Key": "source"}
        )
    assert client_error(excinfo) == ("KeyTooLongError", 400)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # 1024 bytes is the limit, not over it.
    s3.put_object(Bucket=bucket, Key="k" * 1024, Body=b"ok")
    assert s3.get_object(Bucket=bucket, Key="k" * 1024)["Body"].read() == b"ok"


async def test_metadata_too_large(local_cluster: LocalCluster, s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="k", Body=b"x", Metadata={"big": "x" * 2100})
    assert client_error(excinfo) == ("MetadataTooLarge", 400)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


@pytest.mark.parametrize(
    ("method", "target", "argument"),
    [
        ("GET", "?list-type=2&max-keys=-1", "max-keys"),
        ("GET", "?list-type=2&max-keys=ten", "max-keys"),
        ("GET", "?list-type=2&continuation-token=not-a-token%21", "continuation-token"),
        ("GET", "?list-type=2&encoding-type=base64", "encoding-type"),
        ("PUT", "/k?partNumber=0&uploadId=u", "partNumber"),
        ("PUT", "/k?partNumber=10001&uploadId=u", "partNumber"),
    ],
)
async def test_invalid_arguments(
    local_cluster: LocalCluster, s3: Any, bucket: str, method: str, target: str, argument: str
) -> None:
    reply = await send(local_cluster, method, f"/{bucket}{target}", b"")
    root = assert_error(reply, "InvalidArgument", 400)
    assert root.findtext("ArgumentName") == argument
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


async def test_conditional_write_is_refused_not_ignored(
    local_cluster: LocalCluster, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="keep", Body=b"original")
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="keep", Body=b"overwrite", IfNoneMatch="*")
    assert client_error(excinfo) == ("NotImplemented", 501)
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read() == b"original"
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=bucket, Key="k", Body=b"new", IfNoneMatch="*")
    assert client_error(excinfo) == ("NotImplemented", 501)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


# ---------------------------------------------------------------- XML bodies


def md5_header(body: bytes) -> dict[str, str]:
    return {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()}


@pytest.mark.parametrize(
    "document",
    [
        b"<Delete><Object><Key>a</Key></Object>",  # not closed
        b"not xml at all",
        b"<Delete></Delete>",  # no Object
        b"<Delete><Object><VersionId>1</VersionId></Object></Delete>",  # no Key
        b"<Other><Object><Key>a</Key></Object></Other>",  # wrong root
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY e "a">]><Delete><Object><Key>&e;</Key>'
        b"</Object></Delete>",  # DTDs are refused
    ],
    ids=["unclosed", "not-xml", "no-object", "no-key", "wrong-root", "dtd"],
)
async def test_malformed_delete_objects(
    local_cluster: LocalCluster, s3: Any, bucket: str, document: bytes
) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"keep me")
    reply = await send(local_cluster, "POST", f"/{bucket}?delete", document, md5_header(document))
    assert_error(reply, "MalformedXML", 400)
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"keep me"


async def test_delete_objects_without_content_md5(
    local_cluster: LocalCluster, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="a", Body=b"keep me")
    document = b"<Delete><Object><Key>a</Key></Object></Delete>"
    reply = await send(local_cluster, "POST", f"/{bucket}?delete", document)
    assert_error(reply, "InvalidRequest", 400)
    wrong = md5_header(b"other")
    reply = await send(local_cluster, "POST", f"/{bucket}?delete", document, wrong)
    assert_error(reply, "BadDigest", 400)
    assert s3.get_object(Bucket=bucket, Key="a")["Body"].read() == b"keep me"


@pytest.fixture
def open_upload(s3: Any, bucket: str) -> tuple[str, str, list[str]]:
    """An upload of 'mp' with parts 1 and 2 (5 MiB each) and 3 (small): (key, id, etags)."""
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    etags = []
    for number, size in ((1, 5 * MiB), (2, 5 * MiB), (3, 1000)):
        response = s3.upload_part(
            Bucket=bucket, Key="mp", UploadId=upload_id, PartNumber=number, Body=data_of(size)
        )
        etags.append(response["ETag"])
    return "mp", upload_id, etags


async def assert_upload_still_open(
    local_cluster: LocalCluster, s3: Any, bucket: str, upload: tuple[str, str, list[str]]
) -> None:
    key, upload_id, etags = upload
    parts = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)["Parts"]
    assert [p["ETag"] for p in parts] == etags
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


@pytest.mark.parametrize(
    "document",
    [
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber>",
        b"<CompleteMultipartUpload></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><ETag>x</ETag></Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>x</ETag></Part>"
        b"</CompleteMultipartUpload>",
        b"",
    ],
    ids=["unclosed", "no-parts", "no-number", "bad-number", "empty"],
)
async def test_malformed_complete_multipart_upload(
    local_cluster: LocalCluster,
    s3: Any,
    bucket: str,
    open_upload: tuple[str, str, list[str]],
    document: bytes,
) -> None:
    key, upload_id, _ = open_upload
    reply = await send(local_cluster, "POST", f"/{bucket}/{key}?uploadId={upload_id}", document)
    assert_error(reply, "MalformedXML", 400)
    await assert_upload_still_open(local_cluster, s3, bucket, open_upload)


def complete(
    s3: Any, bucket: str, upload: tuple[str, str, list[str]], parts: list[tuple[int, str]]
) -> Any:
    key, upload_id, _ = upload
    return s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in parts]},
    )


async def test_parts_out_of_order(
    local_cluster: LocalCluster, s3: Any, bucket: str, open_upload: tuple[str, str, list[str]]
) -> None:
    etags = open_upload[2]
    for parts in (
        [(2, etags[1]), (1, etags[0]), (3, etags[2])],
        [(1, etags[0]), (1, etags[0]), (3, etags[2])],
    ):
        with pytest.raises(ClientError) as excinfo:
            complete(s3, bucket, open_upload, parts)
        assert client_error(excinfo) == ("InvalidPartOrder", 400)
        await assert_upload_still_open(local_cluster, s3, bucket, open_upload)


async def test_missing_or_wrong_part(
    local_cluster: LocalCluster, s3: Any, bucket: str, open_upload: tuple[str, str, list[str]]
) -> None:
    etags = open_upload[2]
    for parts in (
        [(1, etags[0]), (2, etags[1]), (4, etags[2])],  # part 4 was never uploaded
        [(1, etags[0]), (2, etags[0]), (3, etags[2])],  # part 2 has another ETag
    ):
        with pytest.raises(ClientError) as excinfo:
            complete(s3, bucket, open_upload, parts)
        assert client_error(excinfo) == ("InvalidPart", 400)
        await assert_upload_still_open(local_cluster, s3, bucket, open_upload)
    # Leaving a part out is allowed: the object is the parts listed, and the
    # part left out is destroyed on the nodes (by the gateway's reaper).
    conjoined = await conjoined_parts(local_cluster, open_upload[1])
    done = complete(s3, bucket, open_upload, [(1, etags[0]), (3, etags[2])])
    assert done["ETag"].endswith('-2"')
    assert s3.head_object(Bucket=bucket, Key="mp")["ContentLength"] == 5 * MiB + 1000

    async def part_two_destroyed() -> bool:
        return await final_shares(local_cluster, bucket, "mp", conjoined[2]) == 0

    await wait_until(part_two_destroyed, timeout_s=60, what="the unlisted part's destruction")
    assert await final_shares(local_cluster, bucket, "mp", conjoined[1]) == 6
    assert await final_shares(local_cluster, bucket, "mp", conjoined[3]) == 6
    assert len(s3.get_object(Bucket=bucket, Key="mp")["Body"].read()) == 5 * MiB + 1000


async def conjoined_parts(cluster: LocalCluster, upload_id: str) -> dict[int, int]:
    """Part number -> the conjoined part its shares are stored as."""
    conn = await asyncpg.connect(cluster.description["database_url"])
    try:
        rows = await conn.fetch(
            "SELECT part_number, conjoined_part FROM multipart_part WHERE upload_id = $1",
            upload_id,
        )
    finally:
        await conn.close()
    return {row["part_number"]: row["conjoined_part"] for row in rows}


async def final_shares(cluster: LocalCluster, bucket: str, key: str, conjoined_part: int) -> int:
    central = await asyncpg.connect(cluster.description["database_url"])
    try:
        bucket_id = await central.fetchval("SELECT id FROM bucket WHERE name = $1", bucket)
    finally:
        await central.close()
    total = 0
    for node in cluster.nodes:
        conn = await asyncpg.connect(node["database_url"])
        try:
            total += await conn.fetchval(
                "SELECT count(*) FROM segment WHERE collection_id = $1 AND key = $2 "
                "AND conjoined_part = $3 AND status = 'F'",
                bucket_id,
                key,
                conjoined_part,
            )
        finally:
            await conn.close()
    return total


async def test_unknown_upload_id(local_cluster: LocalCluster, s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part(Bucket=bucket, Key="k", UploadId="nope", PartNumber=1, Body=b"x")
    assert client_error(excinfo) == ("NoSuchUpload", 404)
    await assert_nothing_stored(local_cluster, s3, bucket, "k")


# ---------------------------------------------------------------- reads


async def test_unsatisfiable_range(local_cluster: LocalCluster, s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"0123456789")
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    for key, header, size in (
        ("k", "bytes=10-", 10),
        ("k", "bytes=100-200", 10),
        ("k", "bytes=-0", 10),
        ("empty", "bytes=0-", 0),
    ):
        reply = await send(local_cluster, "GET", f"/{bucket}/{key}", headers={"Range": header})
        root = assert_error(reply, "InvalidRange", 416)
        assert reply.headers["content-range"] == f"bytes */{size}"
        assert root.findtext("RangeRequested") == header
        assert root.findtext("ActualObjectSize") == str(size)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"0123456789"


async def test_missing_key_and_bucket_error_documents(
    local_cluster: LocalCluster, bucket: str
) -> None:
    reply = await send(local_cluster, "GET", f"/{bucket}/nope%20nope")
    root = assert_error(reply, "NoSuchKey", 404)
    assert root.findtext("Key") == "nope nope"
    reply = await send(local_cluster, "GET", f"/no-such-bucket-{uuid.uuid4().hex[:8]}/k")
    assert_error(reply, "NoSuchBucket", 404)
    reply = await send(local_cluster, "GET", f"/{bucket}/k?tagging")
    assert_error(reply, "NotImplemented", 501)
    reply = await send(local_cluster, "PATCH", f"/{bucket}/k")
    assert_error(reply, "MethodNotAllowed", 405)
