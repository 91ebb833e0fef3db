"""A tiny app for the ``--workers`` tests: ``whoami`` answers with the serving process's PID."""

from __future__ import annotations

import os

from wscore import WsContext, WsServer, WsServerConfig

__all__ = ["server"]

server = WsServer(config=WsServerConfig.dev(shutdown_timeout=2.0))


@server.on("whoami")
def whoami(ctx: WsContext) -> dict[str, int]:
    return {"pid": os.getpid()}


@server.on("session.set")
def session_set(ctx: WsContext) -> dict[str, bool]:
    ctx.session.data.update(ctx.payload)
    return {"ok": True}


@server.on("session.get")
def session_get(ctx: WsContext) -> dict[str, object]:
    return {"data": dict(ctx.session.data), "pid": os.getpid()}


@server.on("room.join")
def join(ctx: WsContext) -> dict[str, int]:
    server.rooms.join(ctx.payload["roomId"], ctx.session)
    return {"pid": os.getpid()}


@server.on("shout")
def shout(ctx: WsContext) -> dict[str, int]:
    ctx.broadcast_to_room(ctx.payload["roomId"], "shouted", {"text": ctx.payload["text"]})
    return {"pid": os.getpid()}


#: Fails in the worker's start() (require_auth without an authenticator), not at import.
needs_auth = WsServer(config=WsServerConfig.dev(require_auth=True))
