"""S3's XML documents: the response bodies we write and the request bodies we read.

OUT: one function per response document, taking small frozen dataclasses and
returning the UTF-8 body with the XML declaration, in the namespace
:data:`S3_NS`. Elements come in the order S3 writes them (some clients read
them with order-sensitive parsers). Timestamps are ISO 8601 UTC with
milliseconds (``2009-10-12T17:50:30.000Z``); a naive ``datetime`` is taken as
UTC. ETags are written quoted, whether or not the caller quoted them.

Listings honour ``encoding-type=url`` like S3: the key-like values (keys,
prefixes, delimiter, markers, start-after) are percent-encoded, with ``/``
kept and everything else outside ``A-Za-z0-9-_.~`` encoded (space as ``%20``,
``+`` as ``%2B``), which decodes right with both ``unquote`` and botocore's
``unquote_plus``. Continuation tokens and upload ids are opaque and echoed
as they are. Without it, characters XML 1.0 cannot carry are written as
numeric references, as S3 does.

IN: the three request bodies S3 clients send. Parsing goes through
defusedxml with DTDs forbidden (so no entity expansion and no external
entities); a body over :data:`MAX_XML_BODY_BYTES` is refused with
``MaxMessageLengthExceeded`` before it is parsed, and anything that is not
the expected document raises ``MalformedXML``. The root element may be in
S3's namespace or in none.
"""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from services.gateway import errors
from services.gateway.errors import xml_escape

__all__ = [
    "MAX_COMPLETE_PARTS",
    "MAX_DELETE_KEYS",
    "MAX_XML_BODY_BYTES",
    "S3_NS",
    "BucketEntry",
    "DeleteError",
    "DeletedEntry",
    "EncodingType",
    "ObjectEntry",
    "Owner",
    "PartEntry",
    "UploadEntry",
    "complete_multipart_upload_result",
    "copy_object_result",
    "copy_part_result",
    "delete_result",
    "encoding_type",
    "initiate_multipart_upload_result",
    "iso8601",
    "list_buckets_result",
    "list_multipart_uploads_result",
    "list_objects_v1_result",
    "list_objects_v2_result",
    "list_parts_result",
    "location_constraint",
    "parse_complete",
    "parse_create_bucket",
    "parse_delete",
    "versioning_configuration",
]

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
#: Largest request body the parsers accept. A full DeleteObjects (1000 keys of
#: 1024 bytes) is about 1 MiB, but 5 MiB if every byte is an ``&`` written as
#: ``&amp;``; a full CompleteMultipartUpload (10,000 parts with checksums) is
#: about 2 MiB. 8 MiB leaves room for clients that escape more. The gateway
#: should refuse a longer Content-Length before reading the body.
MAX_XML_BODY_BYTES = 8 * 1024 * 1024
#: DeleteObjects takes at most this many keys (more is MalformedXML, as on S3).
MAX_DELETE_KEYS = 1000
#: CompleteMultipartUpload can name at most this many parts.
MAX_COMPLETE_PARTS = 10_000

EncodingType = Literal["url"]
_Encode = Callable[[str], str]

# ---------------------------------------------------------------------------
# Input values of the OUT documents.


@dataclass(frozen=True)
class Owner:
    id: str
    display_name: str


@dataclass(frozen=True)
class BucketEntry:
    name: str
    creation_date: datetime


@dataclass(frozen=True)
class ObjectEntry:
    """One ``Contents`` of a listing; ``owner`` is written only where S3 would."""

    key: str
    last_modified: datetime
    etag: str
    size: int
    storage_class: str = "STANDARD"
    owner: Owner | None = None


@dataclass(frozen=True)
class PartEntry:
    part_number: int
    last_modified: datetime
    etag: str
    size: int


@dataclass(frozen=True)
class UploadEntry:
    key: str
    upload_id: str
    initiated: datetime
    initiator: Owner | None = None
    owner: Owner | None = None
    storage_class: str = "STANDARD"


@dataclass(frozen=True)
class DeletedEntry:
    key: str
    version_id: str | None = None


