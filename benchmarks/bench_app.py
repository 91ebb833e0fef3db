"""The app the server benchmarks run (the events the ``wsbench`` load generator speaks).

``echo`` returns its payload; ``room.join`` joins; ``bench.publish`` broadcasts
``bench.msg`` to the room. Limits are opened up so the benchmark measures the
server, not the rate limiter.
"""

from wscore import WsContext, WsServer, WsServerConfig

server = WsServer(config=WsServerConfig.prod(port=0, require_auth=False, rate_limit=1_000_000,
                                             rate_burst=1_000_000))


@server.on("echo")
def echo(ctx: WsContext) -> object:
    return ctx.payload


@server.on("room.join")
def join(ctx: WsContext) -> dict[str, str]:
    server.rooms.join(ctx.payload["roomId"], ctx.session)
    return {"joined": ctx.payload["roomId"]}


@server.on("bench.publish")
def publish(ctx: WsContext) -> dict[str, bool]:
    ctx.broadcast_to_room(ctx.payload["roomId"], "bench.msg", ctx.payload)
    return {"ok": True}
