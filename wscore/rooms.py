"""``server.rooms``: the rooms API of SPEC §2 (join, leave, members, broadcast, behaviours)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import pykka

from wscore.actors.messages import JoinRoom, LeaveRoom, RoomBroadcast, RoomMembers
from wscore.actors.router import FindRoom
from wscore.behaviours import RoomHandle, RoomMessage, WsRoomBehaviour
from wscore.context import WsSession, check_room_id
from wscore.errors import UsageError, WsError
from wscore.protocol.codes import RESERVED_ROOM_PREFIX, ErrorCode
from wscore.protocol.envelope import encode_envelope

if TYPE_CHECKING:
    from wscore.server import WsServer

__all__ = ["Rooms"]

_ASK_TIMEOUT = 10.0

log = logging.getLogger("wscore.rooms")


class Rooms:
    """``server.rooms``: join, leave, list and broadcast to rooms (SPEC §2)."""

    def __init__(self, server: WsServer) -> None:
        self._server = server
        self._behaviours: list[tuple[str, Callable[[str], Any]]] = []

    def join(self, room_id: str, session: WsSession | str) -> None:
        """Add ``session`` (a :class:`WsSession` or a session id) to ``room_id``.

        Raises :class:`WsError` 1010 when the session is already in
        ``max_rooms_per_session`` rooms (raised in a handler, it answers the
        request that asked). A join by session id is checked by the session
        itself, which leaves a room over its cap.

        **A room with a behaviour** (:meth:`set_behaviour`) may refuse the
        join (SPEC §8): a :class:`WsSession`'s join then waits until the
        room's actor has run ``on_join`` (a ``WsError`` it raises is raised
        here, so a handler that does not catch it answers its request with
        that error, and the session is not a member; with Redis nothing of
        the join is stored). Waiting is safe from a handler (in the session's
        actor, or a :class:`WsActorController`'s) and from any greenlet; not
        from a behaviour hook (a room would wait on a room). A room that does
        not answer within 10 s, or whose actor stopped first (the server is
        stopping), raises ``WsError`` 1011; the join may still apply later. A
        room without a behaviour is joined without waiting.

        A join **by session id** never waits, so it may be made from anywhere,
        a hook included: a refusal is logged (INFO) and the session is told it
        is not a member.
        """
        room_id = _room_id(room_id)
        if isinstance(session, WsSession):
            cap = self._server.config.max_rooms_per_session
            if room_id not in session._rooms and len(session._rooms) >= cap:
                raise WsError(ErrorCode.RATE_LIMIT_EXCEEDED,
                              f"a session may be in at most {cap} rooms",
                              {"limit": "max_rooms_per_session", "max": cap})
            cursor = self._server._room_cursor(room_id)
            if not self._has_behaviour(room_id):
                # Visible at once to the handler that asked; the room confirms it again.
                session._rooms.add(room_id)
                self._server._router.tell(JoinRoom(room_id, session.id, cursor))
                return
            answer: gevent.event.AsyncResult[None] = gevent.event.AsyncResult()
            self._server._router.tell(JoinRoom(room_id, session.id, cursor, answer=answer))
            try:
                answer.get(timeout=_ASK_TIMEOUT)  # on_join's WsError (a refusal) propagates
            except (gevent.Timeout, pykka.ActorDeadError) as exc:
                # Not listed: a JoinedRoom arriving later (the join applied after all) adds it.
                raise WsError(ErrorCode.INTERNAL_ERROR,
                              "the room did not answer the join") from exc
            session._rooms.add(room_id)  # admitted; its JoinedRoom follows
        else:
            self._server._router.tell(JoinRoom(room_id, str(session),
                                               self._server._room_cursor(room_id)))

    def leave(self, room_id: str, session: WsSession | str) -> None:
        room_id = _room_id(room_id)
        if isinstance(session, WsSession):
            session._rooms.discard(room_id)
            session_id = session.id
        else:
            session_id = str(session)
        self._server._router.tell(LeaveRoom(room_id, session_id))

    def members(self, room_id: str) -> list[str]:
        """Session ids in the room (server-side data: never send them to other clients).

        With Redis: the members on every node (read from Redis; blocks for a round trip).
        """
        cluster = self._server._cluster
        if cluster is not None:
            try:
                found: list[str] = cluster.log.room_members(_room_id(room_id))
                return found
            except Exception as exc:
                raise WsError(ErrorCode.INTERNAL_ERROR, "room membership is unavailable") from exc
        ref = self._server._router.ask(FindRoom(_room_id(room_id)), timeout=_ASK_TIMEOUT)
        if ref is None:
            return []
        try:
            members: list[str] = ref.ask(RoomMembers(), timeout=_ASK_TIMEOUT)
        except pykka.ActorDeadError:
            return []
        return members

    def broadcast(self, room_id: str, event: str, payload: Any = None) -> None:
        """Send ``event`` to every member of the room (encoded once for all).

        The room's behaviour's ``on_message`` sees it first (with Redis: on this node).
        """
        frame = encode_envelope(event, payload, now_ms=_now_ms())
        self._server._router.tell(RoomBroadcast(_room_id(room_id), frame, event, payload))

    def set_behaviour(self, factory: Callable[[str], Any], *, prefix: str = "") -> None:
        """Rooms whose id starts with ``prefix`` get ``factory(room_id)`` as their behaviour.

        Applies to rooms created afterwards; the longest matching prefix wins.
        With Redis every node makes its own instance for its room actor (state
        is per node), and ``on_message`` runs once per broadcast, on the node
        that broadcasts, before the message is published (docs/scaling.md).
        """
        self._behaviours.append((prefix, factory))
        self._behaviours.sort(key=lambda item: len(item[0]), reverse=True)

    def _factory_for(self, room_id: str) -> Callable[[str], Any] | None:
        """The factory of the longest prefix ``room_id`` starts with; none for the server's
        own rooms (``sys.*``), whatever the prefix."""
        if room_id.startswith(RESERVED_ROOM_PREFIX):
            return None
        for prefix, factory in self._behaviours:
            if room_id.startswith(prefix):
                return factory
        return None

    def _has_behaviour(self, room_id: str) -> bool:
        """Whether rooms named ``room_id`` get a behaviour (without making one)."""
        return self._factory_for(room_id) is not None

    def _behaviour_for(self, room_id: str) -> Any:
        """The behaviour for a new room's actor (None: none), made by the router.

        A factory that raises is the app's bug: it is logged and the room gets
        :class:`_FailedBehaviour`, which drops every broadcast (fail closed: a
        filter that could not be made must not let everything through). The
        router and every other room carry on.
        """
        factory = self._factory_for(room_id)
        if factory is None:
            return None
        try:
            return factory(room_id)
        except Exception:
            log.exception("room behaviour factory for %r raised: the room drops its broadcasts",
                          room_id)
            return _FailedBehaviour()


class _FailedBehaviour(WsRoomBehaviour):
    """Stands in for a behaviour whose factory raised: joins and leaves stand, messages are dropped."""

    def on_message(self, room: RoomHandle, message: RoomMessage) -> RoomMessage | None:
        return None


def _room_id(room_id: Any) -> str:
    if not isinstance(room_id, str) or not room_id:
        raise UsageError(f"room id must be a non-empty string, got {room_id!r}")
    check_room_id(room_id)
    return room_id




def _now_ms() -> int:
    return int(time.time() * 1000)
