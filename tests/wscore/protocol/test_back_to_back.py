"""ClientSession ↔ ServerSession, back to back in memory (the way h11 and wsproto test).

No sockets, no greenlets, no clock reads: a :class:`Wire` carries every frame
through the RFC 6455 codec (masked client frames, unmasked server frames,
:class:`~wscore.protocol.frames.FrameDecoder` on both sides) and the envelope
codec, and time is a number the test moves. The harness plays the parts the
server's shells play around the protocol core — the directory of sessions
(open / claim), an echo application, the authenticator, timers — and nothing
more, so every protocol decision under test is made by the two pure objects.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest

from wscore.errors import ConnectionClosed, SessionLost, WsError
from wscore.protocol import client_session as cs
from wscore.protocol import frames
from wscore.protocol import server_session as ss
from wscore.protocol.envelope import decode_envelope, encode_error, encode_reply
from wscore.protocol.session import SessionState

LIMITS = ss.SessionLimits(session_ttl=30.0, ping_interval=20.0, max_buffered_messages=100,
                          max_buffered_bytes=1 << 20, rate_limit=1000.0, rate_burst=1000.0,
                          rate_abuse_close_after=50)
MASK = b"\x01\x02\x03\x04"


@attrs.define
class Link:
    conn_id: int
    session: ss.ServerSession | None = None
    to_server: bytearray = attrs.Factory(bytearray)
    to_client: bytearray = attrs.Factory(bytearray)
    close_code: int | None = None  # the server's close frame, once sent
    cut: bool = False


class Wire:
    """One client and the server's side of it, joined by in-memory links."""

    def __init__(self, *, limits: ss.SessionLimits = LIMITS, server: Server | None = None,
                 token: str | None = None, client_tag: str = "c1") -> None:
        self.server = server or Server(limits)
        self.token = token
        self.client = cs.ClientSession(
            cs.ClientSessionOptions(client_tag=client_tag, ack_every_frames=1, token_provider=False),
            random=lambda: 0.5, wall_ms=lambda: 0)
        self.link: Link | None = None
        self.delivered: list[tuple[str, Any]] = []
        self.results: dict[int, Any] = {}
        self.events: list[Any] = []  # Opened / LoseSession / Terminal / Reconnect …
        self.client_decoder = frames.FrameDecoder(role="client", max_message_bytes=1 << 20)

    # -- client side ----------------------------------------------------------------------------
    def connect(self) -> None:
        self._client_actions(self.client.connect(token=self.token))
        self.pump()

    def request(self, event: str, payload: Any = None) -> int:
        cid, actions = self.client.request(event, payload)
        self._client_actions(actions)
        return cid

    def _client_actions(self, actions: list[cs.Action]) -> None:
        for action in actions:
            if isinstance(action, cs.OpenConnection):
                self.link = self.server.open(action.query, self.token)
                self.client_decoder = frames.FrameDecoder(role="client", max_message_bytes=1 << 20)
            elif isinstance(action, cs.SendFrame):
                if self.link is not None and not self.link.cut:
                    self.link.to_server += frames.encode_frame(
                        frames.OP_TEXT, action.text.encode(), mask_key=MASK)
            elif isinstance(action, cs.SendClose):
                if self.link is not None:
                    self.link.to_server += frames.encode_close(action.code, action.reason, mask_key=MASK)
            elif isinstance(action, cs.Deliver):
                self.delivered.append((action.event, action.payload))
            elif isinstance(action, cs.ResolveRequest):
                self.results[action.cid] = action.payload
            elif isinstance(action, cs.RejectRequest):
                self.results[action.cid] = action.error
            elif isinstance(action, cs.Abort):
                self.events.append(action)
                self.drop_link()
            else:
                self.events.append(action)

    def drop_link(self, *, notify_client: bool = True) -> None:
        """The network between them breaks: nothing more crosses, both sides learn it."""
        link = self.link
        if link is None:
            return
        link.cut = True
        link.to_server.clear()
        link.to_client.clear()
        self.server.closed(link)
        self.link = None
        if notify_client:
            self._client_actions(self.client.on_closed(code=None, reason="link cut"))

    def reconnect(self) -> None:
        """Carry out the client's pending Reconnect (its delay is the test's business)."""
        assert isinstance(self.events[-1], cs.Reconnect), self.events[-1]
        self.connect()

    # -- moving bytes ------------------------------------------------------------------------
    def deliver_to_server(self) -> None:
        """Only the client → server direction, once (the answers stay in flight)."""
        link = self.link
        assert link is not None
        data, link.to_server = bytes(link.to_server), bytearray()
        self.server.feed(link, data)

    def pump(self) -> None:
        """Move bytes both ways until nothing is left in flight."""
        for _ in range(1000):
            link = self.link
            if link is None:
                return
            moved = False
            if link.to_server:
                data, link.to_server = bytes(link.to_server), bytearray()
                self.server.feed(link, data)
                moved = True
            if link.to_client:
                data, link.to_client = bytes(link.to_client), bytearray()
                for event in self.client_decoder.feed(data):
                    if isinstance(event, frames.TextMessage):
                        self._client_actions(self.client.receive(decode_envelope(event.text), 0.0))
                    elif isinstance(event, frames.CloseReceived):
                        self.server.closed(link)
                        self.link = None
                        self._client_actions(self.client.on_closed(code=event.code, reason=event.reason))
                        return
                self._client_actions(self.client.tick(0.0))
                moved = True
            if not moved:
                return
        raise AssertionError("the two peers never went quiet")


