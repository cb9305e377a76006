"""The aws-chunked decoder: framing, chunk/trailer signatures, checksums, limits."""

from __future__ import annotations

import base64
import hashlib
import io
import zlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.httpchecksum import (
    AwsChunkedWrapper,
    BaseChecksum,
    Crc32Checksum,
    Sha1Checksum,
    Sha256Checksum,
)
from botocore.session import get_session
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway import sigv4
from services.gateway.chunked import (
    MAX_LINE_BYTES,
    AwsChunkedDecoder,
    BadDigest,
    IncompleteBody,
    InvalidChunkSizeError,
    MalformedTrailerError,
    checksum_for,
    parse_trailer_header,
    verify_checksum,
)
from services.gateway.sigv4 import (
    STREAMING_PAYLOAD,
    STREAMING_PAYLOAD_TRAILER,
    STREAMING_UNSIGNED_TRAILER,
    InvalidRequest,
    SignatureDoesNotMatch,
    SigV4Error,
    StreamingSigner,
)
from tests.unit.test_sigv4 import (
    EXAMPLE_CHUNKS,
    EXAMPLE_NOW,
    EXAMPLE_SECRET,
    aws_example_request,
)

CRC32 = "x-amz-checksum-crc32"
SCOPE = "20260101/us-east-1/s3/aws4_request"
AMZ_DATE = "20260101T000000Z"
SEED = "ab" * 32


# ---------------------------------------------------------------- helpers


def new_signer() -> StreamingSigner:
    key = sigv4.signing_key("secret", "20260101", "us-east-1")
    return StreamingSigner(key, AMZ_DATE, SCOPE, SEED)


def b64(checksum_name: str, payload: bytes) -> str:
    checksum = checksum_for(checksum_name)
    checksum.update(payload)
    return checksum.b64digest()


def pieces(payload: bytes, chunk_size: int) -> list[bytes]:
    return [payload[i : i + chunk_size] for i in range(0, len(payload), chunk_size)]


def encode(
    payload: bytes,
    chunk_size: int,
    *,
    signer: StreamingSigner | None = None,
    trailers: Sequence[tuple[str, str]] = (),
    sign_trailers: bool = False,
) -> bytes:
    """An aws-chunked body, written independently of the decoder."""
    out = bytearray()
    for chunk in [*pieces(payload, chunk_size), b""]:
        out += f"{len(chunk):x}".encode()
        if signer is not None:
            signature = signer.chunk_signature(hashlib.sha256(chunk).hexdigest())
            out += f";chunk-signature={signature}".encode()
        out += b"\r\n"
        if chunk:
            out += chunk + b"\r\n"
    for name, value in trailers:
        out += f"{name}:{value}\r\n".encode()
    if sign_trailers:
        assert signer is not None
        canonical = "".join(f"{n}:{v}\n" for n, v in sorted(trailers)).encode()
        out += f"x-amz-trailer-signature:{signer.trailer_signature(canonical)}\r\n".encode()
    out += b"\r\n"
    return bytes(out)


def botocore_body(payload: bytes, checksum_cls: type[BaseChecksum], name: str, size: int) -> bytes:
    wrapper = AwsChunkedWrapper(
        io.BytesIO(payload), checksum_cls=checksum_cls, checksum_name=name, chunk_size=size
    )
    return wrapper.read()


def split(body: bytes, cuts: Sequence[int]) -> Iterator[bytes]:
    points = sorted({min(max(cut, 0), len(body)) for cut in cuts})
    start = 0
    for point in [*points, len(body)]:
        yield body[start:point]
        start = point


def decode(decoder: AwsChunkedDecoder, parts: Iterator[bytes] | Sequence[bytes]) -> bytes:
    out = bytearray()
    for part in parts:
        out += decoder.feed(part)
    return bytes(out)


def unsigned(names: Sequence[str] = (CRC32,), length: int | None = None) -> AwsChunkedDecoder:
    return AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER, None, list(names), length)


# ---------------------------------------------------------------- the AWS example


def example_body() -> bytes:
    out = bytearray()
    for chunk, signature in EXAMPLE_CHUNKS:
        out += f"{len(chunk):x};chunk-signature={signature}\r\n".encode()
        out += chunk + b"\r\n" if chunk else b"\r\n"
    return bytes(out)


