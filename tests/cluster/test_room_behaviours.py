"""Room behaviours with Redis (SPEC §6, §8; docs/scaling.md "Room behaviours across nodes").

Two in-process ``clusterapp`` nodes on one real redis-server, websocket-client
peers on both. ``on_message`` runs once per broadcast, on the sender's node,
before the publish; ``RoomHandle.broadcast`` is published to every node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gevent.event
import pytest
from clusterapp import build
from redisproc import RedisServer
from wshelpers import RawClient, wait_for

from wscore import (
    ErrorCode,
    RoomHandle,
    RoomMessage,
    WsActorController,
    WsContext,
    WsError,
    WsRoomBehaviour,
    WsServer,
    WsServerConfig,
)
from wscore.actors import FindRoom
from wscore.cluster import scripts

Node = Callable[..., WsServer]


@pytest.fixture
def calls() -> list[dict[str, Any]]:
    """Every ``on_message`` run on any node (the nodes share this process)."""
    return []


@pytest.fixture
def hold() -> Iterator[tuple[gevent.event.Event, gevent.event.Event]]:
    """(entered, release): a "hold" message keeps its room actor inside on_message."""
    entered, release = gevent.event.Event(), gevent.event.Event()
    yield entered, release
    release.set()


class Loud(WsRoomBehaviour):
    """Uppercases ``payload["text"]``, drops "spam", greets each join with this node's name."""

    def __init__(self, room_id: str, node: str, calls: list[dict[str, Any]],
                 hold: tuple[gevent.event.Event, gevent.event.Event]) -> None:
        self.node = node
        self.calls = calls
        self.entered, self.release = hold

    def on_join(self, room: RoomHandle, session_id: str) -> None:
        room.broadcast("welcome", {"node": self.node, "size": room.size})

    def on_message(self, room: RoomHandle, message: RoomMessage) -> RoomMessage | None:
        text = message.payload["text"]
        self.calls.append({"node": self.node, "text": text, "sender": message.sender,
                           "local": room.members})
        if text == "spam":
            return None
        if text == "hold":
            self.entered.set()
            self.release.wait(10)
        return RoomMessage(message.event, {**message.payload, "text": text.upper()}, message.sender)


@pytest.fixture
def nodes(make_node: Node, calls: list[dict[str, Any]],
          hold: tuple[gevent.event.Event, gevent.event.Event]) -> tuple[WsServer, WsServer]:
    a, b = make_node(), make_node()

    def factory(name: str) -> Callable[[str], Loud]:
        return lambda room_id: Loud(room_id, name, calls, hold)

    a.rooms.set_behaviour(factory("a"), prefix="loud:")
    b.rooms.set_behaviour(factory("b"), prefix="loud:")
    return a, b


class Peer:
    """A websocket-client peer that keeps the frames a request read past (nothing is lost)."""

    def __init__(self, client: RawClient) -> None:
        self.client = client
        self.backlog: list[dict[str, Any]] = []
        frame = client.recv()
        assert frame["e"] == "sys.connected", frame
        self.session_id: str = frame["p"]["sessionId"]

    def request(self, event: str, payload: Any, c: str) -> Any:
        reply = self.client.request(event, payload, c=c)
        self.backlog.extend(self.client.skipped)
        assert reply["e"] == "ack", reply
        return reply["p"]

    def join(self, room: str) -> None:
        assert self.request("join", {"room": room}, c="join") is True

    def say(self, room: str, text: str) -> None:
        assert self.request("say", {"room": room, "text": text}, c=f"say-{text}") is True

    def next(self, event: str) -> dict[str, Any]:
        """The next frame named ``event`` (others skipped); every room frame is numbered."""
        while True:
            frame = self.backlog.pop(0) if self.backlog else self.client.recv()
            if frame["e"] == event:
                assert "s" in frame, frame
                return frame

    def next_event(self, event: str) -> dict[str, Any]:
        """The next frame named ``event``, numbered or not (others skipped)."""
        while True:
            frame = self.backlog.pop(0) if self.backlog else self.client.recv()
            if frame["e"] == event:
                return frame

    def said(self, count: int) -> list[str]:
        return [self.next("said")["p"]["text"] for _ in range(count)]


