"""S3 XML documents: what we write, botocore reads; what botocore writes, we read."""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from functools import cache
from typing import Any

import botocore.awsrequest
import botocore.compat
import botocore.config
import botocore.handlers
import botocore.model
import botocore.parsers
import botocore.serialize
import botocore.session
import pytest
from botocore.exceptions import ClientError
from hypothesis import given
from hypothesis import strategies as st

from services.gateway import errors, xmlio
from services.gateway.xmlio import (
    BucketEntry,
    DeletedEntry,
    DeleteError,
    ObjectEntry,
    Owner,
    PartEntry,
    UploadEntry,
)

NS = "{" + xmlio.S3_NS + "}"
T0 = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
OWNER = Owner("owner-id", "owner & co")
#: Keys with markup characters, a space, a plus, a percent and non-ASCII.
NASTY_KEYS = ["plain", "dir/a b+c%2F", "<&>\"'", "ünï/日本/\U0001f600", "tab\tcr\rlf\n"]

xml_text = st.text(
    st.characters(
        codec="utf-8",
        exclude_characters=[chr(c) for c in range(0x20) if chr(c) not in "\t\n\r"]
        + ["\ufffe", "\uffff"],
    ),
    min_size=1,
)
# Anything a key may hold when the client asks for encoding-type=url.
any_key = st.text(st.characters(codec="utf-8"), min_size=1)


# ---------------------------------------------------------------------------
# botocore helpers


@cache
def s3_model() -> botocore.model.ServiceModel:
    return botocore.session.get_session().get_service_model("s3")


def botocore_parse(operation: str, body: bytes, status: int = 200) -> dict[str, Any]:
    """Parse ``body`` as botocore does the response of ``operation``."""
    shape = s3_model().operation_model(operation).output_shape
    assert shape is not None
    response = {"body": body, "headers": {}, "status_code": status}
    parsed: dict[str, Any] = botocore.parsers.RestXMLParser().parse(response, shape)
    return parsed


def botocore_body(operation: str, params: dict[str, Any]) -> bytes:
    """The request body botocore serializes for ``operation``."""
    serializer = botocore.serialize.create_serializer("rest-xml")
    request = serializer.serialize_to_request(params, s3_model().operation_model(operation))
    body = request["body"]
    assert isinstance(body, bytes)
    return body


class _RawBody:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def client_call(
    method: str, params: dict[str, Any], status: int, body: bytes
) -> tuple[dict[str, Any], botocore.awsrequest.AWSPreparedRequest]:
    """Call a real botocore S3 client whose HTTP answer is ``status`` and ``body``.

    This runs botocore's whole pipeline, handlers included (the automatic
    ``encoding-type=url`` and its decoding, GetBucketLocation's own parser).
    """
    client = botocore.session.get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="AKID",
        aws_secret_access_key="secret",
        config=botocore.config.Config(
            retries={"max_attempts": 0, "mode": "standard"}, s3={"addressing_style": "path"}
        ),
    )
    sent: list[botocore.awsrequest.AWSPreparedRequest] = []

    def answer(
        request: botocore.awsrequest.AWSPreparedRequest, **_: Any
    ) -> botocore.awsrequest.AWSResponse:
        sent.append(request)
        headers = botocore.compat.HTTPHeaders()
        headers["x-amz-request-id"] = "REQ"
        return botocore.awsrequest.AWSResponse(request.url, status, headers, _RawBody(body))

    # The stubs say handlers return None; a before-send handler's return is the response.
    client.meta.events.register("before-send", answer)  # type: ignore[arg-type]
    result: dict[str, Any] = getattr(client, method)(**params)
    return result, sent[0]


def children(body: bytes) -> list[str]:
    root = ET.fromstring(body)
    assert root.tag.startswith(NS)
    return [child.tag.removeprefix(NS) for child in root]


def objects(*keys: str, owner: Owner | None = None) -> list[ObjectEntry]:
    return [ObjectEntry(k, T0, f"etag{i}", i * 10, owner=owner) for i, k in enumerate(keys)]


# ---------------------------------------------------------------------------
# Formatting