@dataclass(frozen=True)
class DeleteError:
    key: str
    code: str
    message: str
    version_id: str | None = None


# ---------------------------------------------------------------------------
# A tiny builder: each helper returns escaped markup.


def iso8601(when: datetime) -> str:
    """S3's timestamp format; naive times are taken as UTC.

    >>> iso8601(datetime(2009, 10, 12, 17, 50, 30, 123456, tzinfo=UTC))
    '2009-10-12T17:50:30.123Z'
    """
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def _quoted_etag(etag: str) -> str:
    return etag if etag.startswith('"') and etag.endswith('"') and len(etag) >= 2 else f'"{etag}"'


def _text(value: str | int | bool | datetime) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return iso8601(value)
    if isinstance(value, int):
        return str(value)
    return xml_escape(value, invalid="reference")


def _el(name: str, value: str | int | bool | datetime) -> str:
    return f"<{name}>{_text(value)}</{name}>"


def _opt(name: str, value: str | int | bool | datetime | None) -> str:
    """The element, or nothing when ``value`` is None."""
    return "" if value is None else _el(name, value)


def _wrap(name: str, children: Iterable[str]) -> str:
    return f"<{name}>{''.join(children)}</{name}>"


def _document(root: str, children: Iterable[str]) -> bytes:
    body = "".join(children)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{S3_NS}">{body}</{root}>'
    ).encode()


def _owner(name: str, owner: Owner | None) -> str:
    if owner is None:
        return ""
    return _wrap(name, (_el("ID", owner.id), _el("DisplayName", owner.display_name)))


def _encoder(encoding: EncodingType | None) -> _Encode:
    if encoding == "url":
        return _url_encode
    return _identity


def _url_encode(value: str) -> str:
    try:
        # A key that arrived as non-UTF-8 bytes (surrogateescape) goes back as them.
        raw = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = value.encode("utf-8", "surrogatepass")
    return urllib.parse.quote(raw, safe="/")


def _identity(value: str) -> str:
    return value


def encoding_type(value: str | None) -> EncodingType | None:
    """Validate the ``encoding-type`` query parameter (only ``url`` exists).

    >>> encoding_type("url"), encoding_type(None)
    ('url', None)
    """
    if value is None:
        return None
    if value == "url":
        return "url"
    raise errors.InvalidArgument(
        "Invalid Encoding Method specified in Request",
        argument_name="encoding-type",
        argument_value=value,
    )


# ---------------------------------------------------------------------------
# OUT documents.


def list_buckets_result(owner: Owner, buckets: Sequence[BucketEntry]) -> bytes:
    """ListBuckets (``GET /``): ``ListAllMyBucketsResult``."""
    return _document(
        "ListAllMyBucketsResult",
        (
            _owner("Owner", owner),
            _wrap(
                "Buckets",
                (
                    _wrap("Bucket", (_el("Name", b.name), _el("CreationDate", b.creation_date)))
                    for b in buckets
                ),
            ),
        ),
    )


def _contents(entry: ObjectEntry, enc: _Encode, with_owner: bool) -> str:
    return _wrap(
        "Contents",
        (
            _el("Key", enc(entry.key)),
            _el("LastModified", entry.last_modified),
            _el("ETag", _quoted_etag(entry.etag)),
            _el("Size", entry.size),
            _el("StorageClass", entry.storage_class),
            _owner("Owner", entry.owner) if with_owner else "",
        ),
    )


def _common_prefixes(prefixes: Iterable[str], enc: _Encode) -> Iterable[str]:
    return (_wrap("CommonPrefixes", (_el("Prefix", enc(p)),)) for p in prefixes)


