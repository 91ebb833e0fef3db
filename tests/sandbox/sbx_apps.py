"""Apps for the runner tests, loaded by ``sandbox run`` in its own subprocesses.

``short_ttl``: the chat app with a 0.5 s heartbeat and a 2 s session TTL, so a
``ttl-exceeded`` outage (1.5 × TTL + heartbeat) fits a run of a few seconds.
"""

import attrs

from examples.chat.app import chat_schema, room_schema
from examples.chat_fast.app import FAST_CONFIG, build_chat_server
from wscore import WsContext, WsServer

short_ttl = build_chat_server(attrs.evolve(FAST_CONFIG, ping_interval=0.5, ping_timeout=1.5,
                                           session_ttl=2.0))

#: ``partition``: a 0.5 s heartbeat and a 6 s TTL, so an outage longer than the
#: heartbeat and shorter than the TTL fits a run of a few seconds.
short_heartbeat = build_chat_server(attrs.evolve(FAST_CONFIG, ping_interval=0.5, ping_timeout=1.5,
                                                 session_ttl=6.0))

#: The README's quick-start app: ``room.join`` and ``chat.message``, no ``echo``.
no_echo = WsServer(config=FAST_CONFIG)


@no_echo.on("chat.message", schema=chat_schema)
def _chat_message(ctx: WsContext) -> dict[str, str]:
    ctx.broadcast_to_room(ctx.payload["roomId"], "chat.new_message", {"text": ctx.payload["text"]})
    return {"status": "sent"}


@no_echo.on("room.join", schema=room_schema)
def _join(ctx: WsContext) -> dict[str, str]:
    no_echo.rooms.join(ctx.payload["roomId"], ctx.session)
    return {"joined": ctx.payload["roomId"]}