def test_iso8601_has_milliseconds_and_z() -> None:
    assert xmlio.iso8601(T0) == "2024-05-06T07:08:09.123Z"
    assert xmlio.iso8601(datetime(2024, 5, 6)) == "2024-05-06T00:00:00.000Z"
    plus2 = datetime(2024, 5, 6, 9, 8, 9, tzinfo=timezone(timedelta(hours=2)))
    assert xmlio.iso8601(plus2) == "2024-05-06T07:08:09.000Z"


def test_documents_are_utf8_in_the_s3_namespace() -> None:
    body = xmlio.list_buckets_result(OWNER, [])
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<ListAllMyBucketsResult ')
    assert ET.fromstring(body).tag == NS + "ListAllMyBucketsResult"


def test_encoding_type_values() -> None:
    assert xmlio.encoding_type("url") == "url"
    assert xmlio.encoding_type(None) is None
    with pytest.raises(errors.InvalidArgument) as info:
        xmlio.encoding_type("base64")
    assert info.value.details == {"ArgumentName": "encoding-type", "ArgumentValue": "base64"}


# ---------------------------------------------------------------------------
# OUT documents, read back by botocore


def test_list_buckets() -> None:
    buckets = [BucketEntry("alpha", T0), BucketEntry("beta", T0 + timedelta(days=1))]
    body = xmlio.list_buckets_result(OWNER, buckets)
    assert children(body) == ["Owner", "Buckets"]
    parsed = botocore_parse("ListBuckets", body)
    assert parsed["Owner"] == {"ID": "owner-id", "DisplayName": "owner & co"}
    assert [b["Name"] for b in parsed["Buckets"]] == ["alpha", "beta"]
    assert parsed["Buckets"][0]["CreationDate"] == T0.replace(microsecond=123000)


def test_list_objects_v2_element_order() -> None:
    body = xmlio.list_objects_v2_result(
        "bkt",
        contents=objects("a", "b"),
        common_prefixes=["p/"],
        is_truncated=True,
        prefix="",
        delimiter="/",
        max_keys=3,
        continuation_token="tok1",
        next_continuation_token="tok2",
        start_after="0",
        encoding="url",
    )
    assert children(body) == [
        "Name",
        "Prefix",
        "StartAfter",
        "ContinuationToken",
        "NextContinuationToken",
        "KeyCount",
        "MaxKeys",
        "Delimiter",
        "EncodingType",
        "IsTruncated",
        "Contents",
        "Contents",
        "CommonPrefixes",
    ]
    contents = ET.fromstring(body).find(NS + "Contents")
    assert contents is not None
    assert [c.tag.removeprefix(NS) for c in contents] == [
        "Key",
        "LastModified",
        "ETag",
        "Size",
        "StorageClass",
    ]


def test_list_objects_v2() -> None:
    body = xmlio.list_objects_v2_result(
        "bkt",
        contents=objects(*NASTY_KEYS, owner=OWNER),
        common_prefixes=["dir/", "sub dir/"],
        is_truncated=True,
        prefix="",
        delimiter="/",
        max_keys=7,
        continuation_token="c1",
        next_continuation_token="c2",
        start_after="a",
    )
    parsed = botocore_parse("ListObjectsV2", body)
    assert parsed["Name"] == "bkt"
    assert parsed["Prefix"] == ""
    assert parsed["Delimiter"] == "/"
    assert parsed["MaxKeys"] == 7
    assert parsed["KeyCount"] == len(NASTY_KEYS) + 2
    assert parsed["IsTruncated"] is True
    assert parsed["ContinuationToken"] == "c1"
    assert parsed["NextContinuationToken"] == "c2"
    assert parsed["StartAfter"] == "a"
    assert "EncodingType" not in parsed
    assert [c["Key"] for c in parsed["Contents"]] == NASTY_KEYS
    first = parsed["Contents"][1]
    assert first["ETag"] == '"etag1"'
    assert first["Size"] == 10
    assert first["StorageClass"] == "STANDARD"
    assert first["LastModified"] == T0.replace(microsecond=123000)
    assert "Owner" not in first  # only with fetch-owner
    assert parsed["CommonPrefixes"] == [{"Prefix": "dir/"}, {"Prefix": "sub dir/"}]


def test_list_objects_v2_owner_only_with_fetch_owner() -> None:
    body = xmlio.list_objects_v2_result(
        "bkt", contents=objects("k", owner=OWNER), is_truncated=False, fetch_owner=True
    )
    parsed = botocore_parse("ListObjectsV2", body)
    assert parsed["Contents"][0]["Owner"] == {"ID": "owner-id", "DisplayName": "owner & co"}
    assert "NextContinuationToken" not in parsed


