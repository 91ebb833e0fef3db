"""wscore.testing: in-process sessions on the real actors, no sockets."""

from __future__ import annotations

from typing import Any

import gevent.event
import pytest

from wscore import (
    AuthResult,
    ConnectionClosed,
    ConnectionInfo,
    ErrorCode,
    UsageError,
    WsActorController,
    WsAuthenticator,
    WsContext,
    WsError,
    WsServer,
    WsServerConfig,
)
from wscore.testing import HandlerTestServer, HandlerTestSession, session


def make_server(**cfg: Any) -> WsServer:
    server = WsServer(config=WsServerConfig.dev(port=0, **cfg))

    @server.on("room.join", schema={"roomId": lambda v: isinstance(v, str) and v != ""})
    def join(ctx: WsContext) -> dict[str, str]:
        server.rooms.join(ctx.payload["roomId"], ctx.session)
        return {"joined": ctx.payload["roomId"]}

    @server.on("say")
    def say(ctx: WsContext) -> None:
        ctx.broadcast_to_room(ctx.payload["roomId"], "said", {"text": ctx.payload["text"]},
                              include_self=bool(ctx.payload.get("self")))

    @server.on("count")
    def count(ctx: WsContext) -> int:
        n = int(ctx.session.data.get("n", 0)) + 1
        ctx.session.data["n"] = n
        ctx.emit("counted", {"n": n})
        return n

    @server.on("boom")
    def boom(ctx: WsContext) -> None:
        raise RuntimeError("a bug in a handler")

    return server


def test_replies_errors_and_the_numbered_stream() -> None:
    with session(make_server(), user_id="alice") as s:
        assert isinstance(s, HandlerTestSession) and s.user_id == "alice"
        assert s.request("count") == 1
        assert s.request("count") == 2
        assert s.events("counted") == [{"n": 1}, {"n": 2}]
        assert s.data == {"n": 2}
        assert [f["s"] for f in s.sent] == list(range(1, len(s.sent) + 1))
        assert [f["e"] for f in s.sent] == ["counted", "ack", "counted", "ack"]
        assert s.frames[0]["e"] == "sys.connected"
        with pytest.raises(WsError) as err:
            s.request("nope")
        assert err.value.code is ErrorCode.HANDLER_NOT_FOUND
        with pytest.raises(WsError) as err:
            s.request("room.join", {"roomId": ""})
        assert err.value.code is ErrorCode.VALIDATION_FAILED
        with pytest.raises(WsError) as err:
            s.request("boom")
        assert err.value.code is ErrorCode.INTERNAL_ERROR
        assert "bug" not in err.value.message  # nothing leaks, as on a socket
        s.send_raw('{"v":"1.0","e":"x","c":NaN}')  # not sendable JSON: 1001, nothing run
        assert s.request("count") == 3  # still usable
        assert [p["code"] for p in s.events("sys.error")] == [1008, 1009, 1011, 1001]


def test_two_sessions_in_a_room_see_each_others_broadcasts() -> None:
    with HandlerTestServer(make_server()) as t:
        alice, bob = t.session(user_id="alice"), t.session(user_id="bob")
        for s in (alice, bob):
            assert s.request("room.join", {"roomId": "lobby"}) == {"joined": "lobby"}
        assert alice.rooms == frozenset({"lobby"})
        assert sorted(t.members("lobby")) == sorted([alice.id, bob.id])
        alice.request("say", {"roomId": "lobby", "text": "hi"})
        bob.request("say", {"roomId": "lobby", "text": "yo", "self": True})
        assert bob.events("said") == [{"text": "hi"}, {"text": "yo"}]
        assert alice.events("said") == [{"text": "yo"}]


