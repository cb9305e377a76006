"""The S3 error hierarchy and its XML rendering: the one table of S3 codes.

Every error the gateway answers with is an :class:`S3Error` subclass named
exactly like its S3 code (``NoSuchKey``, ``SlowDown``...), carrying AWS's HTTP
status and default message as class attributes. The subclasses *are* the
table: :data:`ERRORS` maps each code to its class, :func:`from_code` turns an
error from a module that only knows the code string (the SigV4 verifier) into
the right class, and :func:`render` is the only place the XML is written.

An instance holds the message, the extra elements AWS puts in that error's
body (``Key``, ``BucketName``, ``ArgumentName``... in :attr:`S3Error.details`,
rendered in insertion order) and extra response headers (``Allow``,
``Content-Range``, ``Retry-After``...). ``RequestId`` and ``HostId`` are added
by the renderer, never stored.

Invariants: ``code`` of a subclass is its class name; a code is defined once
(a duplicate fails at import); the rendered body is always well-formed XML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar

_XML_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
#: Filled by ``S3Error.__init_subclass__``: S3 code -> the class for it.
_REGISTRY: dict[str, type[S3Error]] = {}


class S3Error(Exception):
    """Base of every S3 error response; instantiated directly only for codes we lack.

    ``code``, ``status`` and ``message`` are class attributes on subclasses;
    :func:`from_code` sets them on an instance of this base for an unknown code.
    The keyword arguments are the common extra elements AWS sends, in the order
    AWS writes them; ``details`` adds any other element (after those).
    """

    code: str = "InternalError"
    status: int = 500
    message: str = "We encountered an internal error. Please try again."
    #: False for responses that must not have a body (304 Not Modified).
    has_body: ClassVar[bool] = True
    #: Whether the body names the request's resource in a ``Resource`` element.
    #: AWS names the resource through specific elements (``Key``,
    #: ``BucketName``, ``UploadId``) in most errors and uses ``Resource`` only
    #: where none applies.
    include_resource: bool = False

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" not in cls.__dict__:
            cls.code = cls.__name__
        if cls.code in _REGISTRY:
            raise TypeError(f"S3 error code {cls.code!r} is defined twice")
        _REGISTRY[cls.code] = cls

    def __init__(
        self,
        message: str | None = None,
        *,
        bucket_name: str | None = None,
        key: str | None = None,
        upload_id: str | None = None,
        part_number: int | None = None,
        argument_name: str | None = None,
        argument_value: str | None = None,
        condition: str | None = None,
        range_requested: str | None = None,
        actual_object_size: int | None = None,
        access_key_id: str | None = None,
        string_to_sign: str | None = None,
        signature_provided: str | None = None,
        canonical_request: str | None = None,
        region: str | None = None,
        method: str | None = None,
        resource_type: str | None = None,
        header: str | None = None,
        details: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if message is not None:
            self.message = message
        named: tuple[tuple[str, str | int | None], ...] = (
            ("BucketName", bucket_name),
            ("Key", key),
            ("UploadId", upload_id),
            ("PartNumber", part_number),
            ("ArgumentName", argument_name),
            ("ArgumentValue", argument_value),
            ("Condition", condition),
            ("RangeRequested", range_requested),
            ("ActualObjectSize", actual_object_size),
            ("AWSAccessKeyId", access_key_id),
            ("StringToSign", string_to_sign),
            ("SignatureProvided", signature_provided),
            ("CanonicalRequest", canonical_request),
            ("Region", region),
            ("Method", method),
            ("ResourceType", resource_type),
            ("Header", header),
        )
        #: Extra XML elements, element name -> text, rendered in this order.
        self.details: dict[str, str] = {
            name: str(value) for name, value in named if value is not None
        }
        for name, value in (details or {}).items():
            if not _XML_NAME.fullmatch(name):
                raise ValueError(f"not an XML element name: {name!r}")
            self.details[name] = str(value)
        #: Extra HTTP response headers (e.g. ``Allow`` for MethodNotAllowed).
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


# ---------------------------------------------------------------------------
# The table. Statuses and messages are AWS's ("Error responses" in the S3 API
# reference). A part count or part number out of range is InvalidArgument, as
# on AWS (there is no TooManyParts code).


class AccessDenied(S3Error):
    status = 403
    message = "Access Denied"


class AccountProblem(S3Error):
    status = 403
    message = (
        "There is a problem with your account that prevents the operation "
        "from completing successfully."
    )


class AuthorizationHeaderMalformed(S3Error):
    status = 400
    message = "The authorization header you provided is invalid."


class AuthorizationQueryParametersError(S3Error):
    status = 400
    message = (
        "Query-string authentication version 4 requires the X-Amz-Algorithm, "
        "X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, "
        "and X-Amz-Expires parameters."
    )


class BadDigest(S3Error):
    status = 400
    message = "The Content-MD5 you specified did not match what we received."


class BucketAlreadyExists(S3Error):
    status = 409
    message = (
        "The requested bucket name is not available. The bucket namespace is shared "
        "by all users of the system. Please select a different name and try again."
    )


class BucketAlreadyOwnedByYou(S3Error):
    status = 409
    message = "Your previous request to create the named bucket succeeded and you already own it."


class BucketNotEmpty(S3Error):
    status = 409
    message = "The bucket you tried to delete is not empty"


class EntityTooLarge(S3Error):
    status = 400
    message = "Your proposed upload exceeds the maximum allowed size"


class EntityTooSmall(S3Error):
    status = 400
    message = "Your proposed upload is smaller than the minimum allowed size"


class ExpiredToken(S3Error):
    status = 400
    message = "The provided token has expired."


class IllegalLocationConstraintException(S3Error):
    status = 400
    message = (
        "The unspecified location constraint is incompatible for the region "
        "specific endpoint this request was sent to."
    )


class IncompleteBody(S3Error):
    status = 400
    message = "You did not provide the number of bytes specified by the Content-Length HTTP header"


class InternalError(S3Error):
    status = 500
    message = "We encountered an internal error. Please try again."


class InvalidAccessKeyId(S3Error):
    status = 403
    message = "The AWS Access Key Id you provided does not exist in our records."


class InvalidArgument(S3Error):
    status = 400
    message = "Invalid Argument"


class InvalidBucketName(S3Error):
    status = 400
    message = "The specified bucket is not valid."


class InvalidChunkSizeError(S3Error):
    status = 400
    message = "Only the last chunk is allowed to have a size less than 8192 bytes"


class InvalidDigest(S3Error):
    status = 400
    message = "The Content-MD5 you specified is not valid."


class InvalidLocationConstraint(S3Error):
    status = 400
    message = "The specified location constraint is not valid."


class InvalidObjectState(S3Error):
    status = 403
    message = "The operation is not valid for the current state of the object."


class InvalidPart(S3Error):
    status = 400
    message = (
        "One or more of the specified parts could not be found.  The part may not have "
        "been uploaded, or the specified entity tag may not match the part's entity tag."
    )


class InvalidPartNumber(S3Error):
    status = 416
    message = "The requested partnumber is not satisfiable"


class InvalidPartOrder(S3Error):
    status = 400
    message = (
        "The list of parts was not in ascending order. "
        "The parts list must be specified in order by part number."
    )


class InvalidRange(S3Error):
    status = 416
    message = "The requested range is not satisfiable"


class InvalidRequest(S3Error):
    status = 400
    message = "Invalid Request"


class InvalidStorageClass(S3Error):
    status = 400
    message = "The storage class you specified is not valid"


class InvalidToken(S3Error):
    status = 400
    message = "The provided token is malformed or otherwise invalid."


class InvalidURI(S3Error):
    status = 400
    message = "Couldn't parse the specified URI."
    include_resource = True


class KeyTooLongError(S3Error):
    status = 400
    message = "Your key is too long"


class MalformedXML(S3Error):
    status = 400
    message = (
        "The XML you provided was not well-formed or did not validate against our published schema"
    )


class MalformedTrailerError(S3Error):
    status = 400
    message = (
        "The request contained trailing data that was not well-formed or did not conform "
        "to our published schema."
    )


class MaxMessageLengthExceeded(S3Error):
    status = 400
    message = "Your request was too big."


class MetadataTooLarge(S3Error):
    status = 400
    message = "Your metadata headers exceed the maximum allowed metadata size."


class MethodNotAllowed(S3Error):
    status = 405
    message = "The specified method is not allowed against this resource."
    include_resource = True


class MissingContentLength(S3Error):
    status = 411
    message = "You must provide the Content-Length HTTP header."


class MissingRequestBodyError(S3Error):
    status = 400
    message = "Request Body is empty"


class MissingSecurityHeader(S3Error):
    status = 400
    message = "Your request is missing a required header."


class NoSuchBucket(S3Error):
    status = 404
    message = "The specified bucket does not exist"


class NoSuchBucketPolicy(S3Error):
    status = 404
    message = "The bucket policy does not exist"


class NoSuchCORSConfiguration(S3Error):
    status = 404
    message = "The CORS configuration does not exist"


class NoSuchKey(S3Error):
    status = 404
    message = "The specified key does not exist."


class NoSuchLifecycleConfiguration(S3Error):
    status = 404
    message = "The lifecycle configuration does not exist"


class NoSuchTagSet(S3Error):
    status = 404
    message = "The TagSet does not exist"


class NoSuchUpload(S3Error):
    status = 404
    message = (
        "The specified upload does not exist. The upload ID may be invalid, "
        "or the upload may have been aborted or completed."
    )


class NoSuchVersion(S3Error):
    status = 404
    message = "The specified version does not exist."


class NotImplemented(S3Error):  # the S3 code; shadows the builtin inside this module only
    status = 501
    message = "A header you provided implies functionality that is not implemented"
    include_resource = True


class NotModified(S3Error):
    """A conditional GET/HEAD that matched: 304 with headers only, never a body."""

    status = 304
    message = "Not Modified"
    has_body = False


class PreconditionFailed(S3Error):
    status = 412
    message = "At least one of the pre-conditions you specified did not hold"


class RequestTimeTooSkewed(S3Error):
    status = 403
    message = "The difference between the request time and the current time is too large."


class RequestTimeout(S3Error):
    status = 400
    message = (
        "Your socket connection to the server was not read from or written to "
        "within the timeout period. Idle connections will be closed."
    )


class ServiceUnavailable(S3Error):
    status = 503
    message = "Please reduce your request rate."


class SignatureDoesNotMatch(S3Error):
    status = 403
    message = (
        "The request signature we calculated does not match the signature you provided. "
        "Check your key and signing method."
    )


class SlowDown(S3Error):
    status = 503
    message = "Please reduce your request rate."


class TooManyBuckets(S3Error):
    status = 400
    message = "You have attempted to create more buckets than allowed"


class XAmzContentSHA256Mismatch(S3Error):
    status = 400
    message = "The provided 'x-amz-content-sha256' header does not match what was computed."


#: Every S3 code we know -> its class (the one table of codes and statuses).
ERRORS: Mapping[str, type[S3Error]] = _REGISTRY


def from_code(
    code: str,
    message: str | None = None,
    status: int | None = None,
    *,
    details: Mapping[str, str | int] | None = None,
) -> S3Error:
    """The S3 error for ``code``, as raised by a module that knows only the code.

    A known code gets its class, and its class's status wins over ``status``
    (the table is the single authority). An unknown code gets a plain
    :class:`S3Error` carrying that code and ``status`` (500 if not given).
    An empty or missing ``message`` means the class's default message.

    >>> from_code("NoSuchKey", "", 404).status
    404
    >>> err = from_code("WeirdCode", "odd", 418)
    >>> (err.code, err.status, err.message)
    ('WeirdCode', 418, 'odd')
    """
    cls = _REGISTRY.get(code)
    if cls is not None:
        return cls(message or None, details=details)
    error = S3Error(message or None, details=details)
    error.code = code
    error.status = status if status is not None else 500
    error.include_resource = True
    return error


# ---------------------------------------------------------------------------
# Rendering.

# XML 1.0 cannot carry these at all, not even as character references.
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&apos;",
    # A raw CR would be read back as LF (XML end-of-line normalisation).
    "\r": "&#13;",
}
_TO_ESCAPE = re.compile("[&<>\"'\r]")


def xml_escape(text: str, *, invalid: str = "replace") -> str:
    """Escape ``text`` for element content.

    Characters XML 1.0 forbids (most C0 controls, lone surrogates, U+FFFE/F)
    become U+FFFD with ``invalid="replace"`` (the result is always
    well-formed), or numeric character references with ``invalid="reference"``
    (what S3 does in listings; strict parsers refuse them, which is why
    clients ask for ``encoding-type=url``).

    >>> xml_escape('a<b & "c"\\r')
    'a&lt;b &amp; &quot;c&quot;&#13;'
    >>> xml_escape("x\\x01y"), xml_escape("x\\x01y", invalid="reference")
    ('x\ufffdy', 'x&#x1;y')
    """
    text = _TO_ESCAPE.sub(lambda m: _ESCAPES[m.group()], text)
    if invalid == "replace":
        return _NOT_XML_CHAR.sub("\ufffd", text)
    if invalid == "reference":
        return _NOT_XML_CHAR.sub(lambda m: f"&#x{ord(m.group()):X};", text)
    raise ValueError(f"invalid must be 'replace' or 'reference', got {invalid!r}")


def render(error: S3Error, request_id: str, resource: str, *, host_id: str | None = None) -> bytes:
    """The error body exactly as S3 writes it (empty for body-less errors).

    ``resource`` is the request path (``/bucket/key``), written as
    ``Resource`` only for errors that name no more specific element;
    ``host_id`` defaults to ``request_id``. Send the same two ids in the
    ``x-amz-request-id`` and ``x-amz-id-2`` headers too: botocore reads them
    from there, not from the body. The body is well-formed XML for any
    input: forbidden characters are replaced, never passed through.

    >>> body = render(NoSuchKey(key="a&b"), "R1", "/bkt/a&b").decode()
    >>> print(body.replace("><", ">\\n<"))
    <?xml version="1.0" encoding="UTF-8"?>
    <Error>
    <Code>NoSuchKey</Code>
    <Message>The specified key does not exist.</Message>
    <Key>a&amp;b</Key>
    <RequestId>R1</RequestId>
    <HostId>R1</HostId>
    </Error>
    """
    if not error.has_body:
        return b""
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>',
        f"<Code>{xml_escape(error.code)}</Code>",
        f"<Message>{xml_escape(error.message)}</Message>",
    ]
    for name, value in error.details.items():
        parts.append(f"<{name}>{xml_escape(value)}</{name}>")
    if error.include_resource and resource and "Resource" not in error.details:
        parts.append(f"<Resource>{xml_escape(resource)}</Resource>")
    parts.append(f"<RequestId>{xml_escape(request_id)}</RequestId>")
    host = host_id if host_id is not None else request_id
    parts.append(f"<HostId>{xml_escape(host)}</HostId></Error>")
    return "".join(parts).encode("utf-8")
