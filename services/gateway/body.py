"""A request body as the write path wants it: payload chunks plus a final check.

Handles plain bodies (with the signed payload sha256 checked, or
``UNSIGNED-PAYLOAD``) and ``aws-chunked`` bodies (chunk signatures and
trailing checksums, through ``chunked.AwsChunkedDecoder``), ``Content-MD5``
and ``x-amz-checksum-*`` headers, and the declared length. ``chunks()``
raises as soon as the framing is wrong; everything that needs the whole body
is checked by ``finish_check``, which the write path calls after the last
byte and before the final archive message, so a bad body stores nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from collections.abc import AsyncIterator

from aiohttp import web

from services.gateway import chunked, errors, sigv4

#: ``x-amz-checksum-<algorithm>`` headers that carry a value to verify (not
#: ``-type``, ``-mode`` or ``-algorithm``); crc64nvme is refused by checksum_for.
CHECKSUM_HEADERS = frozenset({"crc32", "crc32c", "sha1", "sha256", "sha512", "crc64nvme"})
#: A body that sends nothing for this long is abandoned (S3's RequestTimeout).
IDLE_TIMEOUT_S = 30.0


class Body:
    def __init__(
        self,
        request: web.Request,
        payload_hash: str,
        signer: sigv4.StreamingSigner | None,
    ) -> None:
        self._request = request
        headers = {name.lower(): value for name, value in request.headers.items()}
        self._content_md5 = _content_md5(headers.get("content-md5"))
        self._declared = _content_length(request)
        self._expected_sha256 = sigv4.signed_payload_sha256(payload_hash)
        self._sha256 = hashlib.sha256() if self._expected_sha256 else None
        self._decoder = (
            chunked.AwsChunkedDecoder.from_headers(payload_hash, headers, signer)
            if payload_hash in sigv4.STREAMING_MODES
            else None
        )
        self._checksums = {
            name: (chunked.checksum_for(name), value)
            for name, value in headers.items()
            if name.removeprefix(chunked.CHECKSUM_PREFIX) in CHECKSUM_HEADERS
        }
        self.raw_bytes = 0

    async def chunks(self) -> AsyncIterator[bytes]:
        stream = self._request.content
        while True:
            try:
                raw = await asyncio.wait_for(stream.readany(), IDLE_TIMEOUT_S)
            except TimeoutError as exc:
                raise errors.RequestTimeout() from exc
            except (ConnectionError, web.HTTPException, ValueError) as exc:
                raise errors.IncompleteBody(f"The body could not be read: {exc}") from exc
            if not raw:
                break
            self.raw_bytes += len(raw)
            payload = self._decoder.feed(raw) if self._decoder is not None else raw
            if payload:
                if self._sha256 is not None:
                    self._sha256.update(payload)
                for checksum, _ in self._checksums.values():
                    checksum.update(payload)
                yield payload
        if self._declared is not None and self.raw_bytes != self._declared:
            raise errors.IncompleteBody(
                f"You did not provide the number of bytes specified by the Content-Length "
                f"HTTP header ({self.raw_bytes} of {self._declared})."
            )
        if self._decoder is not None:
            self._decoder.finish()

    def finish_check(self, size: int, md5: bytes) -> None:
        if self._content_md5 is not None and not hmac.compare_digest(self._content_md5, md5):
            raise errors.BadDigest(
                "The Content-MD5 you specified did not match what we received.",
                details={"ExpectedDigest": base64.b64encode(self._content_md5).decode()},
            )
        if self._sha256 is not None and self._sha256.hexdigest() != self._expected_sha256:
            raise errors.XAmzContentSHA256Mismatch(
                details={
                    "ClientComputedContentSHA256": self._expected_sha256 or "",
                    "S3ComputedContentSHA256": self._sha256.hexdigest(),
                }
            )
        for checksum, expected in self._checksums.values():
            chunked.verify_checksum(checksum, expected)


def _content_md5(value: str | None) -> bytes | None:
    if value is None:
        return None
    try:
        digest = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    if len(digest) != 16:
        raise errors.InvalidDigest()
    return digest


def _content_length(request: web.Request) -> int | None:
    if request.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return None
    if request.content_length is None:
        raise errors.MissingContentLength()
    return request.content_length