def list_objects_v2_result(
    bucket: str,
    *,
    contents: Sequence[ObjectEntry],
    common_prefixes: Sequence[str] = (),
    is_truncated: bool,
    prefix: str = "",
    delimiter: str | None = None,
    max_keys: int = 1000,
    continuation_token: str | None = None,
    next_continuation_token: str | None = None,
    start_after: str | None = None,
    encoding: EncodingType | None = None,
    fetch_owner: bool = False,
) -> bytes:
    """ListObjectsV2 (``GET /bucket?list-type=2``): ``ListBucketResult``.

    ``KeyCount`` is computed (contents plus common prefixes); each entry's
    ``Owner`` is written only with ``fetch_owner``. Pass the request's
    ``continuation_token`` and ``start_after`` to have them echoed.
    """
    enc = _encoder(encoding)
    return _document(
        "ListBucketResult",
        (
            _el("Name", bucket),
            _el("Prefix", enc(prefix)),
            _opt("StartAfter", None if start_after is None else enc(start_after)),
            _opt("ContinuationToken", continuation_token),
            _opt("NextContinuationToken", next_continuation_token if is_truncated else None),
            _el("KeyCount", len(contents) + len(common_prefixes)),
            _el("MaxKeys", max_keys),
            _opt("Delimiter", None if delimiter is None else enc(delimiter)),
            _opt("EncodingType", encoding),
            _el("IsTruncated", is_truncated),
            *(_contents(entry, enc, fetch_owner) for entry in contents),
            *_common_prefixes(common_prefixes, enc),
        ),
    )


def list_objects_v1_result(
    bucket: str,
    *,
    contents: Sequence[ObjectEntry],
    common_prefixes: Sequence[str] = (),
    is_truncated: bool,
    prefix: str = "",
    delimiter: str | None = None,
    max_keys: int = 1000,
    marker: str = "",
    next_marker: str | None = None,
    encoding: EncodingType | None = None,
) -> bytes:
    """ListObjects (``GET /bucket``): ``ListBucketResult``, version 1.

    ``NextMarker`` is written, as on S3, only when the request had a delimiter
    and the result is truncated; it defaults to the greatest key or common
    prefix returned. Entries carry their ``Owner`` when they have one.
    """
    enc = _encoder(encoding)
    written_next: str | None = None
    if delimiter and is_truncated:
        if next_marker is None:
            last = [s[-1] for s in ([e.key for e in contents], list(common_prefixes)) if s]
            next_marker = max(last) if last else None
        written_next = None if next_marker is None else enc(next_marker)
    return _document(
        "ListBucketResult",
        (
            _el("Name", bucket),
            _el("Prefix", enc(prefix)),
            _el("Marker", enc(marker)),
            _opt("NextMarker", written_next),
            _el("MaxKeys", max_keys),
            _opt("Delimiter", None if delimiter is None else enc(delimiter)),
            _opt("EncodingType", encoding),
            _el("IsTruncated", is_truncated),
            *(_contents(entry, enc, True) for entry in contents),
            *_common_prefixes(common_prefixes, enc),
        ),
    )


def initiate_multipart_upload_result(bucket: str, key: str, upload_id: str) -> bytes:
    """CreateMultipartUpload (``POST /bucket/key?uploads``)."""
    return _document(
        "InitiateMultipartUploadResult",
        (_el("Bucket", bucket), _el("Key", key), _el("UploadId", upload_id)),
    )


def complete_multipart_upload_result(location: str, bucket: str, key: str, etag: str) -> bytes:
    """CompleteMultipartUpload (``POST /bucket/key?uploadId=``); ``location`` is the URL."""
    return _document(
        "CompleteMultipartUploadResult",
        (
            _el("Location", location),
            _el("Bucket", bucket),
            _el("Key", key),
            _el("ETag", _quoted_etag(etag)),
        ),
    )


