"""The JSON envelope of SPEC §3, sans I/O.

Incoming text is decoded into an :class:`Envelope` (or a :class:`WsError`
with code 1001 naming what is wrong). Outgoing frames are built as
:class:`EncodedFrame` values: the JSON is serialised **once** and the
per-session sequence number ``s`` is spliced in at the end, so one broadcast
is encoded once for all of its recipients even though every recipient's copy
carries its own ``s`` (Phoenix's "fastlane" idea, adapted to numbered streams).
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from wscore.errors import WsError
from wscore.protocol.codes import PROTOCOL_VERSION, REPLY_EVENT, ErrorCode, SysEvent

__all__ = [
    "EncodedFrame",
    "Envelope",
    "decode_envelope",
    "encode_envelope",
    "encode_error",
    "encode_reply",
]

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode

#: Largest magnitude a double holds: a JSON number beyond it cannot be sent back
#: as valid JSON by any peer that parses numbers as doubles (SPEC §3).
_DOUBLE_MAX = 1.7976931348623157e308
#: A ``\uD800``–``\uDFFF`` escape. Lone surrogates can only enter through such an
#: escape (a WebSocket text frame is validated UTF-8, which cannot carry one),
#: so text without it needs no surrogate check at all.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


class _NotSendable(ValueError):
    """A JSON value that could not be sent back as valid JSON (non-finite, overflow)."""


def _reject_constant(name: str) -> Any:
    raise _NotSendable(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _NotSendable(f"number {text[:20]} overflows a double")
    return value


def _double_int(text: str) -> int:
    value = int(text)
    # Cheap length test first: only integers of 309+ digits can overflow a double.
    if len(text) > 308 and abs(value) > _DOUBLE_MAX:
        raise _NotSendable(f"integer of {len(text)} digits overflows a double")
    return value


_decoder = json.JSONDecoder(parse_float=_finite_float, parse_int=_double_int,
                            parse_constant=_reject_constant)
_loads = _decoder.decode


def _has_lone_surrogate(text: str, decoded: Any) -> bool:
    """True if ``decoded`` (``text`` as parsed) holds a lone surrogate in any string."""
    if _SURROGATE_ESCAPE.search(text) is None:
        return False
    # Rare path: an escaped surrogate is there. Pairs are fine (json joins them
    # into one code point); a lone one is left as a code point UTF-8 cannot encode.
    try:
        _dumps(decoded).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


CorrelationId = str | int | float | None


@attrs.frozen
class Envelope:
    """One decoded protocol frame. Unknown fields are dropped (SPEC §3)."""

    event: str
    payload: Any = None
    correlation_id: CorrelationId = None
    timestamp_ms: int | float | None = None
    seq: int | None = None
    version: str = PROTOCOL_VERSION

    @property
    def is_system(self) -> bool:
        return self.event.startswith("sys.")


def decode_envelope(text: str | bytes) -> Envelope:
    """Parse and validate one client frame.

    Raises :class:`WsError` with ``INVALID_PROTOCOL`` (1001) when the text is
    not JSON, not an object, or its ``v``/``e``/``s`` fields are missing or
    invalid; ``details`` name the offending field. The correlation id is
    recovered whenever possible so the error can carry it.

    JSON that could not be sent back as valid JSON is invalid too (SPEC §3):
    ``NaN``/``Infinity``, numbers that overflow a double, and lone UTF-16
    surrogates in any string (keys included). So every value a handler sees
    can be echoed, broadcast and encoded without failing.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise WsError(ErrorCode.INVALID_PROTOCOL, "frame is not valid UTF-8") from None
    try:
        obj = _loads(text)
    except _NotSendable as exc:
        raise _bad(_lenient_c(text), "", f"frame is not sendable JSON: {exc}") from None
    except (ValueError, RecursionError):
        raise WsError(ErrorCode.INVALID_PROTOCOL, "frame is not valid JSON") from None
    if _has_lone_surrogate(text, obj):
        c = obj.get("c") if isinstance(obj, dict) else None
        raise _bad(c if _sendable_c(c) else None, "",
                   "frame is not sendable JSON: a string holds a lone UTF-16 surrogate")
    if not isinstance(obj, dict):
        raise WsError(ErrorCode.INVALID_PROTOCOL, "frame is not a JSON object")
    c = obj.get("c")
    if not (c is None or (isinstance(c, (str, int, float)) and not isinstance(c, bool))):
        raise WsError(ErrorCode.INVALID_PROTOCOL, "'c' must be a string or a number", {"field": "c"})
    v = obj.get("v")
    if not isinstance(v, str):
        raise _bad(c, "v", "missing or non-string protocol version 'v'")
    if v.split(".", 1)[0] != PROTOCOL_VERSION.split(".", 1)[0]:
        raise _bad(c, "v", f"unsupported protocol version {v!r}; this server speaks {PROTOCOL_VERSION}")
    e = obj.get("e")
    if not isinstance(e, str) or not e:
        raise _bad(c, "e", "missing or empty event name 'e'")
    s = obj.get("s")
    if s is not None and (not isinstance(s, int) or isinstance(s, bool) or s < 1):
        raise _bad(c, "s", "'s' must be a positive integer")
    t = obj.get("t")
    if t is not None and (not isinstance(t, (int, float)) or isinstance(t, bool)):
        t = None  # a malformed timestamp is informational only; ignore it
    return Envelope(event=e, payload=obj.get("p"), correlation_id=c, timestamp_ms=t, seq=s, version=v)