def test_list_objects_v2_url_encoding() -> None:
    body = xmlio.list_objects_v2_result(
        "bkt",
        contents=objects(*NASTY_KEYS, "ctl\x01\x08", "x+y z"),
        common_prefixes=["a b+/"],
        is_truncated=False,
        prefix="p q+",
        delimiter="/",
        start_after="s&t",
        encoding="url",
    )
    raw = ET.fromstring(body)
    assert raw.findtext(NS + "Prefix") == "p%20q%2B"
    assert raw.findtext(f"{NS}Contents/{NS}Key") == "plain"
    parsed = botocore_parse("ListObjectsV2", body)
    assert parsed["EncodingType"] == "url"
    # botocore decodes (with unquote_plus) when it asked for the encoding itself.
    botocore.handlers.decode_list_object_v2(parsed, {"encoding_type_auto_set": True})
    assert [c["Key"] for c in parsed["Contents"]] == [*NASTY_KEYS, "ctl\x01\x08", "x+y z"]
    assert parsed["CommonPrefixes"] == [{"Prefix": "a b+/"}]
    assert parsed["Prefix"] == "p q+"
    assert parsed["StartAfter"] == "s&t"
    assert parsed["Delimiter"] == "/"


@given(st.lists(any_key, min_size=1, max_size=5), any_key)
def test_url_encoded_keys_round_trip_any_text(keys: list[str], prefix: str) -> None:
    body = xmlio.list_objects_v2_result(
        "b", contents=objects(*keys), common_prefixes=[prefix], is_truncated=False, encoding="url"
    )
    parsed = botocore_parse("ListObjectsV2", body)
    botocore.handlers.decode_list_object_v2(parsed, {"encoding_type_auto_set": True})
    assert [c["Key"] for c in parsed["Contents"]] == keys
    assert parsed["CommonPrefixes"] == [{"Prefix": prefix}]
    # Decoders that do not read '+' as a space (JavaScript's, Java's URI) agree.
    raw = ET.fromstring(body)
    assert [urllib.parse.unquote(k.text or "") for k in raw.iter(NS + "Key")] == keys


@given(st.lists(xml_text, min_size=1, max_size=5))
def test_plain_keys_round_trip_any_xml_text(keys: list[str]) -> None:
    body = xmlio.list_objects_v2_result("b", contents=objects(*keys), is_truncated=False)
    assert [c["Key"] for c in botocore_parse("ListObjectsV2", body)["Contents"]] == keys


def test_plain_keys_with_characters_xml_forbids_are_references_like_s3() -> None:
    body = xmlio.list_objects_v2_result("b", contents=objects("a\x01b"), is_truncated=False)
    assert b"<Key>a&#x1;b</Key>" in body


def test_full_client_list_objects_v2_decodes_what_it_asked_for() -> None:
    keys = ["a b+c", "%41/ü", "x\x01y"]
    body = xmlio.list_objects_v2_result(
        "bkt", contents=objects(*keys), is_truncated=False, encoding="url"
    )
    result, request = client_call("list_objects_v2", {"Bucket": "bkt"}, 200, body)
    assert "encoding-type=url" in request.url
    assert [c["Key"] for c in result["Contents"]] == keys


def test_list_objects_v1() -> None:
    body = xmlio.list_objects_v1_result(
        "bkt",
        contents=objects("a/1", "b", owner=OWNER),
        common_prefixes=["c/"],
        is_truncated=True,
        prefix="",
        delimiter="/",
        max_keys=3,
        marker="a",
    )
    assert children(body) == [
        "Name",
        "Prefix",
        "Marker",
        "NextMarker",
        "MaxKeys",
        "Delimiter",
        "IsTruncated",
        "Contents",
        "Contents",
        "CommonPrefixes",
    ]
    parsed = botocore_parse("ListObjects", body)
    assert parsed["Marker"] == "a"
    assert parsed["NextMarker"] == "c/"  # greatest of the keys and prefixes returned
    assert parsed["IsTruncated"] is True
    assert parsed["Contents"][0]["Owner"] == {"ID": "owner-id", "DisplayName": "owner & co"}
    assert [c["Key"] for c in parsed["Contents"]] == ["a/1", "b"]
    assert parsed["CommonPrefixes"] == [{"Prefix": "c/"}]


