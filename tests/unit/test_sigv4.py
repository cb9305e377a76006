"""SigV4 verification against requests signed by botocore's real signers."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.utils import percent_encode_sequence
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gateway import sigv4
from services.gateway.sigv4 import (
    AccessDenied,
    AuthContext,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    InvalidArgument,
    InvalidRequest,
    RequestTimeTooSkewed,
    SignatureDoesNotMatch,
    SignedRequest,
    SigV4Error,
    StreamingSigner,
)

ACCESS_KEY = "AKIDNIMBUSEXAMPLE"
SECRET = "s3cr3t/with+odd=chars"
REGION = "us-east-1"
ENDPOINT = "http://127.0.0.1:9000"
CREDS = Credentials(ACCESS_KEY, SECRET)


# ---------------------------------------------------------------- helpers


def object_url(bucket: str, key: str, query: Mapping[str, str] | str = "") -> str:
    """A URL as botocore's serializer builds it: key quoted with safe '/~'."""
    url = f"{ENDPOINT}/{bucket}/{quote(key, safe='/~')}"
    if isinstance(query, str):
        return f"{url}?{query}" if query else url
    return f"{url}?{percent_encode_sequence(query)}" if query else url


def host_of(url: str) -> str:
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}[parts.scheme]
    assert parts.hostname is not None
    return parts.hostname if parts.port in (None, default) else parts.netloc


def sign(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    secret: str = SECRET,
) -> AWSRequest:
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}), data=body)
    S3SigV4Auth(Credentials(ACCESS_KEY, secret), "s3", REGION).add_auth(request)
    return request


def presign(method: str, url: str, *, expires: int = 3600) -> AWSRequest:
    request = AWSRequest(method=method, url=url)
    S3SigV4QueryAuth(CREDS, "s3", REGION, expires=expires).add_auth(request)
    return request


def to_signed(request: AWSRequest, extra: Iterable[tuple[str, str]] = ()) -> SignedRequest:
    """What the gateway would receive for this botocore request."""
    assert request.url is not None and request.method is not None
    parts = urlsplit(request.url)
    items = [(str(k), str(v)) for k, v in request.headers.items()]
    if not any(name.lower() == "host" for name, _ in items):
        items.append(("Host", host_of(request.url)))
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return SignedRequest.from_parts(request.method, target, [*items, *extra])


