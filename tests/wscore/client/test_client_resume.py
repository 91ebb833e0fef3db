"""Pure tests of the client's resume bookkeeping and backoff (no sockets, no clock)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wscore.client.resume import Backoff, ConnectOutcome, Delivery, ResumeState
from wscore.errors import SendBufferFull
from wscore.protocol.envelope import encode_envelope
from wscore.protocol.session import InboundTracker, OutgoingStream


def make_state(**overrides: int | float) -> ResumeState:
    params: dict[str, int | float] = dict(
        max_unacked_frames=100, max_unacked_bytes=1 << 20, ack_every_frames=4, ack_delay=0.5
    )
    params.update(overrides)
    return ResumeState(**params)  # type: ignore[arg-type]


def frame(event: str = "x", payload: object = None, c: int | None = None):  # type: ignore[no-untyped-def]
    return encode_envelope(event, payload, now_ms=0, correlation_id=c)


# -- outgoing -----------------------------------------------------------------------------------
def test_frames_are_numbered_from_one_and_carry_s() -> None:
    state = make_state()
    numbered = [state.enqueue(frame(payload=i)) for i in range(3)]
    assert [s for s, _ in numbered] == [1, 2, 3]
    for s, wire in numbered:
        obj = json.loads(wire)
        assert obj["s"] == s and obj["v"] == "1.0" and obj["e"] == "x"
    assert state.last_out_seq == 3 and state.unacked_frames == 3


def test_unsent_after_returns_the_tail_in_order() -> None:
    state = make_state()
    for i in range(5):
        state.enqueue(frame(payload=i))
    assert [s for s, _ in state.unsent_after(0)] == [1, 2, 3, 4, 5]
    assert [s for s, _ in state.unsent_after(3)] == [4, 5]
    assert state.unsent_after(5) == []
    state.on_server_ack(2)
    assert [s for s, _ in state.unsent_after(0)] == [3, 4, 5]  # acked frames are gone
    assert [s for s, _ in state.unsent_after(4)] == [5]


def test_server_ack_is_cumulative_capped_and_idempotent() -> None:
    state = make_state()
    for _ in range(4):
        state.enqueue(frame())
    assert state.on_server_ack(2) == 2
    assert state.on_server_ack(1) == 0  # older ack: nothing
    assert state.on_server_ack(2) == 0
    assert state.on_server_ack(99) == 2  # capped at what we numbered
    assert state.server_acked == 4 and state.unacked_frames == 0 and state.unacked_bytes == 0


def test_full_buffer_by_frames_refuses_without_numbering() -> None:
    state = make_state(max_unacked_frames=3)
    for _ in range(3):
        state.enqueue(frame())
    with pytest.raises(SendBufferFull, match="max_unacked_frames=3"):
        state.enqueue(frame())
    assert state.last_out_seq == 3
    state.on_server_ack(1)
    assert state.enqueue(frame())[0] == 4  # room again, numbering continues


def test_full_buffer_by_bytes_refuses() -> None:
    one = len(frame(payload="a" * 50).numbered(1))
    state = make_state(max_unacked_bytes=2 * one + 5)
    state.enqueue(frame(payload="a" * 50))
    state.enqueue(frame(payload="a" * 50))
    with pytest.raises(SendBufferFull, match="max_unacked_bytes"):
        state.enqueue(frame(payload="a" * 50))
    assert state.unacked_bytes == 2 * one


# -- incoming -----------------------------------------------------------------------------------
def test_server_frames_deliver_once_and_report_gaps() -> None:
    state = make_state()
    assert state.on_server_frame(1, now=0.0) is Delivery.DELIVER
    assert state.on_server_frame(2, now=0.0) is Delivery.DELIVER
    assert state.on_server_frame(2, now=0.0) is Delivery.DUPLICATE
    assert state.on_server_frame(1, now=0.0) is Delivery.DUPLICATE
    assert state.on_server_frame(5, now=0.0) is Delivery.GAP
    assert state.delivered == 5
    assert state.on_server_frame(4, now=0.0) is Delivery.DUPLICATE


def test_ack_is_batched_by_count() -> None:
    state = make_state(ack_every_frames=4, ack_delay=100.0)
    for s in range(1, 4):
        state.on_server_frame(s, now=0.0)
        assert not state.ack_due(now=0.0)
    state.on_server_frame(4, now=0.0)
    assert state.ack_due(now=0.0)
    assert state.take_ack() == 4
    assert not state.ack_due(now=0.0) and state.ack_deadline() is None


def test_ack_is_batched_by_delay_from_the_first_unacked_frame() -> None:
    state = make_state(ack_every_frames=100, ack_delay=0.5)
    assert state.ack_deadline() is None
    state.on_server_frame(1, now=10.0)
    state.on_server_frame(2, now=10.3)  # does not push the deadline back
    assert state.ack_deadline() == pytest.approx(10.5)
    assert not state.ack_due(now=10.49)
    assert state.ack_due(now=10.5)
    assert state.take_ack() == 2
    state.on_server_frame(3, now=11.0)
    assert state.ack_deadline() == pytest.approx(11.5)


def test_duplicates_do_not_trigger_acks() -> None:
    state = make_state(ack_every_frames=2)
    state.on_server_frame(1, now=0.0)
    state.on_server_frame(2, now=0.0)
    state.take_ack()
    for _ in range(5):
        state.on_server_frame(2, now=0.0)
    assert not state.ack_due(now=99.0)


# -- connections --------------------------------------------------------------------------------
def test_first_connection_is_new_and_sends_everything_queued_before_it() -> None:
    state = make_state()
    state.enqueue(frame())
    state.enqueue(frame())
    assert state.resume_params() == {}
    result = state.on_connected("sid", resumed=False, last_seq=0)
    assert result.outcome is ConnectOutcome.NEW and result.resend_after == 0
    assert state.unacked_frames == 2  # queued frames belong to the first session
    assert state.resume_params() == {"session": "sid", "last_seq": "0"}


def test_resume_resends_from_the_server_ack_and_acks_via_last_seq() -> None:
    state = make_state(ack_every_frames=100)
    state.on_connected("sid", resumed=False, last_seq=0)
    for _ in range(5):
        state.enqueue(frame())
    state.on_server_ack(2)
    for s in (1, 2, 3):
        state.on_server_frame(s, now=0.0)
    assert state.resume_params() == {"session": "sid", "last_seq": "3"}
    result = state.on_connected("sid", resumed=True, last_seq=7)
    assert result.outcome is ConnectOutcome.RESUMED
    assert result.resend_after == 2 and not result.server_behind
    assert [s for s, _ in state.unsent_after(result.resend_after)] == [3, 4, 5]
    assert not state.ack_due(now=99.0)  # last_seq=3 in the URL acknowledged them


def test_resume_flags_a_server_that_forgot_frames() -> None:
    state = make_state()
    state.on_connected("sid", resumed=False, last_seq=0)
    state.on_server_frame(1, now=0.0)
    state.on_server_frame(2, now=0.0)
    assert state.on_connected("sid", resumed=True, last_seq=1).server_behind


def test_session_lost_starts_clean() -> None:
    state = make_state()
    state.on_connected("old", resumed=False, last_seq=0)
    for _ in range(3):
        state.enqueue(frame())
    state.on_server_frame(1, now=0.0)
    result = state.on_connected("new", resumed=False, last_seq=0)
    assert result.outcome is ConnectOutcome.LOST
    assert result.dropped_frames == 3 and result.session_id == "new"
    assert state.unacked_frames == 0 and state.unacked_bytes == 0
    assert state.enqueue(frame())[0] == 1  # new numbering
    assert state.on_server_frame(1, now=0.0) is Delivery.DELIVER  # new server stream
    assert state.resume_params() == {"session": "new", "last_seq": "1"}


def test_a_resumed_flag_for_another_session_is_a_loss() -> None:
    state = make_state()
    state.on_connected("a", resumed=False, last_seq=0)
    assert state.on_connected("b", resumed=True, last_seq=0).outcome is ConnectOutcome.LOST


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
    """Client ResumeState against the server's OutgoingStream/InboundTracker.

    Both directions lose whatever is in flight at each drop; after each
    reconnect the client re-sends and the server replays. Every frame must be
    run (server) and delivered (client) exactly once, in order.
    """
    rng = random.Random(seed)
    client = make_state(max_unacked_frames=1000, ack_every_frames=ack_every, ack_delay=1.0)
    out = OutgoingStream(max_buffered=1000)
    inbound = InboundTracker()
    ran: list[int] = []
    delivered: list[int] = []
    up: list[tuple[int, str]] = []  # in flight client -> server
    down: list[tuple[int, str]] = []  # in flight server -> client
    client.on_connected("sid", resumed=False, last_seq=0)
    written = 0
    sent_by_client = sent_by_server = 0
    step = 0
    drop_at = set(drops)
    while (len(ran) < n or len(delivered) < n) and step < 10_000:
        step += 1
        if step in drop_at:
            up.clear()
            down.clear()
            replay = out.replay_after(client.delivered)  # ?last_seq=delivered
            result = client.on_connected("sid", resumed=True, last_seq=out.last_seq)
            assert result.outcome is ConnectOutcome.RESUMED
            written = result.resend_after
            down.extend((json.loads(w)["s"], w) for w in replay)
            continue
        action = rng.randrange(5)
        if action == 0 and sent_by_client < n:
            sent_by_client += 1
            client.enqueue(frame(payload=sent_by_client))
        elif action == 1:
            batch = client.unsent_after(written)
            if batch:
                written = batch[-1][0]
                up.extend(batch)
        elif action == 2 and up:
            s, wire = up.pop(0)
            if inbound.accept(s):
                ran.append(json.loads(wire)["p"])
            client.on_server_ack(inbound.highest)  # the server's batched sys.ack
        elif action == 3 and sent_by_server < n:
            sent_by_server += 1
            seq = out.next_seq()
            wire = frame(payload=sent_by_server).numbered(seq)
            out.record(seq, wire)
            down.append((seq, wire))
        elif action == 4 and down:
            s, wire = down.pop(0)
            if client.on_server_frame(s, now=float(step)) is not Delivery.DUPLICATE:
                delivered.append(json.loads(wire)["p"])
            if client.ack_due(now=float(step)):
                out.ack(client.take_ack())
    assert ran == list(range(1, n + 1))
    assert delivered == list(range(1, n + 1))


# -- backoff ------------------------------------------------------------------------------------
def test_backoff_ceiling_doubles_up_to_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=4.0, rng=random.Random(0))
    assert [backoff.ceiling(i) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.ceiling(10_000) == 4.0  # no float overflow


def test_backoff_is_full_jitter_and_replays_with_a_seed() -> None:
    a = Backoff(base=0.1, cap=10.0, rng=random.Random(42))
    b = Backoff(base=0.1, cap=10.0, rng=random.Random(42))
    delays = [a.delay(i) for i in range(12)]
    assert delays == [b.delay(i) for i in range(12)]
    assert all(0.0 <= d <= a.ceiling(i) for i, d in enumerate(delays))
    # Full jitter: over many draws the delays spread across the whole window.
    many = [a.delay(3) for _ in range(2000)]
    assert min(many) < 0.1 * a.ceiling(3) and max(many) > 0.9 * a.ceiling(3)


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(base=1.0, cap=0.5, rng=random.Random())
    with pytest.raises(ValueError):
        Backoff(base=0.0, cap=1.0, rng=random.Random())


def test_resume_params_number_every_attempt_of_this_instance() -> None:
    from wscore.client.resume import ResumeState

    state = ResumeState(max_unacked_frames=10, max_unacked_bytes=1000, ack_every_frames=4,
                        ack_delay=0.1, client_tag="abc")
    assert state.resume_params() == {"client": "abc", "attempt": "1"}
    state.on_connected("sid", resumed=False, last_seq=0)
    assert state.resume_params() == {"session": "sid", "last_seq": "0", "client": "abc",
                                     "attempt": "2"}
