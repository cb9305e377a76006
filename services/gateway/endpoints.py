"""Parse an HTTP request into the S3 operation it asks for (Garage's Endpoint).

Path-style (``/bucket/key``) and virtual-host-style (``Host: bucket.DOMAIN``)
addressing both end in an :class:`Endpoint`: the operation's S3 name, the
bucket and key (percent-decoded once, ``+`` kept as ``+``), and the query.
Dispatch then maps the operation name to one handler.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

from services.gateway import errors

#: Sub-resources we do not implement: asked for, they answer NotImplemented
#: instead of being mistaken for a plain GET/PUT of the bucket or object.
UNSUPPORTED = frozenset(
    {
        "acl", "policy", "lifecycle", "cors", "website", "tagging", "logging",
        "notification", "replication", "encryption", "object-lock", "retention",
        "legal-hold", "torrent", "requestPayment", "accelerate", "analytics",
        "inventory", "metrics", "ownershipControls", "publicAccessBlock",
        "intelligent-tiering", "restore", "select", "versions", "attributes",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Endpoint:
    operation: str
    bucket: str | None
    key: str | None


def _hostname(host: str) -> str:
    return host.rsplit(":", 1)[0] if not host.endswith("]") else host


def is_virtual_host(host: str, domain: str) -> bool:
    """Whether the Host header names the bucket (``bucket.DOMAIN``).

    >>> is_virtual_host("photos.s3.local:9000", "s3.local"), is_virtual_host("s3.local", "s3.local")
    (True, False)
    """
    return bool(domain) and _hostname(host).endswith("." + domain)


def split_target(raw_path: str, host: str, domain: str) -> tuple[str | None, str | None]:
    """(bucket, key) from the raw (still percent-encoded) path and Host header.

    >>> split_target("/photos/2024/cat%20one.jpg", "localhost:9000", "")
    ('photos', '2024/cat one.jpg')
    >>> split_target("/2024/cat.jpg", "photos.s3.local:9000", "s3.local")
    ('photos', '2024/cat.jpg')
    """
    path = raw_path.split("?", 1)[0]
    if is_virtual_host(host, domain):
        bucket: str | None = _hostname(host)[: -len(domain) - 1]
        rest = path[1:] if path.startswith("/") else path
        key = urllib.parse.unquote(rest) if rest else None
        return bucket, key
    rest = path[1:] if path.startswith("/") else path
    if not rest:
        return None, None
    raw_bucket, _, raw_key = rest.partition("/")
    return urllib.parse.unquote(raw_bucket) or None, urllib.parse.unquote(raw_key) or None


def operation(
    method: str,
    bucket: str | None,
    key: str | None,
    query: Mapping[str, str],
    headers: Mapping[str, str],
) -> str:
    """The S3 operation name for this request (raises for what we do not serve)."""
    unsupported = UNSUPPORTED.intersection(query)
    if unsupported:
        raise errors.NotImplemented(f"the {sorted(unsupported)[0]} sub-resource is not implemented")
    if bucket is None:
        if method == "GET":
            return "ListBuckets"
        raise errors.MethodNotAllowed()
    if key is None:
        return _bucket_operation(method, query)
    return _object_operation(method, query, headers)


def _bucket_operation(method: str, query: Mapping[str, str]) -> str:
    if method == "GET":
        if query.get("list-type") == "2":
            return "ListObjectsV2"
        if "uploads" in query:
            return "ListMultipartUploads"
        if "location" in query:
            return "GetBucketLocation"
        if "versioning" in query:
            return "GetBucketVersioning"
        return "ListObjects"
    table = {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}
    if method == "PUT" and "versioning" in query:
        raise errors.NotImplemented("bucket versioning is not implemented yet")
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if method in table:
        return table[method]
    raise errors.MethodNotAllowed()


def _object_operation(method: str, query: Mapping[str, str], headers: Mapping[str, str]) -> str:
    copy = "x-amz-copy-source" in headers
    if method in ("PUT", "POST") and ("if-match" in headers or "if-none-match" in headers):
        # Conditional writes are not implemented: ignoring the condition would
        # overwrite what the client asked to keep.
        raise errors.NotImplemented(
            "conditional writes (If-Match, If-None-Match) are not implemented",
            header="If-None-Match" if "if-none-match" in headers else "If-Match",
        )
    if method == "PUT":
        if "uploadId" in query or "partNumber" in query:
            if "uploadId" not in query or "partNumber" not in query:
                raise errors.InvalidRequest("UploadPart needs both uploadId and partNumber")
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "GET":
        return "ListParts" if "uploadId" in query else "GetObject"
    if method == "HEAD":
        return "HeadObject"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
    raise errors.MethodNotAllowed()