def test_room_ids_in_sys_are_the_servers() -> None:
    server = make_server()
    with HandlerTestServer(server) as t:
        alice = t.session(user_id="alice")
        for event, payload in (("room.join", {"roomId": "sys.everyone"}),
                               ("say", {"roomId": "sys.x", "text": "hi"})):
            with pytest.raises(WsError) as err:
                alice.request(event, payload)
            assert err.value.code is ErrorCode.VALIDATION_FAILED
            assert err.value.details == {"room": payload["roomId"]}
        assert alice.rooms == frozenset()
        for call in (lambda: server.rooms.join("sys.everyone", alice.id),
                     lambda: server.rooms.leave("sys.everyone", alice.id),
                     lambda: server.rooms.broadcast("sys.everyone", "x"),
                     lambda: server.rooms.members("sys.everyone")):
            with pytest.raises(WsError):
                call()
        assert alice.request("room.join", {"roomId": "system"}) == {"joined": "system"}


def test_disconnect_then_reconnect_replays_what_was_pushed_meanwhile() -> None:
    with HandlerTestServer(make_server()) as t:
        alice, bob = t.session(), t.session()
        alice.request("room.join", {"roomId": "r"})
        bob.request("room.join", {"roomId": "r"})
        bob.disconnect()
        assert not bob.connected
        with pytest.raises(UsageError):
            bob.send("say", {})
        alice.request("say", {"roomId": "r", "text": "while away"})
        t.settle()
        assert bob.events("said") == []
        bob.reconnect()
        assert bob.wait_for("said") == [{"text": "while away"}]
        assert [f["e"] for f in bob.frames].count("sys.connected") == 2


def test_leaving_the_block_ends_every_session_and_frees_the_server() -> None:
    server = make_server()
    with HandlerTestServer(server) as t:
        s = t.session()
        s.request("room.join", {"roomId": "r"})
        with pytest.raises(UsageError):
            HandlerTestServer(server).__enter__()  # one harness at a time
    assert not s.alive and s.close_code == 1001
    assert server._router is None
    with pytest.raises(ConnectionClosed):
        s.request("count")
    with session(server) as again:  # the server is reusable
        assert again.request("count") == 1


class Tokens(WsAuthenticator):
    def authenticate(self, conn: ConnectionInfo, token: str) -> AuthResult:
        if token.startswith("ok-"):
            return AuthResult.success(user_id=token[3:])
        return AuthResult.failure(error="bad token")


def test_tokens_go_through_the_servers_authenticator() -> None:
    server = WsServer(config=WsServerConfig.dev(port=0, require_auth=True), authenticator=Tokens())
    server.on("whoami", lambda ctx: ctx.user_id)
    with HandlerTestServer(server) as t:
        assert t.session(token="ok-carol").request("whoami") == "carol"
        with pytest.raises(WsError) as err:
            t.session(token="nope")
        assert err.value.code is ErrorCode.AUTH_FAILED
        with pytest.raises(WsError) as err:
            t.session()
        assert err.value.code is ErrorCode.AUTH_REQUIRED


def test_the_servers_limits_apply() -> None:
    server = make_server(rate_limit=1.0, rate_burst=2.0, max_rooms_per_session=1)
    with session(server) as s:
        s.request("room.join", {"roomId": "a"})
        with pytest.raises(WsError) as err:
            s.request("room.join", {"roomId": "b"})
        assert err.value.code is ErrorCode.RATE_LIMIT_EXCEEDED  # one room at most
        assert err.value.details == {"limit": "max_rooms_per_session", "max": 1}
        with pytest.raises(WsError) as err:
            s.request("count")  # the bucket (burst 2) is empty now
        assert err.value.code is ErrorCode.RATE_LIMIT_EXCEEDED


class Counter(WsActorController):
    def __init__(self) -> None:
        self.total = 0

    def register(self, server: WsServer) -> None:
        server.on("add", self.add)

    def add(self, ctx: WsContext) -> int:
        self.total += int(ctx.payload)
        return self.total


def test_actor_controllers_and_timeouts() -> None:
    server = make_server()
    server.register_controller(Counter())
    never = gevent.event.Event()
    server.on("hang", lambda ctx: never.wait())
    with HandlerTestServer(server, timeout=5.0) as t:
        a, b = t.session(), t.session()
        assert a.request("add", 2) == 2
        assert b.request("add", 3) == 5
        with pytest.raises(TimeoutError):
            a.request("hang", timeout=0.2)
        never.set()
