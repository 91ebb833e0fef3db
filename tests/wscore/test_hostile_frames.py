"""Hostile input, round 2 (issue #8): what one client frame must never be able to do.

Every test speaks raw WebSocket to a real server on 127.0.0.1:0. Each one
fails against the server before the fix it covers: a lone surrogate that was
broadcast and then poisoned every member's replay; a NaN correlation id that
killed the session actor; frame kinds that skipped the rate bucket; rooms
and replay bytes without a cap; a bad resume that ended the live session it
named; a pipelining client cut as a slow consumer.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from typing import Any

import gevent
import pykka
import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wshelpers import RawClient, wait_for

from wscore import AuthResult, WsAuthenticator, WsContext, WsError, WsServer
from wscore.actors.session import SessionActor
from wscore.protocol.envelope import decode_envelope, encode_envelope

LONE_SURROGATE = '"\\ud800"'


def chat_app(server: WsServer) -> None:
    @server.on("join")
    def join(ctx: WsContext) -> Any:
        server.rooms.join(ctx.payload, ctx.session)
        return {"joined": ctx.payload}

    @server.on("say")
    def say(ctx: WsContext) -> Any:
        ctx.broadcast_to_room(ctx.payload["room"], "said", ctx.payload["text"])
        return {"status": "sent"}

    @server.on("echo")
    def echo(ctx: WsContext) -> Any:
        return ctx.payload

    @server.on("emit")
    def emit(ctx: WsContext) -> Any:
        for i in range(ctx.payload["n"]):
            ctx.emit("item", {"i": i, "pad": "x" * ctx.payload["size"]})
        return None

    @server.on("bad.reply")
    def bad_reply(ctx: WsContext) -> Any:
        return {"text": "\ud800"}  # server-made text UTF-8 cannot carry

    @server.on("bad.broadcast")
    def bad_broadcast(ctx: WsContext) -> Any:
        ctx.broadcast_to_room("lobby", "said", "\udfff")
        return {"status": "sent"}


def joined(clients: Callable[..., RawClient], server: WsServer, room: str = "lobby") -> RawClient:
    c = clients(server.url)
    assert c.recv()["e"] == "sys.connected"
    assert c.request("join", room, c="j")["e"] == "ack"
    return c


def still_serves(c: RawClient, tag: str = "alive") -> None:
    reply = c.request("echo", tag, c=tag)
    assert reply["e"] == "ack" and reply["p"] == tag, reply


# -- invalid JSON values are refused at decode ------------------------------------------------------
@pytest.mark.parametrize("text", [
    '{"v":"1.0","e":"say","c":"x","p":{"room":"lobby","text":' + LONE_SURROGATE + '}}',
    '{"v":"1.0","e":"say","c":"x","p":{"room":"lobby","text":"ok","\\udbff":1}}',   # a key
    '{"v":"1.0","e":"say\\ud800","c":"x","p":{"room":"lobby","text":"ok"}}',       # the event name
    '{"v":"1.0","e":"say","c":"x","p":{"room":"lobby\\udc00","text":"ok"}}',       # a room id
    '{"v":"1.0","e":"say","c":"\\ud800","p":{"room":"lobby","text":"ok"}}',        # the correlation id
    '{"v":"1.0","e":"say","c":"x","p":{"room":"lobby","text":["a",["\\ude00"]]}}',  # nested
])
def test_a_lone_surrogate_anywhere_is_refused_and_never_broadcast(
        make_server: Any, clients: Any, text: str) -> None:
    server = make_server(setup=chat_app)
    sender, member = joined(clients, server), joined(clients, server)
    sender.send_raw(text)
    answer = sender.recv()
    assert answer["e"] == "sys.error" and answer["p"]["code"] == 1001, answer
    still_serves(sender)
    still_serves(member)  # nothing reached the member: its next frame is the echo's ack
    assert member.skipped == []
    # The room still works for everyone, and a valid pair of surrogates is fine.
    sender.send({"e": "say", "c": "ok", "p": {"room": "lobby", "text": "\U0001f600"}})
    assert member.recv_until(lambda f: f["e"] == "said")["p"] == "\U0001f600"


@pytest.mark.parametrize("c", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1" + "0" * 400])
@pytest.mark.parametrize("event", ["echo", "sys.ping"])
def test_a_non_finite_number_is_refused_and_the_session_lives(
        make_server: Any, clients: Any, c: str, event: str) -> None:
    server = make_server(setup=chat_app)
    peer = joined(clients, server)
    peer.send_raw('{"v":"1.0","e":"' + event + '","c":' + c + ',"p":1}')
    answer = peer.recv()
    assert answer["e"] == "sys.error" and answer["p"]["code"] == 1001, answer
    peer.send_raw('{"v":"1.0","e":"echo","c":"p","p":[1, ' + c + ']}')
    assert peer.recv()["p"]["code"] == 1001
    still_serves(peer)
    assert server.stats()["sessions"] == 1


def test_server_made_text_that_cannot_be_sent_is_an_internal_error(
        make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app)
    sender, member = joined(clients, server), joined(clients, server)
    assert sender.request("bad.reply", None, c="r")["p"]["code"] == 1011
    assert sender.request("bad.broadcast", None, c="b")["p"]["code"] == 1011
    still_serves(sender)
    still_serves(member)
    assert member.skipped == []
    with pytest.raises(ValueError):
        server.broadcast("said", "\ud800")
    with pytest.raises(ValueError):
        server.rooms.broadcast("lobby", "said", {"\ud800": 1})


# -- a session actor's failure ends the session cleanly ---------------------------------------------------
def test_a_failing_session_actor_ends_its_session_cleanly(
        make_server: Any, clients: Any, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    original = SessionActor._dispatch

    def process(self: SessionActor, env: Any) -> None:
        if env.event == "boom":
            raise RuntimeError("a bug in the session's own code")
        original(self, env)

    monkeypatch.setattr(SessionActor, "_dispatch", process)
    server = make_server(setup=chat_app, session_ttl=300)
    victim, other = joined(clients, server), joined(clients, server)
    assert server.stats()["sessions"] == 2
    assert len(server.rooms.members("lobby")) == 2
    with caplog.at_level(logging.ERROR, logger="wscore.actors.session"):
        victim.send({"e": "boom", "c": "b"})
        assert victim.recv_close() == 4011
        # Not after the TTL (300 s): at once. Router entry, room membership and actor are gone.
        wait_for(lambda: server.stats()["sessions"] == 1, what="the failed session to end")
        wait_for(lambda: len(server.rooms.members("lobby")) == 1, what="the room to be left")
    failures = [r for r in caplog.records if r.name == "wscore.actors.session" and r.levelno >= logging.ERROR]
    assert len(failures) == 1 and failures[0].exc_info is not None
    assert len(pykka.ActorRegistry.get_by_class(SessionActor)) == 1
    still_serves(other)


def test_a_failed_session_cannot_be_resumed(make_server: Any, clients: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    original = SessionActor._dispatch

    def process(self: SessionActor, env: Any) -> None:
        if env.event == "boom":
            raise RuntimeError("bug")
        original(self, env)

    monkeypatch.setattr(SessionActor, "_dispatch", process)
    server = make_server(setup=chat_app)
    victim = clients(server.url)
    sid = victim.recv()["p"]["sessionId"]
    victim.send({"e": "boom"})
    assert victim.recv_close() == 4011
    wait_for(lambda: server.stats()["sessions"] == 0, what="the session to end")
    again = clients(f"{server.url}?session={sid}&last_seq=0")
    assert again.recv()["p"]["code"] == 1006
    assert again.recv()["p"]["resumed"] is False


# -- every frame but sys.ack counts against the rate bucket --------------------------------------------
FRAME_KINDS: dict[str, Callable[[RawClient, int], None]] = {
    "garbage": lambda c, i: c.send_raw(f"not json {i}"),
    "binary": lambda c, i: c.ws.send_binary(b"\x00\x01"),
    "bad version": lambda c, i: c.send_raw('{"v":"9.0","e":"echo","c":' + str(i) + "}"),
    "unknown sys.*": lambda c, i: c.send({"e": "sys.nope", "c": i}),
    "sys.ping": lambda c, i: c.send({"e": "sys.ping", "c": i}),
    "bad sys.ack": lambda c, i: c.send({"e": "sys.ack", "p": {"s": "x"}, "c": i}),
    "app frame": lambda c, i: c.send({"e": "echo", "p": i, "c": i}),
}


@pytest.mark.parametrize("kind", sorted(FRAME_KINDS))
def test_every_kind_of_frame_spends_a_token(make_server: Any, clients: Any, kind: str) -> None:
    # Refill so slow that the run's own duration cannot add a token.
    server = make_server(setup=chat_app, rate_limit=0.0001, rate_burst=3, rate_abuse_close_after=1000)
    c = clients(server.url)
    c.recv()
    for i in range(10):
        FRAME_KINDS[kind](c, i)
    answers = [c.recv() for _ in range(10)]
    refused = [a for a in answers if a["e"] == "sys.error" and a["p"]["code"] == 1010]
    assert len(refused) == 7, answers
    assert len(answers) - len(refused) == 3


def test_sys_ack_costs_nothing(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app, rate_limit=0.0001, rate_burst=3)
    c = clients(server.url)
    c.recv()
    for _ in range(50):
        c.send({"e": "sys.ack", "p": {"s": 0}})
    for tag in ("a", "b", "c"):
        still_serves(c, tag)


class CountingAuth(WsAuthenticator):
    def __init__(self) -> None:
        self.calls = 0

    def authenticate(self, conn: Any, token: str) -> AuthResult:
        self.calls += 1
        return AuthResult.success(user_id="ann")


def test_sys_auth_cannot_run_the_authenticator_faster_than_the_bucket(
        make_server: Any, clients: Any) -> None:
    auth = CountingAuth()
    server = make_server(setup=chat_app, authenticator=auth, rate_limit=0.0001, rate_burst=5,
                         rate_abuse_close_after=1000)
    c = clients(f"{server.url}?token=t")
    c.recv()
    assert auth.calls == 1
    for i in range(200):
        c.send({"e": "sys.auth", "p": {"token": "t"}, "c": i})
    answers = [c.recv() for _ in range(200)]
    assert sum(a["e"] == "ack" for a in answers) == 5
    assert sum(a["e"] == "sys.error" and a["p"]["code"] == 1010 for a in answers) == 195
    assert auth.calls == 1 + 5


@pytest.mark.parametrize("kind", ["garbage", "binary", "sys.ping", "unknown sys.*"])
def test_a_flood_of_any_kind_meets_1010_then_4010(make_server: Any, clients: Any, kind: str) -> None:
    server = make_server(setup=chat_app, rate_limit=0.0001, rate_burst=5, rate_abuse_close_after=20)
    c = clients(server.url)
    c.recv()
    for i in range(200):
        try:
            FRAME_KINDS[kind](c, i)
        except (BrokenPipeError, ConnectionResetError, websocket.WebSocketException):
            break
    codes = []
    while True:
        try:
            frame = c.recv()
        except ConnectionAbortedError as closed:
            assert "4010" in str(closed)
            break
        codes.append(frame["p"]["code"] if frame["e"] == "sys.error" else frame["e"])
    assert codes.count(1010) == 20


# -- caps: rooms per session, replay bytes --------------------------------------------------------------
def test_max_rooms_per_session_is_1010(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app, max_rooms_per_session=3)
    c = clients(server.url)
    sid = c.recv()["p"]["sessionId"]
    answers = [c.request("join", f"room-{i}", c=f"j{i}") for i in range(5)]
    assert [a["e"] for a in answers] == ["ack"] * 3 + ["sys.error"] * 2
    assert answers[3]["p"]["code"] == 1010
    assert answers[3]["p"]["details"] == {"limit": "max_rooms_per_session", "max": 3}
    assert c.request("join", "room-0", c="again")["e"] == "ack"  # a room it is in: no new slot
    # A join by session id from server code is held to the cap as well.
    server.rooms.join("by-id", sid)
    wait_for(lambda: server.rooms.members("by-id") == [], what="the over-cap join to be undone")
    assert sorted(r for r in ("room-0", "room-1", "room-2") if server.rooms.members(r)) == \
        ["room-0", "room-1", "room-2"]
    still_serves(c)


def test_the_replay_buffer_is_bounded_in_bytes(make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app, max_buffered_messages=1000, max_buffered_bytes=20_000)
    within = clients(server.url)
    sid = within.recv()["p"]["sessionId"]
    within.send({"e": "emit", "p": {"n": 10, "size": 1000}})  # ~11 KB unacknowledged: kept
    got = [within.recv() for _ in range(10)]
    within.cut()
    again = clients(f"{server.url}?session={sid}&last_seq=0")
    assert again.recv()["p"]["resumed"] is True
    assert [again.recv()["p"]["i"] for _ in range(10)] == [f["p"]["i"] for f in got]

    over = clients(server.url)
    sid = over.recv()["p"]["sessionId"]
    over.send({"e": "emit", "p": {"n": 40, "size": 1000}})  # ~44 KB: the oldest had to go
    for _ in range(40):
        over.recv()
    over.cut()
    lost = clients(f"{server.url}?session={sid}&last_seq=0")
    assert lost.recv()["p"]["code"] == 1006  # never a gap


# -- a failed resume leaves the live session alone -----------------------------------------------------
@pytest.mark.parametrize("last_seq", ["999999", "0"])
def test_a_failed_resume_leaves_the_live_session_untouched(
        make_server: Any, clients: Any, last_seq: str) -> None:
    server = make_server(setup=chat_app)
    owner = clients(server.url)
    sid = owner.recv()["p"]["sessionId"]
    for i in range(3):
        still_serves(owner, f"r{i}")
    owner.send({"e": "sys.ack", "p": {"s": 3}})  # "0" is now older than what was acknowledged
    still_serves(owner, "after-ack")
    intruder = clients(f"{server.url}?session={sid}&last_seq={last_seq}")
    assert intruder.recv()["p"]["code"] == 1006
    fresh = intruder.recv()["p"]
    assert fresh["resumed"] is False and fresh["sessionId"] != sid
    still_serves(owner, "still-mine")  # not closed with 4000, same session, same stream
    assert owner.skipped == []
    assert server.stats()["sessions"] == 2


# -- a pipelining client that reads is slowed, not dropped ---------------------------------------------
def test_a_pipelining_client_that_reads_is_never_cut(make_server: Any) -> None:
    server = make_server(setup=chat_app, max_queued_frames=50, rate_limit=1e6, rate_burst=1e6)
    c = RawClient(server.url)
    try:
        c.recv()
        total = 3000
        burst = b"".join(
            websocket.ABNF.create_frame(json.dumps({"v": "1.0", "e": "echo", "p": i, "c": i}),
                                        websocket.ABNF.OPCODE_TEXT).format()
            for i in range(total))
        writer = gevent.spawn(c.ws.sock.sendall, burst)  # every request in one burst
        seen = [c.recv_until(lambda f: f["e"] == "ack")["c"] for _ in range(total)]
        writer.get(timeout=30)
        assert seen == list(range(total))
        assert server.stats()["connections"] == 1
    finally:
        c.close()


# -- property: any JSON value, through decode → handle → broadcast → encode -----------------------------
HOSTILE = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# Strings with any code point, lone surrogates included; numbers including NaN and ±Infinity.
# Drawn often enough that most examples carry one (a plain strategy almost never does).
any_text = st.text(alphabet=st.characters(categories=["Cs"]) | st.characters(codec="utf-8"),
                   max_size=8)
hostile_scalars = st.sampled_from([float("nan"), float("inf"), float("-inf"), 10**400, -(10**400),
                                   "\ud800", "x\udfffy", "\udbff\udbff"])
any_scalar = (st.none() | st.booleans() | st.integers(min_value=-(10**320), max_value=10**320)
              | st.floats(allow_nan=True, allow_infinity=True) | any_text | hostile_scalars)
any_json = st.recursive(any_scalar, lambda kids: st.lists(kids, max_size=3)
                        | st.dictionaries(any_text, kids, max_size=3), max_leaves=8)


@HOSTILE
@given(value=any_json)
def test_decode_either_refuses_or_yields_values_that_always_encode(value: Any) -> None:
    text = json.dumps({"v": "1.0", "e": "say", "p": value, "c": 1})  # ensure_ascii: \ud800 escapes
    try:
        env = decode_envelope(text)
    except WsError as err:
        assert int(err.code) == 1001
        return
    frame = encode_envelope(env.event, env.payload, now_ms=0, correlation_id=env.correlation_id)
    assert json.loads(frame.numbered(1).encode("utf-8")) is not None


def test_any_json_value_through_a_live_room_leaves_every_member_connected(
        make_server: Any, clients: Any) -> None:
    server = make_server(setup=chat_app)
    sender, member = joined(clients, server), joined(clients, server)
    counts = {"broadcast": 0, "refused": 0}

    @HOSTILE
    @given(value=any_json)
    def one(value: Any) -> None:
        text = json.dumps({"v": "1.0", "e": "say", "c": "x", "p": {"room": "lobby", "text": value}})
        sender.send_raw(text)
        answer = sender.recv()  # the sender is not in its own broadcast: this is the answer
        assert answer.get("c") == "x", answer  # even a refusal names the request
        if answer["e"] == "ack":
            counts["broadcast"] += 1
            heard = member.recv_until(lambda f: f["e"] == "said")
            assert json.dumps(heard["p"]) is not None
        else:
            assert answer["p"]["code"] == 1001, answer
            counts["refused"] += 1

    one()
    still_serves(sender)
    still_serves(member)
    assert counts["broadcast"] > 0 and counts["refused"] > 0
    assert server.stats()["connections"] == 2


def test_raw_socket_garbage_does_not_leave_sessions_behind(make_server: Any) -> None:
    """A connection that sends one poisonous frame and vanishes leaves a detached session only."""
    server = make_server(setup=chat_app, session_ttl=0.2)
    for c in ("NaN", "Infinity"):
        peer = RawClient(server.url)
        peer.recv()
        peer.send_raw('{"v":"1.0","e":"sys.ping","c":' + c + "}")
        assert peer.recv()["p"]["code"] == 1001
        peer.ws.sock.shutdown(socket.SHUT_RDWR)
        peer.close()
    wait_for(lambda: server.stats()["sessions"] == 0, what="the TTL to end both sessions")
