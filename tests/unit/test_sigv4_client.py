"""The client-side SigV4 signer against botocore's S3SigV4Auth, and the gateway's verifier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common import sigv4_client
from services.common.sigv4_client import Credentials, url_for
from services.gateway import sigv4

ACCESS_KEY = "AKIDNIMBUSEXAMPLE"
SECRET = "s3cr3t/with+odd=chars"
REGION = "eu-west-3"
CREDS = Credentials(ACCESS_KEY, SECRET, REGION)


def botocore_signed(url: str) -> AWSRequest:
    request = AWSRequest(method="GET", url=url)
    S3SigV4Auth(BotoCredentials(ACCESS_KEY, SECRET), "s3", REGION).add_auth(request)
    return request


def signed_at(request: AWSRequest) -> datetime:
    stamp = str(request.headers["X-Amz-Date"])
    return datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


def assert_same_as_botocore(url: str) -> dict[str, str]:
    reference = botocore_signed(url)
    ours = sigv4_client.sign("GET", url, CREDS, now=signed_at(reference))
    assert ours["x-amz-date"] == reference.headers["X-Amz-Date"]
    assert ours["x-amz-content-sha256"] == reference.headers["X-Amz-Content-SHA256"]
    assert ours["authorization"] == reference.headers["Authorization"]
    return ours


URLS = [
    "http://127.0.0.1:9000/-/usage/photos",
    "http://127.0.0.1:9000/-/usage/photos?hours=24",
    "http://localhost:8080/-/usage/a.b-c?hours=1&z=last&a=first",
    "http://example.com/-/usage/bucket?hours=2",
    "https://s3.example.com/-/usage/bucket",
    "https://s3.example.com:8443/bucket/key%20with%20spaces/%E6%97%A5?list-type=2&prefix=a%2Fb",
    "http://127.0.0.1:9000/",
]


@pytest.mark.parametrize("url", URLS)
def test_same_signature_as_botocore(url: str) -> None:
    assert_same_as_botocore(url)


@settings(max_examples=60, deadline=None)
@given(
    path=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30),
    query=st.dictionaries(
        st.text(st.characters(codec="utf-8"), min_size=1, max_size=8),
        st.text(st.characters(codec="utf-8"), max_size=8),
        max_size=4,
    ),
)
def test_any_path_and_query_match_botocore(path: str, query: dict[str, str]) -> None:
    url = url_for("http://127.0.0.1:9000", "/" + path, query)
    assert_same_as_botocore(url)


def test_the_gateway_verifies_it() -> None:
    url = url_for("http://127.0.0.1:9000", "/-/usage/photos", {"hours": "6"})
    now = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    headers = sigv4_client.sign("GET", url, CREDS, now=now)
    signed = sigv4.SignedRequest.from_parts(
        "GET", url.removeprefix("http://127.0.0.1:9000"), headers.items()
    )
    context = sigv4.parse(signed, region=REGION)
    assert context is not None and context.access_key == ACCESS_KEY
    sigv4.verify(signed, context, SECRET, now + timedelta(seconds=30))
    with pytest.raises(sigv4.SignatureDoesNotMatch):
        sigv4.verify(signed, context, "another secret", now)


def test_default_ports_are_not_signed() -> None:
    assert sigv4_client.host_header("http://h:80/x") == "h"
    assert sigv4_client.host_header("https://h:443/x") == "h"
    assert sigv4_client.host_header("http://h:9000/x") == "h:9000"
    assert sigv4_client.host_header("http://[::1]:9000/x") == "[::1]:9000"


def test_naive_time_refused() -> None:
    with pytest.raises(ValueError):
        sigv4_client.sign("GET", "http://h/", CREDS, now=datetime(2025, 1, 1))