def signed_at(request: AWSRequest) -> datetime:
    assert request.url is not None
    stamp = request.headers.get("X-Amz-Date")
    if stamp is None:
        stamp = parse_qs(urlsplit(request.url).query)["X-Amz-Date"][0]
    return datetime.strptime(str(stamp), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def check(request: AWSRequest, *, now: datetime | None = None, secret: str = SECRET) -> AuthContext:
    signed = to_signed(request)
    ctx = sigv4.parse(signed)
    assert ctx is not None
    sigv4.verify(signed, ctx, secret, now or signed_at(request))
    return ctx


def replace(
    signed: SignedRequest,
    *,
    method: str | None = None,
    raw_path: str | None = None,
    raw_query: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> SignedRequest:
    return SignedRequest(
        method=signed.method if method is None else method,
        raw_path=signed.raw_path if raw_path is None else raw_path,
        raw_query=signed.raw_query if raw_query is None else raw_query,
        headers=dict(signed.headers if headers is None else headers),
    )


def with_header(signed: SignedRequest, name: str, value: str) -> SignedRequest:
    return replace(signed, headers={**signed.headers, name: value})


def flip_hex(text: str) -> str:
    return text[:-1] + ("0" if text[-1] != "0" else "1")


# ---------------------------------------------------------------- valid requests

KEYS = [
    "plain.txt",
    "with space and  two",
    "unicodé/日本語/emoji-🙂",
    "a+b=c&d",
    "100% done",
    "tilde~and-_.",
    "dir//double//slash",
    "trailing/",
    "!'()*$@,;:?#[]",
    "percent%2Fencoded-looking",
    "./dot/../segments",
]


@pytest.mark.parametrize("key", KEYS)
def test_botocore_signed_put_verifies(key: str) -> None:
    body = b"hello nimbus"
    request = sign("PUT", object_url("bucket", key), body=body, headers={"x-amz-meta-a": "  x  y "})
    ctx = check(request)
    assert ctx.access_key == ACCESS_KEY
    assert ctx.region == REGION and ctx.date == ctx.amz_date[:8]
    assert ctx.payload_sha256 == hashlib.sha256(body).hexdigest()
    assert not ctx.presigned and not ctx.is_streaming


@pytest.mark.parametrize("key", KEYS)
def test_botocore_presigned_get_verifies(key: str) -> None:
    request = presign("GET", object_url("bucket", key))
    ctx = check(request)
    assert ctx.presigned and ctx.expires_s == 3600
    assert ctx.payload_hash == sigv4.UNSIGNED_PAYLOAD
    assert ctx.signed_headers == ("host",)


@pytest.mark.parametrize(
    "query",
    [
        {"list-type": "2", "prefix": "a b+c/é~", "delimiter": "/"},
        {"uploadId": "x/y+z=", "partNumber": "3"},
        {"versionId": "null", "response-content-disposition": 'attachment; filename="ä.txt"'},
    ],
)
def test_query_strings_verify(query: dict[str, str]) -> None:
    check(sign("GET", object_url("bucket", "k", query)))
    check(presign("GET", object_url("bucket", "k", query)))


def test_bare_query_keys_sign_as_key_equals() -> None:
    request = sign("POST", object_url("bucket", "k", "uploads"))
    check(request)
    assert sigv4.canonical_query_string("uploads") == "uploads="
    assert sigv4.canonical_query_string("delete&a=") == "a=&delete="


def test_virtual_host_style() -> None:
    url = "http://bucket.s3.nimbus.test:9000/some%20key"
    request = sign("GET", url)
    signed = to_signed(request)
    assert signed.headers["host"] == "bucket.s3.nimbus.test:9000"
    check(request)


def test_date_header_instead_of_x_amz_date() -> None:
    # botocore switches to a Date header when the request already has one.
    request = sign("GET", object_url("bucket", "k"), headers={"Date": "placeholder"})
    assert "X-Amz-Date" not in request.headers
    signed = to_signed(request)
    ctx = sigv4.parse(signed)
    assert ctx is not None
    moment = datetime.strptime(ctx.amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    sigv4.verify(signed, ctx, SECRET, moment)


def test_headers_repeated_and_spaced_are_canonicalised() -> None:
    signed = SignedRequest.from_parts(
        "GET", "/b/k?x=1", [("Host", "h"), ("X-Amz-Meta-A", "  a   b "), ("x-amz-meta-a", "c")]
    )
    assert signed.headers["x-amz-meta-a"] == "a b,c"
    assert signed.raw_path == "/b/k" and signed.raw_query == "x=1"


@settings(max_examples=60, deadline=None)
@given(
    key=st.text(st.characters(codec="utf-8"), min_size=1, max_size=40),
    meta=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    prefix=st.text(st.characters(codec="utf-8"), max_size=20),
)
def test_any_key_and_query_round_trips(key: str, meta: str, prefix: str) -> None:
    url = object_url("bucket", key, {"prefix": prefix, "max-keys": "5"})
    check(sign("PUT", url, body=b"x", headers={"x-amz-meta-m": meta}))
    check(presign("GET", url))


def test_anonymous_request_is_none() -> None:
    signed = SignedRequest.from_parts("GET", "/bucket/key?prefix=a", [("Host", "h")])
    assert sigv4.parse(signed) is None


# ---------------------------------------------------------------- tampering


def _tampered(signed: SignedRequest) -> Iterable[tuple[str, SignedRequest]]:
    authorization = signed.headers["authorization"]
    yield (
        "signature",
        with_header(signed, "authorization", flip_hex(authorization)),
    )
    yield "signed header", with_header(signed, "x-amz-meta-a", "other")
    yield "path", replace(signed, raw_path=signed.raw_path + "x")
    yield "path encoding", replace(signed, raw_path=signed.raw_path.replace("%20", "+"))
    yield "query value", replace(signed, raw_query=signed.raw_query.replace("prefix=p", "prefix=q"))
    yield "query added", replace(signed, raw_query=signed.raw_query + "&acl")
    yield "method", replace(signed, method="DELETE")
    yield "host", with_header(signed, "host", "evil.example")


@pytest.mark.parametrize("case", range(8))
def test_tampering_breaks_the_signature(case: int) -> None:
    request = sign(
        "GET", object_url("bucket", "a key", {"prefix": "p"}), headers={"x-amz-meta-a": "1"}
    )
    signed = to_signed(request)
    name, tampered = list(_tampered(signed))[case]
    ctx = sigv4.parse(tampered)
    assert ctx is not None
    with pytest.raises(SignatureDoesNotMatch) as caught:
        sigv4.verify(tampered, ctx, SECRET, signed_at(request))
    assert caught.value.status == 403, name
    assert caught.value.details["StringToSign"].startswith("AWS4-HMAC-SHA256\n")
    assert "CanonicalRequest" in caught.value.details


def test_wrong_secret() -> None:
    request = sign("GET", object_url("bucket", "k"))
    with pytest.raises(SignatureDoesNotMatch):
        check(request, secret=SECRET + "x")


def test_presigned_tampering() -> None:
    request = presign("GET", object_url("bucket", "k", {"versionId": "1"}))
    signed = to_signed(request)
    for tampered in (
        replace(signed, raw_query=signed.raw_query.replace("versionId=1", "versionId=2")),
        replace(signed, raw_query=flip_hex(signed.raw_query)),
        replace(signed, raw_path="/bucket/other"),
    ):
        ctx = sigv4.parse(tampered)
        assert ctx is not None
        with pytest.raises(SignatureDoesNotMatch):
            sigv4.verify(tampered, ctx, SECRET, signed_at(request))


def test_unsigned_amz_header_is_refused() -> None:
    signed = to_signed(sign("PUT", object_url("bucket", "k"), body=b"x"))
    tampered = with_header(signed, "x-amz-acl", "public-read")
    with pytest.raises(AccessDenied) as caught:
        sigv4.parse(tampered)
    assert caught.value.details["HeadersNotSigned"] == "x-amz-acl"
    # Headers outside x-amz-* that nobody signed are fine (Expect, User-Agent, ...).
    assert sigv4.parse(with_header(signed, "expect", "100-continue")) is not None


# ---------------------------------------------------------------- time


def test_clock_skew() -> None:
    request = sign("GET", object_url("bucket", "k"))
    at = signed_at(request)
    check(request, now=at + timedelta(minutes=14))
    check(request, now=at - timedelta(minutes=14))
    for skew in (timedelta(minutes=16), -timedelta(minutes=16)):
        with pytest.raises(RequestTimeTooSkewed) as caught:
            check(request, now=at + skew)
        assert caught.value.status == 403


def test_presigned_expiry() -> None:
    request = presign("GET", object_url("bucket", "k"), expires=60)
    at = signed_at(request)
    check(request, now=at + timedelta(seconds=60))
    with pytest.raises(AccessDenied, match="Request has expired"):
        check(request, now=at + timedelta(seconds=61))
    with pytest.raises(AccessDenied, match="not valid yet"):
        check(request, now=at - timedelta(hours=1))


def test_presigned_expires_limit() -> None:
    check(presign("GET", object_url("bucket", "k"), expires=604800))
    with pytest.raises(AuthorizationQueryParametersError) as caught:
        check(presign("GET", object_url("bucket", "k"), expires=604801))
    assert caught.value.status == 400


def test_naive_now_is_a_programming_error() -> None:
    request = sign("GET", object_url("bucket", "k"))
    with pytest.raises(ValueError):
        check(request, now=signed_at(request).replace(tzinfo=None))


# ---------------------------------------------------------------- malformed

GOOD_AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=" + "0" * 64
)


def _header_request(authorization: str, **extra: str) -> SignedRequest:
    headers = {
        "host": "h",
        "x-amz-date": "20260101T000000Z",
        "x-amz-content-sha256": sigv4.UNSIGNED_PAYLOAD,
        "authorization": authorization,
        **extra,
    }
    return SignedRequest("GET", "/b/k", "", headers)


def test_well_formed_header_parses() -> None:
    ctx = sigv4.parse(_header_request(GOOD_AUTH))
    assert ctx == AuthContext(
        access_key="AKID",
        date="20260101",
        region="us-east-1",
        service="s3",
        amz_date="20260101T000000Z",
        signed_headers=("host", "x-amz-content-sha256", "x-amz-date"),
        signature="0" * 64,
        payload_hash=sigv4.UNSIGNED_PAYLOAD,
        presigned=False,
        expires_s=None,
    )


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, Signature=00",
        "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3, SignedHeaders=host, Signature=0",
        "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ec2/aws4_request, "
        "SignedHeaders=host, Signature=0",
        "AWS4-HMAC-SHA256 Credential=AKID/20251231/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=0",
        "AWS4-HMAC-SHA256 Credential=AKID/2026-1-1/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=0",
        "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/s3/aws4_request, "
        "SignedHeaders=x-amz-date, Signature=0",
        "AWS4-HMAC-SHA256 garbage",
        "AWS4-HMAC-SHA256",
    ],
)
def test_malformed_authorization_header(authorization: str) -> None:
    with pytest.raises(AuthorizationHeaderMalformed) as caught:
        sigv4.parse(_header_request(authorization))
    assert caught.value.status == 400
    assert caught.value.code == "AuthorizationHeaderMalformed"


