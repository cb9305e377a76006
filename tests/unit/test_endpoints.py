"""Requests to S3 operations (services.gateway.endpoints)."""

from __future__ import annotations

import pytest

from services.gateway import errors
from services.gateway.endpoints import is_virtual_host, operation, split_target


@pytest.mark.parametrize(
    ("raw_path", "host", "domain", "expected"),
    [
        ("/", "localhost:9000", "", (None, None)),
        ("", "localhost", "", (None, None)),
        ("/bucket", "localhost:9000", "", ("bucket", None)),
        ("/bucket/", "localhost:9000", "", ("bucket", None)),
        ("/bucket/key", "localhost:9000", "", ("bucket", "key")),
        ("/bucket/a/b/c.txt", "localhost", "", ("bucket", "a/b/c.txt")),
        ("/bucket/a%20b%2Bc+d", "localhost", "", ("bucket", "a b+c+d")),
        ("/bucket/%C3%BC%E2%82%AC", "localhost", "", ("bucket", "ü€")),
        ("/bucket/dir//x/", "localhost", "", ("bucket", "dir//x/")),
        ("/bucket/a%3Fb%23c?uploads", "localhost", "", ("bucket", "a?b#c")),
        ("/bucket/k?x=1", "s3.local", "s3.local", ("bucket", "k")),
        ("/k", "photos.s3.local:9000", "s3.local", ("photos", "k")),
        ("/", "photos.s3.local", "s3.local", ("photos", None)),
        ("/a/b", "my.dotted.bucket.s3.local", "s3.local", ("my.dotted.bucket", "a/b")),
        ("/photos/k", "[::1]:9000", "s3.local", ("photos", "k")),
    ],
)
def test_split_target(
    raw_path: str, host: str, domain: str, expected: tuple[str | None, str | None]
) -> None:
    assert split_target(raw_path, host, domain) == expected


def test_virtual_host_needs_a_domain() -> None:
    assert is_virtual_host("b.s3.local", "s3.local")
    assert not is_virtual_host("s3.local", "s3.local")
    assert not is_virtual_host("b.s3.local", "")
    assert not is_virtual_host("b.other.local", "s3.local")


HEADERS_COPY = {"x-amz-copy-source": "/b/k"}


@pytest.mark.parametrize(
    ("method", "bucket", "key", "query", "headers", "expected"),
    [
        ("GET", None, None, {}, {}, "ListBuckets"),
        ("PUT", "b", None, {}, {}, "CreateBucket"),
        ("HEAD", "b", None, {}, {}, "HeadBucket"),
        ("DELETE", "b", None, {}, {}, "DeleteBucket"),
        ("GET", "b", None, {}, {}, "ListObjects"),
        ("GET", "b", None, {"list-type": "2"}, {}, "ListObjectsV2"),
        ("GET", "b", None, {"uploads": ""}, {}, "ListMultipartUploads"),
        ("GET", "b", None, {"location": ""}, {}, "GetBucketLocation"),
        ("GET", "b", None, {"versioning": ""}, {}, "GetBucketVersioning"),
        ("POST", "b", None, {"delete": ""}, {}, "DeleteObjects"),
        ("PUT", "b", "k", {}, {}, "PutObject"),
        ("PUT", "b", "k", {}, HEADERS_COPY, "CopyObject"),
        ("GET", "b", "k", {}, {}, "GetObject"),
        ("GET", "b", "k", {"partNumber": "2"}, {}, "GetObject"),
        ("HEAD", "b", "k", {}, {}, "HeadObject"),
        ("DELETE", "b", "k", {}, {}, "DeleteObject"),
        ("POST", "b", "k", {"uploads": ""}, {}, "CreateMultipartUpload"),
        ("PUT", "b", "k", {"uploadId": "u", "partNumber": "1"}, {}, "UploadPart"),
        ("PUT", "b", "k", {"uploadId": "u", "partNumber": "1"}, HEADERS_COPY, "UploadPartCopy"),
        ("POST", "b", "k", {"uploadId": "u"}, {}, "CompleteMultipartUpload"),
        ("DELETE", "b", "k", {"uploadId": "u"}, {}, "AbortMultipartUpload"),
        ("GET", "b", "k", {"uploadId": "u"}, {}, "ListParts"),
    ],
)
def test_operation(
    method: str,
    bucket: str | None,
    key: str | None,
    query: dict[str, str],
    headers: dict[str, str],
    expected: str,
) -> None:
    assert operation(method, bucket, key, query, headers) == expected


@pytest.mark.parametrize(
    ("method", "bucket", "key", "query", "error"),
    [
        ("PUT", None, None, {}, errors.MethodNotAllowed),
        ("POST", "b", None, {}, errors.MethodNotAllowed),
        ("PATCH", "b", "k", {}, errors.MethodNotAllowed),
        ("POST", "b", "k", {}, errors.MethodNotAllowed),
        ("GET", "b", "k", {"acl": ""}, errors.NotImplemented),
        ("PUT", "b", None, {"tagging": ""}, errors.NotImplemented),
        ("GET", "b", None, {"versions": ""}, errors.NotImplemented),
        ("PUT", "b", None, {"versioning": ""}, errors.NotImplemented),
        ("PUT", "b", "k", {"partNumber": "1"}, errors.InvalidRequest),
        ("PUT", "b", "k", {"uploadId": "u"}, errors.InvalidRequest),
    ],
)
def test_operations_we_do_not_serve(
    method: str,
    bucket: str | None,
    key: str | None,
    query: dict[str, str],
    error: type[errors.S3Error],
) -> None:
    with pytest.raises(error):
        operation(method, bucket, key, query, {})


@pytest.mark.parametrize(
    ("method", "query", "headers"),
    [
        ("PUT", {}, {"if-none-match": "*"}),
        ("PUT", {}, {"if-match": '"abc"'}),
        ("PUT", {}, {"if-none-match": "*", "x-amz-copy-source": "/b/k"}),
        ("POST", {"uploadId": "u"}, {"if-none-match": "*"}),
    ],
)
def test_conditional_writes_are_refused_not_ignored(
    method: str, query: dict[str, str], headers: dict[str, str]
) -> None:
    with pytest.raises(errors.NotImplemented):
        operation(method, "b", "k", query, headers)
    # On reads they are conditions, served.
    assert operation("GET", "b", "k", {}, {"if-none-match": "*"}) == "GetObject"
