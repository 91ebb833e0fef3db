"""Limits (SPEC §4): each has a clear error or close code, and nothing is lost silently."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import websocket
from wshelpers import RawClient, wait_for

from wscore import WsContext, WsServer
from wscore.actors.messages import Stats
from wscore.actors.router import FindRoom


def app(server: WsServer) -> None:
    @server.on("echo")
    def echo(ctx: WsContext) -> Any:
        return ctx.payload

    @server.on("join")
    def join(ctx: WsContext) -> Any:
        server.rooms.join("r", ctx.session)
        return True

    @server.on("shout")
    def shout(ctx: WsContext) -> Any:
        ctx.broadcast_to_room("r", "heard", ctx.payload)
        return None


def test_burst_over_the_rate_limit_is_all_accounted_for(make_server: Any, clients: Any) -> None:
    server = make_server(setup=app, rate_limit=10, rate_burst=20, rate_abuse_close_after=10_000)
    c = clients(server.url)
    c.recv()
    for i in range(200):
        c.send({"e": "echo", "p": i, "c": i, "s": i + 1})
    answers: dict[int, str] = {}
    while len(answers) < 200:
        frame = c.recv()
        if frame["e"] == "sys.ack":
            continue
        assert frame["c"] not in answers
        answers[frame["c"]] = "ack" if frame["e"] == "ack" else frame["p"]["name"]
    assert set(answers.values()) == {"ack", "rateLimitExceeded"}
    assert 20 <= list(answers.values()).count("ack") < 200
    # A refused frame used up its s: sending it again is a duplicate, not a second chance.
    c.send({"e": "echo", "p": "again", "c": "again", "s": 200})
    assert c.recv_until(lambda f: f["e"] == "sys.ack")["p"] == {"s": 200}
    # sys.* frames count too: see tests/wscore/test_hostile_frames.py


def test_sustained_abuse_closes_with_4010(make_server: Any, clients: Any) -> None:
    server = make_server(setup=app, rate_limit=1, rate_burst=1, rate_abuse_close_after=30)
    c = clients(server.url)
    c.recv()
    for i in range(100):
        try:
            c.send({"e": "echo", "p": i})
        except (BrokenPipeError, ConnectionResetError, websocket.WebSocketException):
            break
    assert c.recv_close() == 4010


def test_oversized_frame_closes_1009_others_unaffected(make_server: Any, clients: Any) -> None:
    server = make_server(setup=app, max_message_bytes=1000)
    big, other = clients(server.url), clients(server.url)
    big.recv(), other.recv()
    big.send({"e": "echo", "p": "x" * 2000})
    assert big.recv_close() == 1009
    assert other.request("echo", "still fine")["p"] == "still fine"


def test_max_connections_refuses_with_503(make_server: Any, clients: Any) -> None:
    server = make_server(max_connections=2)
    a, b = clients(server.url), clients(server.url)
    a.recv(), b.recv()
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        clients(server.url)
    assert info.value.status_code == 503
    a.close()
    wait_for(lambda: server.stats()["connections"] == 1, what="a slot to free up")
    assert clients(server.url).recv()["e"] == "sys.connected"


def test_a_handshake_that_never_completes_is_cut(make_server: Any) -> None:
    server = make_server(handshake_timeout=0.3)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # … and never the rest (slowloris)
    sock.settimeout(10)
    received = b""
    while chunk := sock.recv(1024):  # at most an error status, then the server hangs up
        received += chunk
    assert received == b"" or received.startswith(b"HTTP/1.1 4")
    sock.close()


def test_a_never_reading_client_is_cut_and_its_session_bounded(make_server: Any, clients: Any
                                                              ) -> None:
    server = make_server(setup=app, max_queued_frames=20, max_buffered_messages=100)
    slow = RawClient(server.url, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    sid = slow.recv()["p"]["sessionId"]
    assert slow.request("join", None, c="j")["e"] == "ack"
    talkers = [clients(server.url) for _ in range(5)]
    for t in talkers:
        t.recv()
    payload = "y" * 8192
    for i in range(1200):  # ~10 MB at a client that reads nothing: more than kernel buffers hold
        talkers[i % 5].send({"e": "shout", "p": {"i": i, "pad": payload}})
    wait_for(lambda: server.stats()["connections"] == 5, what="the slow consumer to be cut")
    for t in talkers:  # the others are unaffected
        assert t.request("echo", "ok")["p"] == "ok"
    slow.cut()
    # Its replay buffer overflowed (1200 unacknowledged frames > 100): resuming is
    # impossible and says so with 1006 rather than skipping frames.
    again = clients(f"{server.url}?session={sid}&last_seq=1")
    assert again.recv()["p"]["code"] == 1006
    assert again.recv()["e"] == "sys.connected"


def test_a_slow_consumer_within_the_buffer_resumes_losslessly(make_server: Any, clients: Any
                                                              ) -> None:
    server = make_server(setup=app, max_queued_frames=20, max_buffered_messages=2000,
                         max_buffered_bytes=64 << 20)
    slow = RawClient(server.url, sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    sid = slow.recv()["p"]["sessionId"]
    assert slow.request("join", None, c="j")["s"] == 1
    talker = clients(server.url)
    talker.recv()
    for i in range(1200):
        talker.send({"e": "shout", "p": {"i": i, "pad": "z" * 8192}})
    wait_for(lambda: server.stats()["connections"] == 1, what="the slow consumer to be cut")
    slow.cut()
    # Resume once the room has handed every shout to the session, so that the
    # replay holds all of them (live frames piling up behind a 10 MB replay would
    # make the resumed connection a slow consumer too, with max_queued_frames=20).
    room = server._router.ask(FindRoom("r"), timeout=5)
    wait_for(lambda: room.ask(Stats(), timeout=5)["delivered"] == 1200, what="all shouts delivered")
    again = clients(f"{server.url}?session={sid}&last_seq=1")
    assert again.recv()["p"]["resumed"] is True
    got = [again.recv() for _ in range(1200)]
    assert [f["p"]["i"] for f in got] == list(range(1200))
    assert [f["s"] for f in got] == list(range(2, 1202))
    assert sum(f["e"] == "heard" for f in got) == 1200
