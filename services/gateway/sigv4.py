"""AWS Signature Version 4 verification, the way S3 does it.

Role: decide whether an S3 request was signed by the holder of an access
key's secret. The HTTP layer extracts a `SignedRequest`; `parse` turns it into
an `AuthContext` (or None for an anonymous request) without knowing any
secret; the caller looks up the secret for `ctx.access_key` and calls
`verify`, which returns a `StreamingSigner` when the body is an `aws-chunked`
stream whose chunks are signed (see `services.gateway.chunked`).

Invariants:
- Pure: no I/O, no clock reads (time comes in as `now`), no aiohttp.
- Canonicalisation is S3's, not the generic SigV4 one: the path is not
  normalised (no dot-segment removal, `//` kept) and not double-encoded; it
  is percent-decoded once and re-encoded with AWS's rules (unreserved
  `A-Za-z0-9-_.~` kept, `/` kept, every other byte `%XX` upper case), so any
  client that encoded the key correctly, whichever way, gets the same string.
- The query string is canonicalised from the raw query the same way, with
  `+` read as a space, as aiohttp/yarl decode it for the handlers: what is
  verified is what the handlers will act on.
- Every failure raises a `SigV4Error` subclass named exactly like the S3
  error code to return, carrying its HTTP status and message.
- Signatures are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import ClassVar
from urllib.parse import quote, unquote_to_bytes

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
TERMINATOR = "aws4_request"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
MAX_PRESIGNED_EXPIRES_S = 604800
DEFAULT_MAX_SKEW_S = 900

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
SIGNED_STREAMING_MODES = frozenset({STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER})
STREAMING_MODES = SIGNED_STREAMING_MODES | {STREAMING_UNSIGNED_TRAILER}
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

_AMZ_DATE_RE = re.compile(r"\d{8}T\d{6}Z")
_SCOPE_DATE_RE = re.compile(r"\d{8}")
_SHA256_HEX_RE = re.compile(r"[0-9a-fA-F]{64}")
_QUERY_AUTH_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")
_PRESIGNED_REQUIRED = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)
_UNSUPPORTED_MECHANISM = (
    "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
)


# --------------------------------------------------------------------------
# Errors: class name == S3 error code.


class SigV4Error(Exception):
    """Base of every authentication error; `code` is the class name."""

    code: ClassVar[str] = "SigV4Error"
    status: ClassVar[int] = 403
    default_message: ClassVar[str] = "Access Denied"

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        cls.code = cls.__name__

    def __init__(self, message: str | None = None, *, details: Mapping[str, str] | None = None):
        self.message = message if message is not None else self.default_message
        # Extra elements S3 puts in the error XML (e.g. StringToSign).
        self.details: dict[str, str] = dict(details) if details else {}
        super().__init__(self.message)


class SignatureDoesNotMatch(SigV4Error):
    status = 403
    default_message = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    )


class AccessDenied(SigV4Error):
    status = 403
    default_message = "Access Denied"


class InvalidAccessKeyId(SigV4Error):
    """Raised by the caller when `ctx.access_key` is unknown."""

    status = 403
    default_message = "The AWS Access Key Id you provided does not exist in our records."


class RequestTimeTooSkewed(SigV4Error):
    status = 403
    default_message = "The difference between the request time and the current time is too large."


class AuthorizationHeaderMalformed(SigV4Error):
    status = 400
    default_message = "The authorization header is malformed."


class AuthorizationQueryParametersError(SigV4Error):
    status = 400
    default_message = "Error parsing the query-string authentication parameters."


class InvalidArgument(SigV4Error):
    status = 400
    default_message = "Invalid Argument"


class InvalidRequest(SigV4Error):
    status = 400
    default_message = "Invalid Request"


class MissingSecurityHeader(SigV4Error):
    status = 400
    default_message = "Your request is missing a required header."


class XAmzContentSHA256Mismatch(SigV4Error):
    """Raised by the caller when the body's sha256 differs from `ctx.payload_sha256`."""

    status = 400
    default_message = "The provided 'x-amz-content-sha256' header does not match what was computed."


# --------------------------------------------------------------------------
# Inputs and parsed context.


