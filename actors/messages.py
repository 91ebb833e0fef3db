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
    from wscore.actors.session import FrameSink

__all__ = [
    "AdoptSession",
    "Attach",
    "AttachResult",
    "ClientFrame",
    "CloseConnection",
    "Deliver",
    "Detach",
    "DropAll",
    "DropSession",
    "EndSession",
    "Flush",
    "HandlerFinished",
    "Handover",
    "InboxArrived",
    "InboxCheck",
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
    "RoomGapped",
    "RoomPublished",
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
    """Push a frame onto the session's numbered stream (events, broadcasts).

    With Redis, a room message carries its ``room`` and room seq (the session
    keeps one cursor per room: a seq it already has is dropped, a gap is filled
    from the room's stream), and ``exclude``: the sender, who only moves its cursor.
    A push from the session's Redis inbox carries its ``inbox`` position (the
    session keeps an inbox cursor the same way: a position it has is dropped, a
    gap is read from the inbox).
    """

    frame: EncodedFrame
    room: str | None = None
    room_seq: int = 0
    exclude: str | None = None
    inbox: int = 0


@attrs.frozen
class InboxCheck:
    """With Redis: the session's inbox may hold pushes its log lacks (an announcement was
    lost); read it. ``lost``: a push was refused by the full inbox (the session must end)."""

    lost: bool = False


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
    #: With Redis: the room seq at the join (the session's cursor for the room).
    cursor: int | None = None
    #: With Redis: the highest room seq this node's room actor had delivered when the
    #: join reached it (a joiner whose cursor is behind fills the difference at once).
    room_last: int = 0


@attrs.frozen
class DropSession:
    """Let the session go from this node WITHOUT ending it (Redis keeps it, SPEC §6).

    Its connection closes with ``close_code`` after the frames already stored;
    ``release`` gives up ownership in Redis (shutdown); a hand-over or a fence
    does not (the new owner holds it already).
    """

    close_code: int
    reason: str = ""
    release: bool = False


@attrs.frozen
class RoomGapped:
    """The node lost room messages nobody can fill: its members' resumability ends (1006)."""

    room_id: str
    #: The last room seq lost (None: unknown, the room's numbering was reset). A member
    #: whose cursor is at or past it lost nothing.
    last_missing: int | None = None


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
    """Add ``session_id`` to the room (the router fills in the session's ref first).

    ``answer`` (a ``gevent.event.AsyncResult`` or None) is how a join *waits*:
    ``server.rooms.join`` of a :class:`wscore.WsSession` to a room with a
    behaviour sends one and blocks on it. It is resolved with None once the
    session is a member (or the join could not apply: the session is no longer
    in the router's directory), and failed with the behaviour's ``WsError``
    when ``on_join`` refused it (the session is not a member then), or with
    ``pykka.ActorDeadError`` when the room's actor stopped or failed first.
    Nobody else waits on a join: without an answer it is a plain tell.
    """

    room_id: str
    session_id: str
    #: With Redis: the room's seq when the join was asked (see :class:`JoinedRoom`).
    cursor: int | None = None
    #: Filled in by the router from its directory: the session's ref and its
    #: ``offer`` (see :meth:`actors.GeventActor.offer`).
    session_ref: Any = None
    session_offer: Any = None
    answer: Any = None


@attrs.frozen
class RoomPublished:
    """With Redis: room message ``seq`` (``wire`` as published) arrived from the node's subscriber."""

    room_id: str
    seq: int
    wire: str


@attrs.frozen
class LeaveRoom:
    room_id: str
    session_id: str
    #: Set by a session leaving this node only (not the room): the member is removed
    #: only if it is still that actor (the session may be back here as a new actor).
    ref: Any = None


@attrs.frozen
class RoomBroadcast:
    """Deliver ``frame`` (encoded once) to every member but ``exclude``.

    With Redis the room's actor on the *sending* node runs the behaviour's
    ``on_message`` on it and publishes the result (see :mod:`actors.room`);
    ``done`` (a ``gevent.event.AsyncResult`` or None) is resolved once it is
    published (or dropped by the behaviour), failed if the publish failed: a
    session gates its later socket writes on it as on a store write.
    """

    room_id: str
    frame: EncodedFrame
    event: str
    payload: Any
    exclude: str | None = None
    sender: str | None = None
    done: Any = None


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
class AdoptSession:
    """Ask: start a session hydrated from Redis (a resume of a session claimed on this node)."""

    session_id: str
    user_id: str | None
    hydration: Any  # actors.store.Hydration


@attrs.frozen
class DropAll:
    """Redis lost every session (flush, restart without persistence): drop them all here."""

    close_code: int
    reason: str = ""


@attrs.frozen
class InboxArrived:
    """With Redis: push ``pos`` of ``session_id``'s inbox was announced to this node
    (``frame`` None and ``lost``: a push was refused by the full inbox)."""

    session_id: str
    pos: int
    frame: EncodedFrame | None
    lost: bool = False


@attrs.frozen
class Handover:
    """Another node claimed ``session_id``: drop the local actor (close 4000), do not end it."""

    session_id: str


@attrs.frozen
class SessionEnded:
    session_id: str
    user_id: str | None
    #: The actor that ended (the directory forgets the session only if it is still that one).
    ref: Any = None


@attrs.frozen
class RoomEmpty:
    """The room processed ``handled`` routed messages and has no member left."""

    room_id: str
    handled: int


@attrs.frozen
class SendToSessions:
    """Deliver ``frame`` to a session, a user's sessions, or everyone (all fields None).

    Without Redis only: with it, pushes to a session or a user go through the
    sessions' inboxes (:class:`InboxArrived`) and broadcasts through the
    everyone room (:class:`RoomPublished`).
    """

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
    #: With Redis: keep the sessions (drop them from this node, release ownership).
    keep: bool = False


# -- to a handler actor -------------------------------------------------------------------
@attrs.frozen
class RunHandler:
    """Run ``fn(ctx)`` for a session and report back with :class:`HandlerFinished`."""

    token: int
    fn: Callable[[Any], Any]
    ctx: Any
    session_ref: Any