class Server:
    """The shells around ServerSession, reduced to what the protocol needs of them."""

    def __init__(self, limits: ss.SessionLimits) -> None:
        self.limits = limits
        self.sessions: dict[str, ss.ServerSession] = {}
        self.links: dict[int, Link] = {}
        self.conn_ids = itertools.count(1)
        self.session_ids = (f"sid-{i}" for i in itertools.count(1))
        self.now = 0.0
        self.wall = 1_000.0
        self.timers: list[tuple[float, ss.ServerSession, ss.ArmTimer]] = []
        self.handled: list[Any] = []  # what the application ran, in order
        self.decoders: dict[int, frames.FrameDecoder] = {}
        self.expires_at: float | None = None  # what the "authenticator" grants
        self.auth_ok = True

    def open(self, query: dict[str, str], token: str | None) -> Link:
        link = Link(next(self.conn_ids))
        self.links[link.conn_id] = link
        self.decoders[link.conn_id] = frames.FrameDecoder(role="server", max_message_bytes=1 << 20)
        tag, attempt = query.get("client"), int(query.get("attempt", "0")) or None
        sid = query.get("session")
        if sid is not None:
            session = self.sessions.get(sid)
            if session is not None and not session.closed:
                verdict = session.attach(link.conn_id, resume_from=int(query["last_seq"]),
                                         expires_at=self.expires_at, client_tag=tag, attempt=attempt,
                                         now=self.now, wall=self.wall)
                if verdict.ok:
                    link.session = session
                    self.run(session, verdict.actions)
                    return link
            self.send(link, encode_error(WsError(1006, "session lost"), now_ms=0).unnumbered())
        session = ss.ServerSession(session_id=next(self.session_ids), user_id=None,
                                   limits=self.limits, now=self.now)
        self.sessions[session.session_id] = session
        self.run(session, session.start())
        verdict = session.attach(link.conn_id, resume_from=None, expires_at=self.expires_at,
                                 client_tag=tag, attempt=attempt, now=self.now, wall=self.wall)
        assert verdict.ok
        link.session = session
        self.run(session, verdict.actions)
        return link

    def feed(self, link: Link, data: bytes) -> None:
        session = link.session
        assert session is not None
        for event in self.decoders[link.conn_id].feed(data):
            if isinstance(event, frames.TextMessage):
                try:
                    env = decode_envelope(event.text)
                except WsError as err:
                    self.run(session, session.unparseable(err, None, now=self.now, wall=self.wall))
                    continue
                self.run(session, session.receive(env, now=self.now, wall=self.wall))
            elif isinstance(event, frames.CloseReceived):
                if event.code == 1000:
                    self.run(session, session.end(None, "client closed"))
                link.to_client += frames.encode_close(event.code)
        # the actor's self-message: the batched ack goes out after what was queued
        if session.ack_pending:
            self.run(session, session.flush_ack(wall=self.wall))

    def closed(self, link: Link) -> None:
        if link.session is not None:
            self.run(link.session, link.session.detach(link.conn_id, now=self.now))

    def advance(self, seconds: float) -> None:
        """Time passes; timers that are due fire (late, never early)."""
        self.now += seconds
        self.wall += seconds
        due = [t for t in self.timers if t[0] <= self.now]
        self.timers = [t for t in self.timers if t[0] > self.now]
        for _, session, timer in due:
            self.run(session, session.timer_fired(timer.kind, timer.generation, now=self.now,
                                                  wall=self.wall))

    def send(self, link: Link, wire: str) -> None:
        if not link.cut and link.close_code is None:
            link.to_client += frames.encode_frame(frames.OP_TEXT, wire.encode())

    def run(self, session: ss.ServerSession, actions: list[ss.Action]) -> None:
        for action in actions:
            if isinstance(action, ss.Send):
                self.send(self.links[action.conn_id], action.wire)
            elif isinstance(action, ss.SendBatch):
                for wire in action.wires:
                    self.send(self.links[action.conn_id], wire)
            elif isinstance(action, ss.Close):
                link = self.links[action.conn_id]
                if link.close_code is None and not link.cut:
                    link.to_client += frames.encode_close(action.code, action.reason)
                    link.close_code = action.code
            elif isinstance(action, ss.ArmTimer):
                self.timers.append((self.now + action.delay, session, action))
            elif isinstance(action, ss.Dispatch):
                env = action.envelope
                self.handled.append(env.payload)
                self.run(session, session.push_actions(
                    encode_reply({"echo": env.payload}, env.correlation_id, now_ms=0)))
            elif isinstance(action, ss.Authenticate):
                self.run(session, session.auth_result(
                    ok=self.auth_ok, user_id=None, expires_at=self.expires_at,
                    correlation_id=action.correlation_id, wall=self.wall))
            elif isinstance(action, ss.RequestAckFlush):
                pass  # flushed at the end of the batch (see feed)

    def push(self, session: ss.ServerSession, event: str, payload: Any) -> None:
        """Server code sends to the session (a broadcast, a unicast)."""
        from wscore.protocol.envelope import encode_envelope
        self.run(session, session.push_actions(encode_envelope(event, payload, now_ms=0)))