def test_unsupported_mechanisms() -> None:
    with pytest.raises(InvalidRequest, match="AWS4-HMAC-SHA256"):
        sigv4.parse(_header_request("AWS AKID:c2lnbmF0dXJl"))
    with pytest.raises(InvalidArgument, match="Unsupported Authorization Type"):
        sigv4.parse(_header_request("Bearer token"))
    v2 = SignedRequest("GET", "/b/k", "AWSAccessKeyId=A&Signature=s&Expires=1", {"host": "h"})
    with pytest.raises(InvalidRequest):
        sigv4.parse(v2)


def test_both_mechanisms_at_once() -> None:
    signed = replace(_header_request(GOOD_AUTH), raw_query="X-Amz-Algorithm=AWS4-HMAC-SHA256")
    with pytest.raises(InvalidArgument, match="Only one auth mechanism"):
        sigv4.parse(signed)


def test_missing_or_bad_dates_and_payload_hash() -> None:
    headers_without_date = dict(_header_request(GOOD_AUTH).headers)
    del headers_without_date["x-amz-date"]
    with pytest.raises(AccessDenied, match="Date or x-amz-date"):
        sigv4.parse(SignedRequest("GET", "/b/k", "", headers_without_date))
    with pytest.raises(AccessDenied):
        sigv4.parse(_header_request(GOOD_AUTH, **{"x-amz-date": "2026-01-01T00:00:00Z"}))
    with pytest.raises(InvalidArgument) as caught:
        sigv4.parse(_header_request(GOOD_AUTH, **{"x-amz-content-sha256": "abc"}))
    assert caught.value.status == 400
    headers_without_hash = dict(_header_request(GOOD_AUTH).headers)
    del headers_without_hash["x-amz-content-sha256"]
    with pytest.raises(InvalidRequest, match="x-amz-content-sha256"):
        sigv4.parse(SignedRequest("GET", "/b/k", "", headers_without_hash))


