"""Who is asking: SigV4 (header or presigned) checked against the key's secret.

SigV2 presigned URLs (what boto3 presigns by default for a us-east-1
endpoint) are accepted too, through ``sigv2``; their body is unsigned.

The root key comes from config; every other key's secret is decrypted from
the central database with the master key. Anonymous requests are refused:
every bucket is private to its owner (root sees every bucket).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import cryptography.exceptions
from aiohttp import web

from services.gateway import errors, queries, sigv2, sigv4
from services.gateway.context import Gateway, Principal


@dataclass(frozen=True)
class Authenticated:
    principal: Principal
    #: x-amz-content-sha256 as signed: a hex sha256, UNSIGNED-PAYLOAD or a STREAMING-* mode.
    payload_hash: str
    signer: sigv4.StreamingSigner | None


def signed_request(request: web.Request) -> sigv4.SignedRequest:
    return sigv4.SignedRequest.from_parts(
        request.method,
        request.raw_path,
        request.headers.items(),
    )


async def authenticate(
    gw: Gateway, request: web.Request, bucket_in_host: str | None = None
) -> Authenticated:
    """``bucket_in_host``: the bucket of a virtual-host-style request (SigV2 signs it)."""
    signed = signed_request(request)
    v2 = sigv2.parse(signed)
    if v2 is not None:
        principal, secret = await _lookup(gw, v2.access_key)
        sigv2.verify(signed, v2, secret, datetime.now(UTC), bucket_in_host)
        return Authenticated(principal, sigv4.UNSIGNED_PAYLOAD, None)
    context = sigv4.parse(signed, region=gw.cfg.region)
    if context is None:
        raise errors.AccessDenied("Anonymous access is not allowed; sign the request.")
    principal, secret = await _lookup(gw, context.access_key)
    signer = sigv4.verify(
        signed, context, secret, datetime.now(UTC), max_skew_s=int(gw.cfg.max_skew_s)
    )
    return Authenticated(principal, context.payload_hash, signer)


async def _lookup(gw: Gateway, access_key: str) -> tuple[Principal, str]:
    if access_key == gw.cfg.root_access_key:
        return gw.root, gw.cfg.root_secret_key
    row = await queries.access_key(gw.pool, access_key)
    if row is None:
        raise errors.InvalidAccessKeyId(access_key_id=access_key)
    try:
        secret = gw.box.open(access_key, bytes(row["secret_encrypted"]))
    except cryptography.exceptions.InvalidTag as exc:
        raise errors.InternalError("the access key's secret cannot be decrypted") from exc
    return Principal(row["user_id"], row["user_name"], access_key), secret
