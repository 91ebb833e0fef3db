"""RouterActor: the directory of sessions and rooms. Exactly one per server.

Job: know which sessions and rooms exist and route to them. It creates
session and room actors, forwards every room message (so each room sees its
messages in one order), and forwards server pushes to sessions.

This directory is the seam for a multi-node deployment: a broker-backed
router (e.g. Redis pub/sub) can replace local forwarding for rooms and
users while keeping the same messages.

Rules it keeps:

* one message at a time;
* **it never waits on anyone**: it only tells (stopping a room included:
  ``stop(block=False)``). Others may *ask* it (:class:`OpenSession`,
  :class:`ClaimSession`, :class:`FindRoom`, :class:`Stats`): since it never
  asks back, no cycle can form. Creating a session or a room actor does not
  wait on it either (the actor starts in its own greenlet).
* a room is stopped only when it reported empty *and* no message was routed
  to it after that report (compare counters), so a join racing the room's
  end is never lost.

Who may wait on whom (the whole graph; arrows are asks)::

    connection reader greenlet ──▶ router, session
    server API / HTTP greenlets ─▶ router, room
    session, room, router, connection actors ─▶ nobody
    handler actor ──────────────▶ room (members()), router (FindRoom)
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

import attrs

from actors._runtime import GeventActor, offer_quietly, tell_quietly
from actors.messages import (
    ClaimResult,
    ClaimSession,
    Deliver,
    EndSession,
    JoinRoom,
    LeaveRoom,
    LeftRoom,
    OpenedSession,
    OpenSession,
    RoomBroadcast,
    RoomEmpty,
    SendToSessions,
    SessionEnded,
    Stats,
    StopAll,
)
from actors.room import RoomActor
from actors.session import SessionActor, SessionEnv

__all__ = ["FindRoom", "RouterActor"]

log = logging.getLogger("wscore.actors.router")


@attrs.frozen
class FindRoom:
    """Ask: the room's actor ref, or None if the room has no members."""

    room_id: str


@attrs.define
class _SessionEntry:
    ref: Any
    offer: Any  # the session actor's offer (idle fast path for Deliver)
    user_id: str | None


@attrs.define
class _RoomEntry:
    ref: Any
    routed: int = 0


class RouterActor(GeventActor):
    def __init__(
        self,
        *,
        make_env: Callable[[Any], SessionEnv],
        behaviour_for: Callable[[str], Any] = lambda room_id: None,
    ) -> None:
        super().__init__()
        self._make_env = make_env
        self._behaviour_for = behaviour_for
        self.env: SessionEnv | None = None
        self.sessions: dict[str, _SessionEntry] = {}
        self.users: dict[str, set[str]] = {}
        self.rooms: dict[str, _RoomEntry] = {}
        self.sessions_opened = 0

    def on_start(self) -> None:
        self.env = self._make_env(self.actor_ref)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RoomBroadcast):
            entry = self.rooms.get(message.room_id)
            if entry is not None:
                entry.routed += 1
                tell_quietly(entry.ref, message)
        elif isinstance(message, SendToSessions):
            self._send_to_sessions(message)
        elif isinstance(message, JoinRoom):
            self._join(message)
        elif isinstance(message, LeaveRoom):
            entry = self.rooms.get(message.room_id)
            if entry is not None:
                entry.routed += 1
                tell_quietly(entry.ref, message)
            else:
                session = self.sessions.get(message.session_id)
                if session is not None:
                    tell_quietly(session.ref, LeftRoom(message.room_id))
        elif isinstance(message, OpenSession):
            return self._open(message)
        elif isinstance(message, ClaimSession):
            return self._claim(message)
        elif isinstance(message, SessionEnded):
            self._ended(message)
        elif isinstance(message, RoomEmpty):
            entry = self.rooms.get(message.room_id)
            if entry is not None and entry.routed == message.handled:
                del self.rooms[message.room_id]
                entry.ref.stop(block=False)
        elif isinstance(message, FindRoom):
            entry = self.rooms.get(message.room_id)
            return entry.ref if entry is not None else None
        elif isinstance(message, Stats):
            return {
                "sessions": len(self.sessions),
                "users": len(self.users),
                "rooms": len(self.rooms),
                "sessions_opened": self.sessions_opened,
            }
        elif isinstance(message, StopAll):
            self._stop_all(message)
        return None

    def _open(self, msg: OpenSession) -> OpenedSession:
        assert self.env is not None
        # ≥128 random bits (SPEC §3): 24 bytes = 192 bits, URL-safe.
        session_id = secrets.token_urlsafe(24)
        actor = SessionActor.start_actor(session_id, msg.user_id, self.env)
        ref = actor.actor_ref
        self.sessions[session_id] = _SessionEntry(ref, actor.offer, msg.user_id)
        if msg.user_id is not None:
            self.users.setdefault(msg.user_id, set()).add(session_id)
        self.sessions_opened += 1
        return OpenedSession(session_id, ref)

    def _claim(self, msg: ClaimSession) -> ClaimResult:
        entry = self.sessions.get(msg.session_id)
        if entry is None or not entry.ref.is_alive():
            return ClaimResult(None, "not_found")
        if entry.user_id != msg.user_id:
            return ClaimResult(None, "wrong_user")
        return ClaimResult(entry.ref)

    def _ended(self, msg: SessionEnded) -> None:
        if self.sessions.pop(msg.session_id, None) is None:
            return
        if msg.user_id is not None:
            ids = self.users.get(msg.user_id)
            if ids is not None:
                ids.discard(msg.session_id)
                if not ids:
                    del self.users[msg.user_id]

    def _join(self, msg: JoinRoom) -> None:
        session = self.sessions.get(msg.session_id)
        if session is None:
            return  # the session ended meanwhile
        msg = JoinRoom(msg.room_id, msg.session_id, session.ref, session.offer)
        entry = self.rooms.get(msg.room_id)
        if entry is None:
            ref = RoomActor.start(msg.room_id, self.actor_ref, self._behaviour_for(msg.room_id))
            entry = self.rooms[msg.room_id] = _RoomEntry(ref)
        entry.routed += 1
        tell_quietly(entry.ref, msg)

    def _send_to_sessions(self, msg: SendToSessions) -> None:
        deliver = Deliver(msg.frame)
        if msg.session_id is not None:
            entry = self.sessions.get(msg.session_id)
            if entry is not None:
                offer_quietly(entry.offer, deliver)
        elif msg.user_id is not None:
            for session_id in list(self.users.get(msg.user_id, ())):
                offer_quietly(self.sessions[session_id].offer, deliver)
        else:
            for entry in list(self.sessions.values()):
                offer_quietly(entry.offer, deliver)

    def _stop_all(self, msg: StopAll) -> None:
        for entry in list(self.sessions.values()):
            tell_quietly(entry.ref, EndSession(msg.close_code, msg.reason))
        for room in list(self.rooms.values()):
            room.ref.stop(block=False)  # each room ends after the messages it already holds
        self.rooms.clear()
        self.stop()
