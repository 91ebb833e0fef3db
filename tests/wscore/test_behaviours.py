"""Controllers, actor-based handler classes and room behaviours (SPEC §2)."""

from __future__ import annotations

from typing import Any

import gevent
import gevent.event
from wshelpers import wait_for

from wscore import (
    RoomHandle,
    RoomMessage,
    WsActorController,
    WsContext,
    WsController,
    WsError,
    WsRoomBehaviour,
    WsServer,
)
from wscore.protocol.codes import ErrorCode


class Chat(WsController):
    def register(self, server: WsServer) -> None:
        server.on("chat.hello", self.hello)

    def hello(self, ctx: WsContext) -> Any:
        return {"hello": ctx.payload}


class Counter(WsActorController):
    """Mutable state without locks: its handlers run one at a time in its actor."""

    def __init__(self) -> None:
        self.count = 0
        self.running = 0
        self.max_running = 0

    def register(self, server: WsServer) -> None:
        server.on("counter.inc", self.inc)
        server.on("counter.fail", self.fail)

    def inc(self, ctx: WsContext) -> Any:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        value = self.count
        gevent.idle()  # yield mid-update: a concurrent run would lose an increment
        self.count = value + 1
        ctx.emit("counter.seen", self.count)
        self.running -= 1
        return self.count

    def fail(self, ctx: WsContext) -> Any:
        if ctx.payload == "ws":
            raise WsError(ErrorCode.VALIDATION_FAILED, "bad counter")
        raise RuntimeError("secret detail")


def test_plain_controller(make_server: Any, clients: Any) -> None:
    server = make_server(setup=lambda s: s.register_controller(Chat()))
    c = clients(server.url)
    c.recv()
    assert c.request("chat.hello", "x")["p"] == {"hello": "x"}


def test_actor_controller_runs_handlers_one_at_a_time(make_server: Any, clients: Any) -> None:
    counter = Counter()
    server = make_server(setup=lambda s: s.register_controller(counter))
    conns = [clients(server.url) for _ in range(4)]
    for c in conns:
        c.recv()
    for c in conns:
        for i in range(25):
            c.send({"e": "counter.inc", "c": i})
    for c in conns:
        replies = []
        while len(replies) < 25:
            frame = c.recv()
            if frame["e"] == "ack":
                replies.append(frame)
            else:
                # the emit of a run precedes its reply on the session's stream
                assert frame["e"] == "counter.seen"
        assert [r["c"] for r in replies] == list(range(25))  # a session's frames stay in order
        seqs = [r["s"] for r in replies]
        assert seqs == sorted(seqs)
    assert counter.count == 100 and counter.max_running == 1
    err = conns[0].request("counter.fail", "ws", c="e1")
    assert err["p"]["code"] == 1009
    hidden = conns[0].request("counter.fail", "other", c="e2")
    assert hidden["p"]["code"] == 1011 and "secret" not in hidden["p"]["message"]


def test_an_actor_handlers_numbered_frame_is_acknowledged_after_it_ran(
        make_server: Any, clients: Any) -> None:
    counter = Counter()
    server = make_server(setup=lambda s: s.register_controller(counter))
    c = clients(server.url)
    c.recv()
    for s in (1, 2, 3):
        c.send({"e": "counter.inc", "c": f"i{s}", "s": s})
        ack = c.recv_until(lambda f: f["e"] == "sys.ack")
        # The sys.ack says the frame ran: its emit and reply came first (SPEC §3 Resume).
        assert ack["p"] == {"s": s}
        assert [(f["e"], f["p"]) for f in c.skipped] == [("counter.seen", s), ("ack", s)]
    assert counter.count == 3


class Held(WsActorController):
    """A handler that waits for the test's ``release`` before it replies."""

    def __init__(self) -> None:
        self.entered, self.release = gevent.event.Event(), gevent.event.Event()

    def register(self, server: WsServer) -> None:
        server.on("held", self.held)

    def held(self, ctx: WsContext) -> Any:
        self.entered.set()
        self.release.wait(10)
        return "done"


