"""Incremental decoder for `aws-chunked` request bodies, and S3 checksums.

Role: turn the bytes of an `aws-chunked` body (as today's SDKs send by
default) back into the object's bytes while they arrive, verifying chunk
signatures (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`), the trailing
checksum named in `x-amz-trailer`, the trailer signature and
`x-amz-decoded-content-length`. Wire format:

    signed:    <hex-size>;chunk-signature=<sig>\\r\\n<data>\\r\\n ... 0;chunk-signature=<sig>\\r\\n
    unsigned:  <hex-size>\\r\\n<data>\\r\\n ... 0\\r\\n
    then trailers, `name:value\\r\\n` each (`x-amz-trailer-signature:<sig>\\r\\n`
    last when signed), then `\\r\\n`.

Invariants:
- Pure: no aiohttp, no I/O; feed it any split of the body, even byte by byte.
- Bounded memory: only a chunk header or trailer line is ever buffered
  (`MAX_LINE_BYTES`); payload bytes go straight through `feed`'s result.
- Bytes returned by `feed` are NOT yet authenticated: a bad chunk signature
  is detected at the end of that chunk, a bad checksum or trailer signature
  at the end of the body. The caller must not commit anything before
  `finish()` returns.
- Once an error was raised, every later call raises it again.
- Errors are `SigV4Error` subclasses named after S3 error codes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import zlib
from collections.abc import Mapping
from enum import Enum, auto
from typing import Protocol

import crc32c

from services.gateway.sigv4 import (
    SIGNED_STREAMING_MODES,
    STREAMING_MODES,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    InvalidArgument,
    InvalidRequest,
    SignatureDoesNotMatch,
    SigV4Error,
    StreamingSigner,
)

MAX_LINE_BYTES = 4096
MAX_TRAILERS = 16
CHECKSUM_PREFIX = "x-amz-checksum-"
TRAILER_SIGNATURE = "x-amz-trailer-signature"

_HEX_SIZE_RE = re.compile(rb"[0-9a-fA-F]{1,16}")
_SIGNATURE_RE = re.compile(rb"[0-9a-f]{64}")


# --------------------------------------------------------------------------
# Errors (class name == S3 error code).


class InvalidChunkSizeError(SigV4Error):
    status = 400
    default_message = "Your upload has an invalid chunk size."


class IncompleteBody(SigV4Error):
    status = 400
    default_message = (
        "You did not provide the number of bytes specified by the Content-Length HTTP header."
    )


class BadDigest(SigV4Error):
    status = 400
    default_message = "The checksum you specified did not match the calculated checksum."


class MalformedTrailerError(SigV4Error):
    status = 400
    default_message = (
        "The request contained trailing data that was not well-formed or did not conform "
        "to our published schema."
    )


# --------------------------------------------------------------------------
# Checksums (x-amz-checksum-*).


class Checksum(Protocol):
    algorithm: str  # upper case, as S3 names it: CRC32, CRC32C, SHA256, ...

    def update(self, data: bytes | memoryview) -> None: ...

    def digest(self) -> bytes: ...

    def b64digest(self) -> str: ...


class _Crc(Checksum):
    algorithm = "CRC32"

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | memoryview) -> None:
        self._value = zlib.crc32(data, self._value)

    def digest(self) -> bytes:
        return (self._value & 0xFFFFFFFF).to_bytes(4, "big")

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


class _Crc32c(_Crc):
    algorithm = "CRC32C"

    def update(self, data: bytes | memoryview) -> None:
        self._value = crc32c.crc32c(data, self._value)


class _Hash(Checksum):
    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm.upper()
        self._hash = hashlib.new(algorithm)

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)

    def digest(self) -> bytes:
        return self._hash.digest()

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


_DIGEST_SIZES = {"crc32": 4, "crc32c": 4, "sha1": 20, "sha256": 32, "sha512": 64}
SUPPORTED_CHECKSUMS = frozenset(_DIGEST_SIZES)


def checksum_for(name: str) -> Checksum:
    """A fresh checksum for `crc32` or `x-amz-checksum-crc32` (any case).

    Raises InvalidRequest for an algorithm this gateway does not compute.
    """
    algorithm = _algorithm(name)
    if algorithm == "crc32":
        return _Crc()
    if algorithm == "crc32c":
        return _Crc32c()
    return _Hash(algorithm)


def verify_checksum(checksum: Checksum, expected_b64: str) -> None:
    """Compare a finished checksum with the value the client sent.

    Raises InvalidRequest if the value is not a well-formed digest, BadDigest
    if it differs.
    """
    header = f"{CHECKSUM_PREFIX}{checksum.algorithm.lower()}"
    try:
        expected = base64.b64decode(expected_b64.strip(), validate=True)
    except binascii.Error:
        expected = b""
    if len(expected) != _DIGEST_SIZES[checksum.algorithm.lower()]:
        raise InvalidRequest(f"Value for {header} header is invalid.")
    if not hmac.compare_digest(expected, checksum.digest()):
        raise BadDigest(
            f"The {checksum.algorithm} you specified did not match the calculated checksum."
        )


def parse_trailer_header(value: str | None) -> list[str]:
    """Names in an `x-amz-trailer` header, lower-cased.

    >>> parse_trailer_header(" x-amz-checksum-CRC32 ")
    ['x-amz-checksum-crc32']
    """
    if not value:
        return []
    return [name.strip().lower() for name in value.split(",") if name.strip()]


def _algorithm(name: str) -> str:
    algorithm = name.strip().lower().removeprefix(CHECKSUM_PREFIX)
    if algorithm not in SUPPORTED_CHECKSUMS:
        raise InvalidRequest(f"The algorithm {name!r} is not supported for x-amz-checksum.")
    return algorithm


# --------------------------------------------------------------------------
# The decoder.


class _State(Enum):
    SIZE_LINE = auto()
    DATA = auto()
    DATA_CRLF = auto()
    TRAILER_LINE = auto()
    DONE = auto()


class AwsChunkedDecoder:
    """Feed `aws-chunked` bytes, get payload bytes; `finish()` at end of body.

    `payload_hash` is the request's x-amz-content-sha256 (one of the
    STREAMING-* modes); `signer` is what `sigv4.verify` returned (required
    for the signed modes, ignored otherwise); `trailer_names` come from
    `x-amz-trailer`; `decoded_length` from `x-amz-decoded-content-length`.
    """

    def __init__(
        self,
        payload_hash: str,
        signer: StreamingSigner | None,
        trailer_names: list[str],
        decoded_length: int | None,
    ) -> None:
        if payload_hash not in STREAMING_MODES:
            raise InvalidArgument(f"{payload_hash!r} is not an aws-chunked payload mode.")
        self._signed = payload_hash in SIGNED_STREAMING_MODES
        if self._signed and signer is None:
            raise ValueError("a signed streaming payload needs the StreamingSigner")
        self._trailer_mode = payload_hash in (STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER)
        if trailer_names and not self._trailer_mode:
            raise InvalidRequest(f"x-amz-trailer is not allowed with {payload_hash}.")
        self._signer = signer
        self._expected_trailers = [name.lower() for name in trailer_names]
        self._checksums = {
            name: checksum_for(name)
            for name in self._expected_trailers
            if name.startswith(CHECKSUM_PREFIX)
        }
        self._decoded_length = decoded_length
        self._state = _State.SIZE_LINE
        self._line = bytearray()
        self._remaining = 0  # payload bytes left in the current chunk
        self._crlf_seen = 0
        self._chunk_hash = hashlib.sha256()
        self._chunk_signature = b""
        self._trailers: dict[str, str] = {}
        self._trailer_lines: list[tuple[str, str]] = []
        self._decoded_total = 0
        self._error: SigV4Error | None = None

    @classmethod
    def from_headers(
        cls, payload_hash: str, headers: Mapping[str, str], signer: StreamingSigner | None
    ) -> AwsChunkedDecoder:
        """Build from lower-case request headers (x-amz-trailer, x-amz-decoded-content-length)."""
        raw_length = headers.get("x-amz-decoded-content-length")
        decoded_length: int | None = None
        if raw_length is not None:
            if not raw_length.strip().isdigit():
                raise InvalidArgument("x-amz-decoded-content-length is not a valid length.")
            decoded_length = int(raw_length)
        return cls(
            payload_hash, signer, parse_trailer_header(headers.get("x-amz-trailer")), decoded_length
        )

    @property
    def decoded_bytes(self) -> int:
        return self._decoded_total

    def feed(self, data: bytes) -> bytes:
        """Consume the next bytes of the body; return the payload bytes they held."""
        self._raise_if_failed()
        try:
            return self._feed(data)
        except SigV4Error as error:
            self._error = error
            raise

    def finish(self) -> dict[str, str]:
        """At end of body: check that it was complete; return the trailers."""
        self._raise_if_failed()
        try:
            if self._state is _State.TRAILER_LINE and not self._line and self._trailer_lines:
                # Some clients end the body right after the last trailer's CRLF.
                self._end_of_trailers()
            if self._state is not _State.DONE:
                raise IncompleteBody("The aws-chunked body ended before its final chunk.")
            return dict(self._trailers)
        except SigV4Error as error:
            self._error = error
            raise

    # ---------------------------------------------------------------- internals

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end:
            state = self._state
            if state is _State.DATA:
                take = min(self._remaining, end - pos)
                piece = view[pos : pos + take]
                self._consume_payload(piece)
                out.append(bytes(piece))
                pos += take
            elif state is _State.DATA_CRLF:
                if data[pos] != b"\r\n"[self._crlf_seen]:
                    raise InvalidChunkSizeError("Chunk data must be followed by CRLF.")
                self._crlf_seen += 1
                pos += 1
                if self._crlf_seen == 2:
                    self._state = _State.SIZE_LINE
            elif state is _State.DONE:
                raise InvalidChunkSizeError("Data after the end of the aws-chunked body.")
            else:
                pos = self._take_line(data, pos)
        return b"".join(out)

    def _take_line(self, data: bytes, pos: int) -> int:
        newline = data.find(b"\n", pos)
        stop = len(data) if newline < 0 else newline + 1
        if len(self._line) + stop - pos > MAX_LINE_BYTES:
            raise self._line_error("A chunk header or trailer line is too long.")
        self._line += data[pos:stop]
        if newline >= 0:
            line = bytes(self._line)
            self._line.clear()
            if not line.endswith(b"\r\n"):
                raise self._line_error("Lines of an aws-chunked body must end with CRLF.")
            if self._state is _State.SIZE_LINE:
                self._on_size_line(line[:-2])
            else:
                self._on_trailer_line(line[:-2])
        return stop

    def _line_error(self, message: str) -> SigV4Error:
        if self._state is _State.TRAILER_LINE:
            return MalformedTrailerError(message)
        return InvalidChunkSizeError(message)

    def _on_size_line(self, line: bytes) -> None:
        size_field, _, extension = line.partition(b";")
        if not _HEX_SIZE_RE.fullmatch(size_field):
            raise InvalidChunkSizeError(f"Invalid chunk size {size_field[:32]!r}.")
        size = int(size_field, 16)
        if self._signed:
            self._chunk_signature = _chunk_signature(extension)
        if self._decoded_length is not None and self._decoded_total + size > self._decoded_length:
            raise IncompleteBody("The body is longer than x-amz-decoded-content-length.")
        if size == 0:
            self._end_of_chunk()
            self._state = _State.TRAILER_LINE
        else:
            self._remaining = size
            self._state = _State.DATA

    def _consume_payload(self, piece: memoryview) -> None:
        if self._signed:
            self._chunk_hash.update(piece)
        for checksum in self._checksums.values():
            checksum.update(piece)
        self._decoded_total += len(piece)
        self._remaining -= len(piece)
        if self._remaining == 0:
            self._end_of_chunk()
            self._crlf_seen = 0
            self._state = _State.DATA_CRLF

    def _end_of_chunk(self) -> None:
        if not self._signed:
            return
        assert self._signer is not None
        expected = self._signer.chunk_signature(self._chunk_hash.hexdigest())
        self._chunk_hash = hashlib.sha256()
        if not hmac.compare_digest(expected.encode(), self._chunk_signature):
            raise SignatureDoesNotMatch(
                "The chunk signature we calculated does not match the signature you provided."
            )

    def _on_trailer_line(self, line: bytes) -> None:
        if not line:
            self._end_of_trailers()
            return
        if len(self._trailer_lines) >= MAX_TRAILERS:
            raise MalformedTrailerError("Too many trailing headers.")
        name, colon, value = line.decode("utf-8", "replace").partition(":")
        name, value = name.strip().lower(), value.strip()
        if not colon or not name:
            raise MalformedTrailerError()
        self._trailer_lines.append((name, value))

    def _end_of_trailers(self) -> None:
        trailers = dict(self._trailer_lines)
        if len(trailers) != len(self._trailer_lines):
            raise MalformedTrailerError("A trailing header was repeated.")
        signature = trailers.pop(TRAILER_SIGNATURE, None)
        unexpected = trailers.keys() - set(self._expected_trailers)
        missing = set(self._expected_trailers) - trailers.keys()
        if unexpected or missing:
            raise MalformedTrailerError()
        self._check_trailer_signature(trailers, signature)
        for name, checksum in self._checksums.items():
            verify_checksum(checksum, trailers[name])
        if self._decoded_length is not None and self._decoded_total != self._decoded_length:
            raise IncompleteBody()
        self._trailers = trailers
        self._state = _State.DONE

    def _check_trailer_signature(self, trailers: dict[str, str], signature: str | None) -> None:
        signs_trailers = self._signed and self._trailer_mode
        if not signs_trailers:
            if signature is not None:
                raise MalformedTrailerError("Unexpected x-amz-trailer-signature.")
            return
        if signature is None:
            raise MalformedTrailerError("Missing x-amz-trailer-signature.")
        assert self._signer is not None
        canonical = "".join(f"{name}:{trailers[name]}\n" for name in sorted(trailers))
        expected = self._signer.trailer_signature(canonical.encode())
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise SignatureDoesNotMatch(
                "The trailer signature we calculated does not match the signature you provided."
            )


def _chunk_signature(extension: bytes) -> bytes:
    name, _, value = extension.partition(b"=")
    if name.strip() != b"chunk-signature" or not _SIGNATURE_RE.fullmatch(value.strip()):
        raise SignatureDoesNotMatch("A signed chunk must carry chunk-signature=<64 hex>.")
    return value.strip()