def example_decoder() -> AwsChunkedDecoder:
    signed = aws_example_request()
    ctx = sigv4.parse(signed)
    assert ctx is not None
    signer = sigv4.verify(signed, ctx, EXAMPLE_SECRET, EXAMPLE_NOW)
    return AwsChunkedDecoder.from_headers(ctx.payload_hash, signed.headers, signer)


def test_aws_example_body_decodes() -> None:
    body = example_body()
    assert len(body) == 66824  # the example's Content-Length
    for parts in ([body], split(body, range(0, len(body), 997)), split(body, [86, 88, 65626])):
        decoder = example_decoder()
        assert decode(decoder, parts) == b"a" * 66560
        assert decoder.finish() == {}
        assert decoder.decoded_bytes == 66560


def test_aws_example_byte_by_byte() -> None:
    body = example_body()
    decoder = example_decoder()
    out = bytearray()
    for i in range(len(body)):
        out += decoder.feed(body[i : i + 1])
    assert bytes(out) == b"a" * 66560
    decoder.finish()


@pytest.mark.parametrize("where", [100, 65536 + 80, 66000])
def test_aws_example_flipped_data_byte(where: int) -> None:
    body = bytearray(example_body())
    assert body[where : where + 1] == b"a"
    body[where] ^= 1
    decoder = example_decoder()
    with pytest.raises(SignatureDoesNotMatch) as caught:
        decode(decoder, [bytes(body)])
    assert caught.value.status == 403
    with pytest.raises(SignatureDoesNotMatch):  # the decoder stays failed
        decoder.finish()


def test_aws_example_flipped_signature() -> None:
    body = example_body().replace(b"ad80c730", b"ad80c731")
    with pytest.raises(SignatureDoesNotMatch):
        decode(example_decoder(), [body])


def test_signed_chunk_without_signature() -> None:
    body = example_body().replace(b"400;chunk-signature=", b"400;chunk-signaturX=")
    with pytest.raises(SignatureDoesNotMatch):
        decode(example_decoder(), [body])


# ---------------------------------------------------------------- round trips


@settings(max_examples=150, deadline=None)
@given(
    payload=st.binary(max_size=3000),
    chunk_size=st.integers(1, 700),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    algorithm=st.sampled_from(["crc32", "crc32c", "sha1", "sha256"]),
)
def test_unsigned_trailer_round_trip(
    payload: bytes, chunk_size: int, cuts: list[int], algorithm: str
) -> None:
    name = f"x-amz-checksum-{algorithm}"
    body = encode(payload, chunk_size, trailers=[(name, b64(name, payload))])
    decoder = unsigned([name], len(payload))
    assert decode(decoder, split(body, cuts)) == payload
    assert decoder.finish() == {name: b64(name, payload)}


@settings(max_examples=100, deadline=None)
@given(
    payload=st.binary(max_size=3000),
    chunk_size=st.integers(1, 700),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    trailer=st.booleans(),
)
def test_signed_round_trip(payload: bytes, chunk_size: int, cuts: list[int], trailer: bool) -> None:
    trailers = [(CRC32, b64(CRC32, payload))] if trailer else []
    body = encode(
        payload, chunk_size, signer=new_signer(), trailers=trailers, sign_trailers=trailer
    )
    mode = STREAMING_PAYLOAD_TRAILER if trailer else STREAMING_PAYLOAD
    decoder = AwsChunkedDecoder(mode, new_signer(), [CRC32] if trailer else [], len(payload))
    assert decode(decoder, split(body, cuts)) == payload
    assert decoder.finish() == dict(trailers)


@settings(max_examples=100, deadline=None)
@given(
    payload=st.binary(max_size=3000),
    chunk_size=st.integers(1, 700),
    cuts=st.lists(st.integers(0, 4000), max_size=12),
    checksum=st.sampled_from(
        [(Crc32Checksum, "crc32"), (Sha256Checksum, "sha256"), (Sha1Checksum, "sha1")]
    ),
)
def test_botocore_wrapper_bodies_decode(
    payload: bytes,
    chunk_size: int,
    cuts: list[int],
    checksum: tuple[type[BaseChecksum], str],
) -> None:
    cls, algorithm = checksum
    name = f"x-amz-checksum-{algorithm}"
    body = botocore_body(payload, cls, name, chunk_size)
    decoder = unsigned([name], len(payload))
    assert decode(decoder, split(body, cuts)) == payload
    assert decoder.finish()[name] == cls().handle(payload)