@pytest.mark.parametrize(("delimiter", "is_truncated"), [(None, True), ("/", False), (None, False)])
def test_list_objects_v1_next_marker_only_with_delimiter_and_truncation(
    delimiter: str | None, is_truncated: bool
) -> None:
    body = xmlio.list_objects_v1_result(
        "bkt",
        contents=objects("a"),
        is_truncated=is_truncated,
        delimiter=delimiter,
        next_marker="a",
    )
    assert "NextMarker" not in children(body)
    assert botocore_parse("ListObjects", body)["Marker"] == ""


def test_list_objects_v1_url_encoding() -> None:
    body = xmlio.list_objects_v1_result(
        "bkt",
        contents=objects("a b", "c+d"),
        common_prefixes=["e f/"],
        is_truncated=True,
        prefix="",
        delimiter="/",
        marker="m n",
        encoding="url",
    )
    raw = ET.fromstring(body)
    assert raw.findtext(NS + "Marker") == "m%20n"
    assert raw.findtext(NS + "NextMarker") == "e%20f/"
    parsed = botocore_parse("ListObjects", body)
    botocore.handlers.decode_list_object(parsed, {"encoding_type_auto_set": True})
    assert [c["Key"] for c in parsed["Contents"]] == ["a b", "c+d"]
    assert parsed["Marker"] == "m n"
    assert parsed["NextMarker"] == "e f/"
    assert parsed["CommonPrefixes"] == [{"Prefix": "e f/"}]


def test_create_multipart_upload() -> None:
    body = xmlio.initiate_multipart_upload_result("bkt", "a&b/ü", "up-1")
    assert children(body) == ["Bucket", "Key", "UploadId"]
    parsed = botocore_parse("CreateMultipartUpload", body)
    assert (parsed["Bucket"], parsed["Key"], parsed["UploadId"]) == ("bkt", "a&b/ü", "up-1")


def test_complete_multipart_upload() -> None:
    body = xmlio.complete_multipart_upload_result(
        "http://s3.local/bkt/k%20ey", "bkt", "k ey", "abc-2"
    )
    assert children(body) == ["Location", "Bucket", "Key", "ETag"]
    parsed = botocore_parse("CompleteMultipartUpload", body)
    assert parsed["Location"] == "http://s3.local/bkt/k%20ey"
    assert (parsed["Bucket"], parsed["Key"]) == ("bkt", "k ey")
    assert parsed["ETag"] == '"abc-2"'


def test_etag_already_quoted_is_not_quoted_twice() -> None:
    body = xmlio.copy_object_result(T0, '"abc"')
    assert botocore_parse("CopyObject", body)["CopyObjectResult"]["ETag"] == '"abc"'


def test_list_parts() -> None:
    parts = [PartEntry(2, T0, "e2", 5 << 20), PartEntry(3, T0, '"e3"', 7)]
    body = xmlio.list_parts_result(
        "bkt",
        "k",
        "up-1",
        parts=parts,
        is_truncated=True,
        max_parts=2,
        part_number_marker=1,
        initiator=OWNER,
        owner=OWNER,
    )
    assert children(body) == [
        "Bucket",
        "Key",
        "UploadId",
        "Initiator",
        "Owner",
        "StorageClass",
        "PartNumberMarker",
        "NextPartNumberMarker",
        "MaxParts",
        "IsTruncated",
        "Part",
        "Part",
    ]
    parsed = botocore_parse("ListParts", body)
    assert parsed["UploadId"] == "up-1"
    assert parsed["PartNumberMarker"] == 1
    assert parsed["NextPartNumberMarker"] == 3
    assert parsed["MaxParts"] == 2
    assert parsed["IsTruncated"] is True
    assert parsed["Initiator"] == {"ID": "owner-id", "DisplayName": "owner & co"}
    assert parsed["StorageClass"] == "STANDARD"
    assert parsed["Parts"] == [
        {
            "PartNumber": 2,
            "LastModified": T0.replace(microsecond=123000),
            "ETag": '"e2"',
            "Size": 5 << 20,
        },
        {
            "PartNumber": 3,
            "LastModified": T0.replace(microsecond=123000),
            "ETag": '"e3"',
            "Size": 7,
        },
    ]


