"""A shared-counter app: not a chat — named counters that clients watch and add to.

    wscore run examples.counter.app:server --port 8080

Events (every payload a JSON object):

==================== ================================ =========================================
request              payload                          reply
==================== ================================ =========================================
``counter.watch``    ``{counter}``                    ``{"counter": name, "value": v}``; the
                                                      session is told of every later change
``counter.add``      ``{counter, by, note}``          ``{"counter": name, "value": v}`` (the
                                                      new value); every *other* watcher gets
                                                      ``counter.changed`` ``{counter, value,
                                                      by, note}``
``counter.get``      ``{counter, ref}``               ``{"counter": name, "value": v, "ref":
                                                      ref}`` (``ref`` handed back unchanged)
==================== ================================ =========================================

``by`` is an integer in -1000..1000, ``note`` a string of at most 1,000
characters (a free annotation, e.g. who changed it and why), ``counter`` a
name of 1..64 characters. Counters live in this process (a dict; updates
run without yielding, so one increment is never lost to another).

Heartbeat and TTL as in ``examples.chat_fast`` (ping 2 s, timeout 6 s, TTL
20 s) so every sandbox profile fits a short run. Under the sandbox:

    wscore sandbox run --app examples.counter.app:server \\
        --workload examples.counter.workload:CounterWorkload --profile chaos --clients 6
"""

from __future__ import annotations

from typing import Any

from wscore import WsContext, WsServer, WsServerConfig

__all__ = ["server"]

server = WsServer(config=WsServerConfig.dev(port=8080, ping_interval=2.0, ping_timeout=6.0,
                                            session_ttl=20.0))

_values: dict[str, int] = {}


def _name(v: Any) -> bool:
    return isinstance(v, str) and 1 <= len(v) <= 64


def _room(counter: str) -> str:
    return f"counter:{counter}"


@server.on("counter.watch", schema={"counter": _name})
def watch(ctx: WsContext) -> dict[str, Any]:
    name = ctx.payload["counter"]
    server.rooms.join(_room(name), ctx.session)
    return {"counter": name, "value": _values.get(name, 0)}


@server.on("counter.add", schema={
    "counter": _name,
    "by": lambda v: isinstance(v, int) and not isinstance(v, bool) and -1000 <= v <= 1000,
    "note": lambda v: isinstance(v, str) and len(v) <= 1000,
})
def add(ctx: WsContext) -> dict[str, Any]:
    name, by = ctx.payload["counter"], ctx.payload["by"]
    value = _values[name] = _values.get(name, 0) + by
    ctx.broadcast_to_room(_room(name), "counter.changed",
                          {"counter": name, "value": value, "by": by, "note": ctx.payload["note"]})
    return {"counter": name, "value": value}


@server.on("counter.get", schema={"counter": _name})
def get(ctx: WsContext) -> dict[str, Any]:
    name = ctx.payload["counter"]
    return {"counter": name, "value": _values.get(name, 0), "ref": ctx.payload.get("ref")}


if __name__ == "__main__":
    server.serve_forever()