def test_a_resume_while_an_actor_handler_runs_acknowledges_its_frame_after_it_ran(
        make_server: Any, clients: Any) -> None:
    held = Held()
    server = make_server(setup=lambda s: s.register_controller(held))
    first = clients(server.url)
    sid = first.recv()["p"]["sessionId"]
    first.send({"e": "held", "c": "h", "s": 1})
    assert held.entered.wait(5)
    second = clients(server.url + f"?session={sid}&last_seq=0")
    assert second.recv()["e"] == "sys.connected"
    held.release.set()
    ack = second.recv_until(lambda f: f["e"] == "sys.ack")
    assert ack["p"] == {"s": 1}
    assert [(f["e"], f["p"]) for f in second.skipped] == [("ack", "done")]


class Moderated(WsRoomBehaviour):
    def __init__(self, room_id: str) -> None:
        self.room_id = room_id
        self.joined: list[str] = []
        self.left: list[str] = []
        made.append(self)

    def on_join(self, room: RoomHandle, session_id: str) -> None:
        self.joined.append(session_id)
        room.broadcast("room.size", room.size)

    def on_leave(self, room: RoomHandle, session_id: str) -> None:
        self.left.append(session_id)

    def on_message(self, room: RoomHandle, message: RoomMessage) -> RoomMessage | None:
        if message.payload == "spam":
            return None
        if message.payload == "shout":
            return RoomMessage(message.event, "SHOUT", message.sender)
        if message.payload == "explode":
            raise RuntimeError("behaviour bug")
        return message


made: list[Moderated] = []


def rooms_app(server: WsServer) -> None:
    server.rooms.set_behaviour(Moderated, prefix="mod:")

    @server.on("join")
    def join(ctx: WsContext) -> Any:
        server.rooms.join(ctx.payload, ctx.session)
        return True

    @server.on("leave")
    def leave(ctx: WsContext) -> Any:
        server.rooms.leave(ctx.payload, ctx.session)
        return True

    @server.on("say")
    def say(ctx: WsContext) -> Any:
        ctx.broadcast_to_room(ctx.payload["room"], "said", ctx.payload["text"], include_self=True)
        return None


def test_room_behaviour_hooks_run_in_the_room(make_server: Any, clients: Any) -> None:
    made.clear()
    server = make_server(setup=rooms_app)
    a, b = clients(server.url), clients(server.url)
    a.recv(), b.recv()
    a.request("join", "mod:1")
    assert a.recv_until(lambda f: f["e"] == "room.size")["p"] == 1  # from on_join
    b.request("join", "mod:1")
    assert a.recv_until(lambda f: f["e"] == "room.size")["p"] == 2
    for text in ("hi", "spam", "shout", "explode", "bye"):
        a.send({"e": "say", "p": {"room": "mod:1", "text": text}})
    got = [b.recv_until(lambda f: f["e"] == "said")["p"] for _ in range(4)]
    assert got == ["hi", "SHOUT", "explode", "bye"]  # spam dropped; a failing hook delivers as is
    b.request("leave", "mod:1", c="l")
    wait_for(lambda: len(made) == 1 and len(made[0].left) == 1, what="on_leave")
    assert len(made[0].joined) == 2
    a.request("join", "plain", c="p")  # no behaviour outside the prefix
    assert len(made) == 1


def test_a_behaviour_factory_that_raises_fails_closed_and_the_server_carries_on(
        make_server: Any, clients: Any) -> None:
    def broken(room_id: str) -> WsRoomBehaviour:
        raise RuntimeError("factory bug")

    def app(server: WsServer) -> None:
        rooms_app(server)
        server.rooms.set_behaviour(broken, prefix="bad:")

    server = make_server(setup=app)
    a, b = clients(server.url), clients(server.url)
    a.recv(), b.recv()
    for client in (a, b):
        assert client.request("join", "bad:1")["p"] is True  # the join stands
        assert client.request("join", "ok", c="j2")["p"] is True
    a.send({"e": "say", "p": {"room": "bad:1", "text": "unfiltered"}})
    a.send({"e": "say", "p": {"room": "ok", "text": "fine"}})
    # The room whose filter could not be made drops its messages; the router and the
    # other room carry on (the message after it arrives, the dropped one never does).
    assert b.recv_until(lambda f: f["e"] == "said")["p"] == "fine"
    assert server.rooms.members("bad:1") and server.stats()["rooms"] == 2


