"""The S3 error table and its XML: statuses, from_code, and bodies clients parse."""

from __future__ import annotations

import importlib
import inspect
import xml.etree.ElementTree as ET
from functools import cache
from typing import Any

import botocore.model
import botocore.parsers
import botocore.session
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway import errors
from services.gateway.errors import S3Error

#: AWS's status for each code ("Error responses", S3 API reference).
EXPECTED_STATUS = {
    "AccessDenied": 403,
    "AccountProblem": 403,
    "AuthorizationHeaderMalformed": 400,
    "AuthorizationQueryParametersError": 400,
    "BadDigest": 400,
    "BucketAlreadyExists": 409,
    "BucketAlreadyOwnedByYou": 409,
    "BucketNotEmpty": 409,
    "EntityTooLarge": 400,
    "EntityTooSmall": 400,
    "ExpiredToken": 400,
    "IllegalLocationConstraintException": 400,
    "IncompleteBody": 400,
    "InternalError": 500,
    "InvalidAccessKeyId": 403,
    "InvalidArgument": 400,
    "InvalidBucketName": 400,
    "InvalidChunkSizeError": 400,
    "InvalidDigest": 400,
    "InvalidLocationConstraint": 400,
    "InvalidObjectState": 403,
    "InvalidPart": 400,
    "InvalidPartNumber": 416,
    "InvalidPartOrder": 400,
    "InvalidRange": 416,
    "InvalidRequest": 400,
    "InvalidStorageClass": 400,
    "InvalidToken": 400,
    "InvalidURI": 400,
    "KeyTooLongError": 400,
    "MalformedXML": 400,
    "MalformedTrailerError": 400,
    "MaxMessageLengthExceeded": 400,
    "MetadataTooLarge": 400,
    "MethodNotAllowed": 405,
    "MissingContentLength": 411,
    "MissingRequestBodyError": 400,
    "MissingSecurityHeader": 400,
    "NoSuchBucket": 404,
    "NoSuchBucketPolicy": 404,
    "NoSuchCORSConfiguration": 404,
    "NoSuchKey": 404,
    "NoSuchLifecycleConfiguration": 404,
    "NoSuchTagSet": 404,
    "NoSuchUpload": 404,
    "NoSuchVersion": 404,
    "NotImplemented": 501,
    "NotModified": 304,
    "PreconditionFailed": 412,
    "RequestTimeTooSkewed": 403,
    "RequestTimeout": 400,
    "ServiceUnavailable": 503,
    "SignatureDoesNotMatch": 403,
    "SlowDown": 503,
    "TooManyBuckets": 400,
    "XAmzContentSHA256Mismatch": 400,
}

