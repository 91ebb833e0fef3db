"""The session state machine and its numbered streams (pure)."""

from __future__ import annotations

import itertools

import pytest

from wscore.protocol.session import (
    ILLEGAL,
    TRANSITIONS,
    IllegalTransition,
    InboundTracker,
    OutgoingStream,
    ResumeImpossible,
    SessionInput,
    SessionState,
    TokenBucket,
    next_state,
)


def test_every_pair_is_either_legal_or_explicitly_illegal() -> None:
    pairs = set(itertools.product(SessionState, SessionInput))
    assert set(TRANSITIONS) | set(ILLEGAL) == pairs
    assert not set(TRANSITIONS) & set(ILLEGAL)


def test_an_illegal_pair_raises() -> None:
    for state, event in ILLEGAL:
        with pytest.raises(IllegalTransition):
            next_state(state, event)


def test_closed_is_terminal_and_expiry_only_closes_detached() -> None:
    assert not any((SessionState.CLOSED, i) in TRANSITIONS for i in SessionInput)
    assert next_state(SessionState.DETACHED, SessionInput.EXPIRE) is SessionState.CLOSED
    with pytest.raises(IllegalTransition):
        next_state(SessionState.ATTACHED, SessionInput.EXPIRE)


def fill(stream: OutgoingStream, n: int) -> None:
    for _ in range(n):
        seq = stream.next_seq()
        stream.record(seq, f"m{seq}")


def test_replay_after_returns_exactly_the_unseen_frames_in_order() -> None:
    s = OutgoingStream(max_buffered=100)
    fill(s, 10)
    s.ack(3)
    assert s.replay_after(6) == ["m7", "m8", "m9", "m10"]
    assert s.acked == 6 and s.buffered == 4
    assert s.replay_after(10) == []


def test_recorded_is_a_held_frame_by_seq_and_none_once_released_or_dropped() -> None:
    s = OutgoingStream(max_buffered=3)
    fill(s, 5)  # 1 and 2 dropped for space
    assert [s.recorded(seq) for seq in range(0, 7)] == [None, None, None, "m3", "m4", "m5", None]
    s.ack(4)
    assert s.recorded(4) is None and s.recorded(5) == "m5"


def test_ack_is_cumulative_and_capped() -> None:
    s = OutgoingStream(max_buffered=100)
    fill(s, 5)
    s.ack(99)
    assert s.acked == 5 and s.buffered == 0
    s.ack(2)  # stale ack changes nothing
    assert s.acked == 5


def test_overflow_makes_old_resumes_impossible_never_a_gap() -> None:
    s = OutgoingStream(max_buffered=3)
    fill(s, 5)  # frames 1 and 2 dropped unacknowledged
    assert s.dropped_through == 2 and not s.resumable
    with pytest.raises(ResumeImpossible):
        s.replay_after(1)
    assert s.replay_after(2) == ["m3", "m4", "m5"]


def test_dropping_acknowledged_frames_keeps_resumability() -> None:
    s = OutgoingStream(max_buffered=2)
    fill(s, 2)
    s.ack(2)
    fill(s, 2)
    assert s.resumable and s.replay_after(2) == ["m3", "m4"]


def test_resume_from_the_future_is_impossible() -> None:
    s = OutgoingStream(max_buffered=3)
    fill(s, 1)
    with pytest.raises(ResumeImpossible):
        s.replay_after(2)


def test_inbound_duplicates_run_once() -> None:
    t = InboundTracker()
    assert [t.accept(s) for s in (1, 2, 2, 1, 3, None, None)] == [True, True, False, False, True,
                                                                   True, True]
    assert t.highest == 3


def test_token_bucket_refills_with_passed_in_time() -> None:
    b = TokenBucket(rate=10, burst=2, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [True, True, False]
    assert b.take(0.1) and not b.take(0.1)
    assert b.take(10.0) and b.take(10.0) and not b.take(10.0)  # capped at burst


def test_resume_from_before_an_acknowledged_point_is_impossible() -> None:
    s = OutgoingStream(max_buffered=10)
    fill(s, 6)
    s.ack(4)
    with pytest.raises(ResumeImpossible):
        s.replay_after(2)  # frames 3 and 4 were released on the ack
    assert s.replay_after(4) == ["m5", "m6"]


def test_replay_is_always_the_exact_unseen_suffix() -> None:
    # Any interleaving of sends, acks and overflow: a replay either raises or
    # returns exactly the frames after last_seq, in order.
    import random

    rng = random.Random(7)
    for _ in range(300):
        s = OutgoingStream(max_buffered=rng.randint(1, 8))
        for _ in range(rng.randint(0, 30)):
            if rng.random() < 0.7:
                fill(s, 1)
            else:
                s.ack(rng.randint(0, s.last_seq))
        last = rng.randint(0, s.last_seq)
        try:
            got = s.replay_after(last)
        except ResumeImpossible:
            continue
        assert got == [f"m{i}" for i in range(last + 1, s.last_seq + 1)]
