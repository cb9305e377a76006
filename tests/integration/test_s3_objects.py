"""The S3 API through boto3 (newest, default settings) against the local cluster.

Buckets, objects of every interesting size (0 B, one sequence, several
sequences, 100 MiB), stored headers, copies, ranges, conditional reads,
listings, multipart uploads and presigned URLs. Every object read back is
compared byte for byte (md5 of what was sent against md5 of what came back).
Each test works in its own bucket: the cluster is shared by the session.
"""

from __future__ import annotations

import hashlib
import random
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import asyncpg
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from services.gateway import queries
from services.gateway.secrets import SecretBox, new_access_key
from tests.integration.conftest import LocalCluster

MiB = 1024 * 1024
#: The gateway's default sequence size (GatewayConfig.sequence_size).
SEQUENCE = 4 * MiB
S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


# ---------------------------------------------------------------- helpers


def unique(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a boto3 ClientError."""
    response: Any = excinfo.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def status_of(response: Any) -> int:
    status: int = response["ResponseMetadata"]["HTTPStatusCode"]
    return status


def read_body(response: Any) -> bytes:
    data: bytes = response["Body"].read()
    return data


def empty_bucket(s3: Any, bucket: str) -> None:
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    """A fresh bucket of the root user, emptied and deleted afterwards."""
    name = unique()
    s3.create_bucket(Bucket=name)
    yield name
    empty_bucket(s3, name)
    s3.delete_bucket(Bucket=name)


def put(s3: Any, bucket: str, key: str, data: bytes, **extra: Any) -> str:
    response = s3.put_object(Bucket=bucket, Key=key, Body=data, **extra)
    etag: str = response["ETag"]
    assert etag == f'"{md5(data)}"'
    return etag


def get(s3: Any, bucket: str, key: str, **extra: Any) -> bytes:
    return read_body(s3.get_object(Bucket=bucket, Key=key, **extra))


def list_v2_all(s3: Any, bucket: str, **params: Any) -> tuple[list[str], list[str], int]:
    """(keys, common prefixes, number of pages), following continuation tokens by hand."""
    keys: list[str] = []
    prefixes: list[str] = []
    pages = 0
    token: str | None = None
    while True:
        extra = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=bucket, **params, **extra)
        pages += 1
        keys += [item["Key"] for item in page.get("Contents", [])]
        prefixes += [item["Prefix"] for item in page.get("CommonPrefixes", [])]
        assert page["KeyCount"] == len(page.get("Contents", [])) + len(
            page.get("CommonPrefixes", [])
        )
        if not page["IsTruncated"]:
            assert "NextContinuationToken" not in page
            return keys, prefixes, pages
        token = page["NextContinuationToken"]
        assert token


def http(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request (no SDK in the way): status, headers, body."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers.items()), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers.items()), error.read()


def signed_http(
    cluster: LocalCluster,
    method: str,
    target: str,
    data: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """A request to ``target`` (path and query) signed with SigV4 by botocore."""
    gateway = cluster.gateway
    request = AWSRequest(method=method, url=gateway["url"] + target, data=data, headers=headers)
    request.headers["x-amz-content-sha256"] = hashlib.sha256(data).hexdigest()
    credentials = Credentials(gateway["access_key"], gateway["secret_key"])
    S3SigV4Auth(credentials, "s3", gateway["region"]).add_auth(request)
    assert request.url is not None
    return http(method, request.url, data or None, dict(request.headers.items()))


def error_code(body: bytes) -> str:
    root = ET.fromstring(body)
    assert root.tag == "Error"
    return root.findtext("Code") or ""


# ---------------------------------------------------------------- buckets


def test_bucket_create_head_list_delete(s3: Any) -> None:
    name = unique()
    s3.create_bucket(Bucket=name)
    try:
        assert status_of(s3.head_bucket(Bucket=name)) == 200
        assert name in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        with pytest.raises(ClientError) as excinfo:
            s3.create_bucket(Bucket=name)
        assert error_of(excinfo) == ("BucketAlreadyOwnedByYou", 409)

        put(s3, name, "k", b"x")
        with pytest.raises(ClientError) as excinfo:
            s3.delete_bucket(Bucket=name)
        assert error_of(excinfo) == ("BucketNotEmpty", 409)
        assert get(s3, name, "k") == b"x"

        s3.delete_object(Bucket=name, Key="k")
        assert status_of(s3.delete_bucket(Bucket=name)) == 204
    finally:
        try:
            empty_bucket(s3, name)
            s3.delete_bucket(Bucket=name)
        except ClientError:
            pass
    with pytest.raises(ClientError) as excinfo:
        s3.head_bucket(Bucket=name)
    assert error_of(excinfo) == ("404", 404)
    with pytest.raises(ClientError) as excinfo:
        s3.list_objects_v2(Bucket=name)
    assert error_of(excinfo) == ("NoSuchBucket", 404)
    assert name not in [b["Name"] for b in s3.list_buckets()["Buckets"]]


def test_bucket_with_an_open_upload_is_not_empty(s3: Any, bucket: str) -> None:
    upload = s3.create_multipart_upload(Bucket=bucket, Key="pending")
    with pytest.raises(ClientError) as excinfo:
        s3.delete_bucket(Bucket=bucket)
    assert error_of(excinfo) == ("BucketNotEmpty", 409)
    s3.abort_multipart_upload(Bucket=bucket, Key="pending", UploadId=upload["UploadId"])


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "UpperCase",
        "under_score",
        "-leading-dash",
        "trailing-dash-",
        ".leading-dot",
        "two..dots",
        "dot-.dash",
        "192.168.10.20",
        "xn--punycode",
        "sthree-reserved",
        "ends-s3alias",
    ],
)
def test_invalid_bucket_name(s3: Any, name: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.create_bucket(Bucket=name)
    assert error_of(excinfo) == ("InvalidBucketName", 400)
    with pytest.raises(ClientError):
        s3.head_bucket(Bucket=name)


def test_valid_bucket_name_edges(s3: Any) -> None:
    token = uuid.uuid4().hex
    for name in (f"a{token[0]}9", f"b.{token}-{'x' * 27}", f"{token[:8]}.1-2.3"):
        s3.create_bucket(Bucket=name)
        assert status_of(s3.head_bucket(Bucket=name)) == 200
        s3.delete_bucket(Bucket=name)


@pytest.fixture
async def other_s3(local_cluster: LocalCluster) -> Any:
    """A boto3 client for a second, ordinary user made directly in the database."""
    access_key, secret_key = new_access_key()
    box = SecretBox(local_cluster.gateway["master_key"])
    conn = await asyncpg.connect(local_cluster.description["database_url"])
    try:
        user_id = await queries.ensure_user(conn, unique("user"))
        await queries.put_access_key(conn, access_key, user_id, box.seal(access_key, secret_key))
    finally:
        await conn.close()
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=local_cluster.gateway["url"],
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=local_cluster.gateway["region"],
    )


def test_users_see_and_touch_only_their_own_buckets(s3: Any, other_s3: Any, bucket: str) -> None:
    put(s3, bucket, "root-only", b"secret")
    theirs = unique()
    other_s3.create_bucket(Bucket=theirs)
    try:
        put(other_s3, theirs, "mine", b"hello")
        assert [b["Name"] for b in other_s3.list_buckets()["Buckets"]] == [theirs]
        assert theirs not in [b["Name"] for b in s3.list_buckets()["Buckets"]]

        with pytest.raises(ClientError) as excinfo:
            other_s3.head_bucket(Bucket=bucket)
        assert error_of(excinfo) == ("403", 403)
        refused: tuple[Callable[[], Any], ...] = (
            lambda: other_s3.get_object(Bucket=bucket, Key="root-only"),
            lambda: other_s3.list_objects_v2(Bucket=bucket),
            lambda: other_s3.put_object(Bucket=bucket, Key="intruder", Body=b"x"),
            lambda: other_s3.delete_object(Bucket=bucket, Key="root-only"),
            lambda: other_s3.delete_bucket(Bucket=bucket),
            lambda: other_s3.create_multipart_upload(Bucket=bucket, Key="intruder"),
            lambda: other_s3.copy_object(
                Bucket=theirs, Key="stolen", CopySource={"Bucket": bucket, "Key": "root-only"}
            ),
        )
        for call in refused:
            with pytest.raises(ClientError) as excinfo:
                call()
            assert error_of(excinfo) == ("AccessDenied", 403)
        with pytest.raises(ClientError) as excinfo:
            other_s3.create_bucket(Bucket=bucket)
        assert error_of(excinfo) == ("BucketAlreadyExists", 409)

        assert get(s3, bucket, "root-only") == b"secret"
        assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["root-only"]
        with pytest.raises(ClientError):
            other_s3.head_object(Bucket=theirs, Key="stolen")
    finally:
        empty_bucket(other_s3, theirs)
        other_s3.delete_bucket(Bucket=theirs)


# ---------------------------------------------------------------- objects


@pytest.mark.parametrize(
    "size",
    [0, 1, 1024, SEQUENCE - 1, SEQUENCE, SEQUENCE + 1, 2 * SEQUENCE + 1000 * 1000 + 3],
    ids=lambda size: f"{size}B",
)
def test_put_get_head_byte_identical(s3: Any, bucket: str, size: int) -> None:
    data = data_of(size, seed=size)
    etag = put(s3, bucket, "object", data)
    head = s3.head_object(Bucket=bucket, Key="object")
    request_id = head["ResponseMetadata"]["RequestId"]
    assert request_id and head["ResponseMetadata"]["HTTPHeaders"]["x-amz-request-id"] == request_id
    assert head["ContentLength"] == size
    assert head["ETag"] == etag
    assert head["ContentType"] == "binary/octet-stream"
    response = s3.get_object(Bucket=bucket, Key="object")
    assert response["ContentLength"] == size
    assert response["ETag"] == etag
    assert md5(read_body(response)) == md5(data)
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == [("object", size, etag)]


def test_100_mib_object_streams_both_ways(s3: Any, bucket: str, tmp_path: Path) -> None:
    # Streamed from and to a file: the test never holds the object in memory.
    size = 100 * MiB + 12345
    path = tmp_path / "big.bin"
    sent = hashlib.md5()
    with path.open("wb") as file:
        rng = random.Random(100)
        remaining = size
        while remaining:
            block = rng.randbytes(min(remaining, 4 * MiB))
            sent.update(block)
            file.write(block)
            remaining -= len(block)
    with path.open("rb") as file:
        response = s3.put_object(Bucket=bucket, Key="big/object.bin", Body=file)
    assert response["ETag"] == f'"{sent.hexdigest()}"'

    got = s3.get_object(Bucket=bucket, Key="big/object.bin")
    assert got["ContentLength"] == size
    received = hashlib.md5()
    total = 0
    for chunk in got["Body"].iter_chunks(MiB):
        received.update(chunk)
        total += len(chunk)
    assert total == size
    assert received.hexdigest() == sent.hexdigest()

    with path.open("rb") as file:
        for first, length in ((size - 100_000, 100_000), (50 * MiB - 7, 2 * SEQUENCE + 14)):
            file.seek(first)
            expected = file.read(length)
            ranged = get(s3, bucket, "big/object.bin", Range=f"bytes={first}-{first + length - 1}")
            assert ranged == expected


def test_metadata_and_stored_headers_round_trip(s3: Any, bucket: str) -> None:
    expires = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
    put(
        s3,
        bucket,
        "doc.txt",
        b"hello",
        Metadata={"colour": "blue", "Mixed-Case": "Value With Spaces", "empty": ""},
        ContentType="text/plain; charset=utf-8",
        ContentDisposition='attachment; filename="doc.txt"',
        ContentEncoding="identity",
        ContentLanguage="en-GB",
        CacheControl="max-age=60",
        Expires=expires,
    )
    for response in (
        s3.head_object(Bucket=bucket, Key="doc.txt"),
        s3.get_object(Bucket=bucket, Key="doc.txt"),
    ):
        assert response["Metadata"] == {
            "colour": "blue",
            "mixed-case": "Value With Spaces",
            "empty": "",
        }
        assert response["ContentType"] == "text/plain; charset=utf-8"
        assert response["ContentDisposition"] == 'attachment; filename="doc.txt"'
        assert response["ContentEncoding"] == "identity"
        assert response["ContentLanguage"] == "en-GB"
        assert response["CacheControl"] == "max-age=60"
        assert response["Expires"] == expires

    # Response overrides (as presigned download links use them) win for this GET only.
    response = s3.get_object(
        Bucket=bucket,
        Key="doc.txt",
        ResponseContentType="application/x-download",
        ResponseContentDisposition="inline",
    )
    assert response["ContentType"] == "application/x-download"
    assert response["ContentDisposition"] == "inline"
    assert s3.head_object(Bucket=bucket, Key="doc.txt")["ContentType"].startswith("text/plain")


def test_an_object_without_stored_headers_gets_none_back(s3: Any, bucket: str) -> None:
    put(s3, bucket, "plain", b"data")
    headers = s3.get_object(Bucket=bucket, Key="plain")["ResponseMetadata"]["HTTPHeaders"]
    for name in ("content-encoding", "content-disposition", "content-language", "cache-control"):
        assert name not in headers
    assert not [name for name in headers if name.startswith("x-amz-meta-")]


def test_overwrite_replaces_the_object(s3: Any, bucket: str) -> None:
    first = data_of(SEQUENCE + 10, seed=1)
    second = data_of(1000, seed=2)
    put(s3, bucket, "k", first, Metadata={"v": "1"})
    etag = put(s3, bucket, "k", second)
    response = s3.get_object(Bucket=bucket, Key="k")
    assert read_body(response) == second
    assert response["Metadata"] == {}
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed] == [("k", 1000, etag)]


def test_delete_object(s3: Any, bucket: str) -> None:
    put(s3, bucket, "gone", b"soon")
    assert status_of(s3.delete_object(Bucket=bucket, Key="gone")) == 204
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="gone")
    assert error_of(excinfo) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key="gone")
    assert error_of(excinfo) == ("404", 404)
    # Deleting what is not there succeeds, as on S3.
    assert status_of(s3.delete_object(Bucket=bucket, Key="gone")) == 204
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_missing_object_and_bucket(s3: Any, bucket: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="never")
    assert error_of(excinfo) == ("NoSuchKey", 404)
    assert excinfo.value.response["Error"].get("Key") == "never"
    with pytest.raises(ClientError) as excinfo:
        s3.put_object(Bucket=unique("missing"), Key="k", Body=b"x")
    assert error_of(excinfo) == ("NoSuchBucket", 404)


def test_delete_objects_with_a_missing_key(s3: Any, bucket: str) -> None:
    for key in ("a", "b", "c"):
        put(s3, bucket, key, key.encode())
    result = s3.delete_objects(
        Bucket=bucket,
        Delete={"Objects": [{"Key": "a"}, {"Key": "missing"}, {"Key": "c"}]},
    )
    # S3 reports a key that was not there as deleted too.
    assert sorted(d["Key"] for d in result["Deleted"]) == ["a", "c", "missing"]
    assert "Errors" not in result
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["b"]

    quiet = s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "b"}], "Quiet": True})
    assert "Deleted" not in quiet and "Errors" not in quiet
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_copy_object_directives(s3: Any, bucket: str) -> None:
    data = data_of(2 * SEQUENCE + 77, seed=3)
    etag = put(s3, bucket, "src", data, Metadata={"a": "1"}, ContentType="image/png")

    copied = s3.copy_object(
        Bucket=bucket, Key="dst-copy", CopySource={"Bucket": bucket, "Key": "src"}
    )
    assert copied["CopyObjectResult"]["ETag"] == etag
    response = s3.get_object(Bucket=bucket, Key="dst-copy")
    assert md5(read_body(response)) == md5(data)
    assert response["Metadata"] == {"a": "1"}
    assert response["ContentType"] == "image/png"

    s3.copy_object(
        Bucket=bucket,
        Key="dst-replace",
        CopySource=f"{bucket}/src",
        MetadataDirective="REPLACE",
        Metadata={"b": "2"},
        ContentType="text/csv",
    )
    response = s3.get_object(Bucket=bucket, Key="dst-replace")
    assert md5(read_body(response)) == md5(data)
    assert response["Metadata"] == {"b": "2"}
    assert response["ContentType"] == "text/csv"

    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="src", CopySource={"Bucket": bucket, "Key": "src"})
    assert error_of(excinfo) == ("InvalidRequest", 400)
    # Copying onto itself with new metadata is how S3 edits metadata.
    s3.copy_object(
        Bucket=bucket,
        Key="src",
        CopySource={"Bucket": bucket, "Key": "src"},
        MetadataDirective="REPLACE",
        Metadata={"edited": "yes"},
    )
    response = s3.get_object(Bucket=bucket, Key="src")
    assert response["Metadata"] == {"edited": "yes"}
    assert md5(read_body(response)) == md5(data)

    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(Bucket=bucket, Key="x", CopySource={"Bucket": bucket, "Key": "absent"})
    assert error_of(excinfo) == ("NoSuchKey", 404)
    with pytest.raises(ClientError) as excinfo:
        s3.copy_object(
            Bucket=bucket,
            Key="x",
            CopySource={"Bucket": bucket, "Key": "src"},
            CopySourceIfMatch='"0123456789abcdef0123456789abcdef"',
        )
    assert error_of(excinfo) == ("PreconditionFailed", 412)


def test_copy_between_buckets_with_odd_keys(s3: Any, bucket: str) -> None:
    other = unique()
    s3.create_bucket(Bucket=other)
    try:
        key = "dir/ü ñ+%&?=#.bin"
        put(s3, bucket, key, b"odd key")
        s3.copy_object(Bucket=other, Key=key, CopySource={"Bucket": bucket, "Key": key})
        assert get(s3, other, key) == b"odd key"
    finally:
        empty_bucket(s3, other)
        s3.delete_bucket(Bucket=other)


# ---------------------------------------------------------------- ranges


RANGED_SIZE = 2 * SEQUENCE + 5000


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=0-99", 0, 99),
        ("bytes=1000-2999", 1000, 2999),
        ("bytes=4194300-4194310", SEQUENCE - 4, SEQUENCE + 6),  # across a sequence boundary
        ("bytes=4194303-8388608", SEQUENCE - 1, 2 * SEQUENCE),  # across two
        ("bytes=4194304-4194304", SEQUENCE, SEQUENCE),  # first byte of a sequence
        ("bytes=8388607-8388607", 2 * SEQUENCE - 1, 2 * SEQUENCE - 1),  # last byte of one
        ("bytes=-500", RANGED_SIZE - 500, RANGED_SIZE - 1),  # suffix
        ("bytes=-99999999", 0, RANGED_SIZE - 1),  # suffix longer than the object
        ("bytes=8000000-", 8000000, RANGED_SIZE - 1),  # open-ended
        ("bytes=100-99999999", 100, RANGED_SIZE - 1),  # last past the end
        (f"bytes={RANGED_SIZE - 1}-", RANGED_SIZE - 1, RANGED_SIZE - 1),
    ],
)
def test_get_range(s3: Any, bucket: str, header: str, first: int, last: int) -> None:
    data = data_of(RANGED_SIZE, seed=4)
    put(s3, bucket, "ranged", data)
    response = s3.get_object(Bucket=bucket, Key="ranged", Range=header)
    assert status_of(response) == 206
    assert response["ContentRange"] == f"bytes {first}-{last}/{RANGED_SIZE}"
    assert response["ContentLength"] == last - first + 1
    assert read_body(response) == data[first : last + 1]
    head = s3.head_object(Bucket=bucket, Key="ranged", Range=header)
    assert head["ContentLength"] == last - first + 1


def test_range_that_is_ignored_serves_the_whole_object(s3: Any, bucket: str) -> None:
    data = data_of(3000, seed=5)
    put(s3, bucket, "k", data)
    for header in ("bytes=500-100", "items=0-5", "bytes=0-1,5-6"):
        response = s3.get_object(Bucket=bucket, Key="k", Range=header)
        assert status_of(response) == 200
        assert read_body(response) == data


def test_unsatisfiable_range(s3: Any, bucket: str) -> None:
    put(s3, bucket, "k", b"0123456789")
    for header in ("bytes=10-", "bytes=10-20", "bytes=-0"):
        with pytest.raises(ClientError) as excinfo:
            s3.get_object(Bucket=bucket, Key="k", Range=header)
        assert error_of(excinfo) == ("InvalidRange", 416)
        assert excinfo.value.response["ResponseMetadata"]["HTTPHeaders"]["content-range"] == (
            "bytes */10"
        )


# ---------------------------------------------------------------- conditions


def test_conditional_get_and_head(s3: Any, bucket: str) -> None:
    etag = put(s3, bucket, "k", b"conditional")
    modified = s3.head_object(Bucket=bucket, Key="k")["LastModified"]
    before = modified - timedelta(hours=1)
    after = modified + timedelta(hours=1)
    other = '"0123456789abcdef0123456789abcdef"'

    def outcome(**conditions: Any) -> int | str:
        statuses = set()
        for call in (s3.get_object, s3.head_object):
            try:
                statuses.add(status_of(call(Bucket=bucket, Key="k", **conditions)))
            except ClientError as error:
                statuses.add(int(error.response["ResponseMetadata"]["HTTPStatusCode"]))
        assert len(statuses) == 1, statuses
        return statuses.pop()

    assert outcome(IfMatch=etag) == 200
    assert outcome(IfMatch="*") == 200
    assert outcome(IfMatch=other) == 412
    assert outcome(IfNoneMatch=etag) == 304
    assert outcome(IfNoneMatch=f"{other}, {etag}") == 304
    assert outcome(IfNoneMatch=other) == 200
    assert outcome(IfModifiedSince=after) == 304
    assert outcome(IfModifiedSince=modified) == 304
    assert outcome(IfModifiedSince=before) == 200
    assert outcome(IfUnmodifiedSince=before) == 412
    assert outcome(IfUnmodifiedSince=modified) == 200
    assert outcome(IfUnmodifiedSince=after) == 200
    # RFC 7232 precedence, as S3 applies it.
    assert outcome(IfMatch=etag, IfUnmodifiedSince=before) == 200
    assert outcome(IfNoneMatch=other, IfModifiedSince=after) == 200
    assert outcome(IfNoneMatch=etag, IfModifiedSince=before) == 304

    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="k", IfMatch=other)
    assert error_of(excinfo) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key="k", IfNoneMatch=etag)
    headers = excinfo.value.response["ResponseMetadata"]["HTTPHeaders"]
    assert headers["etag"] == etag
    assert "last-modified" in headers


# ---------------------------------------------------------------- listings


def test_list_prefix_and_delimiter_keep_plain_keys(s3: Any, bucket: str) -> None:
    keys = ["a", "a/b", "a/c/d", "a/c/e", "a0", "b", "b/", "b/x", "dir/sub/deep", "z"]
    for key in keys:
        put(s3, bucket, key, key.encode())

    listed = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == keys
    assert listed["KeyCount"] == len(keys)

    top = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in top["Contents"]] == ["a", "a0", "b", "z"]
    assert [p["Prefix"] for p in top["CommonPrefixes"]] == ["a/", "b/", "dir/"]
    assert top["KeyCount"] == 7

    under_a = s3.list_objects_v2(Bucket=bucket, Prefix="a/", Delimiter="/")
    assert [o["Key"] for o in under_a["Contents"]] == ["a/b"]
    assert [p["Prefix"] for p in under_a["CommonPrefixes"]] == ["a/c/"]

    under_b = s3.list_objects_v2(Bucket=bucket, Prefix="b/", Delimiter="/")
    assert [o["Key"] for o in under_b["Contents"]] == ["b/", "b/x"]
    assert "CommonPrefixes" not in under_b

    starting_a = s3.list_objects_v2(Bucket=bucket, Prefix="a")
    assert [o["Key"] for o in starting_a["Contents"]] == ["a", "a/b", "a/c/d", "a/c/e", "a0"]

    other_delimiter = s3.list_objects_v2(Bucket=bucket, Delimiter="c")
    assert [p["Prefix"] for p in other_delimiter["CommonPrefixes"]] == ["a/c"]
    assert [o["Key"] for o in other_delimiter["Contents"]] == [
        "a", "a/b", "a0", "b", "b/", "b/x", "dir/sub/deep", "z"
    ]  # fmt: skip

    v1 = s3.list_objects(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in v1["Contents"]] == ["a", "a0", "b", "z"]
    assert [p["Prefix"] for p in v1["CommonPrefixes"]] == ["a/", "b/", "dir/"]
    assert s3.list_objects_v2(Bucket=bucket, Prefix="nothing")["KeyCount"] == 0


def test_list_v2_paging_with_max_keys(s3: Any, bucket: str) -> None:
    keys = [f"key-{i}" for i in range(7)]
    for key in keys:
        put(s3, bucket, key, b"")
    for max_keys in (1, 2, 3, 7, 8):
        got, prefixes, pages = list_v2_all(s3, bucket, MaxKeys=max_keys)
        assert got == keys
        assert prefixes == []
        assert pages == max(1, -(-len(keys) // max_keys))

    first = s3.list_objects_v2(Bucket=bucket, MaxKeys=2)
    assert first["IsTruncated"] is True
    assert first["MaxKeys"] == 2
    assert [o["Key"] for o in first["Contents"]] == keys[:2]

    # The paginator (what most applications use) follows the tokens too.
    paginated = [
        o["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, PaginationConfig={"PageSize": 2}
        )
        for o in page.get("Contents", [])
    ]
    assert paginated == keys


def test_list_v2_paging_mixes_keys_and_common_prefixes(s3: Any, bucket: str) -> None:
    keys = ["a", "b/1", "b/2", "c", "d/1", "e", "f/1/x", "f/2", "g"]
    for key in keys:
        put(s3, bucket, key, b"")
    whole = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    expected_keys = [o["Key"] for o in whole["Contents"]]
    expected_prefixes = [p["Prefix"] for p in whole["CommonPrefixes"]]
    assert expected_keys == ["a", "c", "e", "g"]
    assert expected_prefixes == ["b/", "d/", "f/"]
    for max_keys in (1, 2, 3, 4):
        got, prefixes, pages = list_v2_all(s3, bucket, Delimiter="/", MaxKeys=max_keys)
        assert (got, prefixes) == (expected_keys, expected_prefixes)
        assert pages == -(-7 // max_keys)


def test_list_v2_start_after(s3: Any, bucket: str) -> None:
    keys = ["a", "b", "c/1", "c/2", "d"]
    for key in keys:
        put(s3, bucket, key, b"")
    page = s3.list_objects_v2(Bucket=bucket, StartAfter="b")
    assert [o["Key"] for o in page["Contents"]] == ["c/1", "c/2", "d"]
    assert page["StartAfter"] == "b"
    assert s3.list_objects_v2(Bucket=bucket, StartAfter="d")["KeyCount"] == 0
    page = s3.list_objects_v2(Bucket=bucket, StartAfter="0")
    assert [o["Key"] for o in page["Contents"]] == keys
    got, _, pages = list_v2_all(s3, bucket, StartAfter="a", MaxKeys=2)
    assert got == keys[1:]
    assert pages == 2


def test_list_v1_marker_paging(s3: Any, bucket: str) -> None:
    keys = [f"k{i:02d}" for i in range(7)]
    for key in keys:
        put(s3, bucket, key, b"")
    seen: list[str] = []
    marker = ""
    pages = 0
    while True:
        page = s3.list_objects(Bucket=bucket, Marker=marker, MaxKeys=2)
        pages += 1
        assert page["Marker"] == marker
        batch = [o["Key"] for o in page["Contents"]]
        seen += batch
        if not page["IsTruncated"]:
            break
        # Without a delimiter S3 sends no NextMarker: the client uses the last key.
        assert "NextMarker" not in page
        marker = batch[-1]
    assert seen == keys
    assert pages == 4
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket, Marker="k04")["Contents"]] == keys[5:]

    for key in ("k03/x", "k03/y"):
        put(s3, bucket, key, b"")
    page = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=4)
    assert [o["Key"] for o in page["Contents"]] == ["k00", "k01", "k02", "k03"]
    assert page["IsTruncated"] is True
    assert page["NextMarker"] == "k03"
    page = s3.list_objects(Bucket=bucket, Delimiter="/", MaxKeys=1, Marker="k03")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["k03/"]
    assert page["NextMarker"] == "k03/"
    page = s3.list_objects(Bucket=bucket, Delimiter="/", Marker="k03/")
    assert [o["Key"] for o in page["Contents"]] == keys[4:]
    assert "CommonPrefixes" not in page

    paginated = [
        o["Key"]
        for page in s3.get_paginator("list_objects").paginate(
            Bucket=bucket, PaginationConfig={"PageSize": 3}
        )
        for o in page.get("Contents", [])
    ]
    assert paginated == sorted([*keys, "k03/x", "k03/y"])


def test_list_keys_with_the_highest_code_point(s3: Any, bucket: str) -> None:
    # A common prefix followed by U+10FFFF must still be skipped as a whole
    # (an "after everything" sentinel made such listings loop forever).
    top = "\U0010ffff"
    keys = [f"a/{top}", f"a/{top}{top}/x", "a0", f"{top}/z"]
    for key in keys:
        put(s3, bucket, key, b"")
    page = s3.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert [o["Key"] for o in page["Contents"]] == ["a0"]
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["a/", f"{top}/"]
    got, prefixes, pages = list_v2_all(s3, bucket, Delimiter="/", MaxKeys=1)
    assert (got, prefixes, pages) == (["a0"], ["a/", f"{top}/"], 3)
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == keys


ODD_KEYS = [
    "with space",
    "plus+sign",
    "percent%20literal",
    "amp&ersand",
    "üñíçødé/ключ/鍵",
    "emoji 🎉.txt",
    "question?mark=1",
    "hash#tag",
    "tab\tand~tilde",
    "<angle>'quote\"",
    "dir/ trailing space ",
    "dots/../and/./slashes//",
    "/leading-slash",
]


#: Keys XML 1.0 can carry only percent-encoded (or not at all): listed with encoding-type=url.
CONTROL_KEYS = ["line\nbreak", "ctl\x01char\r", "\x7fdel"]


def test_odd_keys_round_trip_and_list_url_encoded(
    s3: Any, bucket: str, local_cluster: LocalCluster
) -> None:
    for index, key in enumerate(ODD_KEYS):
        put(s3, bucket, key, str(index).encode())
    expected = sorted(ODD_KEYS, key=lambda key: key.encode())

    # Without encoding-type the keys are in the XML as they are (boto3 always
    # asks for url encoding, so this request is signed by hand).
    status, _, body = signed_http(local_cluster, "GET", f"/{bucket}?list-type=2")
    assert status == 200
    keys = [element.text or "" for element in ET.fromstring(body).iter(f"{S3_NS}Key")]
    assert keys == expected

    for index, key in enumerate(CONTROL_KEYS, start=len(ODD_KEYS)):
        put(s3, bucket, key, str(index).encode())
    everything = ODD_KEYS + CONTROL_KEYS
    for index, key in enumerate(everything):
        assert get(s3, bucket, key) == str(index).encode()
        assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == len(str(index))
    expected = sorted(everything, key=lambda key: key.encode())

    # boto3 asks for encoding-type=url and decodes what comes back.
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == expected
    assert [o["Key"] for o in s3.list_objects(Bucket=bucket)["Contents"]] == expected
    page = s3.list_objects_v2(Bucket=bucket, Prefix="üñíçødé/", Delimiter="/")
    assert [p["Prefix"] for p in page["CommonPrefixes"]] == ["üñíçødé/ключ/"]
    page = s3.list_objects_v2(Bucket=bucket, Prefix="line\n")
    assert [o["Key"] for o in page["Contents"]] == ["line\nbreak"]
    got, _, _ = list_v2_all(s3, bucket, MaxKeys=3)
    assert got == expected
    v1_pages = s3.get_paginator("list_objects").paginate(
        Bucket=bucket, PaginationConfig={"PageSize": 3}
    )
    assert [o["Key"] for page in v1_pages for o in page.get("Contents", [])] == expected

    # The raw document: every key percent-encoded, '/' kept, ' ' as %20, '+' as %2B.
    url = s3.generate_presigned_url(
        "list_objects_v2", Params={"Bucket": bucket, "EncodingType": "url"}
    )
    status, _, body = http("GET", url)
    assert status == 200
    root = ET.fromstring(body)
    assert root.findtext(f"{S3_NS}EncodingType") == "url"
    raw_keys = [element.text or "" for element in root.iter(f"{S3_NS}Key")]
    assert "with%20space" in raw_keys
    assert "plus%2Bsign" in raw_keys
    assert "percent%2520literal" in raw_keys
    assert "amp%26ersand" in raw_keys
    assert "line%0Abreak" in raw_keys
    assert [urllib.parse.unquote(key) for key in raw_keys] == expected

    deleted = s3.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": key} for key in ODD_KEYS]}
    )
    assert sorted(d["Key"] for d in deleted["Deleted"]) == sorted(ODD_KEYS)
    for key in CONTROL_KEYS:
        s3.delete_object(Bucket=bucket, Key=key)
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


# ---------------------------------------------------------------- multipart


def upload_parts(s3: Any, bucket: str, key: str, upload_id: str, parts: list[bytes]) -> list[str]:
    etags = []
    for number, part in enumerate(parts, start=1):
        response = s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=part
        )
        assert response["ETag"] == f'"{md5(part)}"'
        etags.append(response["ETag"])
    return etags


def multipart_etag(parts: list[bytes]) -> str:
    joined = b"".join(hashlib.md5(part).digest() for part in parts)
    return f'"{hashlib.md5(joined).hexdigest()}-{len(parts)}"'


def test_multipart_upload(s3: Any, bucket: str) -> None:
    key = "multi/part object"
    parts = [data_of(5 * MiB, seed=11), data_of(5 * MiB + 3, seed=12), data_of(MiB + 7, seed=13)]
    upload = s3.create_multipart_upload(
        Bucket=bucket, Key=key, ContentType="video/mp4", Metadata={"origin": "test"}
    )
    upload_id = upload["UploadId"]
    assert upload["Key"] == key

    # A first attempt at part 2 is replaced by the second.
    wrong = data_of(5 * MiB, seed=99)
    s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=2, Body=wrong)
    etags = upload_parts(s3, bucket, key, upload_id, parts)

    listed = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed["Parts"]] == [
        (1, etags[0], len(parts[0])),
        (2, etags[1], len(parts[1])),
        (3, etags[2], len(parts[2])),
    ]
    page = s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id, MaxParts=2)
    assert page["IsTruncated"] is True
    assert [p["PartNumber"] for p in page["Parts"]] == [1, 2]
    page = s3.list_parts(
        Bucket=bucket, Key=key, UploadId=upload_id, PartNumberMarker=page["NextPartNumberMarker"]
    )
    assert [p["PartNumber"] for p in page["Parts"]] == [3]
    assert page["IsTruncated"] is False

    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in uploads] == [(key, upload_id)]
    with pytest.raises(ClientError) as excinfo:
        s3.head_object(Bucket=bucket, Key=key)
    assert error_of(excinfo) == ("404", 404)

    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key=key,
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(etags, start=1)]
        },
    )
    whole = b"".join(parts)
    assert done["ETag"] == multipart_etag(parts)
    assert done["Key"] == key and done["Bucket"] == bucket
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []

    response = s3.get_object(Bucket=bucket, Key=key)
    assert response["ETag"] == done["ETag"]
    assert response["ContentLength"] == len(whole)
    assert response["ContentType"] == "video/mp4"
    assert response["Metadata"] == {"origin": "test"}
    assert md5(read_body(response)) == md5(whole)
    listed_object = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"], o["ETag"]) for o in listed_object] == [
        (key, len(whole), done["ETag"])
    ]

    boundary = len(parts[0])
    second_boundary = boundary + len(parts[1])
    for first, last in (
        (boundary - 10, boundary + 10),
        (boundary - 1, second_boundary),
        (0, len(whole) - 1),
        (second_boundary, second_boundary),
        (SEQUENCE - 3, boundary + SEQUENCE + 3),
    ):
        ranged = get(s3, bucket, key, Range=f"bytes={first}-{last}")
        assert ranged == whole[first : last + 1], (first, last)

    part_two = s3.get_object(Bucket=bucket, Key=key, PartNumber=2)
    assert status_of(part_two) == 206
    assert part_two["PartsCount"] == 3
    assert read_body(part_two) == parts[1]
    assert s3.head_object(Bucket=bucket, Key=key, PartNumber=3)["ContentLength"] == len(parts[2])
    with pytest.raises(ClientError) as excinfo:
        s3.get_object(Bucket=bucket, Key=key, PartNumber=4)
    assert error_of(excinfo) == ("InvalidPartNumber", 416)

    with pytest.raises(ClientError) as excinfo:
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=4, Body=b"late")
    assert error_of(excinfo) == ("NoSuchUpload", 404)


def test_multipart_single_small_part_and_copy_of_a_multipart_object(s3: Any, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="one")["UploadId"]
    part = b"only part, small is fine when it is the last"
    etags = upload_parts(s3, bucket, "one", upload_id, [part])
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="one",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etags[0]}]},
    )
    assert done["ETag"] == multipart_etag([part])
    assert get(s3, bucket, "one") == part
    s3.copy_object(Bucket=bucket, Key="one-copy", CopySource={"Bucket": bucket, "Key": "one"})
    assert get(s3, bucket, "one-copy") == part


def test_multipart_part_too_small(s3: Any, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="small")["UploadId"]
    etags = upload_parts(s3, bucket, "small", upload_id, [b"tiny", b"tail"])
    with pytest.raises(ClientError) as excinfo:
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key="small",
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]
            },
        )
    assert error_of(excinfo) == ("EntityTooSmall", 400)
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="small")
    # The upload is still open: it can be listed and aborted.
    listed = s3.list_parts(Bucket=bucket, Key="small", UploadId=upload_id)
    assert [p["PartNumber"] for p in listed["Parts"]] == [1, 2]


def test_multipart_abort(s3: Any, bucket: str) -> None:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="aborted")["UploadId"]
    upload_parts(s3, bucket, "aborted", upload_id, [data_of(5 * MiB, seed=21)])
    assert (
        status_of(s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=upload_id))
        == 204
    )
    gone: tuple[Callable[[], Any], ...] = (
        lambda: s3.list_parts(Bucket=bucket, Key="aborted", UploadId=upload_id),
        lambda: s3.upload_part(
            Bucket=bucket, Key="aborted", UploadId=upload_id, PartNumber=2, Body=b"x"
        ),
        lambda: s3.complete_multipart_upload(
            Bucket=bucket,
            Key="aborted",
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": '"x"'}]},
        ),
        lambda: s3.abort_multipart_upload(Bucket=bucket, Key="aborted", UploadId=upload_id),
    )
    for call in gone:
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_of(excinfo) == ("NoSuchUpload", 404)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="aborted")
    with pytest.raises(ClientError) as excinfo:
        s3.list_parts(Bucket=bucket, Key="aborted", UploadId="no-such-upload")
    assert error_of(excinfo) == ("NoSuchUpload", 404)


def test_list_multipart_uploads(s3: Any, bucket: str) -> None:
    made = []
    for key in ("logs/a", "logs/b", "logs/b", "other"):
        made.append((key, s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]))
    listed = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert sorted((u["Key"], u["UploadId"]) for u in listed) == sorted(made)
    logs = s3.list_multipart_uploads(Bucket=bucket, Prefix="logs/")["Uploads"]
    assert sorted(u["Key"] for u in logs) == ["logs/a", "logs/b", "logs/b"]

    seen = []
    params: dict[str, Any] = {"Bucket": bucket, "MaxUploads": 1}
    while True:
        page = s3.list_multipart_uploads(**params)
        seen += [(u["Key"], u["UploadId"]) for u in page.get("Uploads", [])]
        if not page["IsTruncated"]:
            break
        params["KeyMarker"] = page["NextKeyMarker"]
        params["UploadIdMarker"] = page["NextUploadIdMarker"]
    assert sorted(seen) == sorted(made) and len(seen) == len(made)

    # A key marker alone skips every upload of that key, as on S3.
    after = s3.list_multipart_uploads(Bucket=bucket, KeyMarker="logs/b")["Uploads"]
    assert [u["Key"] for u in after] == ["other"]


def test_upload_part_copy_with_ranges(s3: Any, bucket: str) -> None:
    source = data_of(2 * SEQUENCE + 999, seed=31)
    put(s3, bucket, "source", source)
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key="assembled")["UploadId"]
    split = 5 * MiB
    copied = []
    for number, copy_range in enumerate(
        (None, f"bytes=0-{split - 1}", f"bytes={split}-{len(source) - 1}"), start=1
    ):
        extra = {"CopySourceRange": copy_range} if copy_range else {}
        copied.append(
            s3.upload_part_copy(
                Bucket=bucket,
                Key="assembled",
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": bucket, "Key": "source"},
                **extra,
            )
        )
    pieces = [source, source[:split], source[split:]]
    etags = [r["CopyPartResult"]["ETag"] for r in copied]
    assert etags == [f'"{md5(piece)}"' for piece in pieces]
    with pytest.raises(ClientError) as excinfo:
        s3.upload_part_copy(
            Bucket=bucket,
            Key="assembled",
            UploadId=upload_id,
            PartNumber=4,
            CopySource={"Bucket": bucket, "Key": "source"},
            CopySourceRange=f"bytes=0-{len(source)}",
        )
    assert error_of(excinfo) == ("InvalidRange", 416)
    done = s3.complete_multipart_upload(
        Bucket=bucket,
        Key="assembled",
        UploadId=upload_id,
        MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]
        },
    )
    assert done["ETag"] == multipart_etag(pieces)
    assert md5(get(s3, bucket, "assembled")) == md5(source + source)


def test_upload_file_uses_multipart_and_reads_back(s3: Any, bucket: str, tmp_path: Path) -> None:
    # boto3's transfer manager: concurrent parts of 8 MiB, then ranged concurrent download.
    data = data_of(20 * MiB + 5, seed=41)
    source = tmp_path / "upload.bin"
    source.write_bytes(data)
    s3.upload_file(str(source), bucket, "transfer/file.bin")
    head = s3.head_object(Bucket=bucket, Key="transfer/file.bin")
    assert head["ContentLength"] == len(data)
    assert head["ETag"].endswith('-3"')
    target = tmp_path / "download.bin"
    s3.download_file(bucket, "transfer/file.bin", str(target))
    assert md5(target.read_bytes()) == md5(data)


# ---------------------------------------------------------------- presigned URLs


@pytest.fixture(params=["default", "s3v4"])
def presigner(request: pytest.FixtureRequest, local_cluster: LocalCluster) -> Any:
    """boto3 as it presigns by default (SigV2 for a us-east-1 endpoint), and with SigV4."""
    if request.param == "default":
        return local_cluster.s3()
    return local_cluster.s3(signature_version="s3v4")


def test_presigned_get_and_put(presigner: Any, s3: Any, bucket: str) -> None:
    data = data_of(SEQUENCE + 100, seed=51)
    put_url = presigner.generate_presigned_url(
        "put_object",
        Params={"Bucket": bucket, "Key": "presigned/obj", "ContentType": "text/x-test"},
        ExpiresIn=300,
    )
    status, headers, _ = http("PUT", put_url, data, {"Content-Type": "text/x-test"})
    assert status == 200
    assert headers["ETag"] == f'"{md5(data)}"'
    assert s3.head_object(Bucket=bucket, Key="presigned/obj")["ContentType"] == "text/x-test"

    get_url = presigner.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "presigned/obj"}, ExpiresIn=300
    )
    status, headers, body = http("GET", get_url)
    assert status == 200
    assert md5(body) == md5(data)
    status, headers, body = http("GET", get_url, headers={"Range": "bytes=10-19"})
    assert status == 206
    assert body == data[10:20]

    download_url = presigner.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": bucket,
            "Key": "presigned/obj",
            "ResponseContentDisposition": 'attachment; filename="x y.bin"',
        },
    )
    status, headers, body = http("GET", download_url)
    assert status == 200
    assert headers["Content-Disposition"] == 'attachment; filename="x y.bin"'

    # The signature covers the key and the method.
    other = get_url.replace("presigned/obj", "presigned/other", 1)
    status, _, body = http("GET", other)
    assert (status, error_code(body)) == (403, "SignatureDoesNotMatch")
    status, _, body = http("DELETE", get_url)
    assert (status, error_code(body)) == (403, "SignatureDoesNotMatch")
    assert s3.head_object(Bucket=bucket, Key="presigned/obj")["ContentLength"] == len(data)


def presigned_in_the_past(s3: Any, seconds_ago: int, method: str, params: dict[str, Any]) -> str:
    """A URL presigned ``seconds_ago`` with an expiry of 60 seconds."""
    signed_at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    with (
        mock.patch(
            "botocore.auth.get_current_datetime", return_value=signed_at.replace(tzinfo=None)
        ),
        mock.patch("botocore.auth.time.time", return_value=signed_at.timestamp()),
    ):
        url: str = s3.generate_presigned_url(method, Params=params, ExpiresIn=60)
    return url


def test_expired_presigned_url_is_refused(presigner: Any, s3: Any, bucket: str) -> None:
    put(s3, bucket, "k", b"data")
    url = presigned_in_the_past(presigner, 3600, "get_object", {"Bucket": bucket, "Key": "k"})
    status, _, body = http("GET", url)
    assert status == 403
    assert error_code(body) == "AccessDenied"
    assert b"expired" in body
    fresh = presigned_in_the_past(presigner, 30, "get_object", {"Bucket": bucket, "Key": "k"})
    assert http("GET", fresh)[2] == b"data"

    put_url = presigned_in_the_past(
        presigner, 3600, "put_object", {"Bucket": bucket, "Key": "late"}
    )
    status, _, body = http("PUT", put_url, b"too late", {"Content-Type": ""})
    assert (status, error_code(body)) == (403, "AccessDenied")
    with pytest.raises(ClientError):
        s3.head_object(Bucket=bucket, Key="late")


# ---------------------------------------------------------------- misc operations


def test_bucket_location_and_versioning(s3: Any, bucket: str) -> None:
    assert s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") in (None, "")
    assert "Status" not in s3.get_bucket_versioning(Bucket=bucket)
