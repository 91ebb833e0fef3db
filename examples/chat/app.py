"""The chat example: ``wscore run examples.chat.app:server`` (what ``make run`` serves).

Events: ``room.join`` / ``room.leave`` {roomId, name?}; ``chat.message`` {roomId, text}
(broadcast to the rest of the room as ``chat.new_message`` {text, sender}; only
a member may post: to a room the sender is not in it is refused with 1009
``validationFailed``, ``details.fields == ["roomId"]``, and nobody receives it);
``session.set`` {key, value} / ``session.get`` (session variables that survive
reconnects); ``echo``. A session that joins with a ``name`` is shown by it: the
sender of its messages, and in the room's roster — ``room.members`` {roomId,
members: [names]}, sent to the room whenever a named member joins or leaves (its
session ended or it left). :func:`build_chat_server` builds the same app for any
config (the sandbox's ``examples.chat_fast`` and tests use it); the module-level
``server`` also serves the demo page (examples/chat/page.py) at ``/``.
"""

from __future__ import annotations

from typing import Any

from examples.chat.page import page_app
from wscore import (
    ErrorCode,
    RoomHandle,
    WsContext,
    WsError,
    WsRoomBehaviour,
    WsServer,
    WsServerConfig,
)

__all__ = ["build_chat_server", "server"]

chat_schema = {
    "text": lambda v: isinstance(v, str) and v != "",
    "roomId": lambda v: isinstance(v, str),
}
room_schema = {"roomId": lambda v: isinstance(v, str) and v != ""}


class Roster(WsRoomBehaviour):
    """Tells a room who is in it, by name, when a named session joins or leaves.

    ``names`` (session id → name) is shared by every room of one server; rooms
    without named members send nothing (the load tests' rooms stay quiet).
    """

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    def _send(self, room: RoomHandle) -> None:
        members = sorted(self.names[m] for m in room.members if m in self.names)
        room.broadcast("room.members", {"roomId": room.room_id, "members": members})

    def on_join(self, room: RoomHandle, session_id: str) -> None:
        if session_id in self.names:
            self._send(room)

    def on_leave(self, room: RoomHandle, session_id: str) -> None:
        if session_id in self.names:
            self._send(room)


def build_chat_server(config: WsServerConfig) -> WsServer:
    """A WsServer with the chat handlers and ``config``."""
    server = WsServer(config=config)
    names: dict[str, str] = {}  # session id -> display name (sessions that joined with one)
    server.rooms.set_behaviour(lambda room_id: Roster(names))

    def sender(ctx: WsContext) -> str:
        return names.get(ctx.session.id) or ctx.user_id or "anon"

    @server.on("chat.message", schema=chat_schema)  # decorator form
    def chat_message(ctx: WsContext) -> dict[str, str]:
        room = ctx.payload["roomId"]
        # Members only. 1009 because the contract has no "forbidden" code that leaves the
        # connection open (1004 closes it): the roomId field is the invalid input. A new
        # session — e.g. after the server lost the old one — is in no room until it re-joins.
        if room not in ctx.session.rooms:
            raise WsError(ErrorCode.VALIDATION_FAILED,
                          f"not a member of room {room!r}: send room.join first",
                          {"fields": ["roomId"]})
        ctx.broadcast_to_room(room, "chat.new_message",
                              {"text": ctx.payload["text"], "sender": sender(ctx)})
        return {"status": "sent"}  # the returned value is the auto-reply

    def join(ctx: WsContext) -> dict[str, Any]:
        name = ctx.payload.get("name")
        if isinstance(name, str) and name.strip():
            names[ctx.session.id] = name.strip()[:40]
        server.rooms.join(ctx.payload["roomId"], ctx.session)
        return {"joined": ctx.payload["roomId"]}

    server.on("room.join", join, schema=room_schema)  # call form

    @server.on("room.leave", schema=room_schema)
    def leave(ctx: WsContext) -> dict[str, str]:
        server.rooms.leave(ctx.payload["roomId"], ctx.session)
        return {"left": ctx.payload["roomId"]}

    @server.on("session.set", schema={"key": lambda v: isinstance(v, str)})
    def session_set(ctx: WsContext) -> dict[str, object]:
        ctx.session.data[ctx.payload["key"]] = ctx.payload.get("value")
        return {"ok": True}

    @server.on("session.get")
    def session_get(ctx: WsContext) -> dict[str, object]:
        return {"data": ctx.session.data, "rooms": sorted(ctx.session.rooms)}

    @server.on("echo")
    def echo(ctx: WsContext) -> object:
        return ctx.payload

    return server


server = build_chat_server(WsServerConfig.dev(port=8080))
server.mount(page_app)  # the demo page at / (docs/browser.md)

if __name__ == "__main__":
    server.serve_forever()
