"""Numbers of the wire contract (SPEC §3): error codes, close codes, reserved events.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_MESSAGE_TOO_BIG",
    "CLOSE_NORMAL",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_REPLACED",
    "CLOSE_SERVICE_RESTART",
    "PROTOCOL_VERSION",
    "ErrorCode",
    "SysEvent",
    "close_code_for",
]

PROTOCOL_VERSION = "1.0"

# RFC 6455 §7.4.1 codes wscore uses on its own account.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # server shutdown (SPEC §3)
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_MESSAGE_TOO_BIG = 1009  # frame over max_message_bytes (SPEC §3)
CLOSE_SERVICE_RESTART = 1012  # with Redis: shutdown keeps the sessions, reconnect now (SPEC §6)
# Application range (RFC 6455 §7.4.2: 4000-4999 are private use).
CLOSE_REPLACED = 4000  # the session was resumed on another connection (SPEC §3)


class ErrorCode(enum.IntEnum):
    """Error codes of SPEC §3. ``wire_name`` is the ``name`` field on the wire.

    The camelCase spellings of the contract (``ErrorCode.validationFailed``)
    are aliases of the Python spellings (``ErrorCode.VALIDATION_FAILED``).
    """

    INVALID_PROTOCOL = 1001
    AUTH_REQUIRED = 1003
    AUTH_FAILED = 1004
    TOKEN_EXPIRED = 1005
    SESSION_NOT_FOUND = 1006
    HANDLER_NOT_FOUND = 1008
    VALIDATION_FAILED = 1009
    RATE_LIMIT_EXCEEDED = 1010
    INTERNAL_ERROR = 1011

    # Aliases: the contract's own names.
    invalidProtocol = 1001
    authRequired = 1003
    authFailed = 1004
    tokenExpired = 1005
    sessionNotFound = 1006
    handlerNotFound = 1008
    validationFailed = 1009
    rateLimitExceeded = 1010
    internalError = 1011

    @property
    def wire_name(self) -> str:
        """The camelCase name the contract puts in ``sys.error`` frames."""
        return _WIRE_NAMES[self]

    @property
    def close_code(self) -> int:
        """WebSocket close code for this error: ``4000 + (code - 1000)`` (SPEC §3)."""
        return close_code_for(self)

    @property
    def is_connection_level(self) -> bool:
        """Errors about the connection rather than the session: never numbered, never replayed."""
        return self in _CONNECTION_LEVEL


_WIRE_NAMES = {
    ErrorCode.INVALID_PROTOCOL: "invalidProtocol",
    ErrorCode.AUTH_REQUIRED: "authRequired",
    ErrorCode.AUTH_FAILED: "authFailed",
    ErrorCode.TOKEN_EXPIRED: "tokenExpired",
    ErrorCode.SESSION_NOT_FOUND: "sessionNotFound",
    ErrorCode.HANDLER_NOT_FOUND: "handlerNotFound",
    ErrorCode.VALIDATION_FAILED: "validationFailed",
    ErrorCode.RATE_LIMIT_EXCEEDED: "rateLimitExceeded",
    ErrorCode.INTERNAL_ERROR: "internalError",
}

_CONNECTION_LEVEL = frozenset(
    {
        ErrorCode.AUTH_REQUIRED,
        ErrorCode.AUTH_FAILED,
        ErrorCode.TOKEN_EXPIRED,
        ErrorCode.SESSION_NOT_FOUND,
    }
)


def close_code_for(code: ErrorCode | int) -> int:
    """Map an error code to its close code; the RFC-reserved 1xxx range is never reused."""
    return 4000 + (int(code) - 1000)


class SysEvent(str, enum.Enum):
    """Reserved events (the ``sys.*`` namespace is the protocol's, SPEC §3)."""

    CONNECTED = "sys.connected"
    ERROR = "sys.error"
    PING = "sys.ping"
    PONG = "sys.pong"
    ACK = "sys.ack"
    AUTH = "sys.auth"

    def __str__(self) -> str:
        return self.value


#: The event name of a reply (SPEC §3: ``{"e":"ack","c":…}``). Not in ``sys.*``.
REPLY_EVENT = "ack"
__all__ += ["REPLY_EVENT"]

#: Room ids in ``sys.*`` are the server's, as events are: ``server.rooms`` refuses them.
RESERVED_ROOM_PREFIX = "sys."
#: With Redis every session is a member of this room from its creation on, and
#: ``server.broadcast`` is a message to it: stored once, in one order, gap-filled and
#: replayed on a resume like any room message (docs/scaling.md "Broadcasts").
EVERYONE_ROOM = "sys.everyone"
__all__ += ["EVERYONE_ROOM", "RESERVED_ROOM_PREFIX"]