def test_a_rewrite_runs_once_on_the_senders_node_and_every_member_gets_it_in_one_order(
        nodes: tuple[WsServer, WsServer], raw: Callable[..., RawClient],
        calls: list[dict[str, Any]]) -> None:
    a, b = nodes
    peers = [Peer(raw(node.url + f"?token=u{n}")) for n, node in enumerate((a, b, a, b))]
    for peer in peers:
        peer.join("loud:1")
    per_sender = 5
    for i in range(per_sender):
        for n, peer in enumerate(peers):
            peer.client.send({"e": "say", "p": {"room": "loud:1", "text": f"m{n}-{i}"}})
    orders = [peer.said(per_sender * len(peers)) for peer in peers]
    assert all(order == orders[0] for order in orders)  # one room order, on both nodes
    expected = sorted(f"M{n}-{i}" for i in range(per_sender) for n in range(len(peers)))
    assert sorted(orders[0]) == expected  # every one rewritten, each once
    # Once per broadcast (not once per node), on the node holding the sender.
    assert len(calls) == per_sender * len(peers)
    node_of = {peer.session_id: "ab"[n % 2] for n, peer in enumerate(peers)}
    for call in calls:
        assert call["node"] == node_of[call["sender"]]
        # room.members: this node's two members, the sender among them.
        assert call["sender"] in call["local"] and len(call["local"]) == 2


def test_a_dropped_message_reaches_no_member_on_any_node(
        nodes: tuple[WsServer, WsServer], raw: Callable[..., RawClient],
        calls: list[dict[str, Any]]) -> None:
    a, b = nodes
    on_a, on_b = Peer(raw(a.url + "?token=ann")), Peer(raw(b.url + "?token=ben"))
    on_a.join("loud:2")
    on_b.join("loud:2")
    # One at a time: a reply waits for its broadcast's publish (or drop), so this is the order.
    for sender, text in ((on_a, "hi"), (on_a, "spam"), (on_b, "spam"), (on_a, "after"),
                         (on_b, "fin")):
        sender.say("loud:2", text)
    assert on_a.said(3) == ["HI", "AFTER", "FIN"]
    assert on_b.said(3) == ["HI", "AFTER", "FIN"]
    assert [(c["node"], c["text"]) for c in calls] == [
        ("a", "hi"), ("a", "spam"), ("b", "spam"), ("a", "after"), ("b", "fin")]


def test_a_behaviours_own_broadcast_from_on_join_reaches_members_on_the_other_node(
        nodes: tuple[WsServer, WsServer], raw: Callable[..., RawClient]) -> None:
    a, b = nodes
    on_b = Peer(raw(b.url + "?token=bea"))
    on_b.join("loud:3")
    assert on_b.next("welcome")["p"] == {"node": "b", "size": 1}
    on_a = Peer(raw(a.url + "?token=abe"))
    on_a.join("loud:3")  # on_join runs on node A, where the room has one member
    assert on_b.next("welcome")["p"] == {"node": "a", "size": 1}
    assert on_a.next("welcome")["p"] == {"node": "a", "size": 1}
    # In room order with the room's other messages.
    on_b.say("loud:3", "next")
    assert on_a.said(1) == ["NEXT"] and on_b.said(1) == ["NEXT"]


def test_a_broadcast_from_a_node_without_members_runs_the_behaviour_there(
        nodes: tuple[WsServer, WsServer], raw: Callable[..., RawClient],
        calls: list[dict[str, Any]]) -> None:
    a, b = nodes
    on_b = Peer(raw(b.url + "?token=cid"))
    on_b.join("loud:4")
    a.rooms.broadcast("loud:4", "said", {"text": "from a"})
    a.rooms.broadcast("loud:4", "said", {"text": "spam"})
    a.rooms.broadcast("loud:4", "said", {"text": "again"})
    assert on_b.said(2) == ["FROM A", "AGAIN"]
    assert [(c["node"], c["text"], c["local"]) for c in calls] == [
        ("a", "from a", []), ("a", "spam", []), ("a", "again", [])]
    # The room actor started for the broadcasts is stopped once they are handled.
    wait_for(lambda: a.stats()["rooms"] == 0, what="node A's room actor stopped")


