"""Stateful handler classes that run as actors (SPEC §2).

* :class:`WsController` — groups handlers; ``register(server)`` wires them.
* :class:`WsActorController` — a controller whose instance runs as its own
  actor: its handlers run one at a time (across all sessions), so it may keep
  mutable state without locks.
* :class:`WsRoomBehaviour` — hooks on join (which may refuse it), leave and
  message, run by the room's own actor, one at a time. One instance per room
  (with Redis: per room and node, see :class:`WsRoomBehaviour`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from wscore.server import WsServer

__all__ = ["RoomHandle", "RoomMessage", "WsActorController", "WsController", "WsRoomBehaviour"]


class WsController:
    """A group of handlers. Override :meth:`register` and call ``server.on(...)`` in it."""

    def register(self, server: WsServer) -> None:
        raise NotImplementedError


class WsActorController(WsController):
    """A controller run as its own actor.

    Every handler registered from :meth:`register` that is a method of this
    controller runs inside the controller's actor: one at a time, in arrival
    order. Handlers must not block for long — every session calling this
    controller waits its turn — and must not call anything that waits on a
    session (nothing in wscore's API does).
    """


@attrs.frozen
class RoomMessage:
    """A broadcast as a room behaviour sees it. ``sender`` is the sending session's id or None."""

    event: str
    payload: Any
    sender: str | None = None


class RoomHandle:
    """What a behaviour hook may do with its room (valid during the hook only).

    With Redis (SPEC §6) ``members`` and ``size`` are **this node's** members
    (the room actor's own, answered without a Redis round trip; the room's
    members on every node are ``server.rooms.members``, which a hook must not
    call for its own room), and ``broadcast`` reaches the members on every node.
    """

    __slots__ = ("_actor", "room_id")

    def __init__(self, room_id: str, actor: Any) -> None:
        self.room_id = room_id
        self._actor = actor

    @property
    def members(self) -> list[str]:
        """Session ids in the room on this node (server-side only; never send them to clients).

        Embedded, that is every member; with Redis, the members this node holds.
        """
        return list(self._actor.members)

    @property
    def size(self) -> int:
        """``len(members)``: this node's member count (every member, embedded)."""
        return len(self._actor.members)

    def broadcast(self, event: str, payload: Any = None) -> None:
        """Send an event to every member, bypassing ``on_message``.

        With Redis it is published like any room message: members on every
        node get it, in the room's one order (after what this room published
        before it).
        """
        self._actor.deliver_from_behaviour(event, payload)


class WsRoomBehaviour:
    """Hooks run by a room's actor. Subclass and override what you need.

    Register with ``server.rooms.set_behaviour(factory, prefix="game:")``:
    each room whose id starts with ``prefix`` gets ``factory(room_id)``.

    With Redis (SPEC §6, docs/scaling.md "Room behaviours across nodes"):

    * **state is per node.** Each node runs its own instance of a room's
      behaviour, in its own actor for the room, made when the room gets its
      first local member (or a broadcast from this node, see below) and
      dropped with the last. Room state that must be shared across nodes
      belongs in Redis or the application's own store;
    * ``on_join`` / ``on_leave`` run on the member's node (a session that
      ``on_join`` refused there is a member on no node);
    * ``on_message`` runs **once per broadcast**, on the node where the
      broadcast is made (the sending session's node, or the one calling
      ``server.rooms.broadcast``), before the message is published; what it
      returns is what every member on every node gets, in the room's one
      order, and None drops it everywhere. A node without a local member
      starts the room's actor (and a behaviour instance) for the broadcast
      and stops it when its broadcasts are handled, so its state lasts only
      that long there.
    """

    def on_join(self, room: RoomHandle, session_id: str) -> None:
        """A session is joining the room (not called again for a repeated join).

        **Raise** :class:`wscore.WsError` **to refuse** (SPEC §8): the session
        is not a member, and ``server.rooms.join`` raises that error in the
        handler that called it, so the request that asked gets it as its
        ``sys.error`` (a join by session id is not waited on: the refusal is
        logged). While the hook runs the joiner is already counted in
        ``room.members`` / ``room.size``; what the hook broadcasts reaches the
        other members at once and the joiner only once admitted (a refused one
        gets none of it; what the hook did before raising otherwise stands).
        With Redis nothing of a refused join is stored. Any other exception is
        logged and the join stands.

        The hook must not call ``server.rooms.join`` with a ``WsSession`` for
        a room with a behaviour (that waits on a room's actor; for this room,
        on itself): join by session id from here.
        """

    def on_leave(self, room: RoomHandle, session_id: str) -> None:
        """A session left the room (explicitly, or because it expired)."""

    def on_message(self, room: RoomHandle, message: RoomMessage) -> RoomMessage | None:
        """A broadcast is about to be delivered: return it (or a replacement) or None to drop it.

        A hook that raises is logged and the message goes out unchanged. With
        Redis it runs on the broadcasting node only (see the class docstring).
        """
        return message
