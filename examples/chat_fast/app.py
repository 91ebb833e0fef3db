"""The chat example with a fast heartbeat and a short session TTL, for sandbox runs.

    wscore sandbox run --app examples.chat_fast.app:server --profile partition \
        --clients 20 --duration 40 --seed 1

Same events as :mod:`examples.chat.app` (``room.join``/``room.leave`` {roomId},
``chat.message`` {roomId, text} → ``chat.new_message`` {text, sender} to the
rest of the room, ``session.set``/``session.get``, ``echo``), but
``ping_interval`` 2 s, ``ping_timeout`` 6 s and ``session_ttl`` 20 s instead
of 20 s / 60 s / 300 s: the sandbox's ``partition`` profile needs an outage
longer than the heartbeat and ``ttl-exceeded`` one longer than the TTL, which
with the defaults would take minutes. :func:`examples.chat.app.build_chat_server` builds the
app for any config (``examples.broken_resume`` uses it too).
"""

from __future__ import annotations

from examples.chat.app import build_chat_server
from wscore import WsServerConfig

__all__ = ["FAST_CONFIG", "build_chat_server", "server"]

#: dev defaults with a 2 s heartbeat (6 s to drop a silent client) and a 20 s session TTL.
FAST_CONFIG = WsServerConfig.dev(port=8080, ping_interval=2.0, ping_timeout=6.0, session_ttl=20.0)

server = build_chat_server(FAST_CONFIG)

if __name__ == "__main__":
    server.serve_forever()