@dataclass(frozen=True)
class SignedRequest:
    """What the HTTP layer hands over, exactly as received.

    `raw_path` is the percent-encoded path (no query), `raw_query` the raw
    query string (no `?`), `headers` has lower-case names; repeated headers
    are joined with `,` (use `from_parts`, which does it the SigV4 way).
    """

    method: str
    raw_path: str
    raw_query: str
    headers: Mapping[str, str]

    @classmethod
    def from_parts(
        cls, method: str, raw_target: str, header_items: Iterable[tuple[str, str]]
    ) -> SignedRequest:
        """Build from a raw request target (`/b/k?x=1`, aiohttp's `raw_path`) and headers.

        >>> items = [("Host", "h"), ("X-A", "1"), ("x-a", " 2")]
        >>> SignedRequest.from_parts("GET", "/b/k?a=1", items).headers
        {'host': 'h', 'x-a': '1,2'}
        """
        path, _, query = raw_target.partition("?")
        merged: dict[str, list[str]] = {}
        for name, value in header_items:
            merged.setdefault(name.lower(), []).append(_trim(value))
        headers = {name: ",".join(values) for name, values in merged.items()}
        return cls(method=method, raw_path=path, raw_query=query, headers=headers)


@dataclass(frozen=True)
class AuthContext:
    """A syntactically valid SigV4 request, before its secret is known."""

    access_key: str
    date: str  # YYYYMMDD, from the credential scope
    region: str
    service: str
    amz_date: str  # YYYYMMDDTHHMMSSZ, the signing time
    signed_headers: tuple[str, ...]
    signature: str
    payload_hash: str  # hex sha256, UNSIGNED-PAYLOAD or a STREAMING-* mode
    presigned: bool
    expires_s: int | None  # presigned only
    security_token: str | None = None

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/{TERMINATOR}"

    @property
    def signed_at(self) -> datetime:
        return datetime.strptime(self.amz_date, AMZ_DATE_FORMAT).replace(tzinfo=UTC)

    @property
    def payload_sha256(self) -> str | None:
        """The body's sha256 (lower-case hex) the caller must check, if the payload is signed."""
        return signed_payload_sha256(self.payload_hash)

    @property
    def is_streaming(self) -> bool:
        """The body is `aws-chunked` and must go through `AwsChunkedDecoder`."""
        return self.payload_hash in STREAMING_MODES


def signed_payload_sha256(payload_hash: str) -> str | None:
    """The body's sha256 (lower-case hex) when ``payload_hash`` signs one, else None.

    >>> signed_payload_sha256("UNSIGNED-PAYLOAD") is None, signed_payload_sha256(EMPTY_SHA256)[:8]
    (True, 'e3b0c442')
    """
    if _SHA256_HEX_RE.fullmatch(payload_hash):
        return payload_hash.lower()
    return None


# --------------------------------------------------------------------------
# Canonical request pieces.


def aws_uri_encode(data: bytes, *, keep_slash: bool = False) -> str:
    """Percent-encode every byte but `A-Za-z0-9-_.~` (and `/` if asked), upper-case hex.

    >>> aws_uri_encode("a b+é/~".encode(), keep_slash=True)
    'a%20b%2B%C3%A9/~'
    """
    return quote(data, safe="/" if keep_slash else "")


def canonical_uri(raw_path: str) -> str:
    """S3's canonical URI: decode the received path once, re-encode it once.

    >>> canonical_uri("/b/a%2bb/c d//%7E")
    '/b/a%2Bb/c%20d//~'
    """
    if not raw_path:
        return "/"
    return aws_uri_encode(unquote_to_bytes(_raw_bytes(raw_path)), keep_slash=True)


def query_pairs(raw_query: str) -> list[tuple[bytes, bytes]]:
    """Decoded (key, value) byte pairs of a raw query, in order; `+` is a space."""
    pairs: list[tuple[bytes, bytes]] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((_decode_query_part(key), _decode_query_part(value)))
    return pairs