# ---------------------------------------------------------------- checksums


def test_checksum_known_values() -> None:
    vectors = {
        "crc32": (0xCBF43926).to_bytes(4, "big"),
        "crc32c": (0xE3069283).to_bytes(4, "big"),
        "sha1": hashlib.sha1(b"123456789").digest(),
        "sha256": hashlib.sha256(b"123456789").digest(),
    }
    for algorithm, digest in vectors.items():
        checksum = checksum_for(f"X-Amz-Checksum-{algorithm.upper()}")
        checksum.update(b"1234")
        checksum.update(memoryview(b"56789"))
        assert checksum.digest() == digest
        assert checksum.b64digest() == base64.b64encode(digest).decode()
        assert checksum.algorithm == algorithm.upper()
    with pytest.raises(InvalidRequest):
        checksum_for("x-amz-checksum-md4")


@pytest.mark.parametrize("algorithm", ["crc32", "crc32c", "sha1", "sha256"])
def test_wrong_trailer_checksum(algorithm: str) -> None:
    name = f"x-amz-checksum-{algorithm}"
    payload = b"some payload"
    wrong = b64(name, payload + b"!")
    decoder = unsigned([name])
    with pytest.raises(BadDigest) as caught:
        decode(decoder, [encode(payload, 5, trailers=[(name, wrong)])])
        decoder.finish()
    assert caught.value.status == 400
    assert caught.value.message == (
        f"The {algorithm.upper()} you specified did not match the calculated checksum."
    )


@pytest.mark.parametrize("value", ["", "AAAA", "not base64!", "AAAAAAAA"])
def test_malformed_trailer_checksum(value: str) -> None:
    decoder = unsigned()
    with pytest.raises(InvalidRequest) as caught:
        decode(decoder, [encode(b"x", 5, trailers=[(CRC32, value)])])
    assert caught.value.message == "Value for x-amz-checksum-crc32 header is invalid."


def test_header_checksum_helper() -> None:
    checksum = checksum_for("crc32")
    checksum.update(b"hello world")
    verify_checksum(checksum, "DUoRhQ==")  # botocore's value for b"hello world"
    with pytest.raises(BadDigest):
        verify_checksum(checksum, "AAAAAA==")


def test_parse_trailer_header() -> None:
    assert parse_trailer_header(None) == []
    assert parse_trailer_header("X-Amz-Checksum-CRC32C, ") == ["x-amz-checksum-crc32c"]


# ---------------------------------------------------------------- trailers and signatures


def test_signed_trailer_tampering() -> None:
    payload = b"p" * 100
    good = encode(
        payload,
        64,
        signer=new_signer(),
        trailers=[(CRC32, b64(CRC32, payload))],
        sign_trailers=True,
    )
    decoder = AwsChunkedDecoder(STREAMING_PAYLOAD_TRAILER, new_signer(), [CRC32], None)
    assert decode(decoder, [good]) == payload

    signature_at = good.index(b"x-amz-trailer-signature:") + len(b"x-amz-trailer-signature:")
    bad = bytearray(good)
    bad[signature_at] = ord("0") if bad[signature_at] != ord("0") else ord("1")
    decoder = AwsChunkedDecoder(STREAMING_PAYLOAD_TRAILER, new_signer(), [CRC32], None)
    with pytest.raises(SignatureDoesNotMatch):
        decode(decoder, [bytes(bad)])

    unsigned_trailer = good[: good.index(b"x-amz-trailer-signature:")] + b"\r\n"
    decoder = AwsChunkedDecoder(STREAMING_PAYLOAD_TRAILER, new_signer(), [CRC32], None)
    with pytest.raises(MalformedTrailerError):
        decode(decoder, [unsigned_trailer])


