"""The JSON envelope: decoding rules of SPEC §3 and encode-once framing."""

from __future__ import annotations

import json

import pytest

from wscore.errors import WsError
from wscore.protocol.codes import ErrorCode, close_code_for
from wscore.protocol.envelope import Envelope, decode_envelope, encode_envelope, encode_error


def test_decode_full_envelope_ignoring_unknown_fields() -> None:
    env = decode_envelope('{"v":"1.0","e":"chat","p":{"a":1},"c":"x1","t":5,"s":3,"zz":1}')
    assert env == Envelope(event="chat", payload={"a": 1}, correlation_id="x1", timestamp_ms=5, seq=3)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ('{"v":"1.0"}', "e"),
        ('{"v":"1.0","e":""}', "e"),
        ('{"v":"1.0","e":5}', "e"),
        ('{"e":"x"}', "v"),
        ('{"v":"2.0","e":"x"}', "v"),
        ('{"v":"1.0","e":"x","s":0}', "s"),
        ('{"v":"1.0","e":"x","s":true}', "s"),
        ('{"v":"1.0","e":"x","c":[1]}', "c"),
    ],
)
def test_invalid_fields_are_named(text: str, field: str) -> None:
    with pytest.raises(WsError) as info:
        decode_envelope(text)
    assert info.value.code is ErrorCode.INVALID_PROTOCOL
    assert info.value.details["field"] == field


@pytest.mark.parametrize("text", ["", "nope", "[1,2]", "3", "null", '"s"', "{" * 100000])
def test_not_json_objects_are_invalid_protocol(text: str) -> None:
    with pytest.raises(WsError) as info:
        decode_envelope(text)
    assert info.value.code == 1001


def test_minor_version_is_accepted() -> None:
    assert decode_envelope('{"v":"1.7","e":"x"}').version == "1.7"


def test_error_keeps_the_correlation_id_when_it_can() -> None:
    with pytest.raises(WsError) as info:
        decode_envelope('{"v":"9.0","e":"x","c":"abc"}')
    assert info.value.correlation_id == "abc"  # type: ignore[attr-defined]


def test_encoded_once_then_numbered_per_recipient() -> None:
    frame = encode_envelope("chat.new", {"text": "hé"}, now_ms=42)
    a, b = json.loads(frame.numbered(1)), json.loads(frame.numbered(7))
    assert a == {"v": "1.0", "e": "chat.new", "p": {"text": "hé"}, "t": 42, "s": 1}
    assert b["s"] == 7 and "s" not in json.loads(frame.unnumbered())


def test_error_frame_shape() -> None:
    err = WsError(ErrorCode.VALIDATION_FAILED, "bad", {"fields": ["text"]})
    frame = json.loads(encode_error(err, now_ms=1, correlation_id=9).unnumbered())
    assert frame["e"] == "sys.error" and frame["c"] == 9
    assert frame["p"] == {"code": 1009, "name": "validationFailed", "message": "bad",
                          "details": {"fields": ["text"]}}


def test_error_codes_and_close_codes() -> None:
    assert ErrorCode.validationFailed is ErrorCode.VALIDATION_FAILED
    assert {c.wire_name: int(c) for c in ErrorCode} == {
        "invalidProtocol": 1001, "authRequired": 1003, "authFailed": 1004, "tokenExpired": 1005,
        "sessionNotFound": 1006, "handlerNotFound": 1008, "validationFailed": 1009,
        "rateLimitExceeded": 1010, "internalError": 1011,
    }
    assert close_code_for(ErrorCode.AUTH_REQUIRED) == 4003
    assert ErrorCode.TOKEN_EXPIRED.close_code == 4005
    assert all(4000 <= c.close_code < 5000 for c in ErrorCode)


def test_wserror_roundtrips_through_its_payload() -> None:
    err = WsError.from_payload(WsError(ErrorCode.AUTH_FAILED, "no", {"a": 1}).to_payload())
    assert (err.code, err.message, err.details) == (ErrorCode.AUTH_FAILED, "no", {"a": 1})
