"""The fenced per-session log against a real redis-server (wscore/cluster/session_log.py)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redisproc import RedisServer
from wshelpers import wait_for

from wscore.cluster.errors import (
    ClusterError,
    Fenced,
    RedisDataLost,
    SequenceRefused,
    SessionMissing,
)
from wscore.cluster.generation import Generation
from wscore.cluster.session_log import LogLimits, SessionLog
from wscore.cluster.writer import RedisWriter
from wscore.protocol.session import InboundTracker, OutgoingStream, ResumeImpossible


def make_log(writer: RedisWriter, generation: Generation, **limits: float) -> SessionLog:
    return SessionLog(writer, generation, limits=LogLimits(**limits))  # type: ignore[arg-type]


@pytest.fixture
def log(writer: RedisWriter, generation: Generation) -> SessionLog:
    return make_log(writer, generation, max_buffered_messages=1000)


def test_a_new_claim_fences_the_old_owner(log: SessionLog) -> None:
    first = log.create("s1", "node-a", user_id="u1", data={"n": 1})
    assert first.epoch == 1
    log.append("s1", 1, 1, "f1")
    second = log.claim("s1", "node-b")
    assert second.epoch == 2
    assert second.previous_owner == "node-a" and second.previous_lease_live
    assert (second.last_seq, second.user_id, second.data) == (1, "u1", {"n": 1})
    # the old owner, paused or partitioned, comes back: every write of its is refused
    with pytest.raises(Fenced):
        log.append("s1", 1, 2, "stale")
    with pytest.raises(Fenced):
        log.ack("s1", 1, 1)
    with pytest.raises(Fenced):
        log.set_data("s1", 1, {"n": "stale"})
    with pytest.raises(Fenced):
        log.join_room("s1", 1, "lobby")
    with pytest.raises(Fenced):
        log.accept_inbound("s1", 1, 7)
    with pytest.raises(Fenced):
        log.end("s1", 1)
    # nothing of it landed; the new owner carries on at seq 2
    log.append("s1", 2, 2, "f2")
    record = log.read("s1")
    assert record is not None
    assert (record.epoch, record.owner, record.last_seq, record.data, record.inbound, record.rooms) == (
        2, "node-b", 2, {"n": 1}, 0, {})
    assert log.replay_after("s1", 2, 0) == ["f1", "f2"]


def test_a_released_session_has_no_live_owner(log: SessionLog) -> None:
    log.create("s1", "node-a")
    log.release("s1", 1)
    claim = log.claim("s1", "node-b")
    assert (claim.previous_owner, claim.previous_lease_live, claim.epoch) == ("", False, 2)


def test_sequence_must_continue_without_reuse_or_skip(log: SessionLog) -> None:
    log.create("s1", "node-a")
    log.append("s1", 1, 1, "f1")
    with pytest.raises(SequenceRefused):
        log.append("s1", 1, 1, "again")  # a reused s
    with pytest.raises(SequenceRefused):
        log.append("s1", 1, 3, "skip")  # a gap
    log.append("s1", 1, 2, "f2")
    assert log.replay_after("s1", 1, 0) == ["f1", "f2"]


def test_unknown_session_and_double_create(log: SessionLog) -> None:
    with pytest.raises(SessionMissing):
        log.claim("nope", "node-a")
    with pytest.raises(SessionMissing):
        log.append("nope", 1, 1, "x")
    log.create("s1", "node-a")
    with pytest.raises(ClusterError, match="already exists"):
        log.create("s1", "node-b")


def test_count_bound_ends_resumability_like_the_memory_stream(log: SessionLog, writer: RedisWriter,
                                                               generation: Generation) -> None:
    small = make_log(writer, generation, max_buffered_messages=3)
    small.create("s1", "n")
    results = [small.append("s1", 1, seq, f"f{seq}") for seq in range(1, 6)]
    assert [r.buffered for r in results] == [1, 2, 3, 3, 3]
    assert results[-1].dropped_through == 2 and not results[-1].resumable
    with pytest.raises(ResumeImpossible, match="dropped"):
        small.replay_after("s1", 1, 1)
    assert small.replay_after("s1", 1, 2) == ["f3", "f4", "f5"]
    claim = small.claim("s1", "n2")
    assert claim.resumable and claim.acked == 2


def test_byte_bound_drops_oldest_and_ends_resumability(writer: RedisWriter, generation: Generation) -> None:
    log = make_log(writer, generation, max_buffered_messages=100, max_buffered_bytes=10)
    log.create("s1", "n")
    assert log.append("s1", 1, 1, "aaaa").buffered == 1  # 4 bytes
    assert log.append("s1", 1, 2, "bbbb").buffered == 2  # 8 bytes
    log.ack("s1", 1, 1)  # frame 1 released: 4 bytes held
    third = log.append("s1", 1, 3, "cccc")  # 8 bytes, within bound
    assert (third.buffered, third.resumable) == (2, True)
    fourth = log.append("s1", 1, 4, "dddd")  # 12 > 10: frame 2 (unacked) dropped
    assert (fourth.buffered, fourth.dropped_through, fourth.resumable) == (2, 2, False)
    record = log.read("s1")
    assert record is not None and record.buffered_bytes == 8
    with pytest.raises(ResumeImpossible):
        log.replay_after("s1", 1, 1)
    assert log.replay_after("s1", 1, 2) == ["cccc", "dddd"]
    # bytes are UTF-8 bytes, not characters: "é" is two
    log.create("s2", "n")
    assert log.append("s2", 1, 1, "é" * 5).buffered == 1  # exactly 10 bytes
    over = log.append("s2", 1, 2, "x")
    assert (over.buffered, over.dropped_through) == (1, 1)


def test_a_frame_larger_than_the_byte_bound_ends_resumability(writer: RedisWriter,
                                                              generation: Generation) -> None:
    log = make_log(writer, generation, max_buffered_bytes=10)
    log.create("s1", "n")
    big = log.append("s1", 1, 1, "x" * 11)
    assert (big.buffered, big.dropped_through, big.resumable) == (0, 1, False)
    with pytest.raises(ResumeImpossible):
        log.replay_after("s1", 1, 0)
    assert log.replay_after("s1", 1, 1) == []  # the client that got it live can go on


def test_every_write_refreshes_the_ttl_and_an_idle_session_expires(
    writer: RedisWriter, generation: Generation, redis_server: RedisServer
) -> None:
    log = make_log(writer, generation, session_ttl=60)
    log.create("s1", "n")
    log.append("s1", 1, 1, "f1")
    _gen, meta, key_log, _rooms, _inbox = log.keys("s1")
    admin = redis_server.admin()
    for key in (meta, key_log):
        admin.pexpire(key, 500)
    log.ack("s1", 1, 0)  # any fenced write
    assert admin.pttl(meta) > 30_000 and admin.pttl(key_log) > 30_000
    short = make_log(writer, generation, session_ttl=0.2)
    short.create("s2", "n", user_id="u")
    short.join_room("s2", 1, "lobby")
    assert short.room_members("lobby") == ["s2"]
    wait_for(lambda: not short.exists("s2"), what="the session's TTL to run out")
    with pytest.raises(SessionMissing):
        short.claim("s2", "n2")
    assert short.room_members("lobby") == []  # it left its rooms (SPEC §3)
    assert short.sessions_of_user("u") == []


def test_metadata_lives_in_redis_and_spans_nodes(redis_server: RedisServer, log: SessionLog,
                                                 generation: Generation) -> None:
    other_writer = RedisWriter(redis_server.url)
    other_writer.start()
    try:
        other_gen = Generation(other_writer)
        assert other_gen.establish() == generation.token  # the second node adopts it
        other = SessionLog(other_writer, other_gen)
        log.create("s1", "node-a", user_id="alice", data={"cart": [1]})
        log.join_room("s1", 1, "lobby", cursor=7)
        other.create("s2", "node-b", user_id="alice")
        other.join_room("s2", 1, "lobby")
        assert log.room_members("lobby") == other.room_members("lobby") == ["s1", "s2"]
        assert log.sessions_of_user("alice") == ["s1", "s2"]
        assert log.accept_inbound("s1", 1, 5) is True
        log.set_data("s1", 1, {"cart": [1, 2]})
        claim = other.claim("s1", "node-b")  # resumed on the other node
        assert (claim.data, claim.rooms, claim.inbound, claim.user_id) == (
            {"cart": [1, 2]}, {"lobby": 7}, 5, "alice")
        assert other.accept_inbound("s1", claim.epoch, 5) is False  # a re-sent frame runs once
        assert other.leave_room("s1", claim.epoch, "lobby") is True
        assert other.leave_room("s1", claim.epoch, "lobby") is False
        assert log.room_members("lobby") == ["s2"]
        assert other.end("s2", 1) == ["lobby"]
        assert log.room_members("lobby") == [] and log.sessions_of_user("alice") == ["s1"]
        with pytest.raises(SessionMissing):
            log.claim("s2", "node-a")  # ended (SPEC §7): a resume answers 1006
    finally:
        other_writer.stop()


def test_inbound_positions_match_the_memory_tracker(log: SessionLog) -> None:
    log.create("s1", "n")
    tracker = InboundTracker()
    for s in [1, 2, 2, 5, 3, 6, 6, 1, 7]:
        assert log.accept_inbound("s1", 1, s) is tracker.accept(s)


def test_flushall_is_detected(log: SessionLog, generation: Generation, redis_server: RedisServer) -> None:
    log.create("s1", "n")
    log.append("s1", 1, 1, "f1")
    redis_server.flushall()
    with pytest.raises(RedisDataLost):
        generation.verify()
    with pytest.raises(RedisDataLost):
        log.claim("s1", "n2")  # a resume answers 1006, never a gap
    with pytest.raises(RedisDataLost):
        log.append("s1", 1, 2, "f2")
    with pytest.raises(RedisDataLost):
        log.create("s2", "n")
    old = generation.token
    assert generation.recover() != old
    log.create("s2", "n")  # the node carries on in the new generation
    generation.verify()


def test_aof_keeps_acknowledged_appends_across_kill9(redis_factory: Callable[..., RedisServer]) -> None:
    server = redis_factory(appendonly=True, appendfsync="always")
    states: list[bool] = []
    writer = RedisWriter(server.url, reconnect_min_delay=0.01, reconnect_max_delay=0.1,
                         on_state=states.append)
    writer.start()
    try:
        generation = Generation(writer)
        generation.establish()
        log = SessionLog(writer, generation, limits=LogLimits(max_buffered_messages=5000))
        log.create("s1", "n", data={"k": "v"})
        futures = [log.append_nowait("s1", 1, seq, json.dumps({"s": seq})) for seq in range(1, 3001)]
        for future in futures:
            future.get()  # every one acknowledged by Redis
        server.kill9()
        wait_for(lambda: states[-1] is False, what="the writer to see Redis down")
        server.start()
        wait_for(lambda: writer.up, what="the writer to reconnect")
        assert states == [True, False, True]
        generation.verify()  # AOF: no data loss
        claim = log.claim("s1", "n2")
        assert (claim.last_seq, claim.data) == (3000, {"k": "v"})
        frames = log.replay_after("s1", claim.epoch, 0)
        assert [json.loads(f)["s"] for f in frames] == list(range(1, 3001))
    finally:
        writer.stop()


def test_restart_without_persistence_is_data_loss(redis_server: RedisServer, writer: RedisWriter,
                                                  log: SessionLog, generation: Generation) -> None:
    log.create("s1", "n")
    redis_server.kill9()
    wait_for(lambda: not writer.up, what="the writer to see Redis down")
    redis_server.start()
    wait_for(lambda: writer.up, what="the writer to reconnect")
    with pytest.raises(RedisDataLost):
        generation.verify()
    with pytest.raises(RedisDataLost):
        log.claim("s1", "n2")


# -- the property: Redis log and in-memory OutgoingStream agree on every step --------------------

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 4)),
        st.tuples(st.just("ack"), st.integers(-2, 40)),
        st.tuples(st.just("replay"), st.integers(-2, 40)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(max_buffered=st.integers(1, 6), ops=_ops)
def test_replay_rules_match_outgoing_stream(writer: RedisWriter, generation: Generation,
                                            max_buffered: int, ops: list[tuple[str, int]]) -> None:
    log = make_log(writer, generation, max_buffered_messages=max_buffered)
    memory = OutgoingStream(max_buffered=max_buffered)
    writer.execute("DEL", *log.keys("prop")[1:])
    log.create("prop", "n")
    for op, arg in ops:
        if op == "append":
            for _ in range(arg):
                seq = memory.next_seq()
                memory.record(seq, f"f{seq}")
                result = log.append("prop", 1, seq, f"f{seq}")
                assert (result.buffered, result.resumable) == (memory.buffered, memory.resumable)
        elif op == "ack":
            if arg < 0:
                continue  # OutgoingStream.ack takes acks from the wire, never negative
            memory.ack(arg)
            assert log.ack("prop", 1, arg) == memory.acked
        else:
            try:
                expected: list[str] | type[ResumeImpossible] = memory.replay_after(arg)
            except ResumeImpossible:
                expected = ResumeImpossible
            if expected is ResumeImpossible:
                with pytest.raises(ResumeImpossible):
                    log.replay_after("prop", 1, arg)
            else:
                assert log.replay_after("prop", 1, arg) == expected
        record = log.read("prop")
        assert record is not None
        assert (record.last_seq, record.acked, record.dropped_through, record.buffered) == (
            memory.last_seq, memory.acked, memory.dropped_through, memory.buffered)