def canonical_query_string(raw_query: str, *, exclude: frozenset[str] = frozenset()) -> str:
    """Pairs re-encoded, sorted by encoded key then value; a bare key becomes `key=`.

    >>> raw = "uploads&prefix=a+b&X-Amz-Signature=x"
    >>> canonical_query_string(raw, exclude=frozenset({"X-Amz-Signature"}))
    'prefix=a%20b&uploads='
    """
    excluded = {name.encode() for name in exclude}
    encoded = sorted(
        (aws_uri_encode(key), aws_uri_encode(value))
        for key, value in query_pairs(raw_query)
        if key not in excluded
    )
    return "&".join(f"{key}={value}" for key, value in encoded)


def canonical_headers(headers: Mapping[str, str], signed_headers: Iterable[str]) -> str:
    """`name:trimmed-value\\n` for each signed header, sorted by name."""
    return "".join(f"{name}:{_trim(headers.get(name, ''))}\n" for name in sorted(signed_headers))


def canonical_request(req: SignedRequest, ctx: AuthContext) -> str:
    exclude = frozenset({"X-Amz-Signature"}) if ctx.presigned else frozenset()
    return "\n".join(
        [
            req.method,
            canonical_uri(req.raw_path),
            canonical_query_string(req.raw_query, exclude=exclude),
            canonical_headers(req.headers, ctx.signed_headers),
            ";".join(ctx.signed_headers),
            ctx.payload_hash,
        ]
    )


