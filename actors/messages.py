"""Every message wscore's actors exchange: immutable attrs values.

Grouped by the actor that receives them. Payloads that reference other
actors carry their :class:`pykka.ActorRef` (or a connection's outbox), never
the actor object itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from wscore.errors import WsError
from wscore.protocol.envelope import EncodedFrame, Envelope

if TYPE_CHECKING:
    from actors.session import FrameSink

__all__ = [
    "Attach",
    "AttachResult",
    "ClientFrame",
    "CloseConnection",
    "Deliver",
    "Detach",
    "EndSession",
    "Flush",
    "HandlerFinished",
    "JoinRoom",
    "JoinedRoom",
    "LeaveRoom",
    "LeftRoom",
    "OpenSession",
    "OpenedSession",
    "ClaimSession",
    "ClaimResult",
    "RoomBroadcast",
    "RoomEmpty",
    "RoomMembers",
    "RunHandler",
    "SendToSessions",
    "SessionEnded",
    "SessionOutbound",
    "Stats",
    "StopAll",
    "TimerFired",
    "Unparseable",
]


# -- to a connection actor ---------------------------------------------------------
@attrs.frozen
class Flush:
    """Write everything waiting in the connection's outbox (sent when it stops being empty)."""


@attrs.frozen
class CloseConnection:
    """Close the WebSocket with ``code`` after the frames already queued."""

    code: int
    reason: str = ""


# -- to a session actor ---------------------------------------------------------------
@attrs.frozen
class Attach:
    """Bind a connection. ``resume_from`` is the client's ``last_seq`` (None: a new session).

    Asked (not told) by the connection's reader greenlet; answered with :class:`AttachResult`.
    """

    conn_id: int
    #: Where the session writes this connection's frames (the server's: its outbox).
    outbox: FrameSink
    resume_from: int | None
    user_id: str | None
    #: Epoch seconds when the connection's token expires (None: never).
    expires_at: float | None = None
    #: The connection's :class:`wscore.ConnectionInfo` (for ``sys.auth`` re-checks).
    conn_info: Any = None
    #: The client's own instance tag and attempt counter (``?client=&attempt=``),
    #: used to refuse a stale, abandoned attempt that arrives after a newer one.
    client_tag: str | None = None
    attempt: int | None = None


@attrs.frozen
class AttachResult:
    ok: bool
    reason: str = ""
    #: True when the attempt was refused as older than one already attached.
    stale: bool = False


@attrs.frozen
class Detach:
    """The connection ``conn_id`` is gone (a stale id is ignored)."""

    conn_id: int


@attrs.frozen
class ClientFrame:
    """A decoded client frame read on connection ``conn_id``.

    ``release`` (if set) is called exactly once when the session has handled
    or dropped the frame: it hands the reader its credit back (backpressure).
    """

    conn_id: int
    envelope: Envelope
    release: Callable[[], Any] | None = None


@attrs.frozen
class Unparseable:
    """A client frame that failed decoding: answer with ``error`` (numbered, SPEC §3)."""

    conn_id: int
    error: WsError
    correlation_id: str | int | float | None = None
    release: Callable[[], Any] | None = None


@attrs.frozen
class Deliver:
    """Push a frame onto the session's numbered stream (events, broadcasts)."""

    frame: EncodedFrame


@attrs.frozen
class SessionOutbound:
    """A frame produced by a handler running outside the session actor (an actor handler)."""

    frame: EncodedFrame


@attrs.frozen
class HandlerFinished:
    """An actor handler finished the client frame it was given."""

    token: int
    correlation_id: str | int | float | None = None
    result: Any = None
    error: WsError | None = None
    replied: bool = False


@attrs.frozen
class JoinedRoom:
    room_id: str


@attrs.frozen
class LeftRoom:
    room_id: str


@attrs.frozen
class TimerFired:
    """A timer the session's protocol armed fired (``kind``: TTL or token expiry)."""

    kind: str
    generation: int


@attrs.frozen
class EndSession:
    """End the session now: close its connection with ``close_code`` (None: no close frame).

    Server shutdown sends it to every session; the reader sends it with
    ``conn_id`` when the client closed with 1000 (SPEC §7) — ignored then if
    that connection is no longer the session's (a takeover came first).
    """

    close_code: int | None
    reason: str = ""
    conn_id: int | None = None


# -- to a room actor (always forwarded by the router) --------------------------------------
@attrs.frozen
class JoinRoom:
    room_id: str
    session_id: str
    #: Filled in by the router from its directory: the session's ref and its
    #: ``offer`` (see :meth:`actors.GeventActor.offer`).
    session_ref: Any = None
    session_offer: Any = None


@attrs.frozen
class LeaveRoom:
    room_id: str
    session_id: str


@attrs.frozen
class RoomBroadcast:
    """Deliver ``frame`` (encoded once) to every member but ``exclude``."""

    room_id: str
    frame: EncodedFrame
    event: str
    payload: Any
    exclude: str | None = None
    sender: str | None = None


@attrs.frozen
class RoomMembers:
    """Ask: the session ids in the room."""


# -- to the router -------------------------------------------------------------------------
@attrs.frozen
class OpenSession:
    """Ask: create a session for ``user_id``; answered with :class:`OpenedSession`."""

    user_id: str | None


@attrs.frozen
class OpenedSession:
    session_id: str
    session_ref: Any


@attrs.frozen
class ClaimSession:
    """Ask: find session ``session_id`` for a resume by ``user_id``; answered with ClaimResult."""

    session_id: str
    user_id: str | None


@attrs.frozen
class ClaimResult:
    session_ref: Any | None
    #: "" when found; "not_found" or "wrong_user" otherwise.
    refusal: str = ""


@attrs.frozen
class SessionEnded:
    session_id: str
    user_id: str | None


@attrs.frozen
class RoomEmpty:
    """The room processed ``handled`` routed messages and has no member left."""

    room_id: str
    handled: int


@attrs.frozen
class SendToSessions:
    """Deliver ``frame`` to a session, a user's sessions, or everyone (all fields None)."""

    frame: EncodedFrame
    session_id: str | None = None
    user_id: str | None = None


@attrs.frozen
class Stats:
    """Ask any actor for its cheap counters (a dict)."""


@attrs.frozen
class StopAll:
    """Router: end every session with ``close_code``, stop every room, then stop."""

    close_code: int
    reason: str = ""


# -- to a handler actor -------------------------------------------------------------------
@attrs.frozen
class RunHandler:
    """Run ``fn(ctx)`` for a session and report back with :class:`HandlerFinished`."""

    token: int
    fn: Callable[[Any], Any]
    ctx: Any
    session_ref: Any
