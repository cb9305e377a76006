"""Who is asking: SigV4 (header or presigned) checked against the key's secret.

The root key comes from config; every other key's secret is decrypted from
the central database with the master key. Anonymous requests are refused:
every bucket is private to its owner (root sees every bucket).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import cryptography.exceptions
from aiohttp import web

from services.gateway import errors, queries, sigv4
from services.gateway.context import Gateway, Principal


@dataclass(frozen=True)
class Authenticated:
    principal: Principal
    context: sigv4.AuthContext
    signer: sigv4.StreamingSigner | None


def signed_request(request: web.Request) -> sigv4.SignedRequest:
    return sigv4.SignedRequest.from_parts(
        request.method,
        request.raw_path,
        request.headers.items(),
    )


async def authenticate(gw: Gateway, request: web.Request) -> Authenticated:
    signed = signed_request(request)
    context = sigv4.parse(signed, region=gw.cfg.region)
    if context is None:
        raise errors.AccessDenied("Anonymous access is not allowed; sign the request.")
    principal, secret = await _lookup(gw, context.access_key)
    signer = sigv4.verify(
        signed, context, secret, datetime.now(UTC), max_skew_s=int(gw.cfg.max_skew_s)
    )
    return Authenticated(principal, context, signer)


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
