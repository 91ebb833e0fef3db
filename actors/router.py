"""RouterActor: the directory of sessions and rooms. Exactly one per server.

Job: know which sessions and rooms exist and route to them. It creates
session and room actors, forwards every room message (so each room sees its
messages in one order), and forwards server pushes to sessions.

With Redis (``links``, a :class:`actors.store.ClusterLinks` the server hands
over) this is the node's directory only: room broadcasts are published to
Redis (the room order is assigned there) and come back from the node's
subscriber as :class:`RoomPublished`, for the local room actor; a room gets
its subscription with its first local member; pushes to a session or a user arrive as
:class:`InboxArrived` (announced by the session's Redis inbox) for the local
session; ``server.broadcast`` is a message to the everyone room
(``EVERYONE_ROOM``, which every session joins as it is created: the server
tells the router a :class:`JoinRoom` for it), so it comes back as any room
message does; a session claimed by
another node is dropped here on :class:`Handover` (close 4000), never ended. A
broadcast to a room with a behaviour goes to the room's actor instead, which
runs ``on_message`` and publishes (:mod:`actors.room`); with no local member
the router starts the room's actor for it (unsubscribed), and stops it on
its :class:`RoomEmpty` as any other.

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

Who may wait on whom: the graph in :mod:`actors` (docs/architecture.md).
The router is asked, and forwards a join's ``answer`` (a session waiting in
``server.rooms.join``) to the room's actor, which resolves it; the router
itself never waits on it (it answers at once only when the session is no
longer in its directory, or the room's actor is dead).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import attrs
import pykka

from wscore.actors._runtime import GeventActor, offer_quietly, tell_quietly
from wscore.actors.messages import (
    AdoptSession,
    ClaimResult,
    ClaimSession,
    Deliver,
    DropAll,
    DropSession,
    EndSession,
    Handover,
    InboxArrived,
    InboxCheck,
    JoinRoom,
    LeaveRoom,
    LeftRoom,
    OpenedSession,
    OpenSession,
    RoomBroadcast,
    RoomEmpty,
    RoomGapped,
    RoomPublished,
    SendToSessions,
    SessionEnded,
    Stats,
    StopAll,
)
from wscore.actors.room import RoomActor, publish_room_message
from wscore.actors.session import SessionActor, SessionEnv
from wscore.actors.store import ClusterLinks
from wscore.protocol.codes import CLOSE_REPLACED, EVERYONE_ROOM

__all__ = ["FindRoom", "RouterActor"]


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
    #: The room's actor runs a behaviour (with Redis: broadcasts go through it).
    behaviour: bool = False
    #: With Redis: this node receives the room's messages (it has, or had, a local member).
    subscribed: bool = False
    routed: int = 0


class RouterActor(GeventActor):
    def __init__(
        self,
        *,
        make_env: Callable[[Any], SessionEnv],
        behaviour_for: Callable[[str], Any] = lambda room_id: None,
        links: ClusterLinks | None = None,
    ) -> None:
        super().__init__()
        self.links = links
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
        if isinstance(message, (RoomPublished, RoomGapped)):
            entry = self.rooms.get(message.room_id)
            if entry is not None:
                entry.routed += 1
                tell_quietly(entry.ref, message)
        elif isinstance(message, RoomBroadcast):
            self._room_broadcast(message)
        elif isinstance(message, InboxArrived):
            self._inbox_arrived(message)
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
        elif isinstance(message, AdoptSession):
            return self._adopt(message)
        elif isinstance(message, Handover):
            self._handover(message.session_id)
        elif isinstance(message, DropAll):
            for session_id, session in list(self.sessions.items()):
                self._forget(session_id, session.user_id)
                tell_quietly(session.ref, DropSession(message.close_code, message.reason))
        elif isinstance(message, SessionEnded):
            self._ended(message)
        elif isinstance(message, RoomEmpty):
            entry = self.rooms.get(message.room_id)
            if entry is not None and entry.routed == message.handled:
                del self.rooms[message.room_id]
                entry.ref.stop(block=False)
                if self.links is not None and entry.subscribed:
                    self.links.unsubscribe(message.room_id)
        elif isinstance(message, FindRoom):
            entry = self.rooms.get(message.room_id)
            return entry.ref if entry is not None else None
        elif isinstance(message, Stats):
            return {
                "sessions": len(self.sessions),
                "users": len(self.users),
                # the app's rooms: the everyone room (with Redis) is the server's
                "rooms": len(self.rooms) - (EVERYONE_ROOM in self.rooms),
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

    def _adopt(self, msg: AdoptSession) -> OpenedSession:
        """Start a session hydrated from Redis (this node just claimed it)."""
        assert self.env is not None
        old = self.sessions.get(msg.session_id)
        if old is not None:
            # A second resume raced this one on this node: the newer claim wins.
            self._handover(msg.session_id)
        actor = SessionActor.start_actor(msg.session_id, msg.user_id, self.env, msg.hydration)
        ref = actor.actor_ref
        self.sessions[msg.session_id] = _SessionEntry(ref, actor.offer, msg.user_id)
        if msg.user_id is not None:
            self.users.setdefault(msg.user_id, set()).add(msg.session_id)
        for room_id, cursor in msg.hydration.rooms.items():
            self._join(JoinRoom(room_id, msg.session_id, cursor))
        return OpenedSession(msg.session_id, ref)

    def _handover(self, session_id: str) -> None:
        """Another node owns the session now: drop it here (close 4000), do not end it."""
        entry = self.sessions.get(session_id)
        if entry is None:
            return
        self._forget(session_id, entry.user_id)
        tell_quietly(entry.ref, DropSession(CLOSE_REPLACED, "session resumed on another node"))

    def _room_broadcast(self, msg: RoomBroadcast) -> None:
        entry = self.rooms.get(msg.room_id)
        links = self.links
        if links is not None and (entry is None or not entry.behaviour):
            behaviour = self._behaviour_for(msg.room_id) if entry is None else None
            if behaviour is None:
                # No behaviour: published from here; every node's room actor delivers it.
                publish_room_message(links.publish, msg.room_id, msg.exclude, msg.frame.body,
                                     msg.done)
                return
            # No local member, but the room has a behaviour: its on_message runs on
            # the sender's node (this one), in the room's actor, so start one for the
            # broadcast. It reports RoomEmpty once it handled it and is stopped then.
            entry = self._start_room(msg.room_id, behaviour)
        if entry is None:
            if msg.done is not None:
                msg.done.set(None)  # embedded, no member: nobody to deliver to
            return
        entry.routed += 1
        try:
            entry.ref.tell(msg)
        except pykka.ActorDeadError as exc:
            if msg.done is not None:
                msg.done.set_exception(exc)  # never leave the sender waiting

    def _claim(self, msg: ClaimSession) -> ClaimResult:
        entry = self.sessions.get(msg.session_id)
        if entry is None or not entry.ref.is_alive():
            return ClaimResult(None, "not_found")
        if entry.user_id != msg.user_id:
            return ClaimResult(None, "wrong_user")
        return ClaimResult(entry.ref)

    def _ended(self, msg: SessionEnded) -> None:
        entry = self.sessions.get(msg.session_id)
        if entry is None or (msg.ref is not None and entry.ref is not msg.ref):
            return  # forgotten already (handed over), or a newer actor holds the id now
        self._forget(msg.session_id, msg.user_id)

    def _forget(self, session_id: str, user_id: str | None) -> None:
        del self.sessions[session_id]
        if user_id is not None:
            ids = self.users.get(user_id)
            if ids is not None:
                ids.discard(session_id)
                if not ids:
                    del self.users[user_id]

    def _join(self, msg: JoinRoom) -> None:
        session = self.sessions.get(msg.session_id)
        if session is None:
            # The session ended (or was handed over) meanwhile: there is nothing to join
            # and nobody its request's reply could reach, so no refusal either.
            if msg.answer is not None:
                msg.answer.set(None)
            return
        cursor = msg.cursor
        msg = attrs.evolve(msg, session_ref=session.ref, session_offer=session.offer)
        entry = self.rooms.get(msg.room_id)
        if entry is None:
            entry = self._start_room(msg.room_id, self._behaviour_for(msg.room_id))
        if self.links is not None and not entry.subscribed:
            # The first local member (the actor may exist already, started for a broadcast).
            # A join its behaviour refuses leaves the room empty: RoomEmpty unsubscribes.
            self.links.subscribe(msg.room_id, cursor)
            entry.subscribed = True
        entry.routed += 1
        try:
            entry.ref.tell(msg)
        except pykka.ActorDeadError as exc:
            if msg.answer is not None:
                msg.answer.set_exception(exc)  # never leave the joining handler waiting

    def _start_room(self, room_id: str, behaviour: Any) -> _RoomEntry:
        publish = self.links.publish if self.links is not None else None
        ref = RoomActor.start(room_id, self.actor_ref, behaviour, publish=publish)
        entry = self.rooms[room_id] = _RoomEntry(ref, behaviour=behaviour is not None)
        return entry

    def _inbox_arrived(self, msg: InboxArrived) -> None:
        entry = self.sessions.get(msg.session_id)
        if entry is None:
            return  # not held here (any more): it waits in the inbox for its owner
        if msg.frame is None:
            tell_quietly(entry.ref, InboxCheck(lost=msg.lost))
        else:
            offer_quietly(entry.offer, Deliver(msg.frame, inbox=msg.pos))

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
            if msg.keep:
                tell_quietly(entry.ref, DropSession(msg.close_code, msg.reason, release=True))
            else:
                tell_quietly(entry.ref, EndSession(msg.close_code, msg.reason))
        for room in list(self.rooms.values()):
            room.ref.stop(block=False)  # each room ends after the messages it already holds
        self.rooms.clear()
        self.stop()