def string_to_sign(ctx: AuthContext, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{ALGORITHM}\n{ctx.amz_date}\n{ctx.scope}\n{digest}"


def signing_key(secret_key: str, date: str, region: str, service: str = SERVICE) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    key = _hmac(f"AWS4{secret_key}".encode(), date)
    for part in (region, service, TERMINATOR):
        key = _hmac(key, part)
    return key


def sign(key: bytes, string: str) -> str:
    """Lower-case hex HMAC-SHA256 of `string` under `key`."""
    return hmac.new(key, string.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()


def expected_signature(req: SignedRequest, ctx: AuthContext, secret_key: str) -> str:
    """The signature a correct client holding `secret_key` would have sent."""
    key = signing_key(secret_key, ctx.date, ctx.region, ctx.service)
    return sign(key, string_to_sign(ctx, canonical_request(req, ctx)))


# --------------------------------------------------------------------------
# Streaming (aws-chunked) signatures.


class StreamingSigner:
    """Chains chunk signatures from the seed (the request's own signature).

    chunk string-to-sign: `AWS4-HMAC-SHA256-PAYLOAD\\n<amz-date>\\n<scope>\\n
    <previous-signature>\\n<sha256("")>\\n<sha256(chunk)>`; the trailer's:
    `AWS4-HMAC-SHA256-TRAILER\\n<amz-date>\\n<scope>\\n<previous-signature>\\n
    <sha256(trailer-bytes)>`, the previous signature being the final (empty)
    chunk's.
    """

    def __init__(self, key: bytes, amz_date: str, scope: str, seed_signature: str) -> None:
        self._key = key
        self._amz_date = amz_date
        self._scope = scope
        self._previous = seed_signature

    @classmethod
    def for_context(cls, ctx: AuthContext, secret_key: str, seed_signature: str) -> StreamingSigner:
        key = signing_key(secret_key, ctx.date, ctx.region, ctx.service)
        return cls(key, ctx.amz_date, ctx.scope, seed_signature)

    @property
    def previous_signature(self) -> str:
        return self._previous

    def chunk_signature(self, chunk_sha256_hex: str) -> str:
        """The next chunk's signature; it becomes the previous signature."""
        sts = (
            f"AWS4-HMAC-SHA256-PAYLOAD\n{self._amz_date}\n{self._scope}\n"
            f"{self._previous}\n{EMPTY_SHA256}\n{chunk_sha256_hex}"
        )
        self._previous = sign(self._key, sts)
        return self._previous

    def trailer_signature(self, trailer_bytes: bytes) -> str:
        """Signature of the canonical trailers (`name:value\\n` each, sorted)."""
        sts = (
            f"AWS4-HMAC-SHA256-TRAILER\n{self._amz_date}\n{self._scope}\n"
            f"{self._previous}\n{hashlib.sha256(trailer_bytes).hexdigest()}"
        )
        return sign(self._key, sts)


# --------------------------------------------------------------------------
# Parsing.


def parse(req: SignedRequest, *, region: str | None = None) -> AuthContext | None:
    """The request's SigV4 parameters, or None if it carries no authentication.

    `region`, when given, is the only credential-scope region accepted.
    Raises the 400-class errors for malformed authentication and
    `AccessDenied` for x-amz-* headers that were not signed.
    """
    authorization = req.headers.get("authorization")
    names = {key for key, _ in query_pairs(req.raw_query)}
    query_auth = any(name.encode() in names for name in _QUERY_AUTH_PARAMS)
    if authorization is not None and query_auth:
        raise InvalidArgument(
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, "
            "Signature query string parameter or the Authorization header should be specified",
            details={"ArgumentName": "Authorization"},
        )
    if authorization is not None:
        ctx = _parse_header_auth(req, authorization)
    elif query_auth:
        ctx = _parse_query_auth(req)
    elif b"AWSAccessKeyId" in names and b"Signature" in names:
        raise InvalidRequest(_UNSUPPORTED_MECHANISM)  # SigV2 presigned URL
    else:
        return None
    _check_scope(ctx, region)
    _check_all_amz_headers_signed(req, ctx)
    return ctx


def _parse_header_auth(req: SignedRequest, authorization: str) -> AuthContext:
    algorithm, _, rest = authorization.strip().partition(" ")
    if algorithm != ALGORITHM:
        if algorithm.startswith("AWS"):
            raise InvalidRequest(_UNSUPPORTED_MECHANISM)
        raise InvalidArgument(
            "Unsupported Authorization Type", details={"ArgumentName": "Authorization"}
        )
    parts = _authorization_components(rest)
    access_key, date, region, service = _split_credential(
        parts["Credential"], AuthorizationHeaderMalformed, "The authorization header is malformed; "
    )
    amz_date = _header_amz_date(req.headers)
    return AuthContext(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        amz_date=amz_date,
        signed_headers=_split_signed_headers(parts["SignedHeaders"], AuthorizationHeaderMalformed),
        signature=parts["Signature"],
        payload_hash=_header_payload_hash(req.headers),
        presigned=False,
        expires_s=None,
        security_token=req.headers.get("x-amz-security-token"),
    )


def _authorization_components(rest: str) -> dict[str, str]:
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, eq, value = item.strip().partition("=")
        if not eq:
            raise AuthorizationHeaderMalformed(
                f"The authorization header is malformed; the authorization component "
                f'"{item.strip()}" is malformed.'
            )
        parts[name.strip()] = value.strip()
    if not {"Credential", "SignedHeaders", "Signature"} <= parts.keys():
        raise AuthorizationHeaderMalformed(
            "The authorization header is malformed; the authorization header requires three "
            "components: Credential, SignedHeaders, and Signature."
        )
    return parts


def _parse_query_auth(req: SignedRequest) -> AuthContext:
    params: dict[str, str] = {}
    for key, value in query_pairs(req.raw_query):
        params.setdefault(key.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
    if any(name not in params for name in _PRESIGNED_REQUIRED):
        raise AuthorizationQueryParametersError(
            "Query-string authentication version 4 requires the X-Amz-Algorithm, "
            "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
            "and X-Amz-Expires parameters."
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise AuthorizationQueryParametersError('X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"')
    amz_date = params["X-Amz-Date"]
    if not _valid_amz_date(amz_date):
        raise AuthorizationQueryParametersError(
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\""
        )
    access_key, date, region, service = _split_credential(
        params["X-Amz-Credential"],
        AuthorizationQueryParametersError,
        "Error parsing the X-Amz-Credential parameter; ",
    )
    return AuthContext(
        access_key=access_key,
        date=date,
        region=region,
        service=service,
        amz_date=amz_date,
        signed_headers=_split_signed_headers(
            params["X-Amz-SignedHeaders"], AuthorizationQueryParametersError
        ),
        signature=params["X-Amz-Signature"],
        payload_hash=_presigned_payload_hash(params),
        presigned=True,
        expires_s=_presigned_expires(params["X-Amz-Expires"]),
        security_token=params.get("X-Amz-Security-Token"),
    )


def _split_credential(
    credential: str, error: type[SigV4Error], prefix: str
) -> tuple[str, str, str, str]:
    parts = credential.rsplit("/", 4)
    if len(parts) != 5 or not all(parts):
        raise error(
            f"{prefix}the Credential is mal-formed; expecting "
            '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".'
        )
    access_key, date, region, service, terminator = parts
    if not _SCOPE_DATE_RE.fullmatch(date):
        raise error(
            f'{prefix}incorrect date format "{date}". This date in the credential must be '
            'in the format "yyyyMMdd".'
        )
    if service != SERVICE:
        raise error(f'{prefix}incorrect service "{service}". This endpoint belongs to "{SERVICE}".')
    if terminator != TERMINATOR:
        raise error(
            f'{prefix}incorrect terminal "{terminator}". This endpoint uses "{TERMINATOR}".'
        )
    return access_key, date, region, service


def _split_signed_headers(value: str, error: type[SigV4Error]) -> tuple[str, ...]:
    names = tuple(value.split(";"))
    if not all(names) or any(name != name.lower() for name in names):
        raise error(f"SignedHeaders is malformed: {value!r}.")
    if "host" not in names:
        raise error("The 'host' header must be among the SignedHeaders.")
    return names


def _header_amz_date(headers: Mapping[str, str]) -> str:
    amz_date = headers.get("x-amz-date")
    if amz_date is not None:
        amz_date = amz_date.strip()
        if _valid_amz_date(amz_date):
            return amz_date
    elif (date_header := headers.get("date")) is not None:
        parsed = _parse_http_date(date_header)
        if parsed is not None:
            return parsed.strftime(AMZ_DATE_FORMAT)
    raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")


def _header_payload_hash(headers: Mapping[str, str]) -> str:
    payload_hash = headers.get("x-amz-content-sha256")
    if payload_hash is None:
        raise InvalidRequest("Missing required header for this request: x-amz-content-sha256")
    payload_hash = payload_hash.strip()
    if payload_hash in STREAMING_MODES or payload_hash == UNSIGNED_PAYLOAD:
        return payload_hash
    if _SHA256_HEX_RE.fullmatch(payload_hash):
        return payload_hash
    raise InvalidArgument(
        "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, "
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER "
        "or a valid sha256 value.",
        details={"ArgumentName": "x-amz-content-sha256", "ArgumentValue": payload_hash},
    )


def _presigned_payload_hash(params: Mapping[str, str]) -> str:
    # A presigned URL signs no body, unless the signer put a hash in the query.
    payload_hash = params.get("X-Amz-Content-Sha256", UNSIGNED_PAYLOAD)
    if payload_hash == UNSIGNED_PAYLOAD or _SHA256_HEX_RE.fullmatch(payload_hash):
        return payload_hash
    raise AuthorizationQueryParametersError(
        "X-Amz-Content-Sha256 must be UNSIGNED-PAYLOAD or a valid sha256 value."
    )


def _presigned_expires(value: str) -> int:
    try:
        expires_s = int(value)
    except ValueError:
        raise AuthorizationQueryParametersError("X-Amz-Expires should be a number") from None
    if expires_s < 0:
        raise AuthorizationQueryParametersError("X-Amz-Expires must be non-negative")
    if expires_s > MAX_PRESIGNED_EXPIRES_S:
        raise AuthorizationQueryParametersError(
            "X-Amz-Expires must be less than a week (in seconds) that is 604800"
        )
    return expires_s


def _check_scope(ctx: AuthContext, region: str | None) -> None:
    error = AuthorizationQueryParametersError if ctx.presigned else AuthorizationHeaderMalformed
    prefix = (
        "Error parsing the X-Amz-Credential parameter; "
        if ctx.presigned
        else "The authorization header is malformed; "
    )
    if ctx.date != ctx.amz_date[:8]:
        raise error(
            f'{prefix}Invalid credential date "{ctx.date}". This date is not the same as '
            f'X-Amz-Date: "{ctx.amz_date[:8]}".'
        )
    if region is not None and ctx.region != region:
        raise error(
            f"{prefix}the region '{ctx.region}' is wrong; expecting '{region}'",
            details={"Region": region},
        )


def _check_all_amz_headers_signed(req: SignedRequest, ctx: AuthContext) -> None:
    # As S3: an x-amz-* header the client did not sign could have been added
    # by anyone on the path (x-amz-acl, x-amz-copy-source, ...).
    exempt = {"x-amz-content-sha256"} if ctx.presigned else set()
    signed = set(ctx.signed_headers)
    unsigned = sorted(
        name
        for name in req.headers
        if name.startswith("x-amz-") and name not in signed and name not in exempt
    )
    if unsigned:
        raise AccessDenied(
            "There were headers present in the request which were not signed",
            details={"HeadersNotSigned": ", ".join(unsigned)},
        )


# --------------------------------------------------------------------------
# Verification.


def verify(
    req: SignedRequest,
    ctx: AuthContext,
    secret_key: str,
    now: datetime,
    *,
    max_skew_s: int = DEFAULT_MAX_SKEW_S,
) -> StreamingSigner | None:
    """Check time and signature; return the chunk signer for signed streaming bodies.

    `now` must be timezone-aware. Header auth must be within `max_skew_s` of
    `now`; a presigned URL is valid from its X-Amz-Date (less the skew) for
    X-Amz-Expires seconds. The caller still has to check the body against
    `ctx.payload_sha256` (XAmzContentSHA256Mismatch) or decode it with
    `AwsChunkedDecoder` when `ctx.is_streaming`.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    _check_time(ctx, now.astimezone(UTC), max_skew_s)
    canonical = canonical_request(req, ctx)
    sts = string_to_sign(ctx, canonical)
    key = signing_key(secret_key, ctx.date, ctx.region, ctx.service)
    expected = sign(key, sts)
    if not hmac.compare_digest(expected.encode(), ctx.signature.encode()):
        raise SignatureDoesNotMatch(details=_mismatch_details(ctx, sts, canonical))
    if ctx.payload_hash in SIGNED_STREAMING_MODES:
        return StreamingSigner(key, ctx.amz_date, ctx.scope, expected)
    return None


def _check_time(ctx: AuthContext, now: datetime, max_skew_s: int) -> None:
    signed_at = ctx.signed_at
    skew = timedelta(seconds=max_skew_s)
    if ctx.presigned:
        assert ctx.expires_s is not None
        if now > signed_at + timedelta(seconds=ctx.expires_s):
            raise AccessDenied(
                "Request has expired",
                details={
                    "X-Amz-Expires": str(ctx.expires_s),
                    "Expires": _iso(signed_at + timedelta(seconds=ctx.expires_s)),
                    "ServerTime": _iso(now),
                },
            )
        if signed_at - skew > now:
            raise AccessDenied("Request is not valid yet")
    elif abs(now - signed_at) > skew:
        raise RequestTimeTooSkewed(
            details={
                "RequestTime": ctx.amz_date,
                "ServerTime": _iso(now),
                "MaxAllowedSkewMilliseconds": str(max_skew_s * 1000),
            }
        )


def _mismatch_details(ctx: AuthContext, sts: str, canonical: str) -> dict[str, str]:
    # S3 returns these so that a client author can see where it went wrong.
    return {
        "AWSAccessKeyId": ctx.access_key,
        "StringToSign": sts,
        "SignatureProvided": ctx.signature,
        "StringToSignBytes": _spaced_hex(sts),
        "CanonicalRequest": canonical,
        "CanonicalRequestBytes": _spaced_hex(canonical),
    }


# --------------------------------------------------------------------------
# Small helpers.


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def _trim(value: str) -> str:
    """SigV4 Trimall: strip, and collapse inner runs of whitespace to one space."""
    return " ".join(value.split())


def _raw_bytes(text: str) -> bytes:
    # aiohttp decodes the request line as UTF-8 with surrogateescape.
    return text.encode("utf-8", "surrogateescape")


def _decode_query_part(text: str) -> bytes:
    return unquote_to_bytes(_raw_bytes(text.replace("+", " ")))


def _valid_amz_date(value: str) -> bool:
    if not _AMZ_DATE_RE.fullmatch(value):
        return False
    try:
        datetime.strptime(value, AMZ_DATE_FORMAT)
    except ValueError:
        return False
    return True


def _parse_http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spaced_hex(text: str) -> str:
    return " ".join(f"{byte:02x}" for byte in text.encode("utf-8", "surrogateescape"))