def test_a_member_joining_while_a_broadcast_only_room_actor_runs_gets_the_room(
        nodes: tuple[WsServer, WsServer], raw: Callable[..., RawClient],
        hold: tuple[gevent.event.Event, gevent.event.Event]) -> None:
    entered, release = hold
    a, b = nodes
    on_b = Peer(raw(b.url + "?token=dee"))
    on_b.join("loud:5")
    a.rooms.broadcast("loud:5", "said", {"text": "hold"})
    assert entered.wait(5), "on_message never ran on node A"
    on_a = Peer(raw(a.url + "?token=eve"))
    held = a._router.ask(FindRoom("loud:5"), timeout=5)  # the actor started for the broadcast
    # The join reaches that actor (it must subscribe now). A join to a room with a
    # behaviour waits for on_join's verdict, so its reply waits behind the held broadcast.
    on_a.client.send({"e": "join", "p": {"room": "loud:5"}, "c": "join"})
    wait_for(lambda: held.actor_inbox.qsize() == 1, what="the join queued behind the broadcast")
    assert a.stats()["rooms"] == 1
    release.set()
    assert on_a.client.recv_until(lambda f: f.get("c") == "join")["p"] is True
    on_a.backlog.extend(on_a.client.skipped)
    assert on_b.said(1) == ["HOLD"]
    on_b.say("loud:5", "later")
    assert on_a.said(2) == ["HOLD", "LATER"]
    assert on_b.said(1) == ["LATER"]


def test_a_reply_waits_for_its_broadcasts_publish_through_the_behaviour(
        nodes: tuple[WsServer, WsServer], raw: Callable[..., RawClient],
        redis_server: RedisServer, calls: list[dict[str, Any]]) -> None:
    a, _b = nodes
    # The room's record is not a hash: its publish fails (WRONGTYPE) after on_message ran.
    redis_server.admin().set("wscore:r:loud:broken:m", "not a room")
    peer = Peer(raw(a.url + "?token=fay"))
    peer.client.send({"e": "say", "p": {"room": "loud:broken", "text": "lost"}, "c": "x"})
    # Gated like a publish straight from the session: no ack for an unpublished message;
    # the session is dropped from the node instead (SPEC §6: store before send).
    with pytest.raises(ConnectionAbortedError, match="1012"):
        peer.client.recv()
    assert [c["text"] for c in calls] == ["lost"]


def test_the_inbound_position_waits_for_the_publish_of_what_the_frame_broadcast(
        nodes: tuple[WsServer, WsServer], raw: Callable[..., RawClient], redis_server: RedisServer,
        hold: tuple[gevent.event.Event, gevent.event.Event]) -> None:
    # The room's actor publishes after on_message: that write is not ordered with the
    # session's own. Were the frame's position stored first, a node crash in between
    # would leave Redis saying frame 1 ran while its broadcast never reached Redis, and
    # the client (never acknowledged) re-sending it elsewhere would be skipped: a loss.
    entered, release = hold
    a, b = nodes
    listener = Peer(raw(b.url + "?token=gus"))
    listener.join("loud:7")
    sender = Peer(raw(a.url + "?token=hal"))
    executed: list[str] = []  # the scripts Redis runs, in the order it runs them (MONITOR)
    watching = gevent.event.Event()

    def monitor() -> None:
        with redis_server.admin().monitor() as m:
            watching.set()
            for command in m.listen():
                executed.append(command["command"])

    watcher = gevent.spawn(monitor)
    try:
        assert watching.wait(5)
        sender.client.send({"e": "say", "p": {"room": "loud:7", "text": "hold"}, "s": 1})
        assert entered.wait(5), "on_message never ran"
        release.set()
        assert listener.said(1) == ["HOLD"]
        assert sender.next_event("sys.ack")["p"]["s"] >= 1
        wait_for(lambda: any(scripts.ACCEPT_INBOUND.sha in c for c in executed), what="the position write")
    finally:
        watcher.kill()
    order = [c for c in executed if scripts.PUBLISH.sha in c or scripts.ACCEPT_INBOUND.sha in c]
    assert scripts.PUBLISH.sha in order[0] and scripts.ACCEPT_INBOUND.sha in order[-1], order