def _lenient_c(text: str) -> CorrelationId:
    """The frame's ``c`` if it is itself sendable (rare error path: parse leniently)."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return None
    c = obj.get("c") if isinstance(obj, dict) else None
    return c if _sendable_c(c) else None


def _sendable_c(c: Any) -> bool:
    if isinstance(c, bool):
        return False
    if isinstance(c, str):
        return c.isascii() or not _has_lone_surrogate(json.dumps(c), c)
    if isinstance(c, float):
        return c not in (float("inf"), float("-inf")) and c == c
    return isinstance(c, int) and abs(c) <= _DOUBLE_MAX


def _bad(c: CorrelationId, field: str, message: str) -> WsError:
    err = WsError(ErrorCode.INVALID_PROTOCOL, message, {"field": field} if field else None)
    err.correlation_id = c  # type: ignore[attr-defined]
    return err


@attrs.frozen
class EncodedFrame:
    """A server frame serialised once, missing only its closing brace.

    ``body`` is ``{"v":"1.0","e":…,"p":…,"t":…`` (plus ``"c"`` when set).
    :meth:`numbered` appends ``,"s":N}``; :meth:`unnumbered` appends ``}``.
    """

    body: str

    def numbered(self, seq: int) -> str:
        return f'{self.body},"s":{seq}}}'

    def unnumbered(self) -> str:
        return self.body + "}"


def encode_envelope(
    event: str, payload: Any, *, now_ms: int, correlation_id: CorrelationId = None
) -> EncodedFrame:
    """Serialise a server frame (``v`` and ``t`` always present, SPEC §3).

    Raises ``TypeError``/``ValueError`` if ``payload`` is not JSON-serialisable
    or could not travel as valid JSON (NaN, Infinity, a lone surrogate in any
    string: ``UnicodeEncodeError``, a ``ValueError``). So a frame that exists
    can always be written: nothing unsendable is ever numbered or buffered.
    """
    body = f'{{"v":"{PROTOCOL_VERSION}","e":{_dumps(event)},"p":{_dumps(payload)},"t":{now_ms}'
    if correlation_id is not None:
        body += f',"c":{_dumps(correlation_id)}'
    if not body.isascii():
        # Only non-ASCII text can hold a surrogate; ASCII (most frames) skips the check.
        body.encode("utf-8")
    return EncodedFrame(body)


def encode_reply(payload: Any, correlation_id: CorrelationId, *, now_ms: int) -> EncodedFrame:
    """The ``ack`` answering a request (SPEC §3)."""
    return encode_envelope(REPLY_EVENT, payload, now_ms=now_ms, correlation_id=correlation_id)


def encode_error(error: WsError, *, now_ms: int, correlation_id: CorrelationId = None) -> EncodedFrame:
    """The ``sys.error`` frame reporting ``error``."""
    return encode_envelope(
        SysEvent.ERROR.value, error.to_payload(), now_ms=now_ms, correlation_id=correlation_id
    )
