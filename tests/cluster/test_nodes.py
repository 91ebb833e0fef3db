"""Two (or more) WsServer nodes sharing one real redis-server, in this test process.

Raw third-party clients (websocket-client) and the bundled WsClient; no mocks.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from clusterapp import build
from redisproc import RedisServer
from wshelpers import RawClient, wait_for

from wscore import WsServer, WsServerConfig
from wscore.errors import ConfigError

Node = Callable[..., WsServer]  # the ``make_node`` fixture (conftest.py)


def connected(client: RawClient) -> dict[str, Any]:
    frame = client.recv()
    assert frame["e"] == "sys.connected", frame
    return frame["p"]  # type: ignore[no-any-return]


def numbered(frames: list[dict[str, Any]]) -> list[int]:
    return [f["s"] for f in frames if "s" in f]


def healthz(server: WsServer) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{server.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_healthz_names_the_node_and_redis(make_node: Node) -> None:
    node = make_node(node_id="node-a")
    status, body = healthz(node)
    assert status == 200 and body["node"] == "node-a" and body["redis"] == "ok"


def test_node_id_is_made_unique_per_server_when_not_given(make_node: Node) -> None:
    a, b = make_node(), make_node()
    assert a.node_id and b.node_id and a.node_id != b.node_id


def test_unusable_redis_at_start_is_a_config_error() -> None:
    from redisproc import free_port

    server = build(WsServerConfig.dev(port=0, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(ConfigError, match="Redis"):
        server.start()


def test_bad_redis_url_and_node_id_are_refused() -> None:
    with pytest.raises(ConfigError):
        WsServerConfig.dev(redis_url="http://x")
    with pytest.raises(ConfigError):
        WsServerConfig.dev(node_id="has space")


def test_resume_on_another_node_gets_every_missed_frame_once_with_data(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    a, b = make_node(), make_node()
    c = raw(a.url + "?token=alice")
    info = connected(c)
    sid = info["sessionId"]
    assert c.request("count", c="1")["p"] == 1
    assert c.request("count", c="2")["p"] == 2
    seen = c.request("echo", "x", c="3")["s"]
    c.send({"e": "sys.ack", "p": {"s": seen}})
    # Frames the client never reads: sent after the last frame it saw.
    for i in range(5):
        c.send({"e": "echo", "p": i, "c": f"m{i}"})
    wait_for(lambda: _log_last(redis_server, sid) >= seen + 5, what="5 replies stored")
    c.cut()
    d = raw(b.url + f"?token=alice&session={sid}&last_seq={seen}")
    info = connected(d)
    assert info["resumed"] is True and info["lastSeq"] == seen + 5
    replay = [d.recv() for _ in range(5)]
    assert numbered(replay) == list(range(seen + 1, seen + 6))
    assert [f["p"] for f in replay] == [0, 1, 2, 3, 4]
    # Its data came along; numbering goes on with no s reused.
    reply = d.request("count", c="4")
    assert reply["p"] == 3 and reply["s"] == seen + 6


def test_a_numbered_sys_error_is_stored_before_it_is_sent_and_replayed_elsewhere(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    # The protocol core numbers a sys.error itself (1001, 1008 …): it must reach the log
    # like any frame, or the next append finds a gap and the session is dropped (1012).
    a, b = make_node(), make_node()
    c = raw(a.url + "?token=olga")
    sid = connected(c)["sessionId"]
    unknown = c.request("no.such.handler", 1, c="1")
    assert unknown["e"] == "sys.error" and unknown["p"]["code"] == 1008 and unknown["s"] == 1
    c.send_raw("not json")
    garbage = c.recv()
    assert garbage["e"] == "sys.error" and garbage["p"]["code"] == 1001 and garbage["s"] == 2
    assert c.request("echo", "still here", c="2")["s"] == 3
    assert _log_last(redis_server, sid) == 3  # sent only once stored
    c.cut()
    d = raw(b.url + f"?token=olga&session={sid}&last_seq=0")
    assert connected(d)["resumed"] is True
    replay = [d.recv() for _ in range(3)]
    assert [(f["s"], f["e"], f.get("c")) for f in replay] == [
        (1, "sys.error", "1"), (2, "sys.error", None), (3, "ack", "2")]
    assert d.request("echo", "on b", c="3")["s"] == 4


def _log_last(redis_server: RedisServer, sid: str) -> int:
    value = redis_server.admin().hget(f"wscore:s:{{{sid}}}:m", "last")
    return int(value) if value is not None else 0


def test_the_old_owner_is_closed_with_4000_and_fenced(
        make_node: Node, raw: Callable[..., RawClient]) -> None:
    a, b = make_node(), make_node()
    c = raw(a.url + "?token=bob")
    sid = connected(c)["sessionId"]
    last = c.request("echo", 1, c="1")["s"]
    d = raw(b.url + f"?token=bob&session={sid}&last_seq={last}")
    assert connected(d)["resumed"] is True
    assert c.recv_close() == 4000
    # The new owner serves it; the old node holds nothing of it any more.
    assert d.request("echo", 2, c="2")["s"] == last + 1
    wait_for(lambda: a.stats()["sessions"] == 0, what="old node dropped the session")


def test_an_old_owner_cannot_write_after_a_claim(make_node: Node, raw: Callable[..., RawClient],
                                                 redis_server: RedisServer) -> None:
    from wscore.cluster import Generation, RedisWriter, SessionLog

    a = make_node()
    c = raw(a.url + "?token=carol")
    sid = connected(c)["sessionId"]
    last = c.request("echo", 1, c="1")["s"]
    # Another node claims it behind this node's back (the hand-over message is never sent).
    writer = RedisWriter(redis_server.url)
    writer.start()
    try:
        gen = Generation(writer)
        gen.establish()
        log = SessionLog(writer, gen)
        claim = log.claim(sid, "intruder")
        # The old owner's next append is refused by the fence: it sends nothing, closes 4000.
        c.send({"e": "echo", "p": 2, "c": "2"})
        assert c.recv_close() == 4000
        record = log.read(sid)
        assert record is not None and record.last_seq == last and record.epoch == claim.epoch
    finally:
        writer.stop()


def test_members_on_two_nodes_see_one_room_order(make_node: Node,
                                                 raw: Callable[..., RawClient]) -> None:
    a, b = make_node(), make_node()
    clients = [raw(a.url + "?token=u0"), raw(b.url + "?token=u1"), raw(a.url + "?token=u2"),
               raw(b.url + "?token=u3")]
    for client in clients:
        connected(client)
        assert client.request("join", {"room": "lobby"}, c="j")["p"] is True
    assert clients[0].request("members", {"room": "lobby"}, c="m")["p"] == 4
    per_sender = 10
    for i in range(per_sender):
        for n, client in enumerate(clients):
            client.send({"e": "say", "p": {"room": "lobby", "from": n, "i": i}})
    orders = []
    for client in clients:
        got: list[tuple[int, int]] = []
        while len(got) < per_sender * len(clients):
            frame = client.recv()
            if frame["e"] == "said":
                got.append((frame["p"]["from"], frame["p"]["i"]))
        orders.append(got)
    assert all(order == orders[0] for order in orders)
    assert sorted(orders[0]) == sorted((n, i) for i in range(per_sender) for n in range(4))


def test_send_to_user_reaches_a_user_on_the_other_node(make_node: Node,
                                                      raw: Callable[..., RawClient]) -> None:
    a, b = make_node(), make_node()
    dave = raw(b.url + "?token=dave")
    connected(dave)
    erin = raw(a.url + "?token=erin")
    connected(erin)
    assert erin.request("tell_user", {"user": "dave", "x": 1}, c="t")["p"] is True
    told = dave.recv_until(lambda f: f["e"] == "told")
    assert told["p"]["x"] == 1 and "s" in told


def test_sigterm_like_stop_closes_with_1012_and_the_session_resumes_elsewhere(
        make_node: Node, raw: Callable[..., RawClient]) -> None:
    a, b = make_node(), make_node()
    c = raw(a.url + "?token=frank")
    sid = connected(c)["sessionId"]
    assert c.request("count", c="1")["p"] == 1
    last = c.request("echo", 1, c="2")["s"]
    a.stop()
    assert c.recv_close() == 1012
    d = raw(b.url + f"?token=frank&session={sid}&last_seq={last}")
    assert connected(d)["resumed"] is True
    assert d.request("count", c="3")["p"] == 2


def test_flushall_makes_resumes_answer_1006_not_a_gap(make_node: Node, raw: Callable[..., RawClient],
                                                     redis_server: RedisServer) -> None:
    a, b = make_node(), make_node()
    c = raw(a.url + "?token=gina")
    sid = connected(c)["sessionId"]
    last = c.request("echo", 1, c="1")["s"]
    c.cut()
    redis_server.flushall()
    d = raw(b.url + f"?token=gina&session={sid}&last_seq={last}")
    err = d.recv()
    assert err["e"] == "sys.error" and err["p"]["code"] == 1006
    info = connected(d)
    assert info["resumed"] is False and info["sessionId"] != sid
    # The node works on with a new generation.
    assert d.request("echo", 2, c="2")["p"] == 2


def test_wrong_user_gets_1004_and_the_session_stays(make_node: Node,
                                                   raw: Callable[..., RawClient]) -> None:
    a, b = make_node(), make_node()
    c = raw(a.url + "?token=hank")
    sid = connected(c)["sessionId"]
    last = c.request("echo", 1, c="1")["s"]
    d = raw(b.url + f"?token=mallory&session={sid}&last_seq={last}")
    err = d.recv()
    assert err["e"] == "sys.error" and err["p"]["code"] == 1004
    assert c.request("echo", 2, c="2")["s"] == last + 1


def test_the_bundled_client_resumes_on_the_node_that_replaced_a_stopped_one(
        redis_server: RedisServer) -> None:
    from redisproc import free_port

    from wscore.client import WsClient, WsClientConfig

    port = free_port()

    def node() -> WsServer:
        server = build(WsServerConfig.dev(host="127.0.0.1", port=port, redis_url=redis_server.url,
                                          session_ttl=60.0, shutdown_timeout=2.0))
        server.start()
        return server

    first = node()
    client = WsClient(first.url, "lena", config=WsClientConfig(backoff_base=0.02, backoff_cap=0.2,
                                                               open_timeout=2.0))
    resumed: list[Any] = []
    lost: list[Any] = []
    client.on_resume(resumed.append)
    client.on_session_lost(lost.append)
    second: WsServer | None = None
    try:
        client.connect(timeout=10)
        sid = client.session_id
        assert client.request("count", timeout=10) == 1
        first.stop()  # closes with 1012: the client reconnects at once
        second = node()  # the same address, another node (a restart)
        wait_for(lambda: bool(resumed), timeout=20, what="the client resumed")
        assert client.session_id == sid and not lost
        assert client.request("count", timeout=10) == 2  # its data came along
    finally:
        client.close()
        if second is not None:
            second.stop()


def test_a_room_gap_that_cannot_be_filled_ends_resumability(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    a, b = make_node(), make_node()
    reader = raw(a.url + "?token=mia")
    sid = connected(reader)["sessionId"]
    assert reader.request("join", {"room": "r"}, c="j")["p"] is True
    last = reader.request("echo", 0, c="e")["s"]
    reader.cut()
    a.stop()  # keeps the session in Redis (1012)
    sender = raw(b.url + "?token=ned")
    connected(sender)
    for i in range(5):
        assert sender.request("say", {"room": "r", "i": i}, c=f"s{i}")["p"] is True
    # The room's history no longer holds what the reader missed.
    redis_server.admin().xtrim("wscore:r:r:x", maxlen=0)
    back = raw(b.url + f"?token=mia&session={sid}&last_seq={last}")
    err = back.recv()
    assert err["e"] == "sys.error" and err["p"]["code"] == 1006
    assert connected(back)["resumed"] is False


def test_send_to_session_and_broadcast_span_nodes(make_node: Node,
                                                  raw: Callable[..., RawClient]) -> None:
    a, b = make_node(), make_node()
    on_b = raw(b.url + "?token=olga")
    sid = connected(on_b)["sessionId"]
    on_a = raw(a.url + "?token=pete")
    connected(on_a)
    a.send_to_session(sid, "direct", {"n": 1})
    got = on_b.recv_until(lambda f: f["e"] == "direct")
    assert got["p"] == {"n": 1} and "s" in got
    a.broadcast("everyone", {"n": 2})
    for client in (on_a, on_b):
        assert client.recv_until(lambda f: f["e"] == "everyone")["p"] == {"n": 2}


def test_a_broadcast_while_no_node_holds_a_session_reaches_it_on_resume(
        make_node: Node, raw: Callable[..., RawClient]) -> None:
    a, b = make_node(), make_node()
    c = raw(a.url + "?token=rosa")
    sid = connected(c)["sessionId"]
    a.broadcast("news", {"n": 0})
    assert c.recv_until(lambda f: f["e"] == "news")["p"] == {"n": 0}
    last = c.request("echo", 0, c="e")["s"]
    c.cut()
    a.stop()  # 1012: the session stays in Redis, held by no node
    for n in (1, 2, 3):
        b.broadcast("news", {"n": n})
    back = raw(b.url + f"?token=rosa&session={sid}&last_seq={last}")
    assert connected(back)["resumed"] is True
    done = back.request("echo", "after", c="after")
    got = [f for f in back.skipped if f["e"] == "news"]
    # In order, once each, numbered on from what the client had, before what came next.
    assert [f["p"]["n"] for f in got] == [1, 2, 3]
    assert [f["s"] for f in got] == [last + 1, last + 2, last + 3]
    assert done["s"] == last + 4


def test_broadcasts_from_every_node_keep_one_order_everywhere(
        make_node: Node, raw: Callable[..., RawClient]) -> None:
    a, b = make_node(), make_node()
    on_a, on_b = raw(a.url + "?token=sam"), raw(b.url + "?token=tia")
    connected(on_a)
    connected(on_b)
    sent = []
    for i in range(20):
        node = (a, b)[i % 2]
        node.broadcast("news", {"from": "ab"[i % 2], "i": i})
        sent.append(i)
    orders = []
    for client in (on_a, on_b):
        seen = []
        while len(seen) < len(sent):
            seen.append(client.recv_until(lambda f: f["e"] == "news")["p"]["i"])
        orders.append(seen)
    assert orders[0] == orders[1] and sorted(orders[0]) == sent


def test_the_everyone_room_is_the_servers_not_the_apps(
        make_node: Node, raw: Callable[..., RawClient]) -> None:
    from wscore import WsError
    from wscore.protocol.codes import EVERYONE_ROOM, ErrorCode

    a = make_node(max_rooms_per_session=1)
    c = raw(a.url + "?token=uma")
    connected(c)
    # It counts against no room cap: the one room this session may join is its own choice.
    assert c.request("join", {"room": "lobby"}, c="j")["p"] is True
    full = c.request("join", {"room": "second"}, c="j2")
    assert full["e"] == "sys.error" and full["p"]["code"] == ErrorCode.RATE_LIMIT_EXCEEDED
    wait_for(lambda: a.stats()["rooms"] == 1, what="the lobby's actor")
    assert a.stats()["rooms"] == 1  # the app's rooms only: the everyone room is not counted
    # A client cannot name it: the app's handler passes the id on, the client gets 1009.
    for event in ("join", "say", "leave"):
        err = c.request(event, {"room": EVERYONE_ROOM}, c=event)
        assert err["e"] == "sys.error" and err["p"]["code"] == ErrorCode.VALIDATION_FAILED, err
    with pytest.raises(WsError):
        a.rooms.broadcast(EVERYONE_ROOM, "x")
    with pytest.raises(WsError):
        a.rooms.members("sys.other")
    a.broadcast("news", 1)
    assert c.recv_until(lambda f: f["e"] == "news")["p"] == 1


def test_a_node_keeps_the_record_of_a_silent_room_with_members_alive(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    a = make_node(session_ttl=1.5)  # lease renewals every 0.5 s
    assert a._cluster is not None
    a._cluster.rooms_keep_alive_interval = 0.0  # room_ttl / 4 in production: hours
    c = raw(a.url + "?token=vera")
    connected(c)
    assert c.request("join", {"room": "quiet"}, c="j")["p"] is True
    assert c.request("say", {"room": "quiet", "n": 1}, c="s")["p"] is True
    admin = redis_server.admin()
    keys = ("wscore:r:quiet:m", "wscore:r:quiet:x")
    for key in keys:
        admin.expire(key, 5)  # the room's last message was nearly room_ttl ago
    wait_for(lambda: all(admin.ttl(key) > 5 for key in keys), what="the room's TTL refreshed")


def test_a_stale_local_copy_is_not_resumed_after_a_claim_elsewhere(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    from wscore.cluster import Generation, RedisWriter, SessionLog

    a = make_node()
    c = raw(a.url + "?token=quinn")
    sid = connected(c)["sessionId"]
    assert c.request("count", c="1")["p"] == 1
    last = c.request("echo", 1, c="2")["s"]
    writer = RedisWriter(redis_server.url)
    writer.start()
    try:
        gen = Generation(writer)
        gen.establish()
        SessionLog(writer, gen).claim(sid, "elsewhere")  # no hand-over message reaches node A
    finally:
        writer.stop()
    # Resuming on node A again: it finds its copy stale, drops it and claims from Redis.
    d = raw(a.url + f"?token=quinn&session={sid}&last_seq={last}")
    assert connected(d)["resumed"] is True
    assert c.recv_close() == 4000
    reply = d.request("count", c="3")
    assert reply["p"] == 2 and reply["s"] == last + 1


def test_room_messages_are_stored_once_and_resume_on_another_node(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    # A broadcast is in the room stream once; each member's log gets a run entry, not a
    # copy (docs/scaling.md "Run entries"), and a resume elsewhere rebuilds the frames.
    a, b = make_node(), make_node()
    members = [raw(a.url + f"?token=m{i}") for i in range(5)]
    sids = [connected(m)["sessionId"] for m in members]
    for m in members:
        assert m.request("join", {"room": "lobby"}, c="j")["p"] is True
    sender = raw(b.url + "?token=speaker")
    connected(sender)
    for i in range(40):
        sender.send({"e": "say", "p": {"room": "lobby", "i": i}})
    got = {}
    for m, sid in zip(members, sids, strict=True):
        frames = [m.recv_until(lambda f: f["e"] == "said") for _ in range(40)]
        assert [f["p"]["i"] for f in frames] == list(range(40))
        assert numbered(frames) == list(range(2, 42))  # after the join's reply
        got[sid] = frames
        entries = redis_server.admin().lrange(f"wscore:s:{{{sid}}}:log", 0, -1)
        assert len(entries) == 2 and entries[1].startswith(b"~2:")  # the reply, one run
    # A member drops after the 10th message; its node goes; the room goes on.
    members[0].cut()
    a.stop()
    for i in range(40, 45):
        assert sender.request("say", {"room": "lobby", "i": i}, c=f"s{i}")["p"] is True
    back = raw(b.url + f"?token=m0&session={sids[0]}&last_seq=11")
    info = connected(back)
    assert info["resumed"] is True and info["lastSeq"] == 46
    replay = [back.recv() for _ in range(35)]
    assert numbered(replay) == list(range(12, 47))
    assert [f["p"]["i"] for f in replay] == list(range(10, 45))
    assert replay[:30] == got[sids[0]][10:]  # the same frames, byte for byte as JSON
    # Live messages go on in the same run; an own frame after them closes it.
    assert sender.request("say", {"room": "lobby", "i": 45}, c="s45")["p"] is True
    live = back.recv_until(lambda f: f["e"] == "said")
    assert (live["p"]["i"], live["s"]) == (45, 47)
    assert back.request("echo", "mine", c="e")["s"] == 48
