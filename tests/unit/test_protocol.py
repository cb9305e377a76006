"""The wire format: what decodes, what is refused, and how replies look."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common import messages, protocol
from services.common.messages import FileInfo, SegmentRef
from services.common.protocol import ErrorCode, FrameLimits, ProtocolError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=10,
)


@given(st.dictionaries(st.text(), json_values), st.lists(st.binary(max_size=64), max_size=1))
def test_encode_decode_round_trip(fields: dict[str, object], payloads: list[bytes]) -> None:
    header = {**fields, "message-type": "x"}
    message = protocol.decode(protocol.encode(header, payloads))
    assert message.header == header
    assert list(message.payloads) == payloads


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([], ErrorCode.INVALID_MESSAGE),
        ([b"\xff"], ErrorCode.INVALID_MESSAGE),
        ([b"not json"], ErrorCode.INVALID_MESSAGE),
        ([b"[]"], ErrorCode.INVALID_MESSAGE),
        ([b"{}"], ErrorCode.MISSING_FIELD),
        ([b'{"message-type": 3}'], ErrorCode.MISSING_FIELD),
        ([b'{"message-type": "a"}', b"1", b"2"], ErrorCode.TOO_MANY_FRAMES),
        ([b'{"message-type": "a"}', b"12345"], ErrorCode.FRAME_TOO_LARGE),
        ([b'{"message-type": "' + b"a" * 100 + b'"}'], ErrorCode.FRAME_TOO_LARGE),
    ],
)
def test_decode_refuses(frames: list[bytes], code: ErrorCode) -> None:
    limits = FrameLimits(max_header_bytes=64, max_payload_frames=1, max_frame_bytes=4)
    with pytest.raises(ProtocolError) as caught:
        protocol.decode(frames, limits)
    assert caught.value.code == code


def test_fields_are_typed_and_named_in_errors() -> None:
    header = {"a": 1, "b": True, "c": "x", "d": -1, "e": "AAAA"}
    assert protocol.field(header, "a", int) == 1
    assert protocol.field(header, "a", float) == 1.0
    for name, kind, code in [
        ("b", int, ErrorCode.BAD_FIELD),
        ("c", int, ErrorCode.BAD_FIELD),
        ("z", str, ErrorCode.MISSING_FIELD),
    ]:
        with pytest.raises(ProtocolError) as caught:
            protocol.field(header, name, kind)
        assert caught.value.code == code and f"'{name}'" in caught.value.message
    with pytest.raises(ProtocolError):
        protocol.non_negative(header, "d")
    with pytest.raises(ProtocolError, match="16 bytes"):
        protocol.digest_field(header, "e")


def test_reply_header_echoes_the_request() -> None:
    request = {"message-type": "archive-key-start", "message-id": "m1"}
    reply = protocol.reply_header(request, ErrorCode.MD5_MISMATCH, "bad", sequence_num=3)
    assert reply == {
        "message-type": "archive-key-start-reply",
        "message-id": "m1",
        "result": "md5-mismatch",
        "error-message": "bad",
        "sequence-num": 3,
    }


def test_archive_header_is_plain_json_with_kebab_case_fields() -> None:
    share = b"share bytes"
    header = messages.archive(
        "archive-key-entire",
        SegmentRef(1, "k", 2, 3),
        share,
        0,
        file=FileInfo.of(share, {"content-type": "text/plain"}),
        timestamp_s=1700000000.5,
    )
    decoded = json.loads(protocol.encode_header(header))
    assert decoded["timestamp"] == 1700000000.5
    assert decoded["segment-size"] == len(share)
    assert isinstance(decoded["segment-adler32"], int)
    assert len(protocol.digest_field(decoded, "segment-md5-digest")) == 16
    assert all(name == name.lower() and "_" not in name for name in decoded)
    with pytest.raises(ValueError, match="file summary"):
        messages.archive("archive-key-final", SegmentRef(1, "k", 2, 3), share, 1)
