"""Pure tests of ClientSession's bookkeeping and backoff (no sockets, no clock).

The scenario-by-scenario contract is the conformance file (test_client_session_conformance.py);
these tests check the same object through its Python API, including a property-based
back-to-back run against the server's numbered-stream core.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wscore.errors import SendBufferFull
from wscore.protocol.client_session import (
    Abort,
    Action,
    ClientSession,
    ClientSessionOptions,
    ConnectOutcome,
    Deliver,
    OpenConnection,
    Opened,
    SendFrame,
)
from wscore.protocol.envelope import Envelope, encode_envelope
from wscore.protocol.session import InboundTracker, OutgoingStream


def make_session(rng: random.Random | None = None, **overrides: Any) -> ClientSession:
    params: dict[str, Any] = dict(
        max_unacked_frames=100, max_unacked_bytes=1 << 20, ack_every_frames=4, ack_delay=0.5
    )
    params.update(overrides)
    return ClientSession(ClientSessionOptions(**params), random=(rng or random.Random(0)).random,
                         wall_ms=lambda: 0)


def connected(sid: str = "sid", resumed: bool = False, last_seq: int = 0) -> Envelope:
    return Envelope("sys.connected", {"sessionId": sid, "resumed": resumed, "lastSeq": last_seq,
                                      "heartbeat": 20})


def server_frame(s: int, payload: Any = None, event: str = "x") -> Envelope:
    return Envelope(event, payload, seq=s)


def server_ack(s: int) -> Envelope:
    return Envelope("sys.ack", {"s": s})


def open_session(session: ClientSession, sid: str = "sid", resumed: bool = False,
                 last_seq: int = 0) -> list[Action]:
    session.connect()
    return session.receive(connected(sid, resumed, last_seq), now=0.0)


def written(actions: list[Action]) -> list[int | None]:
    return [a.seq for a in actions if isinstance(a, SendFrame)]


def acks(actions: list[Action]) -> list[int]:
    return [json.loads(a.text)["p"]["s"] for a in actions
            if isinstance(a, SendFrame) and json.loads(a.text)["e"] == "sys.ack"]


def outcome(actions: list[Action]) -> Opened:
    (opened,) = [a for a in actions if isinstance(a, Opened)]
    return opened


# -- outgoing -----------------------------------------------------------------------------------
def test_frames_are_numbered_from_one_and_carry_s() -> None:
    session = make_session()
    open_session(session)
    sent = [session.send("x", i)[0] for i in range(3)]
    assert [a.seq for a in sent if isinstance(a, SendFrame)] == [1, 2, 3]
    for action in sent:
        assert isinstance(action, SendFrame)
        obj = json.loads(action.text)
        assert obj["s"] == action.seq and obj["v"] == "1.0" and obj["e"] == "x"
    assert session.last_out_seq == 3 and session.unacked_frames == 3


def test_resume_writes_the_unacknowledged_tail_in_order() -> None:
    session = make_session()
    open_session(session)
    for i in range(5):
        session.send("x", i)
    session.receive(server_ack(2), now=0.0)
    session.on_closed(code=None)
    assert written(open_session(session, resumed=True)) == [3, 4, 5]  # acked frames are gone


def test_server_ack_is_cumulative_capped_and_idempotent() -> None:
    session = make_session()
    open_session(session)
    for _ in range(4):
        session.send("x")
    session.receive(server_ack(2), now=0.0)
    assert session.unacked_frames == 2
    session.receive(server_ack(1), now=0.0)  # older ack: nothing
    session.receive(server_ack(2), now=0.0)
    assert session.unacked_frames == 2
    session.receive(server_ack(99), now=0.0)  # capped at what we numbered
    assert session.server_acked == 4 and session.unacked_frames == 0 and session.unacked_bytes == 0


def test_full_buffer_by_frames_refuses_without_numbering() -> None:
    session = make_session(max_unacked_frames=3)
    open_session(session)
    for _ in range(3):
        session.send("x")
    with pytest.raises(SendBufferFull, match="max_unacked_frames=3"):
        session.send("x")
    assert session.last_out_seq == 3
    session.receive(server_ack(1), now=0.0)
    assert written(session.send("x")) == [4]  # room again, numbering continues


def test_full_buffer_by_bytes_refuses() -> None:
    one = len(encode_envelope("x", "a" * 50, now_ms=0).numbered(1))
    session = make_session(max_unacked_bytes=2 * one + 5)
    session.send("x", "a" * 50)
    session.send("x", "a" * 50)
    with pytest.raises(SendBufferFull, match="max_unacked_bytes"):
        session.send("x", "a" * 50)
    assert session.unacked_bytes == 2 * one


def test_a_request_refused_by_a_full_buffer_leaves_nothing_pending() -> None:
    session = make_session(max_unacked_frames=1)
    session.send("x")
    with pytest.raises(SendBufferFull):
        session.request("y")
    assert session.pending == []


# -- incoming -----------------------------------------------------------------------------------
def test_server_frames_deliver_once_and_a_gap_aborts_without_delivering() -> None:
    session = make_session()
    open_session(session)
    assert session.receive(server_frame(1), now=0.0) == [Deliver("x", None)]
    assert session.receive(server_frame(2), now=0.0) == [Deliver("x", None)]
    assert session.receive(server_frame(2), now=0.0) == []
    assert session.receive(server_frame(1), now=0.0) == []
    (abort,) = session.receive(server_frame(5), now=0.0)
    assert isinstance(abort, Abort) and abort.reason == "gap"
    assert session.delivered == 2 and session.gaps == 1 and session.duplicates_dropped == 2
    assert session.receive(server_frame(3), now=0.0) == []  # the rest of the aborted link
    session.on_closed(code=None)
    (open_action,) = session.connect()
    assert isinstance(open_action, OpenConnection)
    assert open_action.query["last_seq"] == "2"  # the resume asks for s=3 onwards


def test_ack_is_batched_by_count() -> None:
    session = make_session(ack_every_frames=4, ack_delay=100.0)
    open_session(session)
    for s in range(1, 4):
        session.receive(server_frame(s), now=0.0)
        assert session.tick(now=0.0) == []
    session.receive(server_frame(4), now=0.0)
    assert acks(session.tick(now=0.0)) == [4]
    assert session.tick(now=0.0) == [] and session.next_deadline() is None


def test_ack_is_batched_by_delay_from_the_first_unacked_frame() -> None:
    session = make_session(ack_every_frames=100, ack_delay=0.5)
    open_session(session)
    assert session.next_deadline() is None
    session.receive(server_frame(1), now=10.0)
    session.receive(server_frame(2), now=10.3)  # does not push the deadline back
    assert session.next_deadline() == pytest.approx(10.5)
    assert session.tick(now=10.49) == []
    assert acks(session.tick(now=10.5)) == [2]
    session.receive(server_frame(3), now=11.0)
    assert session.next_deadline() == pytest.approx(11.5)


def test_duplicates_do_not_trigger_acks() -> None:
    session = make_session(ack_every_frames=2)
    open_session(session)
    session.receive(server_frame(1), now=0.0)
    session.receive(server_frame(2), now=0.0)
    assert acks(session.tick(now=0.0)) == [2]
    for _ in range(5):
        session.receive(server_frame(2), now=0.0)
    assert session.tick(now=99.0) == []


# -- connections --------------------------------------------------------------------------------
def test_first_connection_is_new_and_sends_everything_queued_before_it() -> None:
    session = make_session()
    session.send("x")
    session.send("x")
    assert session.connect() == [OpenConnection({})]
    actions = session.receive(connected(), now=0.0)
    assert outcome(actions).outcome is ConnectOutcome.NEW and written(actions) == [1, 2]
    assert session.unacked_frames == 2  # queued frames belong to the first session
    session.on_closed(code=None)
    assert session.connect() == [OpenConnection({"session": "sid", "last_seq": "0"})]


def test_resume_resends_from_the_server_ack_and_acks_via_last_seq() -> None:
    session = make_session(ack_every_frames=100)
    open_session(session)
    for _ in range(5):
        session.send("x")
    session.receive(server_ack(2), now=0.0)
    for s in (1, 2, 3):
        session.receive(server_frame(s), now=0.0)
    session.on_closed(code=None)
    assert session.connect() == [OpenConnection({"session": "sid", "last_seq": "3"})]
    actions = session.receive(connected(resumed=True, last_seq=7), now=0.0)
    opened = outcome(actions)
    assert opened.outcome is ConnectOutcome.RESUMED and not opened.server_behind
    assert written(actions) == [3, 4, 5]
    assert session.tick(now=99.0) == []  # last_seq=3 in the URL acknowledged them


def test_resume_flags_a_server_that_forgot_frames() -> None:
    session = make_session()
    open_session(session)
    session.receive(server_frame(1), now=0.0)
    session.receive(server_frame(2), now=0.0)
    session.on_closed(code=None)
    assert outcome(open_session(session, resumed=True, last_seq=1)).server_behind


def test_session_lost_starts_clean() -> None:
    session = make_session()
    open_session(session, "old")
    for _ in range(3):
        session.send("x")
    session.receive(server_frame(1), now=0.0)
    session.on_closed(code=None)
    opened = outcome(open_session(session, "new"))
    assert opened.outcome is ConnectOutcome.LOST
    assert opened.dropped_frames == 3 and opened.info.session_id == "new"
    assert session.unacked_frames == 0 and session.unacked_bytes == 0
    assert written(session.send("x")) == [1]  # new numbering
    assert session.receive(server_frame(1), now=0.0) == [Deliver("x", None)]  # new server stream
    session.on_closed(code=None)
    assert session.connect() == [OpenConnection({"session": "new", "last_seq": "1"})]


def test_a_resumed_flag_for_another_session_is_a_loss() -> None:
    session = make_session()
    open_session(session, "a")
    session.on_closed(code=None)
    assert outcome(open_session(session, "b", resumed=True)).outcome is ConnectOutcome.LOST


# -- back to back with the server's pure core -----------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=60),
    drops=st.lists(st.integers(min_value=0, max_value=80), max_size=6),
    ack_every=st.integers(min_value=1, max_value=10),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_streams_survive_drops_exactly_once_in_order(
    n: int, drops: list[int], ack_every: int, seed: int
) -> None:
    """ClientSession against the server's OutgoingStream/InboundTracker.

    Both directions lose whatever is in flight at each drop; after each
    reconnect the client re-sends and the server replays. Every frame must be
    run (server) and delivered (client) exactly once, in order.
    """
    rng = random.Random(seed)
    client = make_session(max_unacked_frames=1000, ack_every_frames=ack_every, ack_delay=1.0)
    out = OutgoingStream(max_buffered=1000)
    inbound = InboundTracker()
    ran: list[int] = []
    delivered: list[int] = []
    outbox: list[SendFrame] = []  # written by the client, not yet on the wire
    up: list[SendFrame] = []  # in flight client -> server
    down: list[tuple[int, str]] = []  # in flight server -> client
    outbox.extend(a for a in open_session(client) if isinstance(a, SendFrame))
    sent_by_client = sent_by_server = 0
    step = 0
    drop_at = set(drops)
    while (len(ran) < n or len(delivered) < n) and step < 10_000:
        step += 1
        if step in drop_at:
            outbox.clear()
            up.clear()
            down.clear()
            client.on_closed(code=None)
            client.connect()
            replay = out.replay_after(client.delivered)  # ?last_seq=delivered
            actions = client.receive(connected(resumed=True, last_seq=out.last_seq), now=float(step))
            assert outcome(actions).outcome is ConnectOutcome.RESUMED
            outbox.extend(a for a in actions if isinstance(a, SendFrame))
            down.extend((json.loads(w)["s"], w) for w in replay)
            continue
        action = rng.randrange(5)
        if action == 0 and sent_by_client < n:
            sent_by_client += 1
            outbox.extend(a for a in client.send("x", sent_by_client) if isinstance(a, SendFrame))
        elif action == 1 and outbox:
            up.extend(outbox)
            outbox.clear()
        elif action == 2 and up:
            frame = up.pop(0)
            if frame.seq is not None:
                if inbound.accept(frame.seq):
                    ran.append(json.loads(frame.text)["p"])
                client.receive(server_ack(inbound.highest), now=float(step))  # batched sys.ack
            else:  # the client's sys.ack
                out.ack(json.loads(frame.text)["p"]["s"])
        elif action == 3 and sent_by_server < n:
            sent_by_server += 1
            seq = out.next_seq()
            wire = encode_envelope("x", sent_by_server, now_ms=0).numbered(seq)
            out.record(seq, wire)
            down.append((seq, wire))
        elif action == 4 and down:
            s, wire = down.pop(0)
            for a in client.receive(server_frame(s, json.loads(wire)["p"]), now=float(step)):
                assert isinstance(a, Deliver)
                delivered.append(a.payload)
            outbox.extend(a for a in client.tick(now=float(step)) if isinstance(a, SendFrame))
    assert ran == list(range(1, n + 1))
    assert delivered == list(range(1, n + 1))


# -- backoff ------------------------------------------------------------------------------------
def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    session = make_session(backoff_base=0.5, backoff_cap=4.0)
    assert [session.backoff_ceiling(i) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert session.backoff_ceiling(10_000) == 4.0  # no float overflow


def test_backoff_is_full_jitter_and_replays_with_a_seed() -> None:
    a = make_session(random.Random(42), backoff_base=0.1, backoff_cap=10.0)
    b = make_session(random.Random(42), backoff_base=0.1, backoff_cap=10.0)
    delays = [a.backoff_delay(i) for i in range(12)]
    assert delays == [b.backoff_delay(i) for i in range(12)]
    assert all(0.0 <= d <= a.backoff_ceiling(i) for i, d in enumerate(delays))
    # Full jitter: over many draws the delays spread across the whole window.
    many = [a.backoff_delay(3) for _ in range(2000)]
    assert min(many) < 0.1 * a.backoff_ceiling(3) and max(many) > 0.9 * a.backoff_ceiling(3)


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        ClientSessionOptions(backoff_base=1.0, backoff_cap=0.5)
    with pytest.raises(ValueError):
        ClientSessionOptions(backoff_base=0.0, backoff_cap=1.0)


def test_resume_params_number_every_attempt_of_this_instance() -> None:
    session = make_session(client_tag="abc")
    assert session.connect() == [OpenConnection({"client": "abc", "attempt": "1"})]
    session.receive(connected(), now=0.0)
    session.on_closed(code=None)
    assert session.connect() == [OpenConnection({"session": "sid", "last_seq": "0",
                                                 "client": "abc", "attempt": "2"})]
