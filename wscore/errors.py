"""wscore's one exception tree.

Split by *who is at fault* and *why*::

    WsException                      base of everything wscore raises on purpose
    ├── WsError                      a contract error with an ErrorCode (SPEC §3 table):
    │   │                            raised by handlers to refuse a request, delivered to
    │   │                            clients as ``sys.error``, raised by ``WsClient.request``
    │   └── SessionLost              code 1006: the client's session is gone; raised by the
    │                                requests it left pending, passed to ``on_session_lost``
    ├── PeerProtocolError            the *peer* broke RFC 6455 framing; ``close_code`` says
    │   │                            how the connection must be closed (RFC 6455 §7.4.1)
    │   └── MessageTooBig            a message over ``max_message_bytes`` (close 1009)
    ├── ConnectionClosed             the connection ended; ``code``/``reason`` from the close
    │                                frame, ``by_peer`` tells who started it (None: network)
    └── UsageError                   *we* (the calling program) misused the API
        ├── ConfigError              an invalid configuration value (also a ValueError)
        └── SendBufferFull           the client's bounded offline buffer is full

No name shadows a builtin (``ConnectionError`` etc. stay Python's).
"""

from __future__ import annotations

from typing import Any

from wscore.protocol.codes import ErrorCode

__all__ = [
    "ConfigError",
    "ConnectionClosed",
    "MessageTooBig",
    "PeerProtocolError",
    "SendBufferFull",
    "SessionLost",
    "UsageError",
    "WsError",
    "WsException",
]


class WsException(Exception):
    """Base class of every exception wscore raises deliberately."""


class WsError(WsException):
    """A contract error: an :class:`ErrorCode`, a human message and structured details.

    Raise it from a handler to answer the request with ``sys.error``; the
    connection stays open unless the code's row in SPEC §3 says otherwise.
    """

    def __init__(
        self, code: ErrorCode | int, message: str = "", details: dict[str, Any] | None = None
    ) -> None:
        self.code = ErrorCode(code)
        self.message = message or self.code.wire_name
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(f"{self.code.wire_name} ({int(self.code)}): {self.message}")

    def to_payload(self) -> dict[str, Any]:
        """The ``p`` of the ``sys.error`` frame that reports this error."""
        payload: dict[str, Any] = {
            "code": int(self.code),
            "name": self.code.wire_name,
            "message": self.message,
        }
        if self.details:
            payload["details"] = self.details
        return payload

    @classmethod
    def from_payload(cls, payload: Any) -> WsError:
        """Rebuild the error a ``sys.error`` frame carries (client side)."""
        if not isinstance(payload, dict):
            return cls(ErrorCode.INTERNAL_ERROR, "malformed sys.error payload")
        try:
            code = ErrorCode(int(payload.get("code", ErrorCode.INTERNAL_ERROR)))
        except (TypeError, ValueError):
            code = ErrorCode.INTERNAL_ERROR
        details = payload.get("details")
        return cls(code, str(payload.get("message", "")), details if isinstance(details, dict) else None)


class PeerProtocolError(WsException):
    """The peer sent bytes that break RFC 6455; close the connection with ``close_code``."""

    def __init__(self, reason: str, *, close_code: int = 1002) -> None:
        self.close_code = close_code
        self.reason = reason
        super().__init__(f"{reason} (close {close_code})")


class MessageTooBig(PeerProtocolError):
    """A message longer than the configured limit (RFC 6455 §7.4.1: close code 1009)."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"message of {size} bytes exceeds the {limit}-byte limit", close_code=1009)


class ConnectionClosed(WsException):
    """The WebSocket connection is over.

    ``by_peer`` is True when the peer sent the close frame, False when we did,
    None when the network broke it (no close frame at all).
    """

    def __init__(self, code: int | None = None, reason: str = "", *, by_peer: bool | None = None) -> None:
        self.code = code
        self.reason = reason
        self.by_peer = by_peer
        super().__init__(f"connection closed (code={code}, reason={reason!r}, by_peer={by_peer})")


class UsageError(WsException):
    """The calling program misused wscore's API."""


class ConfigError(UsageError, ValueError):
    """An invalid configuration value; the message names the field."""


class SendBufferFull(UsageError):
    """The client's bounded buffer of unacknowledged frames is full; nothing was queued."""


class SessionLost(WsError):
    """The server answered a resume with 1006: the session and its undelivered frames are gone.

    A :class:`WsError` whose ``code`` is always ``SESSION_NOT_FOUND`` (1006), so code
    that catches ``WsError`` and checks ``.code == 1006`` keeps working. The client
    raises it from every :meth:`~wscore.client.WsClient.request` pending when its
    session was lost and passes it to the ``on_session_lost`` hooks.
    """

    def __init__(self, message: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(ErrorCode.SESSION_NOT_FOUND, message, details)
