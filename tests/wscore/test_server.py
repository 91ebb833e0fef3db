"""End to end through real sockets, real actors and a real server (SPEC §2–§4)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import gevent
import gevent.event
import pytest
from wshelpers import RawClient, wait_for

from wscore import WsContext, WsError, WsServer
from wscore.protocol.codes import ErrorCode


def chat_app(server: WsServer) -> None:
    @server.on("room.join", schema={"roomId": lambda v: isinstance(v, str)})
    def join(ctx: WsContext) -> Any:
        server.rooms.join(ctx.payload["roomId"], ctx.session)
        return {"joined": ctx.payload["roomId"], "rooms": sorted(ctx.session.rooms)}

    @server.on("chat.message", schema={"text": lambda v: isinstance(v, str) and v != "",
                                       "roomId": lambda v: isinstance(v, str)})
    def chat(ctx: WsContext) -> Any:
        ctx.broadcast_to_room(ctx.payload["roomId"], "chat.new_message",
                              {"text": ctx.payload["text"], "sender": ctx.user_id or "anon"})
        return {"status": "sent"}

    @server.on("session.set")
    def session_set(ctx: WsContext) -> Any:
        ctx.session.data.update(ctx.payload)
        return {"ok": True}

    @server.on("session.get")
    def session_get(ctx: WsContext) -> Any:
        return {"data": ctx.session.data, "rooms": sorted(ctx.session.rooms)}

    def count(ctx: WsContext) -> Any:
        server.runs = getattr(server, "runs", 0) + 1  # type: ignore[attr-defined]
        return {"runs": server.runs}  # type: ignore[attr-defined]

    server.on("count", count)

    @server.on("boom")
    def boom(ctx: WsContext) -> Any:
        raise RuntimeError("database password is hunter2")

    @server.on("refuse")
    def refuse(ctx: WsContext) -> Any:
        raise WsError(ErrorCode.VALIDATION_FAILED, "no thanks", {"fields": ["x"]})

    @server.on("emit.then.reply")
    def emit_then_reply(ctx: WsContext) -> Any:
        ctx.emit("note", {"n": 1})
        ctx.reply({"done": True})
        return "ignored: already replied"

    server.release = gevent.event.Event()  # type: ignore[attr-defined]

    @server.on("block")
    def block(ctx: WsContext) -> Any:
        server.release.wait()  # type: ignore[attr-defined]
        return "released"


def connected(client: RawClient) -> dict[str, Any]:
    frame = client.recv()
    assert frame["e"] == "sys.connected"
    assert "s" not in frame and frame["v"] == "1.0" and isinstance(frame["t"], int)
    return frame["p"]  # type: ignore[no-any-return]


def test_two_clients_chat_in_a_room(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app)
    a, b = clients(server.url), clients(server.url)
    pa, pb = connected(a), connected(b)
    assert pa["resumed"] is False and pa["lastSeq"] == 0 and pa["v"] == "1.0"
    assert len(pa["sessionId"]) >= 22 and pa["sessionId"] != pb["sessionId"]  # ≥128 bits
    assert a.request("room.join", {"roomId": "r1"}, c="j")["p"] == {"joined": "r1", "rooms": ["r1"]}
    assert b.request("room.join", {"roomId": "r1"}, c="j")["e"] == "ack"
    ack = a.request("chat.message", {"roomId": "r1", "text": "hi"}, c="m1")
    assert ack["e"] == "ack" and ack["p"] == {"status": "sent"} and ack["s"] == 2
    got = b.recv()
    assert got["e"] == "chat.new_message" and got["p"] == {"text": "hi", "sender": "anon"}
    assert got["s"] == 2 and "c" not in got
    # the sender is excluded by default: its next frame is the reply to its next request
    assert a.request("session.get", None, c="g")["e"] == "ack"


def test_errors_leave_the_connection_open(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app)
    a = clients(server.url)
    connected(a)
    err = a.request("chat.message", {"roomId": "r1", "text": ""}, c="1")
    assert err["e"] == "sys.error" and err["p"]["code"] == 1009
    assert err["p"]["name"] == "validationFailed" and err["p"]["details"]["fields"] == ["text"]
    assert a.request("nope", None, c="2")["p"]["code"] == 1008
    a.send_raw("not json")
    assert a.recv()["p"]["code"] == 1001
    a.send_raw('{"e":"x"}')
    assert a.recv()["p"]["details"]["field"] == "v"
    a.send_raw('{"v":"7.0","e":"x","c":"v7"}')
    frame = a.recv()
    assert frame["p"]["code"] == 1001 and frame["c"] == "v7"
    a.ws.send_binary(b"\x00\x01")
    assert a.recv()["p"]["code"] == 1001
    boom = a.request("boom", None, c="3")
    assert boom["p"] == {"code": 1011, "name": "internalError", "message": "internal server error"}
    assert "hunter2" not in json.dumps(boom)
    refused = a.request("refuse", None, c="4")
    assert refused["p"]["code"] == 1009 and refused["p"]["message"] == "no thanks"
    assert a.request("sys.whatever", None, c="5")["p"]["code"] == 1001
    assert a.request("count", None, c="6")["e"] == "ack"  # still serving


def test_replies_and_emits_keep_their_order(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app)
    a = clients(server.url)
    connected(a)
    a.send({"e": "emit.then.reply", "c": "x"})
    note, ack = a.recv(), a.recv()
    assert (note["e"], note["s"]) == ("note", 1)
    assert (ack["e"], ack["c"], ack["p"], ack["s"]) == ("ack", "x", {"done": True}, 2)
    # without c and with a None return value there is no ack
    a.send({"e": "session.set", "p": {"k": 1}})
    assert a.request("session.get", None, c="g")["s"] == 4


def test_cut_client_resumes_with_data_rooms_and_missed_messages(make_server: Any, clients: Any
                                                                ) -> None:
    server = make_server(setup=chat_app)
    a, b = clients(server.url), clients(server.url)
    session_id = connected(a)["sessionId"]
    connected(b)
    a.request("room.join", {"roomId": "r"}, c="j")
    a.request("session.set", {"nick": "ann"}, c="d")
    b.request("room.join", {"roomId": "r"}, c="j")
    last_seen = a.request("session.get", None, c="g")["s"]
    a.cut()
    wait_for(lambda: server.stats()["connections"] == 1, what="server to see the cut")
    for i in range(30):
        assert b.request("chat.message", {"roomId": "r", "text": f"m{i}"}, c=f"m{i}")["e"] == "ack"
    a2 = clients(f"{server.url}?session={session_id}&last_seq={last_seen}")
    hello = connected(a2)
    assert hello == {**hello, "sessionId": session_id, "resumed": True, "lastSeq": last_seen + 30}
    missed = [a2.recv() for _ in range(30)]
    assert [m["p"]["text"] for m in missed] == [f"m{i}" for i in range(30)]
    assert [m["s"] for m in missed] == list(range(last_seen + 1, last_seen + 31))
    state = a2.request("session.get", None, c="g2")
    assert state["p"] == {"data": {"nick": "ann"}, "rooms": ["r"]}
    assert state["s"] == last_seen + 31  # nothing was delivered twice before it


def test_resume_replays_only_what_follows_last_seq(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app)
    a = clients(server.url)
    sid = connected(a)["sessionId"]
    for i in range(5):
        a.request("count", None, c=f"c{i}")
    a.cut()
    a2 = clients(f"{server.url}?session={sid}&last_seq=3")
    connected(a2)
    assert [a2.recv()["s"] for _ in range(2)] == [4, 5]
    a2.send({"e": "sys.ack", "p": {"s": 5}})
    assert a2.request("count", None, c="after")["s"] == 6


def test_the_same_numbered_frame_runs_once(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app)
    a = clients(server.url)
    sid = connected(a)["sessionId"]
    a.send({"e": "count", "c": "once", "s": 1})
    reply = a.recv_until(lambda f: f["e"] == "ack")
    assert reply["p"] == {"runs": 1} and reply["c"] == "once"
    assert a.recv_until(lambda f: f["e"] == "sys.ack")["p"] == {"s": 1}
    a.send({"e": "count", "c": "once", "s": 1})  # the same frame again
    assert a.recv()["e"] == "sys.ack"
    a.cut()
    a2 = clients(f"{server.url}?session={sid}&last_seq=0")
    connected(a2)
    assert a2.recv()["p"] == {"runs": 1}  # the reply arrives by replay …
    resumed_ack = a2.recv()  # the resume tells the client which of its frames already ran
    assert resumed_ack["e"] == "sys.ack" and resumed_ack["p"] == {"s": 1}
    a2.send({"e": "count", "c": "once", "s": 1})  # … and re-sending does not run it again
    a2.send({"e": "count", "c": "next", "s": 2})
    assert a2.recv_until(lambda f: f.get("c") == "next")["p"] == {"runs": 2}
    assert server.runs == 2


def test_expired_session_answers_1006_and_left_its_rooms(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app, session_ttl=0.2)
    a = clients(server.url)
    sid = connected(a)["sessionId"]
    a.request("room.join", {"roomId": "gone"}, c="j")
    assert len(server.rooms.members("gone")) == 1
    a.cut()
    wait_for(lambda: server.stats()["sessions"] == 0, what="the session to expire")
    assert server.rooms.members("gone") == []
    a2 = clients(f"{server.url}?session={sid}&last_seq=1")
    err = a2.recv()
    assert err["e"] == "sys.error" and err["p"]["code"] == 1006 and "s" not in err
    hello = connected(a2)
    assert hello["resumed"] is False and hello["sessionId"] != sid
    assert a2.request("session.get", None, c="g")["p"] == {"data": {}, "rooms": []}


def test_unknown_session_answers_1006(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app)
    a = clients(f"{server.url}?session=not-a-real-session&last_seq=4")
    assert a.recv()["p"]["name"] == "sessionNotFound"
    assert connected(a)["resumed"] is False


def test_takeover_closes_the_first_connection_with_4000(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app)
    a = clients(server.url)
    sid = connected(a)["sessionId"]
    a.request("count", None, c="1")
    b = clients(f"{server.url}?session={sid}&last_seq=1")
    assert connected(b)["resumed"] is True
    assert a.recv_close() == 4000
    assert b.request("count", None, c="2")["p"] == {"runs": 2}


def test_slow_handler_does_not_delay_other_sessions(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app)
    slow, fast = clients(server.url), clients(server.url)
    connected(slow), connected(fast)
    slow.send({"e": "block", "c": "zz"})
    for i in range(20):  # would hang if the blocked handler held up the server
        assert fast.request("count", None, c=str(i))["e"] == "ack"
    server.release.set()
    assert slow.recv()["p"] == "released"


def test_server_pushes(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app)
    a, b = clients(server.url), clients(server.url)
    sid = connected(a)["sessionId"]
    connected(b)
    server.send_to_session(sid, "direct", {"x": 1})
    assert a.recv()["e"] == "direct"
    server.broadcast("all", 2)
    assert a.recv()["p"] == 2 and b.recv()["p"] == 2
    b.request("room.join", {"roomId": "z"}, c="j")
    server.rooms.broadcast("z", "roomcast", 3)
    assert b.recv()["e"] == "roomcast"
    (member,) = server.rooms.members("z")  # leave by session id, from server code
    server.rooms.leave("z", member)
    wait_for(lambda: server.rooms.members("z") == [], what="leave")
    assert b.request("session.get", None, c="g")["p"]["rooms"] == []


def test_heartbeat_pings_and_drops_silent_peers(make_server: Any) -> None:
    server = make_server(ping_interval=0.05, ping_timeout=0.3)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    data = b""
    while b"\x89" not in data.partition(b"\r\n\r\n")[2]:  # a ping frame (FIN|opcode 9)
        chunk = sock.recv(4096)
        assert chunk, "server closed before pinging"
        data += chunk
    # never answer: the server must drop us after ping_timeout
    wait_for(lambda: server.stats()["connections"] == 0, what="silent peer dropped")
    wait_for(lambda: sock.recv(4096) == b"", what="socket closed")
    sock.close()


def test_sys_ping_gets_an_unnumbered_pong(make_server: Any, clients: Any) -> None:
    server = make_server()
    a = clients(server.url)
    connected(a)
    a.send({"e": "sys.ping", "c": "p", "p": {"x": 1}})
    pong = a.recv()
    assert pong["e"] == "sys.pong" and pong["c"] == "p" and "s" not in pong


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


def test_healthz_and_cors(make_server: Any, clients: Any) -> None:
    server = make_server(cors_headers={"Access-Control-Allow-Origin": "*"})
    a = clients(server.url)
    connected(a)
    status, headers, body = http_get(f"http://127.0.0.1:{server.port}/healthz")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    assert body["status"] == "ok" and body["connections"] == 1 and body["sessions"] == 1
    assert body["rooms"] == 0
    assert http_get(f"http://127.0.0.1:{server.port}/nope")[0] == 404


def test_allowed_origins_are_checked_on_upgrade(make_server: Any, clients: Any) -> None:
    server = make_server(allowed_origins=["https://good.example"])
    ok = clients(server.url, origin="https://good.example")
    connected(ok)
    with pytest.raises(Exception, match="403"):
        clients(server.url, origin="https://evil.example")


def test_stop_closes_connections_with_going_away(make_server: Any, clients: Any) -> None:
    server = make_server()
    a = clients(server.url)
    connected(a)
    gevent.spawn(server.stop)
    assert a.recv_close() == 1001
    wait_for(lambda: server._state == "stopped", what="stop")


def test_a_stale_attempt_cannot_take_over_a_newer_connection(make_server: Any, clients: Any
                                                             ) -> None:
    server = make_server(setup=chat_app)
    first = clients(f"{server.url}?client=c1&attempt=1")
    sid = connected(first)["sessionId"]
    first.request("count", None, c="1")
    newer = clients(f"{server.url}?session={sid}&last_seq=1&client=c1&attempt=3")
    assert connected(newer)["resumed"] is True
    assert first.recv_close() == 4000  # a newer attempt takes over
    stale = clients(f"{server.url}?session={sid}&last_seq=0&client=c1&attempt=2")
    assert stale.recv_close() == 4000  # the abandoned attempt is turned away …
    assert newer.request("count", None, c="2")["p"] == {"runs": 2}  # … the live one untouched
    other_device = clients(f"{server.url}?session={sid}&last_seq=2&client=c2&attempt=1")
    assert connected(other_device)["resumed"] is True  # another instance may still take over
    assert newer.recv_close() == 4000


def test_gc_tuning_makes_full_collections_rarer_unless_disabled(make_server: Any) -> None:
    import gc

    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        make_server(gc_tuning=False)
        assert gc.get_threshold() == (700, 10, 10)
        make_server()
        assert gc.get_threshold() == (700, 10, 1000)
    finally:
        gc.set_threshold(*before)


def test_frames_sent_before_the_101_arrives_are_not_lost(make_server: Any) -> None:
    import os

    from wscore.protocol import frames

    server = make_server(setup=chat_app)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(10)  # a lost frame must fail the test, not hang it
    frame = frames.encode_frame(frames.OP_TEXT, b'{"v":"1.0","e":"count","c":"early"}',
                                mask_key=os.urandom(4))
    # One write: the upgrade request and a frame right behind it (pipelined).
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                 + frame)
    data = b""
    decoder = frames.FrameDecoder(role="client", max_message_bytes=1 << 20)
    texts: list[str] = []
    while len(texts) < 2:
        chunk = sock.recv(65536)
        assert chunk, "closed early"
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            data = head + b"\r\n\r\n"  # keep the header; feed the rest once
            texts += [e.text for e in decoder.feed(rest) if isinstance(e, frames.TextMessage)]
    assert json.loads(texts[0])["e"] == "sys.connected"
    assert json.loads(texts[1])["c"] == "early"
    sock.close()
