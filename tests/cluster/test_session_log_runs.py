"""Run entries: room messages stored once, in the room stream (wscore/cluster/session_log.py).

A session's log holds its own frames and, for room messages, only *runs*
("from seq q on: room R's messages after room seq c, except those excluding
this session"). These tests drive a real redis-server the way a session actor
does and check that a replay rebuilds, byte for byte, the numbered frames the
client was sent.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wscore.actors.store import room_wire
from wscore.cluster.errors import SequenceRefused
from wscore.cluster.generation import Generation
from wscore.cluster.rooms import RoomPublisher
from wscore.cluster.session_log import LogLimits, SessionLog
from wscore.cluster.writer import RedisWriter
from wscore.protocol.envelope import encode_envelope
from wscore.protocol.session import ResumeImpossible

SID = "s1"


class Member:
    """What a session actor does with a store, reduced to the log's side of it.

    ``sent`` is every numbered frame the client got, in order (``sent[i]`` has
    seq ``i + 1``): what any replay must give back.
    """

    def __init__(self, log: SessionLog, rooms: RoomPublisher, *, run_limit: int = 64) -> None:
        self.log, self.rooms, self.run_limit = log, rooms, run_limit
        self.sent: list[str] = []
        self.cursors: dict[str, int] = {}
        self.run: str | None = None
        self.run_len = 0
        self.acked = 0
        self.writes = 0
        log.create(SID, "node-a")

    @property
    def last(self) -> int:
        return len(self.sent)

    def join(self, room: str) -> None:
        cursor = self.rooms.current(room)
        self.cursors[room] = cursor
        self.log.join_room(SID, 1, room, cursor=cursor)

    def leave(self, room: str) -> None:
        run_last = 0
        if self.run == room:
            run_last, self.run = self.last, None
        self.cursors.pop(room)
        self.log.leave_room(SID, 1, room, run_last=run_last)

    def own(self, text: str) -> None:
        seq = self.last + 1
        wire = encode_envelope("own", text, now_ms=1).numbered(seq)
        self.log.append(SID, 1, seq, wire, close_cursor=self._close_cursor())
        self.writes += 1
        self.run = None
        self.sent.append(wire)

    def publish(self, room: str, text: str, *, by: str | None = None) -> None:
        """Someone (``by``: excluded from it) publishes; the member receives it if it is in."""
        body = encode_envelope("room", text, now_ms=2).body
        room_seq = self.rooms.publish(room, room_wire(by, body))
        if room not in self.cursors:
            return
        assert room_seq == self.cursors[room] + 1
        self.cursors[room] = room_seq
        if by == SID:
            return  # excluded: not in this session's stream
        seq = self.last + 1
        if self.run != room or self.run_len >= self.run_limit:
            self.log.start_run(SID, 1, seq, room, room_seq - 1, close_cursor=self._close_cursor())
            self.writes += 1
            self.run, self.run_len = room, 0
        self.run_len += 1
        self.sent.append(body + f',"s":{seq}}}')

    def ack(self, seq: int) -> None:
        self.acked = max(self.acked, min(seq, self.last))
        self.log.ack(SID, 1, min(seq, self.last))

    def _close_cursor(self) -> int:
        return 0 if self.run is None else self.cursors[self.run]


@pytest.fixture
def publisher(writer: RedisWriter) -> RoomPublisher:
    return RoomPublisher(writer)


@pytest.fixture
def log(writer: RedisWriter, generation: Generation) -> SessionLog:
    return SessionLog(writer, generation, limits=LogLimits(max_buffered_messages=1000))


def log_length(writer: RedisWriter, log: SessionLog) -> int:
    return int(writer.execute("LLEN", log.keys(SID)[2]))


def test_room_messages_cost_one_run_entry_and_replay_as_sent(
        writer: RedisWriter, log: SessionLog, publisher: RoomPublisher) -> None:
    m = Member(log, publisher)
    m.join("lobby")
    m.own("hello")
    for i in range(50):
        m.publish("lobby", f"msg {i}", by="someone-else")
    assert m.writes == 2 and log_length(writer, log) == 2  # the frame and one run
    assert log.replay_after(SID, 1, 0) == m.sent
    assert log.replay_after(SID, 1, 30) == m.sent[30:]


def test_an_open_run_goes_on_to_the_room_head(log: SessionLog, publisher: RoomPublisher) -> None:
    # The owner died after sending msg 0; the room went on: a resume elsewhere owes them all.
    m = Member(log, publisher)
    m.join("lobby")
    m.publish("lobby", "msg 0")
    later = [publisher.publish("lobby", room_wire(None, encode_envelope("room", f"later {i}",
                                                                       now_ms=3).body))
             for i in range(3)]
    replay = log.replay(SID, 1, 1)
    assert [f.rsplit(',"s":', 1)[1] for f in replay.frames] == ["2}", "3}", "4}"]
    assert '"later 2"' in replay.frames[-1]
    assert (replay.run_room, replay.run_cursor) == ("lobby", later[-1])
    with pytest.raises(ResumeImpossible, match="stream is at 4"):
        log.replay_after(SID, 1, 5)  # past the stream, run included


def test_messages_excluding_the_member_are_left_out_of_its_runs(
        log: SessionLog, publisher: RoomPublisher) -> None:
    m = Member(log, publisher)
    m.join("lobby")
    m.publish("lobby", "a")
    m.publish("lobby", "mine", by=SID)
    m.publish("lobby", "b")
    m.own("reply")  # closes the run: 2 messages over 3 room seqs
    m.publish("lobby", "mine again", by=SID)
    m.publish("lobby", "c")
    assert log.replay_after(SID, 1, 0) == m.sent
    assert [f.rsplit(',"s":', 1)[1] for f in m.sent] == ["1}", "2}", "3}", "4}"]


def test_two_rooms_interleaved_and_the_run_limit(writer: RedisWriter, log: SessionLog,
                                                 publisher: RoomPublisher) -> None:
    m = Member(log, publisher, run_limit=4)
    m.join("a")
    m.join("b")
    for i in range(10):
        m.publish("a", f"a{i}")
    for i in range(3):
        m.publish("a", f"a{10 + i}")
        m.publish("b", f"b{i}")
    assert m.writes == 3 + 5  # runs of 4, 4 and 2 (+ a10) in a, then one per switch
    assert log.replay_after(SID, 1, 0) == m.sent
    record = log.read(SID)
    assert record is not None and record.run == "b"
    assert record.rooms["a"] == m.cursors["a"]  # closed runs moved the cursor


def test_acks_release_whole_entries_and_a_partly_acked_run_replays_its_rest(
        writer: RedisWriter, log: SessionLog, publisher: RoomPublisher) -> None:
    m = Member(log, publisher, run_limit=5)
    m.join("lobby")
    m.own("x")
    for i in range(12):
        m.publish("lobby", f"m{i}")
    m.own("y")
    m.ack(8)  # the frame and the first run (2..6) go; the run 7..11 stays
    record = log.read(SID)
    assert record is not None and (record.first_seq, record.acked, record.buffered) == (7, 8, 3)
    assert log.replay_after(SID, 1, 8) == m.sent[8:]
    with pytest.raises(ResumeImpossible, match="acknowledged and released"):
        log.replay_after(SID, 1, 5)


def test_leaving_closes_the_run(log: SessionLog, publisher: RoomPublisher) -> None:
    m = Member(log, publisher)
    m.join("lobby")
    m.publish("lobby", "before")
    m.leave("lobby")
    m.publish("lobby", "after: not this session's")
    assert log.replay_after(SID, 1, 0) == m.sent
    with pytest.raises(SequenceRefused):
        log.append(SID, 1, 3, "skips seq 2")
    m.own("next")
    assert log.replay_after(SID, 1, 0) == m.sent


def test_a_run_the_room_stream_no_longer_holds_makes_the_resume_impossible(
        writer: RedisWriter, log: SessionLog) -> None:
    short = RoomPublisher(writer, history=5, approximate_trim=False)
    m = Member(log, short, run_limit=100)
    m.join("lobby")
    m.publish("lobby", "first")
    for i in range(10):
        m.publish("lobby", f"m{i}")
    with pytest.raises(ResumeImpossible, match="no longer held"):
        log.replay_after(SID, 1, 3)
    m.own("closes it")
    with pytest.raises(ResumeImpossible, match="no longer held"):
        log.replay_after(SID, 1, 3)
    assert log.replay_after(SID, 1, 11) == m.sent[11:]  # past the run: only the frame


def test_a_reset_room_numbering_makes_the_resume_impossible(
        writer: RedisWriter, log: SessionLog, publisher: RoomPublisher) -> None:
    m = Member(log, publisher)
    m.join("lobby")
    for i in range(3):
        m.publish("lobby", f"m{i}")
    writer.execute("DEL", publisher.layout.meta_key("lobby"), publisher.layout.stream_key("lobby"))
    with pytest.raises(ResumeImpossible, match="reset"):
        log.replay_after(SID, 1, 0)


def test_run_seqs_are_checked(log: SessionLog, publisher: RoomPublisher) -> None:
    m = Member(log, publisher)
    m.join("lobby")
    m.own("one")
    with pytest.raises(SequenceRefused):
        log.start_run(SID, 1, 3, "lobby", 0)  # skips seq 2
    m.publish("lobby", "run from 2")
    with pytest.raises(SequenceRefused):
        log.append(SID, 1, 2, "reuses the run's first seq")
    assert log.replay_after(SID, 1, 0) == m.sent


def test_only_a_members_cursor_moves(log: SessionLog) -> None:
    log.create(SID, "n")
    log.join_room(SID, 1, "lobby", cursor=3)
    assert log.join_room(SID, 1, "lobby", cursor=99) is False  # a member's cursor is kept
    log.start_run(SID, 1, 1, "lobby", 3)
    log.start_run(SID, 1, 2, "elsewhere", 8, close_cursor=4)
    log.append(SID, 1, 3, "own", close_cursor=9)
    record = log.read(SID)
    assert record is not None and record.rooms == {"lobby": 4}


_ops = st.lists(st.one_of(
    st.tuples(st.just("own"), st.integers(0, 0)),
    st.tuples(st.just("room"), st.integers(0, 1)),  # room a or b, from someone else
    st.tuples(st.just("mine"), st.integers(0, 1)),  # published by the member: excluded
    st.tuples(st.just("rejoin"), st.integers(0, 1)),
    st.tuples(st.just("ack"), st.integers(0, 40)),
    st.tuples(st.just("replay"), st.integers(0, 40)),
), max_size=40)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run_limit=st.integers(1, 4), ops=_ops)
def test_replay_rebuilds_what_was_sent(writer: RedisWriter, generation: Generation,
                                       run_limit: int, ops: list[tuple[str, int]]) -> None:
    writer.execute("FLUSHDB")
    generation.recover()
    log = SessionLog(writer, generation, limits=LogLimits(max_buffered_messages=1000))
    m = Member(log, RoomPublisher(writer), run_limit=run_limit)
    rooms = ["a", "b"]
    m.join("a")
    m.join("b")
    for op, arg in ops:
        if op == "own":
            m.own(f"o{m.last}")
        elif op in ("room", "mine"):
            m.publish(rooms[arg], f"r{m.last}", by=SID if op == "mine" else "other")
        elif op == "rejoin":
            m.leave(rooms[arg])
            m.publish(rooms[arg], "while out")
            m.join(rooms[arg])
        elif op == "ack":
            m.ack(arg)
        else:
            _check_replay(log, m, arg)
    for k in range(m.acked, m.last + 1):
        _check_replay(log, m, k)


def _check_replay(log: SessionLog, m: Member, k: int) -> None:
    outcome: Any
    try:
        outcome = log.replay_after(SID, 1, k)
    except ResumeImpossible:
        outcome = ResumeImpossible
    if k > m.last or (k < m.acked and outcome is ResumeImpossible):
        # Past the stream; or before the ack, where entries may be released (whole
        # entries go, so a run may still allow it: then it must replay right).
        assert k < m.acked or outcome is ResumeImpossible
        return
    assert outcome == m.sent[k:]
    m.acked = max(m.acked, k)  # a replay acknowledges what the client says it has