@pytest.mark.parametrize(
    ("declared", "sent"),
    [
        ([CRC32], []),  # missing
        ([], [(CRC32, "AAAAAA==")]),  # undeclared
        ([CRC32], [(CRC32, "AAAAAA=="), (CRC32, "AAAAAA==")]),  # repeated
        ([CRC32], [(CRC32, "AAAAAA=="), ("x-amz-trailer-signature", "0" * 64)]),
    ],
)
def test_trailer_set_must_match_declaration(
    declared: list[str], sent: list[tuple[str, str]]
) -> None:
    decoder = unsigned(declared)
    with pytest.raises(MalformedTrailerError):
        decode(decoder, [encode(b"", 1, trailers=sent)])


def test_malformed_trailer_line() -> None:
    body = b"1\r\nx\r\n0\r\nno-colon-here\r\n\r\n"
    with pytest.raises(MalformedTrailerError):
        decode(unsigned(), [body])


def test_trailer_header_needs_trailer_mode() -> None:
    with pytest.raises(InvalidRequest):
        AwsChunkedDecoder(STREAMING_PAYLOAD, new_signer(), [CRC32], None)
    with pytest.raises(sigv4.InvalidArgument):
        AwsChunkedDecoder(sigv4.UNSIGNED_PAYLOAD, None, [], None)


# ---------------------------------------------------------------- truncation and lengths


def test_every_truncation_is_refused() -> None:
    payload = b"0123456789" * 3
    body = encode(payload, 7, trailers=[(CRC32, b64(CRC32, payload))])
    for cut in range(len(body)):
        decoder = unsigned(length=len(payload))
        decode(decoder, [body[:cut]])
        if cut == len(body) - 2:
            # Ended right after the last trailer's CRLF, without the final
            # empty line: everything was received and checked, so accepted.
            assert decoder.finish() == {CRC32: b64(CRC32, payload)}
            continue
        with pytest.raises(IncompleteBody):
            decoder.finish()


def test_signed_truncation_is_refused() -> None:
    body = example_body()
    for cut in (0, 50, 88, 65536, len(body) - 3, len(body) - 1):
        decoder = example_decoder()
        decode(decoder, [body[:cut]])
        with pytest.raises(IncompleteBody):
            decoder.finish()


def test_decoded_length_mismatch() -> None:
    payload = b"x" * 50
    body = encode(payload, 16, trailers=[(CRC32, b64(CRC32, payload))])
    short = unsigned(length=51)
    with pytest.raises(IncompleteBody):  # found at the end of the trailers
        decode(short, [body])
    with pytest.raises(IncompleteBody):
        short.finish()
    with pytest.raises(IncompleteBody):
        decode(unsigned(length=49), [body])
    decoder = AwsChunkedDecoder.from_headers(
        STREAMING_UNSIGNED_TRAILER,
        {"x-amz-trailer": CRC32, "x-amz-decoded-content-length": "50"},
        None,
    )
    assert decode(decoder, [body]) == payload
    decoder.finish()
    with pytest.raises(sigv4.InvalidArgument):
        AwsChunkedDecoder.from_headers(
            STREAMING_UNSIGNED_TRAILER, {"x-amz-decoded-content-length": "-1"}, None
        )


# ---------------------------------------------------------------- framing errors


@pytest.mark.parametrize("byte_by_byte", [False, True])
def test_oversized_header_line(byte_by_byte: bool) -> None:
    body = b"1" + b"0" * MAX_LINE_BYTES + b"\r\n"
    decoder = unsigned()
    with pytest.raises(InvalidChunkSizeError):
        if byte_by_byte:
            for i in range(len(body)):
                decoder.feed(body[i : i + 1])
        else:
            decoder.feed(body)
    assert len(decoder._line) <= MAX_LINE_BYTES  # never buffered more


