"""The wire format shared by every Nimbus service.

A message is a ZeroMQ multipart message: frame 0 is a UTF-8 JSON object (the
*header*), later frames are binary payload (share bytes). Every header has a
``message-type``; requests carry a ``message-id`` that the reply echoes, so
many requests may be in flight on one DEALER connection. A reply's type is
``<request type>-reply`` and carries ``result`` (``"success"`` or an error
code from :class:`ErrorCode`) and ``error-message``.

Invariants:
- Headers are plain JSON (numbers, strings, booleans, lists, objects): never
  Python reprs. Field names are kebab-case.
- Decoding never trusts the peer: a non-JSON header, a header that is not an
  object, a missing or mistyped field, too many frames or an oversized frame
  raise :class:`ProtocolError` with the code the error reply will carry.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

Header = dict[str, Any]

SUCCESS: Final = "success"

#: Default limits; services may lower or raise them through their config.
MAX_HEADER_BYTES: Final = 64 * 1024
MAX_PAYLOAD_FRAMES: Final = 1
MAX_FRAME_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True)
class FrameLimits:
    """What one incoming message may hold."""

    max_header_bytes: int = MAX_HEADER_BYTES
    max_payload_frames: int = MAX_PAYLOAD_FRAMES
    max_frame_bytes: int = MAX_FRAME_BYTES


class ErrorCode(enum.StrEnum):
    """Every error code a reply's ``result`` may carry."""

    INVALID_MESSAGE = "invalid-message"
    UNKNOWN_MESSAGE_TYPE = "unknown-message-type"
    MISSING_FIELD = "missing-field"
    BAD_FIELD = "bad-field"
    TOO_MANY_FRAMES = "too-many-frames"
    FRAME_TOO_LARGE = "frame-too-large"
    SIZE_MISMATCH = "size-mismatch"
    MD5_MISMATCH = "md5-mismatch"
    ADLER32_MISMATCH = "adler32-mismatch"
    OUT_OF_SEQUENCE = "out-of-sequence"
    UNKNOWN_ARCHIVE = "unknown-archive"
    ALREADY_EXISTS = "already-exists"
    NOT_FOUND = "not-found"
    UNKNOWN_RETRIEVE = "unknown-retrieve"
    DAMAGED = "damaged"
    UNAVAILABLE = "unavailable"
    SHUTTING_DOWN = "shutting-down"
    INTERNAL_ERROR = "internal-error"


class ProtocolError(Exception):
    """A request that cannot be served; becomes an error reply, never a crash."""

    def __init__(self, code: ErrorCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


@dataclass(frozen=True, slots=True)
class Message:
    """A decoded message: its JSON header and its binary payload frames."""

    header: Header
    payloads: tuple[bytes, ...] = ()

    @property
    def message_type(self) -> str:
        return str(self.header["message-type"])


def new_message_id() -> str:
    return uuid.uuid4().hex


def encode_header(header: Mapping[str, Any]) -> bytes:
    return json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode(header: Mapping[str, Any], payloads: Sequence[bytes] = ()) -> list[bytes]:
    """Frames for one message: the JSON header, then the payloads."""
    return [encode_header(header), *payloads]


DEFAULT_LIMITS: Final = FrameLimits()


def decode(frames: Sequence[bytes], limits: FrameLimits = DEFAULT_LIMITS) -> Message:
    """Decode and bound-check the frames of one message (identity frames removed)."""
    max_header_bytes = limits.max_header_bytes
    max_payload_frames = limits.max_payload_frames
    max_frame_bytes = limits.max_frame_bytes
    if not frames:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "empty message")
    raw = frames[0]
    if len(raw) > max_header_bytes:
        raise ProtocolError(
            ErrorCode.FRAME_TOO_LARGE,
            f"header is {len(raw)} bytes, limit {max_header_bytes}",
        )
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"header is not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "header is not a JSON object")
    if not isinstance(header.get("message-type"), str):
        raise ProtocolError(ErrorCode.MISSING_FIELD, "header has no string 'message-type'")
    payloads = tuple(bytes(f) for f in frames[1:])
    if len(payloads) > max_payload_frames:
        raise ProtocolError(
            ErrorCode.TOO_MANY_FRAMES,
            f"{len(payloads)} payload frames, at most {max_payload_frames} allowed",
        )
    for i, frame in enumerate(payloads, start=1):
        if len(frame) > max_frame_bytes:
            raise ProtocolError(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame {i} is {len(frame)} bytes, limit {max_frame_bytes}",
            )
    return Message(header=header, payloads=payloads)


def reply_header(
    request: Mapping[str, Any],
    result: str = SUCCESS,
    error_message: str = "",
    /,
    **fields: object,
) -> Header:
    """The header of the reply to ``request``; ``fields`` are kebab-cased."""
    header: Header = {
        "message-type": f"{request.get('message-type', 'unknown')}-reply",
        "message-id": request.get("message-id"),
        "result": str(result),
        "error-message": error_message,
    }
    for name, value in fields.items():
        header[name.replace("_", "-")] = value
    return header


def error_reply(request: Mapping[str, Any], error: ProtocolError) -> Header:
    return reply_header(request, error.code, error.message, **error.extra)


# --- typed field access ----------------------------------------------------

T = TypeVar("T")


def field(header: Mapping[str, Any], name: str, kind: type[T]) -> T:
    """A required header field of the given JSON type (bool is never an int)."""
    if name not in header or header[name] is None:
        raise ProtocolError(ErrorCode.MISSING_FIELD, f"missing field '{name}'", field=name)
    value = header[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ProtocolError(
            ErrorCode.BAD_FIELD,
            f"field '{name}' must be {kind.__name__}, got {type(value).__name__}",
            field=name,
        )
    return value


def optional_field(header: Mapping[str, Any], name: str, kind: type[T], default: T) -> T:
    if header.get(name) is None:
        return default
    return field(header, name, kind)


def non_negative(header: Mapping[str, Any], name: str) -> int:
    value = field(header, name, int)
    if value < 0:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"field '{name}' must be >= 0", field=name)
    return value


def digest_field(header: Mapping[str, Any], name: str, size: int = 16) -> bytes:
    """A base64-encoded raw digest (md5 by default), decoded and length-checked."""
    text = field(header, name, str)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError(
            ErrorCode.BAD_FIELD, f"field '{name}' is not base64", field=name
        ) from exc
    if len(raw) != size:
        raise ProtocolError(
            ErrorCode.BAD_FIELD,
            f"field '{name}' must decode to {size} bytes, got {len(raw)}",
            field=name,
        )
    return raw


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def zmq_bind_address(bind: str) -> str:
    """``tcp://host:0`` → ZeroMQ's ``tcp://host:*`` (any free port); others unchanged."""
    return bind[:-2] + ":*" if bind.endswith(":0") else bind
