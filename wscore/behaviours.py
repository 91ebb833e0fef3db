"""Stateful handler classes that run as actors (SPEC §2).

* :class:`WsController` — groups handlers; ``register(server)`` wires them.
* :class:`WsActorController` — a controller whose instance runs as its own
  actor: its handlers run one at a time (across all sessions), so it may keep
  mutable state without locks.
* :class:`WsRoomBehaviour` — hooks on join, leave and message, run by the
  room's own actor, one at a time. One instance per room.
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
    """What a behaviour hook may do with its room (valid during the hook only)."""

    __slots__ = ("_actor", "room_id")

    def __init__(self, room_id: str, actor: Any) -> None:
        self.room_id = room_id
        self._actor = actor

    @property
    def members(self) -> list[str]:
        """Session ids in the room (server-side only; never send them to clients)."""
        return list(self._actor.members)

    @property
    def size(self) -> int:
        return len(self._actor.members)

    def broadcast(self, event: str, payload: Any = None) -> None:
        """Send an event to every member, bypassing ``on_message``."""
        self._actor.deliver_from_behaviour(event, payload)


class WsRoomBehaviour:
    """Hooks run by a room's actor. Subclass and override what you need.

    Register with ``server.rooms.set_behaviour(factory, prefix="game:")``:
    each room whose id starts with ``prefix`` gets ``factory(room_id)``.
    """

    def on_join(self, room: RoomHandle, session_id: str) -> None:
        """A session joined the room (not called again for a repeated join).

        A hook that raises is logged and the join stands: refusing a join from
        here (SPEC §8) is not supported yet.
        """

    def on_leave(self, room: RoomHandle, session_id: str) -> None:
        """A session left the room (explicitly, or because it expired)."""

    def on_message(self, room: RoomHandle, message: RoomMessage) -> RoomMessage | None:
        """A broadcast is about to be delivered: return it (or a replacement) or None to drop it."""
        return message