def list_parts_result(
    bucket: str,
    key: str,
    upload_id: str,
    *,
    parts: Sequence[PartEntry],
    is_truncated: bool,
    max_parts: int = 1000,
    part_number_marker: int = 0,
    next_part_number_marker: int | None = None,
    initiator: Owner | None = None,
    owner: Owner | None = None,
    storage_class: str = "STANDARD",
) -> bytes:
    """ListParts (``GET /bucket/key?uploadId=``).

    ``NextPartNumberMarker`` defaults to the last part listed (or the marker).
    """
    if next_part_number_marker is None:
        next_part_number_marker = parts[-1].part_number if parts else part_number_marker
    return _document(
        "ListPartsResult",
        (
            _el("Bucket", bucket),
            _el("Key", key),
            _el("UploadId", upload_id),
            _owner("Initiator", initiator),
            _owner("Owner", owner),
            _el("StorageClass", storage_class),
            _el("PartNumberMarker", part_number_marker),
            _el("NextPartNumberMarker", next_part_number_marker),
            _el("MaxParts", max_parts),
            _el("IsTruncated", is_truncated),
            *(
                _wrap(
                    "Part",
                    (
                        _el("PartNumber", p.part_number),
                        _el("LastModified", p.last_modified),
                        _el("ETag", _quoted_etag(p.etag)),
                        _el("Size", p.size),
                    ),
                )
                for p in parts
            ),
        ),
    )


def list_multipart_uploads_result(
    bucket: str,
    *,
    uploads: Sequence[UploadEntry],
    common_prefixes: Sequence[str] = (),
    is_truncated: bool,
    prefix: str = "",
    delimiter: str | None = None,
    max_uploads: int = 1000,
    key_marker: str = "",
    upload_id_marker: str = "",
    next_key_marker: str | None = None,
    next_upload_id_marker: str | None = None,
    encoding: EncodingType | None = None,
) -> bytes:
    """ListMultipartUploads (``GET /bucket?uploads``).

    The next markers default to the last upload listed, and are written
    (possibly empty) as S3 does.
    """
    enc = _encoder(encoding)
    if next_key_marker is None:
        next_key_marker = uploads[-1].key if uploads else ""
    if next_upload_id_marker is None:
        next_upload_id_marker = uploads[-1].upload_id if uploads else ""
    return _document(
        "ListMultipartUploadsResult",
        (
            _el("Bucket", bucket),
            _el("KeyMarker", enc(key_marker)),
            _el("UploadIdMarker", upload_id_marker),
            _el("NextKeyMarker", enc(next_key_marker)),
            _el("NextUploadIdMarker", next_upload_id_marker),
            _opt("Delimiter", None if delimiter is None else enc(delimiter)),
            _el("Prefix", enc(prefix)),
            _opt("EncodingType", encoding),
            _el("MaxUploads", max_uploads),
            _el("IsTruncated", is_truncated),
            *(
                _wrap(
                    "Upload",
                    (
                        _el("Key", enc(u.key)),
                        _el("UploadId", u.upload_id),
                        _owner("Initiator", u.initiator),
                        _owner("Owner", u.owner),
                        _el("StorageClass", u.storage_class),
                        _el("Initiated", u.initiated),
                    ),
                )
                for u in uploads
            ),
            *_common_prefixes(common_prefixes, enc),
        ),
    )


def copy_object_result(last_modified: datetime, etag: str) -> bytes:
    """CopyObject (``PUT /bucket/key`` with ``x-amz-copy-source``)."""
    return _document(
        "CopyObjectResult",
        (_el("LastModified", last_modified), _el("ETag", _quoted_etag(etag))),
    )


def copy_part_result(last_modified: datetime, etag: str) -> bytes:
    """UploadPartCopy (``PUT /bucket/key?partNumber=&uploadId=`` with a copy source)."""
    return _document(
        "CopyPartResult",
        (_el("LastModified", last_modified), _el("ETag", _quoted_etag(etag))),
    )


def delete_result(
    deleted: Sequence[DeletedEntry], errors_: Sequence[DeleteError] = (), *, quiet: bool = False
) -> bytes:
    """DeleteObjects (``POST /bucket?delete``); quiet mode lists only the errors."""
    return _document(
        "DeleteResult",
        (
            *(
                _wrap("Deleted", (_el("Key", d.key), _opt("VersionId", d.version_id)))
                for d in ([] if quiet else deleted)
            ),
            *(
                _wrap(
                    "Error",
                    (
                        _el("Key", e.key),
                        _opt("VersionId", e.version_id),
                        _el("Code", e.code),
                        _el("Message", e.message),
                    ),
                )
                for e in errors_
            ),
        ),
    )


