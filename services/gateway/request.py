"""One S3 request as every handler receives it."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import cached_property

from aiohttp import web

from services.gateway import errors, xmlio
from services.gateway.auth import Authenticated
from services.gateway.body import Body
from services.gateway.context import Gateway
from services.gateway.endpoints import Endpoint


@dataclass
class S3Request:
    gw: Gateway
    http: web.Request
    auth: Authenticated
    endpoint: Endpoint
    request_id: str

    @property
    def query(self) -> Mapping[str, str]:
        return self.http.query

    @cached_property
    def headers(self) -> dict[str, str]:
        """Request headers with lower-case names."""
        return {name.lower(): value for name, value in self.http.headers.items()}

    @property
    def bucket(self) -> str:
        assert self.endpoint.bucket is not None
        return self.endpoint.bucket

    @property
    def key(self) -> str:
        assert self.endpoint.key is not None
        return self.endpoint.key

    @property
    def owner(self) -> xmlio.Owner:
        principal = self.auth.principal
        return xmlio.Owner(str(principal.user_id), principal.name)

    def body(self) -> Body:
        return Body(self.http, self.auth.payload_hash, self.auth.signer)

    async def small_body(self) -> bytes:
        """A whole (XML) body, bounded, with its checks applied."""
        body = self.body()
        data = bytearray()
        async for chunk in body.chunks():
            data += chunk
            if len(data) > xmlio.MAX_XML_BODY_BYTES:
                raise errors.MaxMessageLengthExceeded()
        body.finish_check(len(data), hashlib.md5(data).digest())
        return bytes(data)

    def int_query(self, name: str, default: int, low: int = 0, high: int = 2**31 - 1) -> int:
        value = self.query.get(name)
        if value is None or value == "":
            return default
        try:
            number = int(value)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            raise errors.InvalidArgument(
                f"{name} must be an integer between {low} and {high}",
                argument_name=name,
                argument_value=value,
            )
        return number


Handler = Callable[[S3Request], Awaitable[web.StreamResponse]]


def xml_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/xml")
