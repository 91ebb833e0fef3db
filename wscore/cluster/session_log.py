"""A session's numbered outgoing log and its metadata, in Redis, fenced by epoch.

The semantics are those of :class:`wscore.protocol.session.OutgoingStream` and
:class:`~wscore.protocol.session.InboundTracker` (SPEC §3 "Resume"), kept in
Redis so any node can resume the session (SPEC §6):

- frames are numbered 1, 2, 3 …; :meth:`SessionLog.append` stores frame
  ``seq`` only if it is the log's last + 1 (a reused or skipped ``s`` is
  refused with :class:`SequenceRefused`);
- room messages are not copied into the log: :meth:`SessionLog.start_run`
  stores a *run* — "from ``seq`` on, the room's messages after room seq
  ``after``, except those that exclude this session" — and the messages that
  follow it in the same room take the next seqs without any write, because
  the room stream already holds them (stored before they were published).
  The session's next entry (a frame or another run), or leaving that room,
  closes the run at the seq before it (``scripts`` module docstring);
- the log holds the unacknowledged entries, at most ``max_buffered_messages``
  and ``max_buffered_bytes`` (UTF-8 bytes of the entries: a run costs its
  entry, a frame its text); dropping an unacknowledged entry for space
  remembers its last seq, and a resume from before it is impossible (1006),
  never a gap. A single frame larger than ``max_buffered_bytes`` is dropped at
  once, so it ends resumability. A run whose messages the room stream no
  longer holds (trimmed past it, or the room's numbering reset) makes a
  resume from before its end impossible too;
- acknowledgements are cumulative; :meth:`replay_after` applies the same three
  refusals as ``OutgoingStream.replay_after``, in the same order, and
  acknowledges what the client says it has;
- every write carries the caller's *epoch*. :meth:`claim` moves the epoch on
  (forced takeover), so a paused or partitioned old owner's next write is
  refused with :class:`Fenced` inside the same script;
- every write refreshes the TTL (``session_ttl``) of all the session's keys;
  a session nobody writes for that long is gone (:class:`SessionMissing`);
- pushes (``send_to_session``, ``send_to_user``) go into the session's
  *inbox* first (:meth:`push_nowait`, :meth:`push_user_nowait`; any node,
  unfenced, refused for an unknown session), numbered 1, 2, 3 … there and
  announced to the owner; the owner appends push ``n`` with
  ``append(..., inbox_pos=n)``, which removes it from the inbox in the same
  fenced step, so each push enters the numbered log exactly once whichever
  node holds the session, or after it is claimed again. A push that finds
  the inbox full (``max_buffered_messages`` pushes or ``max_buffered_bytes``)
  is refused and marks the session: its resume is impossible (1006), never a
  silent skip.

Each blocking method has a ``*_nowait`` form where throughput matters; all go
through the node's one :class:`~wscore.cluster.writer.RedisWriter`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import attrs
import gevent.event
import redis.exceptions

from wscore.cluster import scripts
from wscore.cluster.errors import (
    ClusterError,
    Fenced,
    RedisDataLost,
    SequenceRefused,
    SessionMissing,
)
from wscore.cluster.generation import Generation
from wscore.cluster.writer import RedisWriter, text, wait_result
from wscore.protocol.session import ResumeImpossible

__all__ = ["RUN_LIMIT", "AppendResult", "Claim", "LogLimits", "Replay", "SessionLog", "SessionRecord"]

#: The most room messages one run entry covers (its owner then starts another). A
#: resume reads a run's room stream from the run's start, so the start must stay in
#: the room's history; a run entry per 64 messages per member is ~1.6 % of the writes
#: one append per member per message made (docs/scaling.md "Run entries").
RUN_LIMIT = 64


_REFUSALS: dict[str, type[ClusterError]] = {
    "WSFENCED": Fenced,
    "WSMISSING": SessionMissing,
    "WSDATALOST": RedisDataLost,
    "WSSEQ": SequenceRefused,
    "WSEXISTS": ClusterError,
    "WSINBOX": SequenceRefused,
}


@attrs.frozen(kw_only=True)
class LogLimits:
    """Bounds and lifetimes of a Redis-backed session (SPEC §4 names)."""

    max_buffered_messages: int = 1000
    max_buffered_bytes: int = 4 * 1024 * 1024
    session_ttl: float = 300.0  # seconds a session lives without a write from its owner
    lease_ttl: float = 30.0  # seconds an owner's lease runs without renew()

    def __attrs_post_init__(self) -> None:
        if self.max_buffered_messages < 1 or self.max_buffered_bytes < 1:
            raise ValueError("max_buffered_messages and max_buffered_bytes must be at least 1")
        if self.session_ttl <= 0 or self.lease_ttl <= 0:
            raise ValueError("session_ttl and lease_ttl must be positive")

    @property
    def session_ttl_ms(self) -> int:
        return max(1, math.ceil(self.session_ttl * 1000))

    @property
    def lease_ttl_ms(self) -> int:
        return max(1, math.ceil(self.lease_ttl * 1000))


@attrs.frozen(kw_only=True)
class Claim:
    """What a node learns when it takes a session (new or resumed)."""

    session_id: str
    epoch: int
    previous_owner: str  # "" when nobody held it (new, or released)
    previous_lease_live: bool  # the previous owner's lease had not run out: hand over to it
    last_seq: int
    acked: int
    dropped_through: int
    inbound: int  # highest client ``s`` processed
    user_id: str | None
    data: Any
    rooms: dict[str, int]  # room id -> room seq last appended to this log (0: none yet)
    inbox_taken: int = 0  # the last inbox position appended to the log (the head is the next)
    inbox_lost: bool = False  # a push was refused for a full inbox: not resumable

    @property
    def resumable(self) -> bool:
        """As ``OutgoingStream.resumable``: no unacknowledged frame was dropped after the last ack."""
        return self.dropped_through <= self.acked


@attrs.frozen(kw_only=True)
class AppendResult:
    buffered: int  # frames held after the append
    dropped_through: int
    acked: int

    @property
    def resumable(self) -> bool:
        return self.dropped_through <= self.acked


@attrs.frozen(kw_only=True)
class SessionRecord:
    """A read-only snapshot of a session's record (no epoch needed, nothing written)."""

    session_id: str
    epoch: int
    owner: str
    lease_until_ms: int
    last_seq: int  # the last seq stored exactly (an open run goes on past it)
    acked: int
    dropped_through: int
    buffered: int  # entries in the log (a run is one)
    buffered_bytes: int
    inbound: int
    user_id: str | None
    data: Any
    rooms: dict[str, int]
    ttl_ms: int
    inbox_last: int = 0  # the last inbox position assigned (pushes so far)
    inbox_taken: int = 0  # the last one appended to the log; the inbox holds the rest
    inbox_lost: bool = False  # a push was refused for a full inbox
    first_seq: int = 1  # the first seq the log holds (last_seq + 1 when it is empty)
    run: str = ""  # the room of the log's open run ("" when none): it extends past last_seq