def location_constraint(region: str | None) -> bytes:
    """GetBucketLocation (``GET /bucket?location``): empty for us-east-1, as on S3."""
    text = "" if region in (None, "", "us-east-1") else _text(region)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<LocationConstraint xmlns="{S3_NS}">{text}</LocationConstraint>'
    ).encode()


def versioning_configuration() -> bytes:
    """GetBucketVersioning of a bucket that never had versioning: an empty document."""
    return _document("VersioningConfiguration", ())


# ---------------------------------------------------------------------------
# IN documents.


def _parse(body: bytes, root_name: str) -> ET.Element:
    if len(body) > MAX_XML_BODY_BYTES:
        raise errors.MaxMessageLengthExceeded()
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise errors.MalformedXML() from exc
    if _local(root.tag, root_name) is None:
        raise errors.MalformedXML()
    return root


def _local(tag: str, *names: str) -> str | None:
    """The local name of ``tag`` if it is one of ``names`` in S3's namespace or none."""
    ns, _, local = tag[1:].partition("}") if tag.startswith("{") else ("", "", tag)
    if ns not in ("", S3_NS) or local not in names:
        return None
    return local


def _children(parent: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in parent if _local(child.tag, name)]


def _only_text(parent: ET.Element, name: str) -> str | None:
    """Text of the single ``name`` child (``""`` if empty), None if absent."""
    found = _children(parent, name)
    if len(found) > 1:
        raise errors.MalformedXML()
    return (found[0].text or "") if found else None


def parse_delete(body: bytes) -> tuple[list[str], bool]:
    """DeleteObjects' ``Delete`` document: (keys in request order, quiet).

    One to :data:`MAX_DELETE_KEYS` ``Object`` elements, each with a ``Key``;
    ``VersionId`` and the other per-object elements are ignored.
    """
    root = _parse(body, "Delete")
    objects = _children(root, "Object")
    if not objects or len(objects) > MAX_DELETE_KEYS:
        raise errors.MalformedXML()
    keys: list[str] = []
    for obj in objects:
        key = _only_text(obj, "Key")
        if key is None:
            raise errors.MalformedXML()
        keys.append(key)
    quiet_text = _only_text(root, "Quiet")
    quiet_value = (quiet_text or "false").strip().lower()
    if quiet_value not in ("true", "false", "1", "0"):
        raise errors.MalformedXML()
    return keys, quiet_value in ("true", "1")


def parse_complete(body: bytes) -> list[tuple[int, str]]:
    """CompleteMultipartUpload's document: [(part number, ETag without quotes)].

    Order and duplicates are kept as sent: checking them (InvalidPartOrder,
    InvalidPart) and the part-number range is the caller's job.
    """
    root = _parse(body, "CompleteMultipartUpload")
    parts_xml = _children(root, "Part")
    if not parts_xml or len(parts_xml) > MAX_COMPLETE_PARTS:
        raise errors.MalformedXML()
    parts: list[tuple[int, str]] = []
    for part in parts_xml:
        number_text = _only_text(part, "PartNumber")
        etag = _only_text(part, "ETag")
        if number_text is None or etag is None:
            raise errors.MalformedXML()
        number_text = number_text.strip()
        if not (number_text.isascii() and number_text.isdigit() and len(number_text) <= 10):
            raise errors.MalformedXML()
        parts.append((int(number_text), etag.strip().strip('"')))
    return parts


def parse_create_bucket(body: bytes) -> str | None:
    """CreateBucket's optional ``CreateBucketConfiguration``: its LocationConstraint.

    An empty body, or a configuration without (or with an empty)
    ``LocationConstraint``, gives None.
    """
    if not body.strip():
        return None
    root = _parse(body, "CreateBucketConfiguration")
    location = _only_text(root, "LocationConstraint")
    location = location.strip() if location is not None else None
    return location or None