class Guarded(WsRoomBehaviour):
    """Admits the session ids on ``allowed`` only (SPEC §8: ``on_join`` refuses by raising).

    It announces every attempt to the room first, so a refused joiner would see
    that announcement if the room delivered to it; a session id in ``buggy``
    makes the hook fail with a non-WsError (the join stands).
    """

    def __init__(self, allowed: set[str], buggy: set[str]) -> None:
        self.allowed = allowed
        self.buggy = buggy

    def on_join(self, room: RoomHandle, session_id: str) -> None:
        room.broadcast("room.joining", room.size)  # the joiner is counted while the hook runs
        if session_id in self.buggy:
            raise RuntimeError("behaviour bug")
        if session_id not in self.allowed:
            raise WsError(ErrorCode.VALIDATION_FAILED, "not on the room's list", {"fields": ["room"]})
        room.broadcast("welcome", room.size)


class Doorman(WsActorController):
    """Joins from a handler run in its own actor (the join waits there)."""

    def __init__(self, server: WsServer) -> None:
        self.server = server

    def register(self, server: WsServer) -> None:
        server.on("actor.join", self.join)

    def join(self, ctx: WsContext) -> Any:
        self.server.rooms.join(ctx.payload, ctx.session)
        return True


def guarded_app(allowed: set[str], buggy: set[str]) -> Any:
    def setup(server: WsServer) -> None:
        rooms_app(server)
        server.rooms.set_behaviour(lambda room_id: Guarded(allowed, buggy), prefix="vip:")
        server.register_controller(Doorman(server))

        @server.on("my_rooms")
        def my_rooms(ctx: WsContext) -> Any:
            return sorted(ctx.session.rooms)

    return setup


def test_on_join_refuses_a_join_with_a_wserror_that_answers_the_request(
        make_server: Any, clients: Any) -> None:
    allowed: set[str] = set()
    buggy: set[str] = set()
    server = make_server(setup=guarded_app(allowed, buggy))
    outsider, member, clumsy = clients(server.url), clients(server.url), clients(server.url)
    outsider_id = outsider.recv()["p"]["sessionId"]
    allowed.add(member.recv()["p"]["sessionId"])
    buggy.add(clumsy.recv()["p"]["sessionId"])
    heard: list[str] = []  # every frame the outsider gets besides its requests' answers

    def ask(event: str, payload: Any, c: str) -> dict[str, Any]:
        reply = outsider.request(event, payload, c=c)
        heard.extend(f["e"] for f in outsider.skipped)
        return reply

    # Refused while alone: the request gets on_join's error, and no room actor is left.
    refused = ask("join", "vip:1", c="j1")
    assert refused["e"] == "sys.error"
    assert refused["p"]["code"] == 1009 and refused["p"]["message"] == "not on the room's list"
    assert refused["p"]["details"] == {"fields": ["room"]}
    assert ask("my_rooms", None, c="m1")["p"] == []  # its own view dropped the room
    assert server.rooms.members("vip:1") == []
    wait_for(lambda: server.stats()["rooms"] == 0, what="the refused room's actor stopped")

    # An admitted session joins as before and gets on_join's greeting.
    assert member.request("join", "vip:1", c="j2")["p"] is True
    assert member.recv_until(lambda f: f["e"] == "welcome")["p"] == 1
    assert member.request("my_rooms", c="m2")["p"] == ["vip:1"]
    # Refused again, next to a member (and from a WsActorController's handler too).
    assert ask("join", "vip:1", c="j3")["p"]["code"] == 1009
    assert ask("actor.join", "vip:1", c="j4")["p"]["code"] == 1009
    assert member.recv_until(lambda f: f["e"] == "room.joining")["p"] == 2  # counted during the hook
    assert server.rooms.members("vip:1") == sorted(allowed)
    assert server.stats()["rooms"] == 1
    # A join by session id (server code) is refused the same way, without waiting.
    server.rooms.join("vip:1", outsider_id)
    assert server.rooms.members("vip:1") == sorted(allowed)  # asked after the join: its verdict

    # The room's broadcasts never reach the refused session: once the member got one,
    # the room has offered it to every member, ahead of the outsider's next request.
    member.send({"e": "say", "p": {"room": "vip:1", "text": "members only"}})
    assert member.recv_until(lambda f: f["e"] == "said")["p"] == "members only"
    assert ask("my_rooms", None, c="m3")["p"] == []
    assert heard == []  # no room.joining, welcome or said, ever

    # A hook failing with anything but WsError is logged: the join stands.
    assert clumsy.request("join", "vip:1", c="j5")["p"] is True
    assert clumsy.request("my_rooms", c="m4")["p"] == ["vip:1"]
    assert sorted(server.rooms.members("vip:1")) == sorted(allowed | buggy)
