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
_loads = json.loads

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
    """
    try:
        obj = _loads(text)
    except (ValueError, RecursionError):
        raise WsError(ErrorCode.INVALID_PROTOCOL, "frame is not valid JSON") from None
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


def _bad(c: CorrelationId, field: str, message: str) -> WsError:
    err = WsError(ErrorCode.INVALID_PROTOCOL, message, {"field": field})
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

    Raises ``TypeError``/``ValueError`` if ``payload`` is not JSON-serialisable.
    """
    body = f'{{"v":"{PROTOCOL_VERSION}","e":{_dumps(event)},"p":{_dumps(payload)},"t":{now_ms}'
    if correlation_id is not None:
        body += f',"c":{_dumps(correlation_id)}'
    return EncodedFrame(body)


def encode_reply(payload: Any, correlation_id: CorrelationId, *, now_ms: int) -> EncodedFrame:
    """The ``ack`` answering a request (SPEC §3)."""
    return encode_envelope(REPLY_EVENT, payload, now_ms=now_ms, correlation_id=correlation_id)


def encode_error(error: WsError, *, now_ms: int, correlation_id: CorrelationId = None) -> EncodedFrame:
    """The ``sys.error`` frame reporting ``error``."""
    return encode_envelope(
        SysEvent.ERROR.value, error.to_payload(), now_ms=now_ms, correlation_id=correlation_id
    )