# Text XML 1.0 can carry (so it must come back unchanged from a parser).
xml_text = st.text(
    st.characters(
        codec="utf-8",
        exclude_characters=[chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"]
        + ["\ufffe", "\uffff"],
    )
)


def parse(body: bytes) -> dict[str, str]:
    root = ET.fromstring(body)
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


@cache
def get_object_output_shape() -> botocore.model.Shape:
    model = botocore.session.get_session().get_service_model("s3")
    shape = model.operation_model("GetObject").output_shape
    assert shape is not None
    return shape


def botocore_error(
    body: bytes, status: int, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    shape = get_object_output_shape()
    response = {"body": body, "headers": headers or {}, "status_code": status}
    parsed: dict[str, Any] = botocore.parsers.RestXMLParser().parse(response, shape)
    return parsed


def test_the_table_has_every_code_with_aws_status() -> None:
    assert {code: cls.status for code, cls in errors.ERRORS.items()} == EXPECTED_STATUS


@pytest.mark.parametrize("code", sorted(EXPECTED_STATUS))
def test_each_class_is_named_like_its_code(code: str) -> None:
    cls = getattr(errors, code)
    assert inspect.isclass(cls) and issubclass(cls, S3Error)
    assert cls.code == cls.__name__ == code
    error = cls()
    assert error.status == EXPECTED_STATUS[code]
    assert error.message and error.message == cls.message
    assert str(error) == f"{code}: {cls.message}"


def test_a_code_cannot_be_defined_twice() -> None:
    with pytest.raises(TypeError, match="defined twice"):

        class NoSuchKey(S3Error):
            status = 404

    assert errors.ERRORS["NoSuchKey"] is errors.NoSuchKey


def test_message_and_details_are_per_instance() -> None:
    error = errors.InvalidArgument(
        "Part number must be an integer between 1 and 10000, inclusive",
        argument_name="partNumber",
        argument_value="0",
        headers={"X-Extra": "1"},
    )
    assert error.message.startswith("Part number")
    assert errors.InvalidArgument.message == "Invalid Argument"
    assert error.details == {"ArgumentName": "partNumber", "ArgumentValue": "0"}
    assert error.headers == {"X-Extra": "1"}
    assert errors.InvalidArgument().details == {}


def test_details_must_be_element_names() -> None:
    with pytest.raises(ValueError, match="element name"):
        errors.InvalidRequest(details={"not a name": "x"})


def test_render_matches_aws_layout() -> None:
    body = errors.render(errors.NoSuchKey(key="a/b"), "REQ1", "/bkt/a/b", host_id="HOST1")
    assert body == (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
        b"<Message>The specified key does not exist.</Message><Key>a/b</Key>"
        b"<RequestId>REQ1</RequestId><HostId>HOST1</HostId></Error>"
    )


def test_render_orders_named_elements_like_aws() -> None:
    error = errors.InvalidRange(range_requested="bytes=10-20", actual_object_size=5)
    assert list(parse(errors.render(error, "r", "/b/k"))) == [
        "Code",
        "Message",
        "RangeRequested",
        "ActualObjectSize",
        "RequestId",
        "HostId",
    ]
    sig = errors.SignatureDoesNotMatch(
        access_key_id="AKID",
        string_to_sign="AWS4-HMAC-SHA256\n...",
        signature_provided="abc",
        canonical_request="GET\n/\n",
    )
    fields = parse(errors.render(sig, "r", "/"))
    assert list(fields)[2:6] == [
        "AWSAccessKeyId",
        "StringToSign",
        "SignatureProvided",
        "CanonicalRequest",
    ]
    assert fields["StringToSign"] == "AWS4-HMAC-SHA256\n..."


def test_resource_only_where_no_specific_element() -> None:
    assert "Resource" not in parse(errors.render(errors.NoSuchKey(key="k"), "r", "/b/k"))
    fields = parse(errors.render(errors.MethodNotAllowed(method="PATCH"), "r", "/b/k"))
    assert fields["Resource"] == "/b/k"
    assert fields["Method"] == "PATCH"


def test_render_escapes_markup_and_keeps_unicode() -> None:
    key = "<&>\"'/ünï©ødé/日本/\U0001f600\r\n\t"
    body = errors.render(errors.NoSuchKey(key=key), "id&<>", "/b/" + key)
    fields = parse(body)
    assert fields["Key"] == key
    assert fields["RequestId"] == "id&<>"
    assert fields["Code"] == "NoSuchKey"
    assert "日本".encode() in body  # written as UTF-8, not as references


def test_render_stays_well_formed_with_characters_xml_forbids() -> None:
    body = errors.render(errors.NoSuchKey(key="a\x00b\x1fc\ud800"), "r", "/")
    assert parse(body)["Key"] == "a\ufffdb\ufffdc\ufffd"


@given(message=xml_text, key=xml_text, request_id=xml_text)
def test_render_round_trips_any_xml_text(message: str, key: str, request_id: str) -> None:
    error = errors.PreconditionFailed(message, key=key, condition="If-Match")
    fields = parse(errors.render(error, request_id, "/b/" + key))
    assert fields["Message"] == message
    assert fields["Key"] == key
    assert fields["RequestId"] == request_id
    assert fields["Condition"] == "If-Match"


@given(st.text())
def test_render_never_breaks_on_any_text(text: str) -> None:
    fields = parse(errors.render(errors.InvalidRequest(text, key=text), text, text))
    assert fields["Code"] == "InvalidRequest"


def test_not_modified_has_no_body() -> None:
    error = errors.NotModified(headers={"ETag": '"abc"'})
    assert errors.render(error, "r", "/b/k") == b""
    assert error.status == 304
    assert error.headers == {"ETag": '"abc"'}


def test_botocore_reads_the_error() -> None:
    body = errors.render(errors.NoSuchKey(key="dir/<k>"), "REQ", "/b/dir/<k>")
    # botocore takes the ids from the headers, which the gateway sends too.
    parsed = botocore_error(body, 404, {"x-amz-request-id": "REQ", "x-amz-id-2": "REQ"})
    assert parsed["Error"]["Code"] == "NoSuchKey"
    assert parsed["Error"]["Message"] == "The specified key does not exist."
    assert parsed["Error"]["Key"] == "dir/<k>"
    assert parsed["ResponseMetadata"]["RequestId"] == "REQ"


@pytest.mark.parametrize("code", ["SlowDown", "AccessDenied", "InternalError", "MalformedXML"])
def test_botocore_reads_each_code(code: str) -> None:
    error = errors.ERRORS[code]()
    parsed = botocore_error(errors.render(error, "r", "/"), error.status)
    assert parsed["Error"]["Code"] == code
    assert parsed["Error"]["Message"] == error.message


def test_from_code_known() -> None:
    error = errors.from_code("NoSuchBucket", "gone", 404)
    assert type(error) is errors.NoSuchBucket
    assert (error.code, error.status, error.message) == ("NoSuchBucket", 404, "gone")


def test_from_code_empty_message_means_default() -> None:
    assert errors.from_code("AccessDenied", "", 403).message == "Access Denied"
    assert errors.from_code("AccessDenied").message == "Access Denied"


def test_from_code_table_status_wins() -> None:
    assert errors.from_code("SignatureDoesNotMatch", "x", 400).status == 403


def test_from_code_carries_details() -> None:
    error = errors.from_code("AuthorizationHeaderMalformed", "bad", 400, details={"Region": "x"})
    assert error.details == {"Region": "x"}
    assert parse(errors.render(error, "r", "/"))["Region"] == "x"


def test_from_code_unknown_keeps_code_and_status() -> None:
    error = errors.from_code("InvalidTag", "The tag is bad", 400)
    assert type(error) is S3Error
    assert (error.code, error.status, error.message) == ("InvalidTag", 400, "The tag is bad")
    fields = parse(errors.render(error, "r", "/b"))
    assert fields["Code"] == "InvalidTag"
    assert fields["Resource"] == "/b"
    assert errors.from_code("Weird", "").status == 500
    # The class defaults are untouched by the instance.
    assert S3Error.code == "InternalError"


def test_from_code_maps_every_sigv4_error() -> None:
    """The SigV4 verifier raises its own errors by code; each must map to ours."""
    try:
        sigv4 = importlib.import_module("services.gateway.sigv4")
    except ImportError:
        pytest.skip("services.gateway.sigv4 is not there")
    base = sigv4.SigV4Error
    for cls in base.__subclasses__():
        raised = cls("why", details={"ArgumentName": "x"})
        error = errors.from_code(raised.code, raised.message, raised.status, details=raised.details)
        assert type(error) is errors.ERRORS[cls.__name__]
        assert error.status == raised.status, cls.__name__
        assert error.message == "why"
        assert error.details == {"ArgumentName": "x"}