def test_list_parts_empty() -> None:
    body = xmlio.list_parts_result("bkt", "k", "up", parts=[], is_truncated=False)
    parsed = botocore_parse("ListParts", body)
    assert parsed["NextPartNumberMarker"] == 0
    assert "Parts" not in parsed


def test_list_multipart_uploads() -> None:
    uploads = [
        UploadEntry("a b", "u1", T0, initiator=OWNER, owner=OWNER),
        UploadEntry("c+d", "u2", T0),
    ]
    body = xmlio.list_multipart_uploads_result(
        "bkt",
        uploads=uploads,
        common_prefixes=["dir/"],
        is_truncated=True,
        delimiter="/",
        max_uploads=2,
        key_marker="a",
        upload_id_marker="u0",
    )
    assert children(body) == [
        "Bucket",
        "KeyMarker",
        "UploadIdMarker",
        "NextKeyMarker",
        "NextUploadIdMarker",
        "Delimiter",
        "Prefix",
        "MaxUploads",
        "IsTruncated",
        "Upload",
        "Upload",
        "CommonPrefixes",
    ]
    parsed = botocore_parse("ListMultipartUploads", body)
    assert parsed["Bucket"] == "bkt"
    assert (parsed["KeyMarker"], parsed["UploadIdMarker"]) == ("a", "u0")
    assert (parsed["NextKeyMarker"], parsed["NextUploadIdMarker"]) == ("c+d", "u2")
    assert parsed["MaxUploads"] == 2
    assert parsed["IsTruncated"] is True
    first, second = parsed["Uploads"]
    assert first == {
        "Key": "a b",
        "UploadId": "u1",
        "Initiator": {"ID": "owner-id", "DisplayName": "owner & co"},
        "Owner": {"ID": "owner-id", "DisplayName": "owner & co"},
        "StorageClass": "STANDARD",
        "Initiated": T0.replace(microsecond=123000),
    }
    assert second["Key"] == "c+d" and "Owner" not in second
    assert parsed["CommonPrefixes"] == [{"Prefix": "dir/"}]


def test_list_multipart_uploads_url_encoding() -> None:
    body = xmlio.list_multipart_uploads_result(
        "bkt", uploads=[UploadEntry("a b+", "u1", T0)], is_truncated=False, encoding="url"
    )
    raw = ET.fromstring(body)
    assert raw.findtext(f"{NS}Upload/{NS}Key") == "a%20b%2B"
    assert raw.findtext(NS + "NextKeyMarker") == "a%20b%2B"
    assert botocore_parse("ListMultipartUploads", body)["EncodingType"] == "url"


def test_copy_object_and_copy_part() -> None:
    body = xmlio.copy_object_result(T0, "abc")
    assert children(body) == ["LastModified", "ETag"]
    parsed = botocore_parse("CopyObject", body)["CopyObjectResult"]
    assert parsed == {"LastModified": T0.replace(microsecond=123000), "ETag": '"abc"'}
    body = xmlio.copy_part_result(T0, "def")
    assert ET.fromstring(body).tag == NS + "CopyPartResult"
    parsed = botocore_parse("UploadPartCopy", body)["CopyPartResult"]
    assert parsed == {"LastModified": T0.replace(microsecond=123000), "ETag": '"def"'}


def test_delete_result() -> None:
    body = xmlio.delete_result(
        [DeletedEntry("a&b"), DeletedEntry("v", version_id="null")],
        [DeleteError("c<d", "AccessDenied", "Access Denied")],
    )
    parsed = botocore_parse("DeleteObjects", body)
    assert parsed["Deleted"] == [{"Key": "a&b"}, {"Key": "v", "VersionId": "null"}]
    assert parsed["Errors"] == [{"Key": "c<d", "Code": "AccessDenied", "Message": "Access Denied"}]


def test_delete_result_quiet_lists_only_errors() -> None:
    body = xmlio.delete_result(
        [DeletedEntry("a")], [DeleteError("b", "InternalError", "oops")], quiet=True
    )
    assert children(body) == ["Error"]
    parsed = botocore_parse("DeleteObjects", body)
    assert "Deleted" not in parsed
    assert parsed["Errors"][0]["Key"] == "b"