@attrs.frozen(kw_only=True)
class Replay:
    """What a resume replays: the frames after the client's ``last_seq``, in order.

    ``run_room`` is the room of the log's open run (None when there is none):
    its messages were read up to room seq ``run_cursor``, the room's head at
    the replay, so the resuming session's cursor for that room is there and
    the run goes on with the room's next message.
    """

    frames: list[str]
    run_room: str | None = None
    run_cursor: int = 0


def _pairs(flat: list[Any]) -> dict[str, int]:
    return {text(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}


def _refusal_error(exc: redis.exceptions.ResponseError) -> Exception:
    code, message = scripts.refusal(str(exc))
    kind = _REFUSALS.get(code)
    return kind(message) if kind is not None else exc


def _same(reply: Any) -> Any:
    return reply


def _append_result(r: list[Any]) -> AppendResult:
    return AppendResult(buffered=int(r[0]), dropped_through=int(r[1]), acked=int(r[2]))


class SessionLog:
    """The fenced per-session log and metadata; see the module docstring for the rules.

    ``generation`` must be established (:meth:`Generation.establish`) before use.
    ``timeout`` bounds each blocking call (:class:`RedisUnavailable` past it).
    """

    def __init__(
        self,
        writer: RedisWriter,
        generation: Generation,
        *,
        limits: LogLimits | None = None,
        prefix: str = "wscore",
        timeout: float | None = 5.0,
    ) -> None:
        self.writer = writer
        self.generation = generation
        self.limits = limits or LogLimits()
        self.prefix = prefix
        self.timeout = timeout
        writer.register(*scripts.ALL_SCRIPTS)

    # -- key names (docs/scaling.md "Data model") --------------------------------------------
    def keys(self, session_id: str) -> tuple[str, str, str, str, str]:
        """(generation, meta hash, log list, rooms hash, inbox list) of ``session_id``; the
        braces are a hash tag. ``scripts.PUSH_USER`` builds the same names in Lua."""
        base = f"{self.prefix}:s:{{{session_id}}}"
        return self.generation.key, f"{base}:m", f"{base}:log", f"{base}:rooms", f"{base}:in"

    def user_key(self, user_id: str) -> str:
        return f"{self.prefix}:u:{user_id}"

    def members_key(self, room_id: str) -> str:
        return f"{self.prefix}:r:{room_id}:members"

    def _run(self, script: scripts.Script, session_id: str, *args: Any,
             convert: Callable[[Any], Any]) -> gevent.event.AsyncResult:
        """Queue ``script`` on the session's keys; the future gives ``convert(reply)``, and a
        script's refusal as its :class:`ClusterError`."""
        return self.writer.submit_script(
            script, self.keys(session_id), (self.generation.token, *args),
            convert=convert, refine=_refusal_error,
        )

    def _wait(self, result: gevent.event.AsyncResult) -> Any:
        return wait_result(result, self.timeout)

    # -- ownership ---------------------------------------------------------------------------
    def create(
        self, session_id: str, node_id: str, *, user_id: str | None = None, data: Any = None,
        everyone: str | None = None,
    ) -> Claim:
        """Record a new session owned by ``node_id`` at epoch 1 (``ClusterError`` if it exists).

        With ``everyone`` (a room id) the session is that room's member in the same
        step, at the room's current seq: the claim's ``rooms`` holds that cursor.
        """
        lim = self.limits
        raw = self._run(
            scripts.CREATE, session_id, session_id, node_id, lim.lease_ttl_ms, lim.session_ttl_ms,
            "0" if user_id is None else "1", user_id or "", json.dumps(data), self.prefix,
            everyone or "", convert=int,
        )
        cursor: int = self._wait(raw)
        return Claim(
            session_id=session_id, epoch=1, previous_owner="", previous_lease_live=False,
            last_seq=0, acked=0, dropped_through=0, inbound=0, user_id=user_id, data=data,
            rooms={} if everyone is None else {everyone: cursor},
        )

    def claim(self, session_id: str, node_id: str) -> Claim:
        """Take the session (forced): a new epoch, so the previous owner's writes are refused.

        Raises :class:`SessionMissing` (ended or expired) or :class:`RedisDataLost`:
        a resume then answers 1006.
        """
        lim = self.limits

        def convert(r: list[Any]) -> Claim:
            return Claim(
                session_id=session_id, epoch=int(r[0]), previous_owner=text(r[1]),
                previous_lease_live=bool(r[2]), last_seq=int(r[3]), acked=int(r[4]),
                dropped_through=int(r[5]), inbound=int(r[6]),
                user_id=text(r[8]) if int(r[7]) else None, data=json.loads(r[9]), rooms=_pairs(r[10]),
                inbox_taken=int(r[11]), inbox_lost=bool(int(r[12])),
            )

        raw = self.writer.submit_script(
            scripts.CLAIM, self.keys(session_id),
            (self.generation.token, node_id, lim.lease_ttl_ms, lim.session_ttl_ms, self.prefix),
            convert=convert, refine=_refusal_error,
        )
        result: Claim = self._wait(raw)
        return result

    def renew(self, session_id: str, epoch: int) -> tuple[int, bool]:
        """Extend the owner's lease and the session's TTL (the owner calls it while idle).

        Returns (pushes waiting in the inbox, whether one was refused for a full
        inbox): the owner's backstop for an announcement pub/sub lost.
        """
        result: tuple[int, bool] = self._wait(self.renew_nowait(session_id, epoch))
        return result

    def release(self, session_id: str, epoch: int) -> None:
        """Give the session up cooperatively (detached; its TTL runs; the next claim finds no owner)."""
        self._wait(self._run(scripts.RELEASE, session_id, epoch, self.limits.session_ttl_ms,
                             convert=_same))

    def end(self, session_id: str, epoch: int) -> list[str]:
        """End the session for good (SPEC §7): delete it, leave its rooms; returns the rooms left."""
        left: list[str] = self._wait(self._run(
            scripts.END, session_id, epoch, self.prefix, session_id,
            convert=lambda r: sorted(text(x) for x in r),
        ))
        return left

    # -- the outgoing log --------------------------------------------------------------------
    def append_nowait(
        self, session_id: str, epoch: int, seq: int, wire: str, *, inbox_pos: int = 0,
        close_cursor: int = 0,
    ) -> gevent.event.AsyncResult:
        """Queue the store of frame ``seq``; the future gives an :class:`AppendResult`.

        ``seq`` must be the log's last + 1, or come after its open run, which
        closes at ``seq - 1`` (its room's cursor moving to ``close_cursor``, the
        last room seq the session has of that room).
        With ``inbox_pos`` (> 0) the frame is that push of the session's inbox,
        which must be the inbox's head (else :class:`SequenceRefused`, nothing
        written): it leaves the inbox in the same step.
        Send the frame to the socket only after the future succeeded (SPEC §6).
        """
        return self._append(session_id, epoch, seq, wire, inbox_pos, "", 0, close_cursor)

    def _append(self, session_id: str, epoch: int, seq: int, wire: str, inbox_pos: int,
                run_room: str, run_after: int, close_cursor: int) -> gevent.event.AsyncResult:
        """The ``append`` script: a frame (``run_room`` empty) or a run; its future."""
        lim = self.limits
        return self._run(
            scripts.APPEND, session_id, epoch, seq, wire, lim.max_buffered_messages,
            lim.max_buffered_bytes, lim.session_ttl_ms, inbox_pos, run_room, run_after,
            close_cursor, self.prefix, convert=_append_result,
        )

    def append(
        self, session_id: str, epoch: int, seq: int, wire: str, *, inbox_pos: int = 0,
        close_cursor: int = 0,
    ) -> AppendResult:
        """:meth:`append_nowait` and wait (raises Fenced, SequenceRefused, SessionMissing …)."""
        result: AppendResult = self._wait(
            self.append_nowait(session_id, epoch, seq, wire, inbox_pos=inbox_pos,
                               close_cursor=close_cursor)
        )
        return result

    def start_run_nowait(
        self, session_id: str, epoch: int, seq: int, room_id: str, after: int, *,
        close_cursor: int = 0,
    ) -> gevent.event.AsyncResult:
        """Queue the store of a run: seq ``seq`` on are ``room_id``'s messages after room seq
        ``after`` (those that exclude this session left out); the future gives an
        :class:`AppendResult`.

        The room messages that follow in the same run need no write: send each
        once this future succeeded (SPEC §6), numbered ``seq``, ``seq + 1`` …
        The seq rule, and the closing of an open run, are :meth:`append_nowait`'s;
        the session's cursor for ``room_id`` (a member's) moves to ``after``.
        """
        return self._append(session_id, epoch, seq, "", 0, room_id, after, close_cursor)

    def start_run(self, session_id: str, epoch: int, seq: int, room_id: str, after: int, *,
                  close_cursor: int = 0) -> AppendResult:
        """:meth:`start_run_nowait` and wait."""
        result: AppendResult = self._wait(self.start_run_nowait(
            session_id, epoch, seq, room_id, after, close_cursor=close_cursor))
        return result

    # -- the inbox: pushes from any node -------------------------------------------------------
    def push_nowait(self, session_id: str, body: str) -> gevent.event.AsyncResult:
        """Queue a push (a frame body, unnumbered) into the session's inbox; any node may.

        The future gives ``(position, owner)``: position 0 when the inbox was full
        (the push is refused and the session marked not resumable), owner ``""``
        when no node holds the session (the push waits for the next claim).
        :class:`SessionMissing` for an unknown, ended or expired session.
        """
        lim = self.limits
        return self._run(scripts.PUSH, session_id, body, lim.max_buffered_messages,
                         lim.max_buffered_bytes, self.prefix, session_id,
                         convert=lambda r: (int(r[0]), text(r[1])))

    def push(self, session_id: str, body: str) -> tuple[int, str]:
        """:meth:`push_nowait` and wait."""
        result: tuple[int, str] = self._wait(self.push_nowait(session_id, body))
        return result

    def push_user_nowait(self, user_id: str, body: str) -> gevent.event.AsyncResult:
        """Queue a push into the inbox of every live session of ``user_id`` (one script).

        The future gives ``{session id: position}`` (0: that inbox was full).
        """
        lim = self.limits

        def convert(r: list[Any]) -> dict[str, int]:
            return {text(r[i]): int(r[i + 1]) for i in range(0, len(r), 2)}

        return self.writer.submit_script(
            scripts.PUSH_USER, (self.generation.key, self.user_key(user_id)),
            (self.generation.token, body, lim.max_buffered_messages, lim.max_buffered_bytes,
             self.prefix),
            convert=convert, refine=_refusal_error,
        )

    def inbox_nowait(self, session_id: str) -> gevent.event.AsyncResult:
        """The future of ``(taken, lost, bodies)``: the pushes still in the inbox, oldest
        first, are positions ``taken + 1``, ``taken + 2`` …; ``lost``: one was refused."""
        return self._run(scripts.INBOX, session_id,
                         convert=lambda r: (int(r[0]), bool(int(r[1])), [text(b) for b in r[2]]))

    def ack(self, session_id: str, epoch: int, seq: int) -> int:
        """Cumulative acknowledgement (capped at the last seq); returns the acked seq."""
        acked: int = self._wait(self._run(scripts.ACK, session_id, epoch, seq,
                                          self.limits.session_ttl_ms, convert=int))
        return acked

    def replay(self, session_id: str, epoch: int, last_seq: int) -> Replay:
        """The frames after ``last_seq``, in order, or :class:`ResumeImpossible`.

        The same rules as ``OutgoingStream.replay_after``: a ``last_seq`` past
        the stream, before a frame dropped for space, or before frames already
        acknowledged and released makes the resume impossible; otherwise
        ``last_seq`` is acknowledged and the rest returned. Runs are read from
        their rooms' streams, numbered as they were sent; an open run up to its
        room's head (those messages are the session's). A run its room stream
        no longer holds makes the resume impossible. Fenced: the caller has
        claimed the session first.
        """

        def convert(r: list[Any]) -> Replay:
            if not int(r[0]):
                raise ResumeImpossible(text(r[1]))
            room = text(r[2])
            return Replay(frames=[text(w) for w in r[1]], run_room=room or None,
                          run_cursor=int(r[3]))

        result: Replay = self._wait(self._run(scripts.REPLAY, session_id, epoch, last_seq,
                                              self.limits.session_ttl_ms, self.prefix, session_id,
                                              convert=convert))
        return result

    def replay_after(self, session_id: str, epoch: int, last_seq: int) -> list[str]:
        """:meth:`replay`'s frames."""
        return self.replay(session_id, epoch, last_seq).frames

    # -- metadata ----------------------------------------------------------------------------
    def accept_inbound(self, session_id: str, epoch: int, s: int) -> bool:
        """As ``InboundTracker.accept``: True (and recorded) if client frame ``s`` must run."""
        fresh: bool = self._wait(self._run(scripts.ACCEPT_INBOUND, session_id, epoch, s,
                                           self.limits.session_ttl_ms, convert=bool))
        return fresh

    def set_data(self, session_id: str, epoch: int, data: Any) -> None:
        """Store the session's ``data`` (any JSON value)."""
        self._wait(self._run(scripts.SET_DATA, session_id, epoch, json.dumps(data),
                             self.limits.session_ttl_ms, convert=_same))

    def join_room(self, session_id: str, epoch: int, room_id: str, *, cursor: int = 0) -> bool:
        """Make the session a member of ``room_id`` (on every node); False if it was one already.

        ``cursor`` is the room seq the session's log is at for that room (the
        room's current seq when it joins); a member's cursor is left as it is.
        """
        added: bool = self._wait(self._run(scripts.JOIN_ROOM, session_id, epoch, room_id, cursor,
                                           self.limits.session_ttl_ms, self.prefix, session_id,
                                           convert=bool))
        return added

    def leave_room(self, session_id: str, epoch: int, room_id: str, *, run_last: int = 0) -> bool:
        """Remove the session from ``room_id``; False if it was not a member.

        If the log's open run is of ``room_id`` it closes at ``run_last`` (the seq
        of its last message, which the caller passes when it has such a run).
        """
        removed: bool = self._wait(self.leave_room_nowait(session_id, epoch, room_id,
                                                          run_last=run_last))
        return removed

    # -- the non-blocking forms (a session actor never waits for a round trip) ---------------
    def ack_nowait(self, session_id: str, epoch: int, seq: int) -> gevent.event.AsyncResult:
        return self._run(scripts.ACK, session_id, epoch, seq, self.limits.session_ttl_ms, convert=int)

    def accept_inbound_nowait(self, session_id: str, epoch: int, s: int) -> gevent.event.AsyncResult:
        return self._run(scripts.ACCEPT_INBOUND, session_id, epoch, s,
                         self.limits.session_ttl_ms, convert=bool)

    def set_data_nowait(self, session_id: str, epoch: int, data: Any) -> gevent.event.AsyncResult:
        return self._run(scripts.SET_DATA, session_id, epoch, json.dumps(data),
                         self.limits.session_ttl_ms, convert=_same)

    def join_room_nowait(self, session_id: str, epoch: int, room_id: str, *, cursor: int = 0
                         ) -> gevent.event.AsyncResult:
        return self._run(scripts.JOIN_ROOM, session_id, epoch, room_id, cursor,
                         self.limits.session_ttl_ms, self.prefix, session_id, convert=bool)

    def leave_room_nowait(self, session_id: str, epoch: int, room_id: str, *, run_last: int = 0
                          ) -> gevent.event.AsyncResult:
        return self._run(scripts.LEAVE_ROOM, session_id, epoch, room_id,
                         self.limits.session_ttl_ms, self.prefix, session_id, run_last,
                         convert=bool)

    def renew_nowait(self, session_id: str, epoch: int) -> gevent.event.AsyncResult:
        """As :meth:`renew`; the future gives (pushes waiting in the inbox, lost)."""
        lim = self.limits
        return self._run(scripts.RENEW, session_id, epoch, lim.lease_ttl_ms, lim.session_ttl_ms,
                         self.prefix, convert=lambda r: (int(r[0]), bool(int(r[1]))))

    def release_nowait(self, session_id: str, epoch: int) -> gevent.event.AsyncResult:
        return self._run(scripts.RELEASE, session_id, epoch, self.limits.session_ttl_ms, convert=_same)

    def end_nowait(self, session_id: str, epoch: int) -> gevent.event.AsyncResult:
        return self._run(scripts.END, session_id, epoch, self.prefix, session_id, convert=_same)

    # -- reads (unfenced, write nothing) -----------------------------------------------------
    def read(self, session_id: str) -> SessionRecord | None:
        """A snapshot of the session's record, or None when Redis has no such session."""
        _gen, meta, log, rooms, _inbox = self.keys(session_id)
        futures = [
            self.writer.submit("HGETALL", meta),
            self.writer.submit("LLEN", log),
            self.writer.submit("HGETALL", rooms),
            self.writer.submit("PTTL", meta),
        ]
        flat, buffered, room_flat, ttl = (self._wait(f) for f in futures)
        if not flat:
            return None
        m = {text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        return SessionRecord(
            session_id=session_id, epoch=int(m["epoch"]), owner=text(m["owner"]),
            lease_until_ms=int(m["lease"]), last_seq=int(m["last"]), acked=int(m["acked"]),
            dropped_through=int(m["dropped"]), buffered=int(buffered), buffered_bytes=int(m["bytes"]),
            inbound=int(m["inbound"]), user_id=text(m["user"]) if "user" in m else None,
            data=json.loads(m["data"]), rooms=_pairs(room_flat), ttl_ms=int(ttl),
            inbox_last=int(m.get("ilast", 0)), inbox_taken=int(m.get("itaken", 0)),
            inbox_lost=text(m.get("ilost", b"0")) == "1",
            first_seq=int(m.get("first", 1)), run=text(m.get("run", b"")),
        )

    def exists(self, session_id: str) -> bool:
        return bool(self._wait(self.writer.submit("EXISTS", self.keys(session_id)[1])))

    def _live(self, set_key: str) -> list[str]:
        """Members of ``set_key`` whose session still exists; the dead ones are removed lazily."""
        ids = sorted(text(x) for x in self._wait(self.writer.submit("SMEMBERS", set_key)))
        alive = [self.writer.submit("EXISTS", self.keys(sid)[1]) for sid in ids]
        live: list[str] = []
        dead: list[str] = []
        for sid, future in zip(ids, alive, strict=True):
            (live if self._wait(future) else dead).append(sid)
        if dead:
            try:  # best effort: the next read sweeps again
                self.writer.submit("SREM", set_key, *dead)
            except ClusterError:
                pass
        return live

    def room_members(self, room_id: str) -> list[str]:
        """Session ids in ``room_id`` on every node (sessions whose TTL ran out are left out)."""
        return self._live(self.members_key(room_id))

    def sessions_of_user(self, user_id: str) -> list[str]:
        """Live session ids of ``user_id`` on every node (for ``send_to_user``)."""
        return self._live(self.user_key(user_id))