def test_region_enforced_when_configured() -> None:
    request = _header_request(GOOD_AUTH)
    assert sigv4.parse(request, region="us-east-1") is not None
    with pytest.raises(AuthorizationHeaderMalformed, match="region 'us-east-1' is wrong"):
        sigv4.parse(request, region="nimbus")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=00", "requires the X-Amz-Algorithm"),
        ("X-Amz-Algorithm=HMAC-SHA1", "requires"),
    ],
)
def test_malformed_presigned_query(query: str, message: str) -> None:
    with pytest.raises(AuthorizationQueryParametersError, match=message):
        sigv4.parse(SignedRequest("GET", "/b/k", query, {"host": "h"}))


def test_presigned_query_values_checked() -> None:
    request = presign("GET", object_url("bucket", "k"))
    signed = to_signed(request)
    for old, new, message in (
        ("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Algorithm=AWS4-HMAC-SHA512", "only supports"),
        ("X-Amz-Expires=3600", "X-Amz-Expires=soon", "number"),
        ("X-Amz-Expires=3600", "X-Amz-Expires=-1", "non-negative"),
        ("X-Amz-Date=", "X-Amz-Date=x", "ISO8601"),
        ("%2Fs3%2F", "%2Fsqs%2F", "service"),
    ):
        assert old in signed.raw_query
        with pytest.raises(AuthorizationQueryParametersError, match=message):
            sigv4.parse(replace(signed, raw_query=signed.raw_query.replace(old, new)))


# ---------------------------------------------------------------- canonical pieces