@pytest.mark.parametrize(
    ("region", "expected"), [("eu-west-1", "eu-west-1"), (None, None), ("us-east-1", None)]
)
def test_get_bucket_location(region: str | None, expected: str | None) -> None:
    body = xmlio.location_constraint(region)
    root = ET.fromstring(body)
    assert root.tag == NS + "LocationConstraint"
    assert root.text == expected
    botocore_parse("GetBucketLocation", body)  # parses (the model cannot describe it)...
    result, _ = client_call("get_bucket_location", {"Bucket": "bkt"}, 200, body)
    assert result["LocationConstraint"] == expected  # ...botocore's own handler reads it


def test_get_bucket_versioning() -> None:
    body = xmlio.versioning_configuration()
    assert ET.fromstring(body).tag == NS + "VersioningConfiguration"
    assert set(botocore_parse("GetBucketVersioning", body)) == {"ResponseMetadata"}


def test_full_client_reads_error_document() -> None:
    body = errors.render(errors.NoSuchKey(key="k"), "REQ", "/bkt/k")
    with pytest.raises(ClientError) as info:
        client_call("get_object", {"Bucket": "bkt", "Key": "k"}, 404, body)
    error: dict[str, object] = dict(info.value.response["Error"])
    assert error["Code"] == "NoSuchKey"
    assert error["Key"] == "k"


# ---------------------------------------------------------------------------
# IN documents


def test_parse_delete_botocore_body() -> None:
    keys = [*NASTY_KEYS, " lead and trail "]
    params = {"Bucket": "b", "Delete": {"Objects": [{"Key": k} for k in keys], "Quiet": True}}
    body = botocore_body("DeleteObjects", params)
    parsed_keys, quiet = xmlio.parse_delete(body)
    # XML reads a raw CR as LF; botocore does not escape it (S3 behaves the same).
    assert parsed_keys == [k.replace("\r", "\n") for k in keys]
    assert quiet is True
    params["Delete"] = {"Objects": [{"Key": "a", "VersionId": "v1"}]}
    assert xmlio.parse_delete(botocore_body("DeleteObjects", params)) == (["a"], False)


def test_parse_delete_from_full_client() -> None:
    params = {"Bucket": "b", "Delete": {"Objects": [{"Key": "x&y"}, {"Key": "z"}], "Quiet": False}}
    _, request = client_call("delete_objects", params, 200, xmlio.delete_result([]))
    assert isinstance(request.body, bytes)
    assert xmlio.parse_delete(request.body) == (["x&y", "z"], False)


def test_parse_delete_without_namespace_and_with_numeric_quiet() -> None:
    body = b"<Delete><Quiet>1</Quiet><Object><Key>k</Key></Object></Delete>"
    assert xmlio.parse_delete(body) == (["k"], True)


def test_parse_delete_passes_an_empty_key_on() -> None:
    # S3 answers it with a per-key error, not by refusing the whole request.
    body = b"<Delete><Object><Key></Key></Object><Object><Key/></Object></Delete>"
    assert xmlio.parse_delete(body) == (["", ""], False)


def test_parse_delete_at_most_1000_keys() -> None:
    def body(n: int) -> bytes:
        objs = "".join(f"<Object><Key>k{i}</Key></Object>" for i in range(n))
        return f'<Delete xmlns="{xmlio.S3_NS}">{objs}</Delete>'.encode()

    assert len(xmlio.parse_delete(body(1000))[0]) == 1000
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_delete(body(1001))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<Delete><Object><Key>k</Key></Object>",  # unclosed
        b"<Remove><Object><Key>k</Key></Object></Remove>",  # wrong root
        b'<Delete xmlns="urn:other"><Object><Key>k</Key></Object></Delete>',  # wrong namespace
        b"<Delete></Delete>",  # no objects
        b"<Delete><Object></Object></Delete>",  # no key
        b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>",  # two keys
        b"<Delete><Object><Key>k</Key></Object><Quiet>maybe</Quiet></Delete>",
    ],
)
def test_parse_delete_malformed(body: bytes) -> None:
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_delete(body)


def test_parse_complete_botocore_body() -> None:
    parts = [{"PartNumber": 1, "ETag": '"aaa"'}, {"PartNumber": 2, "ETag": "bbb"}]
    params = {"Bucket": "b", "Key": "k", "UploadId": "u", "MultipartUpload": {"Parts": parts}}
    body = botocore_body("CompleteMultipartUpload", params)
    assert xmlio.parse_complete(body) == [(1, "aaa"), (2, "bbb")]


