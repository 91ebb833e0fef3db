"""The app the multi-node tests serve (in-process nodes and ``wscore run --redis`` subprocesses).

Tokens are user names (``?token=alice`` → user ``alice``). Events:
``echo`` (replies its payload), ``count`` (``data["n"] += 1``, replies n),
``join`` / ``leave`` (a room), ``say`` (broadcast ``said`` to a room, sender
included), ``tell_user`` (``send_to_user``), ``tell_session``
(``send_to_session`` of ``payload["sid"]``; both push ``told`` with the
payload), ``members``; and ``room.join`` / ``bench.publish`` (broadcasts
``bench.msg``) as the Node load generator's fan-out mode speaks them.
"""

from __future__ import annotations

import os
from typing import Any

from wscore import AuthResult, WsAuthenticator, WsServer, WsServerConfig
from wscore.auth import ConnectionInfo


class NameIsUser(WsAuthenticator):
    def authenticate(self, conn: ConnectionInfo, token: str) -> AuthResult:
        return AuthResult.success(token)


def build(config: WsServerConfig) -> WsServer:
    server = WsServer(config=config, authenticator=NameIsUser())

    @server.on("echo")
    def echo(ctx: Any) -> Any:
        return ctx.payload

    @server.on("count")
    def count(ctx: Any) -> Any:
        ctx.session.data["n"] = ctx.session.data.get("n", 0) + 1
        return ctx.session.data["n"]

    @server.on("join")
    def join(ctx: Any) -> Any:
        server.rooms.join(ctx.payload["room"], ctx.session)
        return True

    @server.on("leave")
    def leave(ctx: Any) -> Any:
        server.rooms.leave(ctx.payload["room"], ctx.session)
        return True

    @server.on("say")
    def say(ctx: Any) -> Any:
        ctx.broadcast_to_room(ctx.payload["room"], "said", ctx.payload, include_self=True)
        return True

    @server.on("tell_user")
    def tell_user(ctx: Any) -> Any:
        server.send_to_user(ctx.payload["user"], "told", ctx.payload)
        return True

    @server.on("tell_session")
    def tell_session(ctx: Any) -> Any:
        server.send_to_session(ctx.payload["sid"], "told", ctx.payload)
        return True

    @server.on("shout")
    def shout(ctx: Any) -> Any:
        server.broadcast("shouted", ctx.payload)
        return True

    @server.on("members")
    def members(ctx: Any) -> Any:
        return len(server.rooms.members(ctx.payload["room"]))

    # The Node load generator's fan-out events (shared/tools/wsbench), for bench_cluster.
    @server.on("room.join")
    def bench_join(ctx: Any) -> Any:
        server.rooms.join(ctx.payload["roomId"], ctx.session)
        return {"joined": ctx.payload["roomId"]}

    @server.on("bench.publish")
    def bench_publish(ctx: Any) -> Any:
        ctx.broadcast_to_room(ctx.payload["roomId"], "bench.msg", ctx.payload)
        return {"ok": True}

    return server


#: For ``wscore run tests.cluster.clusterapp:server --redis URL`` (port from WSCORE_TEST_PORT).
server = build(WsServerConfig.dev(port=int(os.environ.get("WSCORE_TEST_PORT", "0")),
                                  session_ttl=60.0, shutdown_timeout=2.0))

#: The same app with the rate limiter opened up, for benchmarks/bench_cluster.py: a
#: closed-loop client on an in-memory node sends far more than the dev limit (1,000
#: frames/s), and a benchmark must measure the server, not the limiter's refusals.
bench = build(WsServerConfig.dev(port=int(os.environ.get("WSCORE_TEST_PORT", "0")),
                                 session_ttl=60.0, shutdown_timeout=2.0,
                                 rate_limit=1_000_000.0, rate_burst=1_000_000.0))