def test_canonical_uri_decodes_then_encodes_once() -> None:
    assert sigv4.canonical_uri("") == "/"
    assert sigv4.canonical_uri("/b/a%2bb/c d//%7E") == "/b/a%2Bb/c%20d//~"
    assert sigv4.canonical_uri("/b/%E6%97%A5") == "/b/%E6%97%A5"
    assert sigv4.canonical_uri("/b/日") == "/b/%E6%97%A5"
    assert sigv4.canonical_uri("/b/a+b") == "/b/a%2Bb"  # '+' in a path is a plus
    assert sigv4.canonical_uri("/b/./x/../y") == "/b/./x/../y"  # S3 does not normalise


def test_canonical_query_sorting_and_plus() -> None:
    assert sigv4.canonical_query_string("b=2&a=3&a=1&c") == "a=1&a=3&b=2&c="
    assert sigv4.canonical_query_string("p=a+b%2Bc") == "p=a%20b%2Bc"  # '+' is a space
    assert sigv4.canonical_query_string("k%7e=%2a") == "k~=%2A"


def test_error_hierarchy_codes_and_statuses() -> None:
    expected = {
        SignatureDoesNotMatch: 403,
        AccessDenied: 403,
        RequestTimeTooSkewed: 403,
        sigv4.InvalidAccessKeyId: 403,
        AuthorizationHeaderMalformed: 400,
        AuthorizationQueryParametersError: 400,
        InvalidArgument: 400,
        InvalidRequest: 400,
        sigv4.MissingSecurityHeader: 400,
        sigv4.XAmzContentSHA256Mismatch: 400,
    }
    for cls, status in expected.items():
        error = cls()
        assert isinstance(error, SigV4Error)
        assert error.code == cls.__name__ == cls.code
        assert error.status == status
        assert error.message and str(error) == error.message


# ---------------------------------------------------------------- streaming signatures

# "Example: PUT Object" of the S3 docs, "Transferring Payload in Multiple Chunks".
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
EXAMPLE_SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
EXAMPLE_CHUNKS = [
    (b"a" * 65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"),
    (b"a" * 1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"),
    (b"", "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"),
]
EXAMPLE_NOW = datetime(2013, 5, 24, tzinfo=UTC)


def aws_example_request() -> SignedRequest:
    signed_headers = (
        "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;"
        "x-amz-decoded-content-length;x-amz-storage-class"
    )
    authorization = (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,"
        f"SignedHeaders={signed_headers},Signature={EXAMPLE_SEED}"
    )
    return SignedRequest.from_parts(
        "PUT",
        "/examplebucket/chunkObject.txt",
        [
            ("Host", "s3.amazonaws.com"),
            ("x-amz-date", "20130524T000000Z"),
            ("x-amz-storage-class", "REDUCED_REDUNDANCY"),
            ("Authorization", authorization),
            ("x-amz-content-sha256", sigv4.STREAMING_PAYLOAD),
            ("Content-Encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "66560"),
            ("Content-Length", "66824"),
        ],
    )


def test_aws_chunked_example_signatures() -> None:
    signed = aws_example_request()
    ctx = sigv4.parse(signed)
    assert ctx is not None and ctx.is_streaming
    signer = sigv4.verify(signed, ctx, EXAMPLE_SECRET, EXAMPLE_NOW)
    assert isinstance(signer, StreamingSigner)
    assert signer.previous_signature == EXAMPLE_SEED
    for chunk, expected in EXAMPLE_CHUNKS:
        assert signer.chunk_signature(hashlib.sha256(chunk).hexdigest()) == expected
    # aws-c-auth's test vector for signed trailers continues the same chain.
    trailer = b"first:1st\nsecond:2nd\nthird:3rd\n"
    assert (
        signer.trailer_signature(trailer)
        == "df5735bd9f3295cd9386572292562fefc93ba94e80a0a1ddcbd652c4e0a75e6c"
    )


def test_verify_returns_no_signer_for_other_payloads() -> None:
    request = sign("PUT", object_url("bucket", "k"), body=b"x")
    signed = to_signed(request)
    ctx = sigv4.parse(signed)
    assert ctx is not None
    assert sigv4.verify(signed, ctx, SECRET, signed_at(request)) is None


def test_signing_key_derivation() -> None:
    # From the AWS SigV4 documentation ("Deriving the signing key").
    key = sigv4.signing_key(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215", "us-east-1", "iam"
    )
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
