"""A deliberately broken chat server: resume is effectively disabled.

    wscore sandbox run --app examples.broken_resume.app:server --profile flaky-mobile \
        --clients 20 --duration 30 --seed 7          # fails, exit status 1

The handlers are the chat example's (:func:`examples.chat_fast.app.build_chat_server`);
only the config is wrong: ``session_ttl`` is 50 ms, so a session dies almost as
soon as its connection drops and every reconnect is refused with 1006
(``sessionNotFound``). That is the honest way to turn resume off through the
public API — the server still reports the loss, so ``sandbox run`` names it:
sessions lost, the deliveries lost with them, the RPCs that failed with 1006 —
and fails the run, because a flaky network should cost no session.
"""

from __future__ import annotations

import attrs

from examples.chat_fast.app import FAST_CONFIG, build_chat_server

__all__ = ["server"]

server = build_chat_server(attrs.evolve(FAST_CONFIG, session_ttl=0.05))

if __name__ == "__main__":
    server.serve_forever()