class Announcer(WsActorController):
    """A handler run in its own actor that broadcasts to a room (no behaviour there)."""

    def register(self, server: WsServer) -> None:
        server.on("announce", self.announce)

    def announce(self, ctx: WsContext) -> Any:
        ctx.broadcast_to_room(ctx.payload["room"], "announced", ctx.payload["text"], include_self=True)
        return True


def test_a_reply_from_an_actor_handler_waits_for_its_broadcasts_publish(
        redis_server: RedisServer, raw: Callable[..., RawClient]) -> None:
    node = build(WsServerConfig.dev(host="127.0.0.1", port=0, redis_url=redis_server.url,
                                    session_ttl=60.0, shutdown_timeout=2.0))
    node.register_controller(Announcer())
    node.start()
    try:
        redis_server.admin().set("wscore:r:plain:broken:m", "not a room")  # its publish fails
        peer = Peer(raw(node.url + "?token=ivy"))
        # Numbered: neither the sys.ack nor the stored inbound position may say it ran
        # (the client re-sends it after the resume; SPEC §6).
        peer.client.send({"e": "announce", "p": {"room": "plain:broken", "text": "x"}, "c": "a",
                          "s": 1})
        frames: list[dict[str, Any]] = []
        # No reply, no ack for a frame whose broadcast was not stored: the session is
        # dropped (1012).
        with pytest.raises(ConnectionAbortedError, match="1012"):
            while True:
                frames.append(peer.client.recv())
        assert frames == []
        inbound = redis_server.admin().hget(f"wscore:s:{{{peer.session_id}}}:m", "inbound")
        assert inbound in (None, b"0", "0")
        ok = Peer(raw(node.url + "?token=jo"))
        ok.join("plain:fine")
        assert ok.request("announce", {"room": "plain:fine", "text": "y"}, c="b") is True
        assert ok.next("announced")["p"] == "y"
    finally:
        node.stop()


def test_an_actor_handlers_numbered_frame_is_acknowledged_after_its_reply_and_broadcast(
        redis_server: RedisServer, raw: Callable[..., RawClient]) -> None:
    node = build(WsServerConfig.dev(host="127.0.0.1", port=0, redis_url=redis_server.url,
                                    session_ttl=60.0, shutdown_timeout=2.0))
    node.register_controller(Announcer())
    node.start()
    try:
        peer = Peer(raw(node.url + "?token=ivy"))
        peer.join("plain:r")
        meta = f"wscore:s:{{{peer.session_id}}}:m"
        for s in (1, 2, 3):
            peer.client.send({"e": "announce", "p": {"room": "plain:r", "text": f"t{s}"},
                              "c": f"a{s}", "s": s})
            frames: list[dict[str, Any]] = []
            while not (frames and frames[-1]["e"] == "sys.ack"):
                frames.append(peer.client.recv())
            # The ack covers a frame that ran: its reply is already out, the position stored.
            assert frames[-1]["p"] == {"s": s}
            replies = [f for f in frames if f["e"] == "ack"]
            assert [(f["c"], f["p"]) for f in replies] == [(f"a{s}", True)], frames
            assert int(redis_server.admin().hget(meta, "inbound")) == s
            peer.backlog.extend(frames)
            assert peer.next("announced")["p"] == f"t{s}"
    finally:
        node.stop()


class Guarded(WsRoomBehaviour):
    """Admits the session ids on this node's ``allowed`` only; announces every attempt first."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed

    def on_join(self, room: RoomHandle, session_id: str) -> None:
        room.broadcast("room.joining", room.size)
        if session_id not in self.allowed:
            raise WsError(ErrorCode.VALIDATION_FAILED, "not on the room's list")
        room.broadcast("welcome", room.size)


@pytest.fixture
def guarded(make_node: Node) -> tuple[WsServer, WsServer, set[str], set[str]]:
    """Nodes A and B whose ``vip:`` rooms admit the session ids on that node's own list."""
    a, b = make_node(), make_node()
    on_a: set[str] = set()
    on_b: set[str] = set()
    a.rooms.set_behaviour(lambda room_id: Guarded(on_a), prefix="vip:")
    b.rooms.set_behaviour(lambda room_id: Guarded(on_b), prefix="vip:")
    return a, b, on_a, on_b


