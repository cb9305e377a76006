"""A small AWS Signature Version 4 signer for body-less requests (client side).

Tools that call the gateway's admin endpoints (``nimbus usage``) sign with
this, without botocore (a development dependency only) and without importing
the gateway. It signs the way botocore's ``S3SigV4Auth`` does for S3: the
path is canonicalised once (decoded, then every byte but ``A-Za-z0-9-_.~/``
percent-encoded), the query's pairs are re-encoded and sorted, the signed
headers are ``host``, ``x-amz-content-sha256`` and ``x-amz-date``, and the
payload hash is that of the empty body.

>>> from datetime import UTC, datetime
>>> headers = sign("GET", "http://127.0.0.1:9000/-/usage/b?hours=2",
...                Credentials("AKID", "secret"), now=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC))
>>> headers["x-amz-date"], headers["host"]
('20240102T030405Z', '127.0.0.1:9000')
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote_to_bytes, urlencode, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    region: str = "us-east-1"
    service: str = "s3"


def url_for(base_url: str, path: str, query: Mapping[str, str] | None = None) -> str:
    """``base_url`` + ``path`` (each byte but ``/`` and unreserved ones quoted) + query.

    >>> url_for("http://h:1/", "/-/usage/my bucket", {"hours": "3"})
    'http://h:1/-/usage/my%20bucket?hours=3'
    """
    url = base_url.rstrip("/") + quote(path, safe="/~")
    if query:
        url += "?" + urlencode(dict(query), quote_via=quote, safe="~")
    return url


def _encode(data: bytes, *, keep_slash: bool = False) -> str:
    return quote(data, safe="/~" if keep_slash else "~")


def _decode(text: str) -> bytes:
    return unquote_to_bytes(text.replace("+", " "))


def host_header(url: str) -> str:
    """The Host a client sends (and signs): the port only when it is not the scheme's default."""
    parts = urlsplit(url)
    if parts.hostname is None:
        raise ValueError(f"no host in {url!r}")
    if parts.port is None or parts.port == _DEFAULT_PORTS.get(parts.scheme):
        return parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return parts.netloc.rpartition("@")[2]


def canonical_query(raw_query: str) -> str:
    """The query's pairs decoded, re-encoded and sorted; a bare key becomes ``key=``.

    >>> canonical_query("b=2&a=x+y&uploads")
    'a=x%20y&b=2&uploads='
    """
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        pairs.append((_encode(_decode(key)), _encode(_decode(value))))
    return "&".join(f"{key}={value}" for key, value in sorted(pairs))


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def sign(
    method: str,
    url: str,
    credentials: Credentials,
    *,
    now: datetime | None = None,
) -> dict[str, str]:
    """The headers (lower-case names) to send with a body-less request to ``url``.

    ``url`` is the URL exactly as it will be sent (already percent-encoded);
    ``now`` must be timezone-aware (default: the current time).
    """
    moment = datetime.now(UTC) if now is None else now
    if moment.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    moment = moment.astimezone(UTC)
    amz_date = moment.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    parts = urlsplit(url)
    headers = {
        "host": host_header(url),
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": amz_date,
    }
    signed_headers = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method.upper(),
            # S3 signs the path decoded once and encoded once; "+" in a path is a plus.
            _encode(unquote_to_bytes(parts.path), keep_slash=True) if parts.path else "/",
            canonical_query(parts.query),
            "".join(f"{name}:{headers[name].strip()}\n" for name in sorted(headers)),
            signed_headers,
            EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{credentials.region}/{credentials.service}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = _hmac(f"AWS4{credentials.secret_key}".encode(), day)
    for part in (credentials.region, credentials.service, "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
        f"SignedHeaders={signed_headers}, Signature={signature}"
    )
    return headers