# -- scenarios ---------------------------------------------------------------------------------------------
def test_a_new_session_answers_requests_and_both_sides_acknowledge() -> None:
    w = Wire()
    w.connect()
    assert isinstance(w.events[0], cs.Opened) and w.events[0].outcome is cs.ConnectOutcome.NEW
    cids = [w.request("echo", i) for i in range(3)]
    w.pump()
    assert [w.results[c] for c in cids] == [{"echo": 0}, {"echo": 1}, {"echo": 2}]
    session = next(iter(w.server.sessions.values()))
    assert session.inbound.highest == 3 and w.client.server_acked == 3  # the server's sys.ack
    assert session.stream.acked == 3 and session.stream.buffered == 0  # the client's sys.ack


def test_resume_replays_what_was_missed_in_order_exactly_once() -> None:
    w = Wire()
    w.connect()
    session = next(iter(w.server.sessions.values()))
    w.server.push(session, "news", 1)
    w.pump()
    w.drop_link()
    for i in range(2, 6):  # sent while the client is away
        w.server.push(session, "news", i)
    w.reconnect()
    assert isinstance(w.events[-1], cs.Opened) and w.events[-1].outcome is cs.ConnectOutcome.RESUMED
    assert w.delivered == [("news", i) for i in range(1, 6)]
    w.server.push(session, "news", 6)
    w.pump()
    assert [p for _, p in w.delivered] == [1, 2, 3, 4, 5, 6]