def test_oversized_trailer_line() -> None:
    body = b"0\r\nx-amz-checksum-crc32:" + b"A" * MAX_LINE_BYTES + b"\r\n\r\n"
    with pytest.raises(MalformedTrailerError):
        decode(unsigned(), [body])


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\n",  # not hex
        b"\r\n",  # empty size
        b"12345678901234567\r\n",  # more than 16 hex digits
        b"1\nx\r\n",  # bare LF
        b"1\r\nxY\r\n",  # data longer than declared
        b"1\r\nx\r\n0\r\n\r\nextra",  # bytes after the end
    ],
)
def test_bad_framing(body: bytes) -> None:
    decoder = AwsChunkedDecoder(STREAMING_UNSIGNED_TRAILER, None, [], None)
    with pytest.raises(InvalidChunkSizeError) as caught:
        decode(decoder, [body])
    assert caught.value.status == 400
    with pytest.raises(InvalidChunkSizeError):  # stays failed
        decoder.feed(b"")


def test_error_classes() -> None:
    for cls in (InvalidChunkSizeError, IncompleteBody, BadDigest, MalformedTrailerError):
        error = cls()
        assert isinstance(error, SigV4Error)
        assert error.code == cls.__name__ and error.status == 400


# ---------------------------------------------------------------- real boto3 uploads


def capture_uploads(scheme: str, checksum_algorithm: str | None) -> list[AWSPreparedRequest]:
    """put_object and upload_part as botocore sends them, without any network."""
    client: Any = get_session().create_client(
        "s3",
        endpoint_url=f"{scheme}://127.0.0.1:9",
        region_name="us-east-1",
        aws_access_key_id="AKIDNIMBUS",
        aws_secret_access_key="secret+/=",
    )
    captured: list[AWSPreparedRequest] = []

    def before_send(request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        captured.append(request)
        return AWSResponse(request.url, 200, {"ETag": '"x"'}, _EmptyRaw())  # type: ignore[arg-type]

    client.meta.events.register("before-send.s3", before_send)
    extra = {"ChecksumAlgorithm": checksum_algorithm} if checksum_algorithm else {}
    client.put_object(Bucket="b", Key="dir/a key+", Body=UPLOAD, **extra)
    client.upload_part(Bucket="b", Key="k", UploadId="u/1", PartNumber=2, Body=UPLOAD, **extra)
    return captured


class _EmptyRaw:
    def stream(self, **_: Any) -> Iterator[bytes]:
        yield b""


UPLOAD = bytes(range(256)) * 20


def received(request: AWSPreparedRequest) -> tuple[sigv4.SignedRequest, bytes, datetime]:
    parts = urlsplit(request.url)
    items = [
        (str(k), v.decode() if isinstance(v, bytes) else str(v)) for k, v in request.headers.items()
    ]
    items.append(("Host", parts.netloc))
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    raw: Any = request.body
    if hasattr(raw, "read"):
        raw = raw.read()
    assert isinstance(raw, bytes)
    signed = sigv4.SignedRequest.from_parts(request.method, target, items)
    now = datetime.strptime(signed.headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed, raw, now


@pytest.mark.parametrize("algorithm", [None, "SHA256", "SHA1", "CRC32"])
def test_boto3_https_uploads_are_aws_chunked(algorithm: str | None) -> None:
    for request in capture_uploads("https", algorithm):
        signed, raw, now = received(request)
        ctx = sigv4.parse(signed)
        assert ctx is not None
        signer = sigv4.verify(signed, ctx, "secret+/=", now)
        assert ctx.payload_hash == STREAMING_UNSIGNED_TRAILER and signer is None
        trailer = f"x-amz-checksum-{(algorithm or 'CRC32').lower()}"
        assert signed.headers["x-amz-trailer"] == trailer
        decoder = AwsChunkedDecoder.from_headers(ctx.payload_hash, signed.headers, signer)
        assert decoder.feed(raw) == UPLOAD
        assert list(decoder.finish()) == [trailer]


def test_boto3_http_uploads_sign_the_payload() -> None:
    for request in capture_uploads("http", None):
        signed, raw, now = received(request)
        ctx = sigv4.parse(signed)
        assert ctx is not None
        assert sigv4.verify(signed, ctx, "secret+/=", now) is None
        assert raw == UPLOAD and ctx.payload_sha256 == hashlib.sha256(raw).hexdigest()
        checksum = checksum_for("crc32")
        checksum.update(raw)
        verify_checksum(checksum, signed.headers["x-amz-checksum-crc32"])
        assert zlib.crc32(raw).to_bytes(4, "big") == checksum.digest()
