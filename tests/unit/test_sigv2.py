"""SigV2 presigned URLs (services.gateway.sigv2) against botocore's own signer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import quote, urlsplit

import pytest
from botocore.auth import HmacV1QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from services.gateway import sigv2
from services.gateway.sigv4 import AccessDenied, SignatureDoesNotMatch, SignedRequest

ACCESS_KEY = "AKIDNIMBUSEXAMPLE"
SECRET = "s3cr3t/with+odd=chars"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def presign(
    method: str,
    path: str,
    query: str = "",
    headers: dict[str, str] | None = None,
    *,
    expires_s: int = 3600,
    auth_path: str | None = None,
) -> AWSRequest:
    url = f"http://127.0.0.1:9000{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, headers=dict(headers or {}))
    if auth_path is not None:
        request.auth_path = auth_path
    with mock.patch("botocore.auth.time.time", return_value=NOW.timestamp()):
        HmacV1QueryAuth(Credentials(ACCESS_KEY, SECRET), expires=expires_s).add_auth(request)
    return request


def received(
    request: AWSRequest, method: str | None = None, headers: dict[str, str] | None = None
) -> SignedRequest:
    """What the gateway sees of the presigned URL, sent with ``headers``."""
    assert request.url is not None
    parts = urlsplit(request.url)
    items = [("Host", parts.netloc), *(headers or {}).items()]
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return SignedRequest.from_parts(method or request.method or "GET", target, items)


def verify(req: SignedRequest, when: datetime = NOW, bucket_in_host: str | None = None) -> None:
    auth = sigv2.parse(req)
    assert auth is not None
    assert auth.access_key == ACCESS_KEY
    sigv2.verify(req, auth, SECRET, when, bucket_in_host)


@pytest.mark.parametrize(
    "key",
    ["k", "dir/sub/file.txt", "with space", "plus+sign", "ü€/鍵", "percent%25", "a&b=c?d", "~t"],
)
def test_get_and_put_urls_verify(key: str) -> None:
    path = "/bucket/" + quote(key, safe="/~")
    verify(received(presign("GET", path)))
    verify(received(presign("PUT", path)))


def test_bucket_urls_sign_the_bucket_with_a_slash() -> None:
    # botocore signs "/bucket/" for a path-style "/bucket" URL.
    request = presign("GET", "/bucket", "list-type=2&encoding-type=url", auth_path="/bucket/")
    verify(received(request))


def test_sub_resources_and_overrides_are_signed() -> None:
    query = "uploadId=abc%2Bdef&partNumber=3"
    verify(received(presign("PUT", "/bucket/k", query)))
    query = "response-content-disposition=attachment%3B%20filename%3D%22a%20b%22"
    request = presign("GET", "/bucket/k", query)
    verify(received(request))
    assert request.url is not None
    tampered = request.url.replace("attachment", "inline")
    with pytest.raises(SignatureDoesNotMatch):
        verify(received(AWSRequest(method="GET", url=tampered)))


def test_hoisted_content_type_and_amz_headers() -> None:
    # botocore moves Content-Type and x-amz-* into the query of a presigned URL.
    request = presign(
        "PUT", "/bucket/k", headers={"Content-Type": "text/plain", "x-amz-meta-a": "1"}
    )
    assert request.url is not None and "content-type=text%2Fplain" in request.url
    verify(received(request, headers={"Content-Type": "text/plain"}))


def test_content_type_sent_must_be_the_signed_one() -> None:
    plain = presign("PUT", "/bucket/k")
    verify(received(plain))
    with pytest.raises(SignatureDoesNotMatch) as excinfo:
        verify(received(plain, headers={"Content-Type": "text/html"}))
    assert excinfo.value.details["StringToSign"].startswith("PUT\n\ntext/html\n")


def test_signature_covers_method_key_and_secret() -> None:
    request = presign("GET", "/bucket/k")
    with pytest.raises(SignatureDoesNotMatch):
        verify(received(request, method="DELETE"))
    assert request.url is not None
    other = AWSRequest(method="GET", url=request.url.replace("/bucket/k", "/bucket/j"))
    with pytest.raises(SignatureDoesNotMatch):
        verify(received(other))
    req = received(request)
    auth = sigv2.parse(req)
    assert auth is not None
    with pytest.raises(SignatureDoesNotMatch):
        sigv2.verify(req, auth, "another secret", NOW)


def test_expiry() -> None:
    req = received(presign("GET", "/bucket/k", expires_s=60))
    verify(req, NOW + timedelta(seconds=59))
    with pytest.raises(AccessDenied) as excinfo:
        verify(req, NOW + timedelta(seconds=61))
    assert "expired" in excinfo.value.message
    bad = SignedRequest("GET", "/b/k", "AWSAccessKeyId=A&Signature=s&Expires=soon", {})
    auth = sigv2.parse(bad)
    assert auth is not None
    with pytest.raises(AccessDenied):
        sigv2.verify(bad, auth, SECRET, NOW)


def test_virtual_host_style_signs_the_bucket() -> None:
    request = presign("GET", "/k", auth_path="/bucket/k")
    verify(received(request), bucket_in_host="bucket")
    with pytest.raises(SignatureDoesNotMatch):
        verify(received(request))


def test_an_unencoded_plus_in_the_signature_is_tolerated() -> None:
    for _ in range(40):  # find a signature with a '+' in it
        request = presign("GET", f"/bucket/k{_}")
        assert request.url is not None
        if "%2B" in request.url.split("Signature=")[1].split("&")[0]:
            raw = AWSRequest(method="GET", url=request.url.replace("%2B", "+"))
            verify(received(raw))
            return
    pytest.skip("no signature with a '+' in 40 tries")


@pytest.mark.parametrize(
    "query",
    [
        "",
        "AWSAccessKeyId=A&Signature=s",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&AWSAccessKeyId=A&Signature=s&Expires=1",
    ],
)
def test_not_sigv2(query: str) -> None:
    assert sigv2.parse(SignedRequest("GET", "/b/k", query, {})) is None


def test_authorization_header_is_not_query_auth() -> None:
    req = SignedRequest(
        "GET", "/b/k", "AWSAccessKeyId=A&Signature=s&Expires=1", {"authorization": "AWS A:x"}
    )
    assert sigv2.parse(req) is None