def test_a_request_cut_in_flight_runs_once_and_its_reply_arrives_after_the_resume() -> None:
    w = Wire()
    w.connect()
    cid = w.request("echo", "once")
    w.deliver_to_server()  # the server ran it; the reply and the sys.ack are on their way …
    session = next(iter(w.server.sessions.values()))
    assert w.server.handled == ["once"]
    w.drop_link()  # … and are lost with the link
    assert cid not in w.results
    w.reconnect()  # the client re-sends its unacknowledged frame; the server drops it
    assert w.server.handled == ["once"]
    assert w.results[cid] == {"echo": "once"}  # through the replay
    assert session.inbound.highest == 1


def test_a_request_made_while_offline_settles_after_the_reconnect() -> None:
    w = Wire()
    w.connect()
    w.drop_link()
    cid = w.request("echo", "offline")
    w.reconnect()
    assert w.results[cid] == {"echo": "offline"} and w.server.handled == ["offline"]


def test_an_expired_session_is_1006_and_the_client_starts_clean() -> None:
    w = Wire()
    w.connect()
    old = next(iter(w.server.sessions.values()))
    w.drop_link()
    pending = w.request("echo", "lost?")
    w.server.advance(LIMITS.session_ttl + 1)
    assert old.state is SessionState.CLOSED
    w.reconnect()
    lost = [e for e in w.events if isinstance(e, cs.LoseSession)]
    assert len(lost) == 1 and isinstance(lost[0].error, SessionLost)
    opened = w.events[-1]
    assert isinstance(opened, cs.Opened) and opened.outcome is cs.ConnectOutcome.LOST
    assert isinstance(w.results[pending], SessionLost)
    assert w.client.session_id != old.session_id


def test_an_early_ttl_timer_re_arms_rather_than_ending_the_session() -> None:
    w = Wire()
    w.connect()
    session = next(iter(w.server.sessions.values()))
    w.drop_link()
    (_, _, timer), = [t for t in w.server.timers if t[2].kind == ss.TimerKind.TTL
                      and t[2].generation == session.generation]
    actions = session.timer_fired(timer.kind, timer.generation, now=w.server.now + 1.0,
                                  wall=w.server.wall)
    assert [type(a) for a in actions] == [ss.ArmTimer] and not session.closed


def test_a_second_connection_takes_over_and_the_first_is_closed_with_4000() -> None:
    server = Server(LIMITS)
    first = Wire(server=server, client_tag="tab-1")
    first.connect()
    second = Wire(server=server, client_tag="tab-2")
    # The second client resumes the first one's session (same id, a copy of its state).
    second.client.session_id = first.client.session_id
    second.connect()
    first.pump()
    assert isinstance(first.events[-1], cs.Terminal)
    assert isinstance(first.events[-1].error, ConnectionClosed) and first.events[-1].error.code == 4000
    cid = second.request("echo", "mine now")
    second.pump()
    assert second.results[cid] == {"echo": "mine now"}


def test_a_stale_attempt_is_refused_and_changes_nothing() -> None:
    w = Wire()
    w.connect()
    session = next(iter(w.server.sessions.values()))
    verdict = session.attach(99, resume_from=0, expires_at=None, client_tag="c1", attempt=1,
                             now=0.0, wall=0.0)
    assert not verdict.ok and verdict.stale and verdict.actions == []
    assert session.conn_id == w.link.conn_id


def test_a_bad_resume_leaves_the_live_session_untouched() -> None:
    w = Wire()
    w.connect()
    session = next(iter(w.server.sessions.values()))
    for bad in (999, -1):
        verdict = session.attach(77, resume_from=bad, expires_at=None, client_tag=None,
                                 attempt=None, now=0.0, wall=0.0)
        assert not verdict.ok and verdict.actions == []
    assert session.conn_id == w.link.conn_id and session.state is SessionState.ATTACHED
    cid = w.request("echo", "still")
    w.pump()
    assert w.results[cid] == {"echo": "still"}