def test_parse_complete_keeps_order_and_ignores_checksums() -> None:
    body = (
        b"<CompleteMultipartUpload>"
        b"<Part><PartNumber> 3 </PartNumber><ETag>&quot;c&quot;</ETag>"
        b"<ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>"
        b"<Part><ETag>a</ETag><PartNumber>1</PartNumber></Part>"
        b"</CompleteMultipartUpload>"
    )
    assert xmlio.parse_complete(body) == [(3, "c"), (1, "a")]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<CompleteMultipartUpload></CompleteMultipartUpload>",  # no parts
        b"<CompleteMultipartUpload><Part><ETag>a</ETag></Part></CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part>"
        b"</CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>a</ETag></Part>"
        b"</CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>1.5</PartNumber><ETag>a</ETag></Part>"
        b"</CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>-1</PartNumber><ETag>a</ETag></Part>"
        b"</CompleteMultipartUpload>",
        b"<CompleteMultipartUpload><Part><PartNumber>\xd9\xa1</PartNumber><ETag>a</ETag></Part>"
        b"</CompleteMultipartUpload>",  # Arabic-Indic one: a digit, not an ASCII one
        b"<Complete><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part></Complete>",
    ],
)
def test_parse_complete_malformed(body: bytes) -> None:
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_complete(body)


def test_parse_create_bucket() -> None:
    assert xmlio.parse_create_bucket(b"") is None
    assert xmlio.parse_create_bucket(b"  \n") is None
    params = {"Bucket": "b", "CreateBucketConfiguration": {"LocationConstraint": "eu-west-1"}}
    assert xmlio.parse_create_bucket(botocore_body("CreateBucket", params)) == "eu-west-1"
    assert xmlio.parse_create_bucket(b"<CreateBucketConfiguration/>") is None
    empty = b"<CreateBucketConfiguration><LocationConstraint/></CreateBucketConfiguration>"
    assert xmlio.parse_create_bucket(empty) is None
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_create_bucket(b"<Bucket/>")
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_create_bucket(b"<CreateBucketConfiguration>")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Delete><Object><Key>&lol9;</Key></Object></Delete>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Delete><Object><Key>&xxe;</Key></Object></Delete>"""

PLAIN_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE Delete>
<Delete><Object><Key>k</Key></Object></Delete>"""


@pytest.mark.parametrize("body", [BILLION_LAUGHS, EXTERNAL_ENTITY, PLAIN_DTD])
def test_entities_and_dtds_are_refused(body: bytes) -> None:
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_delete(body)
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_complete(body.replace(b"Delete", b"CompleteMultipartUpload"))
    with pytest.raises(errors.MalformedXML):
        xmlio.parse_create_bucket(body.replace(b"Delete", b"CreateBucketConfiguration"))


def test_oversized_body_is_refused_before_parsing() -> None:
    body = b"<Delete>" + b" " * xmlio.MAX_XML_BODY_BYTES + b"</Delete>"
    with pytest.raises(errors.MaxMessageLengthExceeded):
        xmlio.parse_delete(body)
    with pytest.raises(errors.MaxMessageLengthExceeded):
        xmlio.parse_complete(body)
    with pytest.raises(errors.MaxMessageLengthExceeded):
        xmlio.parse_create_bucket(body)


def test_a_full_delete_request_fits_the_cap() -> None:
    keys = [f"{i:04d}" + "&" * 1020 for i in range(xmlio.MAX_DELETE_KEYS)]
    params = {"Bucket": "b", "Delete": {"Objects": [{"Key": k} for k in keys]}}
    body = botocore_body("DeleteObjects", params)
    assert len(body) <= xmlio.MAX_XML_BODY_BYTES
    assert xmlio.parse_delete(body) == (keys, False)


@given(st.lists(xml_text, min_size=1, max_size=20), st.booleans())
def test_parse_delete_reads_what_botocore_writes(keys: list[str], quiet: bool) -> None:
    params = {"Bucket": "b", "Delete": {"Objects": [{"Key": k} for k in keys], "Quiet": quiet}}
    parsed = xmlio.parse_delete(botocore_body("DeleteObjects", params))
    assert parsed == ([k.replace("\r\n", "\n").replace("\r", "\n") for k in keys], quiet)
