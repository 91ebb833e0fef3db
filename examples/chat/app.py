"""The README quick start as a runnable app: ``wscore run examples.chat.app:server``.

Events: ``room.join`` {roomId}, ``room.leave`` {roomId}, ``chat.message`` {roomId, text}
(broadcast to the room as ``chat.new_message``), ``session.set``/``session.get``
(session variables that survive reconnects), ``echo``.
"""

from wscore import WsContext, WsServer, WsServerConfig

server = WsServer(config=WsServerConfig.dev(port=8080))

chat_schema = {
    "text": lambda v: isinstance(v, str) and v != "",
    "roomId": lambda v: isinstance(v, str),
}
room_schema = {"roomId": lambda v: isinstance(v, str) and v != ""}


@server.on("chat.message", schema=chat_schema)
def chat_message(ctx: WsContext) -> dict[str, str]:
    ctx.broadcast_to_room(ctx.payload["roomId"], "chat.new_message",
                          {"text": ctx.payload["text"], "sender": ctx.user_id or "anon"})
    return {"status": "sent"}


def join(ctx: WsContext) -> dict[str, str]:
    server.rooms.join(ctx.payload["roomId"], ctx.session)
    return {"joined": ctx.payload["roomId"]}


server.on("room.join", join, schema=room_schema)


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


if __name__ == "__main__":
    server.serve_forever()
