"""AWS Signature Version 2 presigned URLs (query-string authentication).

Role: botocore presigns S3 URLs with SigV2 by default in the regions that
had it (us-east-1 among them) unless the client configures
``signature_version="s3v4"``, so a gateway that answers as such a region must
accept them for boto3's default ``generate_presigned_url`` to work, as S3
does. Only the query form is accepted (``AWSAccessKeyId``, ``Signature``,
``Expires``); SigV2 in the ``Authorization`` header stays refused by
``sigv4.parse``.

    StringToSign = METHOD\\n Content-MD5\\n Content-Type\\n Expires\\n
                   CanonicalizedAmzHeaders CanonicalizedResource
    Signature    = base64(HMAC-SHA1(secret, StringToSign))

``Content-MD5``, ``Content-Type`` and ``x-amz-*`` are taken from the query when
the signer hoisted them there (botocore does), else from the request headers.
The resource is the path exactly as received (with ``/bucket`` in front for
virtual-host-style requests) plus the sub-resources and ``response-*``
overrides of the query, sorted, values percent-decoded.

Invariants: pure (no I/O, no clock: ``now`` comes in); errors are the
``sigv4.SigV4Error`` classes named after S3 codes; signatures are compared in
constant time. A presigned SigV2 URL signs no body: the payload is unsigned.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import unquote

from services.gateway.sigv4 import AccessDenied, SignatureDoesNotMatch, SignedRequest, query_pairs

#: Query parameters that are part of the signed resource (botocore's list).
SUB_RESOURCES = frozenset(
    {
        "accelerate", "acl", "analytics", "cors", "defaultObjectAcl", "delete", "inventory",
        "lifecycle", "location", "logging", "metrics", "notification", "object-lock",
        "partNumber", "policy", "replication", "requestPayment", "restore",
        "response-cache-control", "response-content-disposition", "response-content-encoding",
        "response-content-language", "response-content-type", "response-expires", "select",
        "select-type", "storageClass", "tagging", "torrent", "uploadId", "uploads",
        "versionId", "versioning", "versions", "website",
    }
)  # fmt: skip
_REQUIRED = ("AWSAccessKeyId", "Signature", "Expires")


@dataclass(frozen=True)
class QueryAuth:
    """The SigV2 parameters of a presigned URL, before its secret is known."""

    access_key: str
    signature: str
    expires: str  # seconds since the epoch, as signed (a string: it is signed as text)


def parse(req: SignedRequest) -> QueryAuth | None:
    """The SigV2 query parameters, or None when the request is not SigV2-presigned."""
    if "authorization" in req.headers:
        return None
    params: dict[str, str] = {}
    for key, value in query_pairs(req.raw_query):
        params.setdefault(key.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
    if not all(name in params for name in _REQUIRED) or "X-Amz-Algorithm" in params:
        return None
    # '+' in a base64 signature that the client forgot to encode arrives as ' '.
    signature = params["Signature"].replace(" ", "+")
    return QueryAuth(params["AWSAccessKeyId"], signature, params["Expires"])


def canonical_resource(raw_path: str, raw_query: str, bucket_in_host: str | None = None) -> str:
    """The signed resource: the path as received, plus the sub-resources.

    >>> canonical_resource("/b/a%20b", "uploadId=x%2By&Signature=s&acl")
    '/b/a%20b?acl&uploadId=x+y'
    >>> canonical_resource("/k", "", bucket_in_host="b")
    '/b/k'
    """
    path = raw_path or "/"
    if bucket_in_host is not None:
        path = f"/{bucket_in_host}{path}"
    pairs: list[tuple[str, str | None]] = []
    for part in raw_query.split("&"):
        name, eq, value = part.partition("=")
        if name in SUB_RESOURCES:
            pairs.append((name, unquote(value) if eq else None))
    if not pairs:
        return path
    pairs.sort(key=lambda pair: pair[0])
    return (
        path + "?" + "&".join(name if value is None else f"{name}={value}" for name, value in pairs)
    )


def string_to_sign(req: SignedRequest, auth: QueryAuth, bucket_in_host: str | None = None) -> str:
    hoisted: dict[str, str] = {}
    for key, value in query_pairs(req.raw_query):
        name = key.decode("utf-8", "replace").lower()
        if name.startswith("x-amz-") or name in ("content-md5", "content-type"):
            hoisted.setdefault(name, value.decode("utf-8", "replace"))
    fields: Mapping[str, str] = {**req.headers, **hoisted}
    amz = "".join(
        f"{name}:{fields[name].strip()}\n" for name in sorted(fields) if name.startswith("x-amz-")
    )
    return "\n".join(
        [
            req.method,
            fields.get("content-md5", "").strip(),
            fields.get("content-type", "").strip(),
            auth.expires,
            amz + canonical_resource(req.raw_path, req.raw_query, bucket_in_host),
        ]
    )


def signature(secret_key: str, string: str) -> str:
    digest = hmac.new(secret_key.encode(), string.encode("utf-8", "surrogateescape"), hashlib.sha1)
    return base64.b64encode(digest.digest()).decode()


def verify(
    req: SignedRequest,
    auth: QueryAuth,
    secret_key: str,
    now: datetime,
    bucket_in_host: str | None = None,
) -> None:
    """Refuse an expired URL (AccessDenied) or a wrong signature (SignatureDoesNotMatch)."""
    try:
        expires = int(auth.expires)
    except ValueError:
        raise AccessDenied("Invalid date (should be seconds since epoch)") from None
    if now.timestamp() > expires:
        raise AccessDenied(
            "Request has expired",
            details={
                "Expires": datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "ServerTime": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )
    sts = string_to_sign(req, auth, bucket_in_host)
    candidates = [sts]
    if bucket_in_host is None and req.raw_path.count("/") == 1 and len(req.raw_path) > 1:
        # A path-style request for a bucket: botocore signs "/bucket/", which
        # is the resource of the same request made virtual-host style.
        candidates.append(string_to_sign(replace(req, raw_path=req.raw_path + "/"), auth))
    matches = [
        hmac.compare_digest(signature(secret_key, candidate).encode(), auth.signature.encode())
        for candidate in candidates
    ]
    if not any(matches):
        raise SignatureDoesNotMatch(
            details={
                "AWSAccessKeyId": auth.access_key,
                "StringToSign": sts,
                "SignatureProvided": auth.signature,
            }
        )
