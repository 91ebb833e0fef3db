"""The chat example with a fast heartbeat and a short session TTL, for sandbox runs.

    wscore sandbox run --app examples.chat_fast.app:server --profile partition \
        --clients 20 --duration 40 --seed 1

Same events as :mod:`examples.chat.app` (``room.join``/``room.leave`` {roomId},
``chat.message`` {roomId, text} → ``chat.new_message`` {text, sender} to the
rest of the room, ``session.set``/``session.get``, ``echo``), but
``ping_interval`` 2 s, ``ping_timeout`` 6 s and ``session_ttl`` 20 s instead
of 20 s / 60 s / 300 s: the sandbox's ``partition`` profile needs an outage
longer than the heartbeat and ``ttl-exceeded`` one longer than the TTL, which
with the defaults would take minutes. :func:`build_chat_server` builds the app
for any config (``examples.broken_resume`` uses it too).
"""

from __future__ import annotations

from wscore import WsContext, WsServer, WsServerConfig

__all__ = ["FAST_CONFIG", "build_chat_server", "server"]

#: dev defaults with a 2 s heartbeat (6 s to drop a silent client) and a 20 s session TTL.
FAST_CONFIG = WsServerConfig.dev(port=8080, ping_interval=2.0, ping_timeout=6.0, session_ttl=20.0)

_chat_schema = {
    "text": lambda v: isinstance(v, str) and v != "",
    "roomId": lambda v: isinstance(v, str),
}
_room_schema = {"roomId": lambda v: isinstance(v, str) and v != ""}


def build_chat_server(config: WsServerConfig) -> WsServer:
    """A WsServer with the chat example's handlers and ``config``."""
    srv = WsServer(config=config)

    @srv.on("chat.message", schema=_chat_schema)
    def chat_message(ctx: WsContext) -> dict[str, str]:
        ctx.broadcast_to_room(ctx.payload["roomId"], "chat.new_message",
                              {"text": ctx.payload["text"], "sender": ctx.user_id or "anon"})
        return {"status": "sent"}

    @srv.on("room.join", schema=_room_schema)
    def join(ctx: WsContext) -> dict[str, str]:
        srv.rooms.join(ctx.payload["roomId"], ctx.session)
        return {"joined": ctx.payload["roomId"]}

    @srv.on("room.leave", schema=_room_schema)
    def leave(ctx: WsContext) -> dict[str, str]:
        srv.rooms.leave(ctx.payload["roomId"], ctx.session)
        return {"left": ctx.payload["roomId"]}

    @srv.on("session.set", schema={"key": lambda v: isinstance(v, str)})
    def session_set(ctx: WsContext) -> dict[str, object]:
        ctx.session.data[ctx.payload["key"]] = ctx.payload.get("value")
        return {"ok": True}

    @srv.on("session.get")
    def session_get(ctx: WsContext) -> dict[str, object]:
        return {"data": ctx.session.data, "rooms": sorted(ctx.session.rooms)}

    @srv.on("echo")
    def echo(ctx: WsContext) -> object:
        return ctx.payload

    return srv


server = build_chat_server(FAST_CONFIG)

if __name__ == "__main__":
    server.serve_forever()