def _stored_member(redis_server: RedisServer, room: str, sid: str) -> bool:
    """Whether Redis holds ``sid`` as a member of ``room`` (the room's set or the session's record)."""
    admin = redis_server.admin()
    return bool(admin.sismember(f"wscore:r:{room}:members", sid)) or bool(
        admin.hexists(f"wscore:s:{{{sid}}}:rooms", room))


def test_a_join_refused_by_on_join_answers_the_request_and_stores_nothing(
        guarded: tuple[WsServer, WsServer, set[str], set[str]], raw: Callable[..., RawClient],
        redis_server: RedisServer) -> None:
    a, b, on_a, on_b = guarded
    member = Peer(raw(b.url + "?token=kim"))
    on_b.add(member.session_id)
    member.join("vip:r")
    assert member.next("welcome")["p"] == 1
    outsider = Peer(raw(a.url + "?token=lee"))
    heard: list[str] = []

    def ask(event: str, payload: Any, c: str) -> dict[str, Any]:
        reply = outsider.client.request(event, payload, c=c)
        heard.extend(f["e"] for f in outsider.client.skipped if f["e"] != "sys.ack")
        return reply

    refused = ask("join", {"room": "vip:r"}, c="j1")
    assert refused["e"] == "sys.error" and refused["p"]["code"] == 1009
    assert refused["p"]["message"] == "not on the room's list"
    # Node A's actor for the room (and its subscription) goes with the refused joiner.
    wait_for(lambda: a.stats()["rooms"] == 0, what="node A's room actor stopped")
    # Its next reply is stored after anything the join could have written: nothing was.
    assert ask("echo", 1, c="e1")["p"] == 1
    assert not _stored_member(redis_server, "vip:r", outsider.session_id)
    assert b.rooms.members("vip:r") == [member.session_id]
    assert a.rooms.members("vip:r") == [member.session_id]

    # A session node A admits joins next to it; the room's messages reach both
    # members and never the refused session (on node A, ahead of its next reply).
    insider = Peer(raw(a.url + "?token=max"))
    on_a.add(insider.session_id)
    insider.join("vip:r")
    assert insider.next("welcome")["p"] == 1  # on_join ran on node A: its members only
    member.say("vip:r", "members only")
    assert insider.said(1) == ["members only"] and member.said(1) == ["members only"]
    assert ask("echo", 2, c="e2")["p"] == 2
    assert heard == []  # no room.joining, welcome or said, ever
    assert sorted(b.rooms.members("vip:r")) == sorted([member.session_id, insider.session_id])


def test_a_resumed_sessions_room_refused_on_the_new_node_is_left_in_redis(
        guarded: tuple[WsServer, WsServer, set[str], set[str]], raw: Callable[..., RawClient],
        redis_server: RedisServer) -> None:
    a, b, _on_a, on_b = guarded
    first = raw(b.url + "?token=ned")
    peer = Peer(first)
    on_b.add(peer.session_id)  # node B admits it; node A does not
    peer.join("vip:s")
    last = peer.next("welcome")["s"]
    assert _stored_member(redis_server, "vip:s", peer.session_id)
    first.cut()
    # Resumed on node A, the session rejoins its rooms there: node A's on_join refuses
    # (nobody waits on that join), so the session leaves the room, in Redis too.
    resumed = raw(a.url + f"?token=ned&session={peer.session_id}&last_seq={last}")
    assert resumed.recv()["p"]["resumed"] is True
    wait_for(lambda: not _stored_member(redis_server, "vip:s", peer.session_id),
             what="the refused room left in Redis")
    assert a.rooms.members("vip:s") == []
    wait_for(lambda: a.stats()["rooms"] == 0, what="node A's room actor stopped")