def test_the_rate_limit_refuses_with_1010_and_sustained_abuse_closes_4010() -> None:
    limits = attrs.evolve(LIMITS, rate_limit=0.001, rate_burst=3, rate_abuse_close_after=5)
    w = Wire(limits=limits)
    w.connect()
    cids = [w.request("echo", i) for i in range(8)]
    w.pump()
    answers = [w.results.get(c) for c in cids[:3]]
    assert answers == [{"echo": 0}, {"echo": 1}, {"echo": 2}]
    refused = [w.results[c] for c in cids[3:]]
    assert all(isinstance(e, WsError) and int(e.code) == 1010 for e in refused)
    assert w.server.handled == [0, 1, 2]
    assert isinstance(w.events[-1], cs.Reconnect)  # closed with 4010: the client comes back


def test_sys_ping_spends_a_token_and_sys_ack_does_not() -> None:
    limits = attrs.evolve(LIMITS, rate_limit=0.001, rate_burst=2, rate_abuse_close_after=99)
    session = ss.ServerSession(session_id="s", user_id=None, limits=limits, now=0.0)
    session.attach(1, resume_from=None, expires_at=None, client_tag=None, attempt=None, now=0, wall=0)
    from wscore.protocol.envelope import Envelope
    for _ in range(10):
        assert session.receive(Envelope("sys.ack", {"s": 0}), now=0.0, wall=0.0) == []
    pongs = [session.receive(Envelope("sys.ping", correlation_id=i), now=0.0, wall=0.0) for i in range(3)]
    assert ['"sys.pong"' in a[0].wire for a in pongs] == [True, True, False]
    assert '"code":1010' in pongs[2][0].wire


def test_an_expired_token_closes_4005_unless_refreshed() -> None:
    server = Server(LIMITS)
    server.expires_at = server.wall + 10
    w = Wire(server=server, token="t")
    w.connect()
    session = next(iter(server.sessions.values()))
    # Refreshed in band before expiry: the old timer is stale.
    server.expires_at = server.wall + 100
    cid, actions = w.client.auth("t2")
    w._client_actions(actions)
    w.pump()
    assert w.results[cid] == {"expiresAt": server.expires_at}
    server.advance(20)
    assert w.link is not None
    server.advance(100)
    w.pump()
    assert isinstance(w.events[-1], cs.Terminal)
    assert w.events[-1].error.code == 1005  # the 1005 error before the 4005 close
    assert session.state is SessionState.DETACHED  # the session itself waits for a refresh


def test_a_refused_sys_auth_closes_4004() -> None:
    w = Wire()
    w.connect()
    w.server.auth_ok = False
    cid, actions = w.client.auth("bad")
    w._client_actions(actions)
    w.pump()
    assert isinstance(w.events[-1], cs.Terminal) and w.events[-1].error.code == 1004
    assert isinstance(w.results[cid], WsError)


def test_a_1000_close_ends_the_session_and_a_later_resume_is_1006() -> None:
    w = Wire()
    w.connect()
    session = next(iter(w.server.sessions.values()))
    w._client_actions(w.client.close())
    w.pump()
    assert session.closed


def test_overflow_while_detached_ends_the_session_never_a_gap() -> None:
    limits = attrs.evolve(LIMITS, max_buffered_messages=5)
    w = Wire(limits=limits)
    w.connect()
    session = next(iter(w.server.sessions.values()))
    w.drop_link()
    for i in range(6):
        w.server.push(session, "news", i)
    assert session.closed
    w.reconnect()
    assert any(isinstance(e, cs.LoseSession) for e in w.events)
    assert [p for e, p in w.delivered if e == "news"] == []


def test_illegal_inputs_raise_rather_than_being_ignored() -> None:
    session = ss.ServerSession(session_id="s", user_id=None, limits=LIMITS, now=0.0)
    session.end(None, "done")
    with pytest.raises(ValueError):
        session.push(encode_reply(1, None, now_ms=0))
