"""SessionActor: one per session; it outlives the session's connections.

Job: carry out what the session's pure protocol core decides
(:class:`wscore.protocol.server_session.ServerSession`: numbering, replay,
de-duplication, rate limit, attach/resume verdicts, token expiry, TTL) and
run the session's handlers. It owns the session's state: the protocol core,
the handler-facing :class:`~wscore.WsSession` view (user, ``data``, rooms)
and the sink of the attached connection.

Rules it keeps:

* **one message at a time.** A session's handlers never run concurrently, so
  ``ctx.session.data`` needs no lock. A handler that blocks on I/O delays
  only its own session. An actor-based handler runs in its handler's actor;
  meanwhile later client frames wait in this session's ``deferred`` queue, so
  the one-at-a-time rule holds for them too.
* **every frame of the stream is numbered and recorded before it is written**
  (SPEC §3), so a connection lost mid-write loses nothing; connection-level
  frames (``sys.connected``, ``sys.pong``, ``sys.ack``, errors 1003–1006)
  are written unnumbered and never replayed.
* **it never waits on another actor** (only tells). The connection's reader
  greenlet *asks* it for :class:`Attach`; nothing here asks back.
* **it writes only through a sink**: the object the reader handed over in
  :class:`Attach` (``send``, ``send_batch``, ``close``; the server's is the
  connection's outbox, :mod:`wscore.testing`'s records frames). It imports
  no transport.
* **a failure never kills it silently.** A bug while handling one message
  (anything a handler's own ``try`` did not catch) is logged once and ends the
  session cleanly: its connection closes with 4011, it leaves its rooms,
  reports :class:`SessionEnded` and frees its buffer; nothing outlives it.
* each client frame's ``release`` is called once it has been handled (or
  dropped), which gives the reader its credit back (reader backpressure, see
  :mod:`wscore.server`).
* **with a store (Redis, SPEC §6), store before send**: every numbered frame is
  appended to the session's log, and the inbound position, ``data`` and room
  membership are written, through the node's one batching writer without
  waiting; the writes to the socket queue behind them (``_out``) and go out,
  in order, only once every store write submitted before them succeeded. A
  failed write drops the session from this node (:mod:`actors.store`): another
  node owns it (close 4000), or Redis lost it or is unreachable (close 1012);
  it is never ended there, so a resume elsewhere finds what was stored.
* **with a store, a room message is not stored per member**: it is already in
  its room's stream. When one follows anything else in the session's stream
  (an own frame, another room's message) the session stores a *run* entry
  (``store.start_run``: "from this seq on, this room's messages after its
  cursor"), gated like an append; the room's next messages take the next seqs
  and are written with no store write of their own, up to ``store.run_limit``
  of them. The next own frame, run, or leaving the room closes the run.
* **with a store, pushes come from the session's inbox** (``send_to_session``,
  ``send_to_user``, from any node): each carries its inbox position
  (``Deliver.inbox``); the session keeps an inbox cursor, appends push
  ``cursor + 1`` with that position (the store removes it from the inbox in
  the same fenced write), drops a position it has, and reads the inbox when
  it sees a gap, when its lease renewal finds pushes waiting, and once when
  it starts hydrated (a resume from another node). So every push enters its
  numbered stream once, in inbox order, whichever node held the session when
  it was made. A push refused by a full inbox ends the session (its resume
  gets 1006), never a silent skip.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs
import gevent
import gevent.event
import pykka

from wscore.actors._runtime import GeventActor, tell_quietly
from wscore.actors.messages import (
    Attach,
    AttachResult,
    ClientFrame,
    Deliver,
    Detach,
    DropSession,
    EndSession,
    HandlerFinished,
    InboxCheck,
    JoinedRoom,
    LeaveRoom,
    LeftRoom,
    RoomBroadcast,
    RoomGapped,
    RunHandler,
    SessionEnded,
    SessionOutbound,
    Stats,
    TimerFired,
    Unparseable,
)
from wscore.actors.store import Hydration, SessionStore, room_wire, split_room_wire
from wscore.auth import AuthResult
from wscore.config import WsServerConfig
from wscore.context import WsContext, WsSession
from wscore.errors import WsError
from wscore.handlers import HandlerSpec, check_schema
from wscore.protocol.codes import (
    CLOSE_REPLACED,
    CLOSE_SERVICE_RESTART,
    EVERYONE_ROOM,
    ErrorCode,
    SysEvent,
)
from wscore.protocol.envelope import EncodedFrame, Envelope, encode_reply
from wscore.protocol.server_session import (
    Action,
    ArmTimer,
    Authenticate,
    Close,
    Dispatch,
    End,
    RequestAckFlush,
    Send,
    SendBatch,
    ServerSession,
    SessionLimits,
    internal_error_frame,
)

__all__ = ["FrameSink", "SessionActor", "SessionEnv"]

log = logging.getLogger("wscore.actors.session")


class FrameSink(Protocol):
    """Where a session writes one connection's frames (the server's: an ``Outbox``)."""

    conn_id: int
    closed: bool

    def send(self, wire: str) -> bool: ...
    def send_batch(self, wires: list[str]) -> bool: ...
    def close(self, code: int, reason: str = "") -> None: ...


@attrs.frozen
class SessionEnv:
    """Services every session actor shares (read-only for them)."""

    config: WsServerConfig
    #: The server's live handler table (event → spec).
    handlers: Mapping[str, HandlerSpec]
    router: Any  # ActorRef of the router
    #: Runs the server's authenticator for ``sys.auth`` (None: no authenticator).
    authenticate: Callable[[Any, str], AuthResult] | None = None
    wall_clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    #: The protocol's slice of ``config`` (derived once, shared by every session).
    limits: SessionLimits = attrs.field(
        default=attrs.Factory(lambda self: SessionLimits.from_config(self.config), takes_self=True))
    #: Where sessions store what outlives the node (None: embedded, in memory only).
    store: SessionStore | None = None
    #: Whether a room id has a behaviour (``server.rooms.set_behaviour``). With a
    #: store, a broadcast to such a room goes through the router to the room's
    #: actor (its ``on_message`` runs before the publish) instead of straight to the store.
    room_has_behaviour: Callable[[str], bool] = lambda room_id: False


@attrs.frozen
class _FlushAck:
    """Self-message: acknowledge the client's numbered frames processed so far."""


_FLUSH_ACK = _FlushAck()
_tokens = itertools.count(1)


@attrs.frozen
class _Drain:
    """Self-message: store writes completed; write what waited for them."""


@attrs.frozen
class _InboxRead:
    """Self-message: the read of the session's inbox completed (a future)."""

    result: Any


@attrs.frozen
class _StoreLost:
    """Self-message from the store's lease keeper: the session is no longer this node's."""

    kind: str


@attrs.frozen
class _GateOn:
    """Self-message from a handler's actor: gate later writes on this publish's ``done``."""

    done: Any


_DRAIN = _Drain()
# _out entry kinds: wait for a store write; write to a sink; submit the inbound position.
_WAIT, _SEND, _BATCH, _CLOSE, _INBOUND = 0, 1, 2, 3, 4
_ACK_EVENT = SysEvent.ACK.value
_NOT_MEMBER = 1 << 62


class SessionActor(GeventActor):
    # Delivering a frame numbers, records and queues it: it never yields.
    inline_types = frozenset({Deliver})

    def __init__(self, session_id: str, user_id: str | None, env: SessionEnv,
                 hydration: Hydration | None = None) -> None:
        super().__init__()
        self.env = env
        self.view = WsSession(session_id, user_id, None)
        self.protocol = ServerSession(session_id=session_id, user_id=user_id, limits=env.limits,
                                      now=env.monotonic())
        #: The attached connection's sink (None while detached).
        self.sink: FrameSink | None = None
        self.busy_token: int | None = None
        self.deferred: deque[ClientFrame] = deque()
        #: A sys.ack came due while an actor handler ran: it waits for the handler's end.
        self._flush_after_handler = False
        self.conn_info: Any = None
        # -- durability (a store: Redis) --------------------------------------------------
        self.store = env.store
        #: The fencing epoch this node holds the session at (1: created here).
        self.epoch = 1
        #: Store writes and the sink writes queued behind them, in order (see _drain).
        self._out: deque[tuple[int, Any, Any, Any]] = deque()
        self._drain_told = False
        #: room id -> the last room seq this session has (its cursor), with a store.
        self.room_cursors: dict[str, int] = {}
        self._data_json = "{}"
        self._acked_stored = 0
        self._inbound_stored = 0
        #: The highest seq in the store: appended, or in a stored run (every numbered frame
        #: is, before it is sent).
        self._appended = 0
        #: The room of the store's open run for this session (None: the log ends with a
        #: frame), the room messages it covers so far, and its last seq.
        self._run_room: str | None = None
        self._run_len = 0
        self._run_last = 0
        #: Store writes another actor submits for this session (a room behaviour's publish,
        #: an actor handler's broadcast) not known to have succeeded: they are not ordered
        #: with this session's own writes. A failed one is never uncounted (it drops the
        #: session once the drain reaches it), so nothing stores the inbound position past it.
        self._unordered = 0
        #: The last inbox position in this session's log (pushes, with a store).
        self.inbox_cursor = 0
        self._inbox_reading = False
        self._inbox_reread = False
        self._hydrated = hydration is not None
        self._dropping: DropSession | None = None
        #: Dropped from this node or ended: no store write, no socket write any more.
        self._gone = False
        if hydration is not None:
            self._hydrate(hydration)

    def _hydrate(self, h: Hydration) -> None:
        """Position the protocol core where the store left the session (a resume on this node)."""
        self.epoch = h.epoch
        stream = self.protocol.stream
        stream.last_seq = stream.acked = h.resume_from
        for wire in h.frames:
            stream.record(stream.next_seq(), wire)
        self.protocol.inbound.highest = h.inbound
        self._acked_stored = h.resume_from
        self._inbound_stored = h.inbound
        self._appended = stream.last_seq
        if isinstance(h.data, dict):
            self.view.data = h.data
        self._data_json = json.dumps(self.view.data)
        self.view._rooms.update(r for r in h.rooms if r != EVERYONE_ROOM)  # the app's rooms
        self.room_cursors = dict(h.rooms)
        self.inbox_cursor = h.inbox
        if h.run is not None and self.store is not None:
            # The log's open run goes on; its start is old, so the next message starts a
            # new one (a resume must find a run's start in the room's history).
            self._run_room, self._run_len, self._run_last = h.run, self.store.run_limit, stream.last_seq

    # -- lifecycle ---------------------------------------------------------------------
    def offer(self, message: Any) -> None:
        """The fan-out hot path: a ``Deliver`` to an idle session skips the generic dispatch.

        Same rules as :meth:`GeventActor.offer` (which handles every other case);
        measured on 1,000 subscribers × 100 msg/s, it takes p99 from ~45 to ~30 ms.
        """
        if (type(message) is Deliver and not self._busy and self.actor_inbox.empty()
                and not self.protocol.closed and not self.actor_stopped.is_set()
                and (message.room is None  # a room message needing a fill takes the inbox
                     or message.room_seq <= self.room_cursors.get(message.room, _NOT_MEMBER) + 1)):
            self._busy = True
            try:
                self._on_deliver(message)
            except Exception:
                # The caller is a room fanning out: this session's bug must end
                # this session only, never the room or its other members.
                self._fail(message)
            finally:
                self._busy = False
        else:
            super().offer(message)

    def on_start(self) -> None:
        self.view._ref = self.actor_ref
        self._carry_out(self.protocol.start())
        store = self.store
        if store is not None:
            ref = self.actor_ref
            store.own(self.view.id, self.epoch, lambda kind: tell_quietly(ref, _StoreLost(kind)),
                      lambda lost: tell_quietly(ref, InboxCheck(lost)))
            if self._hydrated:
                # Pushes made while no node held it (or announced to its old node)
                # wait in its inbox; read after the router knows this actor, so
                # any push later than the read is announced to it.
                self._inbox_read()
            # A hydrated session catches up on what its rooms said since its cursors
            # (while its node was down, or before this node subscribed).
            for room_id in list(self.room_cursors):
                if not self._fill(room_id, None):
                    return

    def on_receive(self, message: Any) -> Any:
        handler = _DISPATCH.get(type(message))
        if handler is None:
            log.warning("session: unexpected message %r", type(message).__name__)
            return None
        try:
            return handler(self, message)
        except Exception:
            self._fail(message)
            if isinstance(message, Attach):
                return AttachResult(False, "session failed")
            return None

    # -- store before send ---------------------------------------------------------------------
    def _gate(self, future: Any) -> None:
        """Hold every later socket write until ``future`` (a store write) succeeded."""
        self._out.append((_WAIT, future, None, None))
        future.rawlink(self._store_done)

    def _gate_unordered(self, future: Any) -> None:
        """:meth:`_gate` on a store write another actor submits (see ``_unordered``)."""
        self._unordered += 1

        def settled(done: Any) -> None:
            if done.successful():
                self._unordered -= 1

        future.rawlink(settled)
        self._gate(future)

    def _store_done(self, future: Any) -> None:
        # Runs in the hub when a store write completes. The common case — the actor is
        # idle and the write succeeded — writes what waited right here (as ``offer``
        # does for an idle session: no yield, one at a time via ``_busy``), saving an
        # actor message per frame; anything else asks the actor to drain.
        if self._drain_told:
            return
        if (not self._busy and future.successful() and self.actor_inbox.empty()
                and not self.actor_stopped.is_set()):
            self._busy = True
            try:
                if self._drain(inline=True):
                    return
            except Exception:
                log.debug("inline drain failed; the actor drains", exc_info=True)
            finally:
                self._busy = False
        self._drain_told = True
        tell_quietly(self.actor_ref, _DRAIN)

    def _emit(self, sink: FrameSink, kind: int, a: Any, b: Any = None) -> None:
        if self._out:
            self._out.append((kind, sink, a, b))
        else:
            self._write(sink, kind, a, b)

    def _write(self, sink: FrameSink, kind: int, a: Any, b: Any) -> None:
        if kind == _SEND:
            sink.send(a)
        elif kind == _BATCH:
            sink.send_batch(a)
        else:
            sink.close(a, b)
            if sink is self.sink:
                self.sink = None

    def _on_drain(self, msg: _Drain) -> None:
        self._drain_told = False
        self._drain(inline=False)

    def _drain(self, *, inline: bool) -> bool:
        """Write what no longer waits for the store, in order. Inline (in the hub), it stops
        short of anything but plain writes and returns False: the actor does the rest."""
        out = self._out
        while out:
            kind, x, a, b = out[0]
            if kind == _WAIT:
                if not x.ready():
                    return True
                if not x.successful():
                    if inline:
                        return False
                    assert self.store is not None
                    self._store_failed(self.store.failure(x.exception), x.exception)
                    return True
                out.popleft()
                continue
            if kind == _INBOUND:
                if inline:
                    return False  # a store write: the actor submits it
                out.popleft()
                if self._gone or self.store is None:
                    continue
                # Every write before it is done (the publishes of the frames it covers
                # among them): only now may Redis say those frames ran.
                future = self.store.record_inbound(self.view.id, self.epoch, x)
                out.appendleft((_WAIT, future, None, None))
                future.rawlink(self._store_done)
                continue
            out.popleft()
            self._write(x, kind, a, b)
        if self._dropping is not None:
            if inline:
                return False
            self._finish_drop()
        return True

    def _store_failed(self, kind: str, error: Any) -> None:
        """A store write failed: this node lets the session go (never continues past it)."""
        if self._gone:
            return
        log.warning("session of user %r: store write failed (%s: %s); dropping it from this node",
                    self.view.user_id, kind, error)
        self._out.clear()
        sink = self.sink
        if sink is not None:
            if kind == "fenced":
                sink.close(CLOSE_REPLACED, "session resumed on another node")
            else:
                sink.close(CLOSE_SERVICE_RESTART, "session store unavailable; reconnect")
            self.sink = None
        self._finish_drop()

    def _on_gate_on(self, msg: _GateOn) -> None:
        if self._gone:
            return
        self._gate_unordered(msg.done)

    def _on_store_lost(self, msg: _StoreLost) -> None:
        self._store_failed(msg.kind, "lease renewal refused")

    def _on_drop(self, msg: DropSession) -> None:
        """Let the session go from this node without ending it (shutdown, hand-over)."""
        if self._gone or self._dropping is not None:
            return
        self._dropping = msg
        sink = self.sink
        if sink is not None:
            self._emit(sink, _CLOSE, msg.close_code, msg.reason)
        if msg.release and self.store is not None:
            self.store.release(self.view.id, self.epoch)
        if not self._out:
            self._finish_drop()

    def _finish_drop(self) -> None:
        if self._gone:
            return
        self._gone = True
        self._out.clear()
        store = self.store
        if store is not None:
            store.disown(self.view.id)
        router = self.env.router
        ref = self.actor_ref
        for room_id in self._member_of():
            tell_quietly(router, LeaveRoom(room_id, self.view.id, ref))
        tell_quietly(router, SessionEnded(self.view.id, self.view.user_id, ref))
        for frame in self.deferred:
            _release(frame)
        self.deferred.clear()
        self.stop()

    def _persist_data(self) -> None:
        """With a store: write ``data`` if the handler changed it (before its reply is stored)."""
        store = self.store
        if store is None or self._gone:
            return
        try:
            text = json.dumps(self.view.data)
        except (TypeError, ValueError):
            log.warning("session data of user %r is not JSON: not stored (a resume elsewhere "
                        "would not have it)", self.view.user_id)
            return
        if text != self._data_json:
            self._data_json = text
            self._gate(store.set_data(self.view.id, self.epoch, self.view.data))

    def _fail(self, message: Any) -> None:
        """A bug while handling ``message``: log it once, then end the session cleanly."""
        log.exception("session of user %r failed handling %s; ending it", self.view.user_id,
                      type(message).__name__)
        try:
            self._carry_out(self.protocol.end(ErrorCode.INTERNAL_ERROR.close_code, "internal error"))
        except Exception:
            log.debug("ending a failed session raised", exc_info=True)
        if not self.actor_stopped.is_set():
            # The clean-up itself failed part-way: still leave the directory and stop.
            tell_quietly(self.env.router, SessionEnded(self.view.id, self.view.user_id, self.actor_ref))
            self.stop()

    # -- carrying out the protocol's actions ---------------------------------------------------
    def _carry_out(self, actions: list[Action]) -> None:
        if self.store is not None and self.protocol.stream.last_seq > self._appended:
            self._append_numbered()
        for action in actions:
            kind = type(action)
            if kind is Send:
                sink = self._sink_for(action.conn_id)  # type: ignore[union-attr]
                if sink is not None:
                    self._emit(sink, _SEND, action.wire)  # type: ignore[union-attr]
            elif kind is Dispatch:
                self._dispatch(action.envelope)  # type: ignore[union-attr]
            elif kind is RequestAckFlush:
                self.actor_ref.tell(_FLUSH_ACK)
            elif kind is SendBatch:
                sink = self._sink_for(action.conn_id)  # type: ignore[union-attr]
                if sink is not None:
                    self._emit(sink, _BATCH, action.wires)  # type: ignore[union-attr]
            elif kind is Close:
                sink = self._sink_for(action.conn_id)  # type: ignore[union-attr]
                if sink is not None:
                    self._emit(sink, _CLOSE, action.code, action.reason)  # type: ignore[union-attr]
            elif kind is ArmTimer:
                assert isinstance(action, ArmTimer)
                gevent.spawn_later(action.delay, tell_quietly, self.actor_ref,
                                   TimerFired(action.kind, action.generation))
            elif kind is Authenticate:
                assert isinstance(action, Authenticate)
                self._authenticate(action)
            elif kind is End:
                assert isinstance(action, End)
                self._ended(action.reason)

    def _append_numbered(self) -> None:
        """With a store: append the frames the protocol core numbered itself (a ``sys.error``,
        the ``sys.auth`` reply), gating their writes like :meth:`_push`'s (store before send).

        Without this, such a frame reached the socket unstored, and the next append found
        a gap in the log and dropped the session (1012).
        """
        assert self.store is not None
        stream = self.protocol.stream
        first, last = self._appended + 1, stream.last_seq
        self._appended = last
        if self._gone:
            return
        for seq in range(first, last + 1):
            wire = stream.recorded(seq)
            if wire is None:
                # Dropped from a full buffer already (not resumable): the store's log
                # refuses the gap at the next append, which drops the session here.
                continue
            self._store_frame(seq, wire, 0)

    def _sink_for(self, conn_id: int) -> FrameSink | None:
        sink = self.sink
        return sink if sink is not None and sink.conn_id == conn_id else None

    # -- connection binding -------------------------------------------------------------
    def _on_attach(self, msg: Attach) -> AttachResult:
        verdict = self.protocol.attach(
            msg.conn_id, resume_from=msg.resume_from, expires_at=msg.expires_at,
            client_tag=msg.client_tag, attempt=msg.attempt, now=self.env.monotonic(),
            wall=self.env.wall_clock())
        if not verdict.ok:
            # A refused resume changes nothing here (SPEC §4): the live connection stays.
            log.info("session of user %r refused an attach: %s", self.view.user_id, verdict.reason)
            return AttachResult(False, verdict.reason, stale=verdict.stale)
        replaced = self.sink
        actions = verdict.actions
        if replaced is not None:
            # The takeover's close (first action) goes to the connection being replaced.
            first = actions[0]
            if isinstance(first, Close):
                self._emit(replaced, _CLOSE, first.code, first.reason)
                actions = actions[1:]
        if self.busy_token is not None and self.protocol.inbound.highest:
            # Resumed while an actor handler runs: the verdict's last action, its sys.ack,
            # would cover that frame before it ran (see _on_flush_ack); it follows the handler.
            ack = actions[-1]
            assert isinstance(ack, Send) and _ACK_EVENT in ack.wire
            actions = actions[:-1]
            self._flush_after_handler = True
        self.sink = msg.outbox
        self.conn_info = msg.conn_info
        self._store_ack()
        self._carry_out(actions)
        return AttachResult(True)

    def _store_ack(self) -> None:
        """With a store: trim its log to what the client acknowledged (fire and forget)."""
        store = self.store
        acked = self.protocol.stream.acked
        if store is not None and acked > self._acked_stored and not self._gone:
            self._acked_stored = acked
            store.ack(self.view.id, self.epoch, acked)

    def _on_detach(self, msg: Detach) -> None:
        actions = self.protocol.detach(msg.conn_id, now=self.env.monotonic())
        if self.sink is not None and self.sink.conn_id == msg.conn_id:
            self.sink = None
        self._carry_out(actions)

    def _on_timer(self, msg: TimerFired) -> None:
        self._carry_out(self.protocol.timer_fired(msg.kind, msg.generation, now=self.env.monotonic(),
                                                  wall=self.env.wall_clock()))

    def _authenticate(self, action: Authenticate) -> None:
        authenticate = self.env.authenticate
        # Runs the authenticator inside this session's actor: it may block on I/O,
        # which delays only this session.
        result = (authenticate(self.conn_info, action.token) if authenticate is not None
                  else AuthResult(ok=True, user_id=self.view.user_id))
        if not result.ok or result.user_id != self.view.user_id:
            log.info("sys.auth refused for user %r", self.view.user_id)
        self._carry_out(self.protocol.auth_result(
            ok=result.ok, user_id=result.user_id, expires_at=result.expires_at,
            correlation_id=action.correlation_id, wall=self.env.wall_clock()))

    def _on_end(self, msg: EndSession) -> None:
        if msg.conn_id is not None and msg.conn_id != self.protocol.conn_id:
            return  # a 1000 close from a connection this session has since left
        self._carry_out(self.protocol.end(msg.close_code, msg.reason))

    def _ended(self, reason: str) -> None:
        log.debug("session of user %r ended: %s", self.view.user_id, reason)
        if self._out:
            # Ending: nothing more is written but the closes (frames still waiting for
            # the store were never sent, and the session will not be resumed).
            for kind, sink, a, b in self._out:
                if kind == _CLOSE:
                    sink.close(a, b)
            self._out.clear()
        store = self.store
        if store is not None and not self._gone:
            store.end(self.view.id, self.epoch)
            store.disown(self.view.id)
        self._gone = True
        self.sink = None
        router = self.env.router
        for room_id in self._member_of():
            tell_quietly(router, LeaveRoom(room_id, self.view.id))
        tell_quietly(router, SessionEnded(self.view.id, self.view.user_id, self.actor_ref))
        # Free the replay buffer now: the actor object may be referenced a while
        # longer (timers, refs held by rooms), its frames need not be.
        self.protocol.stream.ack(self.protocol.stream.last_seq)
        for frame in self.deferred:
            _release(frame)
        self.deferred.clear()
        self.stop()

    # -- the outgoing stream -------------------------------------------------------------
    def _push(self, frame: EncodedFrame, room: str | None = None, room_seq: int = 0,
              inbox: int = 0) -> None:
        """Number, record (in the store too, if any), then write one session frame (SPEC §3, §6)."""
        if self._gone:
            return
        out = self.protocol.push(frame)
        store = self.store
        if store is not None:
            seq = self._appended = self.protocol.stream.last_seq
            if room is None:
                self._store_frame(seq, out if type(out) is str else frame.numbered(seq), inbox)
            elif room == self._run_room and self._run_len < store.run_limit:
                # In the stored run: the room stream holds the message, the run its seq.
                self._run_len += 1
                self._run_last = seq
            else:
                self._gate(store.start_run(self.view.id, self.epoch, seq, room, room_seq - 1,
                                           self._run_cursor()))
                self._run_room, self._run_len, self._run_last = room, 1, seq
        if type(out) is str:
            sink = self.sink
            if sink is not None:
                self._emit(sink, _SEND, out)
        elif out is not None:
            self._ended(out.reason)  # type: ignore[union-attr]

    def _store_frame(self, seq: int, wire: str, inbox: int) -> None:
        """Append own frame ``seq`` (gated); it closes the open run, if any."""
        assert self.store is not None
        self._gate(self.store.append(self.view.id, self.epoch, seq, wire, inbox, self._run_cursor()))
        self._run_room = None

    def _run_cursor(self) -> int:
        """The session's cursor for the open run's room: where that run closes."""
        room = self._run_room
        return 0 if room is None else self.room_cursors.get(room, 0)

    def _push_error(self, error: WsError, c: Any) -> None:
        self._carry_out(self.protocol.error(error, c, wall=self.env.wall_clock()))

    def _on_deliver(self, msg: Deliver | SessionOutbound) -> None:
        if self.protocol.closed or self._gone:
            return
        if type(msg) is Deliver and msg.room is not None:
            self._room_deliver(msg)
        elif type(msg) is Deliver and msg.inbox:
            self._inbox_deliver(msg.inbox, msg.frame)
        else:
            self._push(msg.frame)

    # -- pushes from the inbox (with a store): one cursor -------------------------------------
    def _inbox_deliver(self, pos: int, frame: EncodedFrame) -> None:
        if pos <= self.inbox_cursor or self.store is None:
            return  # already in this session's log
        if pos > self.inbox_cursor + 1:
            self._inbox_read()  # an announcement was lost (or overtaken): read what is waiting
            return
        self.inbox_cursor = pos
        self._push(frame, inbox=pos)

    def _inbox_read(self) -> None:
        """Read the pushes waiting in the inbox (never blocks: the result is a message)."""
        store = self.store
        if store is None or self._gone:
            return
        if self._inbox_reading:
            self._inbox_reread = True  # it may have been read before this push arrived there
            return
        self._inbox_reading = True
        ref = self.actor_ref
        store.inbox(self.view.id).rawlink(lambda done: tell_quietly(ref, _InboxRead(done)))

    def _on_inbox_read(self, msg: _InboxRead) -> None:
        self._inbox_reading = False
        done = msg.result
        store = self.store
        if self._gone or self.protocol.closed or store is None:
            return
        if not done.successful():
            self._store_failed(store.failure(done.exception), done.exception)
            return
        taken, lost, bodies = done.value
        if lost:
            self._inbox_lost()
            return
        for i, body in enumerate(bodies):
            pos = taken + 1 + i
            if pos <= self.inbox_cursor:
                continue
            if pos != self.inbox_cursor + 1:
                # The inbox moved past this copy's cursor: another node holds the
                # session now, and this copy's next write is fenced (close 4000).
                log.debug("inbox of session of user %r is ahead of this copy", self.view.user_id)
                return
            self.inbox_cursor = pos
            self._push(EncodedFrame(body), inbox=pos)
            if self._gone:
                return
        if self._inbox_reread:
            self._inbox_reread = False
            self._inbox_read()

    def _on_inbox_check(self, msg: InboxCheck) -> None:
        if self._gone or self.protocol.closed:
            return
        if msg.lost:
            self._inbox_lost()
        else:
            self._inbox_read()

    def _inbox_lost(self) -> None:
        """A push was refused by the full inbox: end the session (its resume gets 1006)."""
        log.warning("session of user %r lost a push (its inbox was full); ending it",
                    self.view.user_id)
        self._carry_out(self.protocol.end(CLOSE_SERVICE_RESTART, "pushes lost; state lost"))

    # -- rooms with a store: one cursor per room -------------------------------------------------
    def _room_deliver(self, msg: Deliver) -> None:
        room = msg.room
        assert room is not None
        cursor = self.room_cursors.get(room)
        if cursor is None or msg.room_seq <= cursor:
            return  # not a member here (any more), or a message this session already has
        if msg.room_seq > cursor + 1 and not self._fill(room, msg.room_seq):
            return
        self.room_cursors[room] = msg.room_seq
        if msg.exclude != self.view.id:
            self._push(msg.frame, room, msg.room_seq)

    def _fill(self, room: str, upto: int | None) -> bool:
        """Push the room's messages after this session's cursor, before ``upto`` (None: all).

        Read from the room's short stream (a blocking read: only on a gap, or a
        hydrated session's catch-up). What the stream no longer holds ends the
        session's resumability (False): never a silent skip.
        """
        store = self.store
        assert store is not None
        while True:
            cursor = self.room_cursors[room]
            try:
                current, entries = store.room_since(room, cursor)
            except Exception as exc:
                self._store_failed(store.failure(exc), exc)
                return False
            if current < cursor:
                self._room_gap(room, "the room's numbering was reset")
                return False
            expected = cursor + 1
            for seq, wire in entries:
                if upto is not None and seq >= upto:
                    return True
                if seq != expected:
                    self._room_gap(room, f"room messages {expected}..{seq - 1} are no longer held")
                    return False
                exclude, body = split_room_wire(wire)
                self.room_cursors[room] = seq
                if exclude != self.view.id:
                    self._push(EncodedFrame(body), room, seq)
                if self._gone:
                    return False
                expected += 1
            target = current if upto is None else upto - 1
            if expected > target:
                return True
            if not entries:
                self._room_gap(room, f"room messages {expected}..{target} are no longer held")
                return False

    def _room_gap(self, room: str, reason: str) -> None:
        """Room messages this session should have are gone: end it (its resume gets 1006)."""
        log.warning("session of user %r lost messages of room %s (%s); ending it",
                    self.view.user_id, room, reason)
        self._carry_out(self.protocol.end(CLOSE_SERVICE_RESTART, "room messages lost; state lost"))

    def _on_room_gapped(self, msg: RoomGapped) -> None:
        cursor = self.room_cursors.get(msg.room_id)
        if cursor is not None and not self._gone and (msg.last_missing is None
                                                      or cursor < msg.last_missing):
            self._room_gap(msg.room_id, "the node's room subscription lost messages")

    def _now_ms(self) -> int:
        return int(self.env.wall_clock() * 1000)

    # -- client frames ----------------------------------------------------------------------
    def _on_client_frame(self, msg: ClientFrame) -> None:
        if msg.conn_id != self.protocol.conn_id:
            _release(msg)
            return  # read on a connection this session has since left; the client re-sends
        if self.busy_token is not None:
            self.deferred.append(msg)
            return
        try:
            self._receive(msg.envelope)
        finally:
            _release(msg)

    def _receive(self, envelope: Envelope) -> None:
        self._carry_out(self.protocol.receive(envelope, now=self.env.monotonic(),
                                              wall=self.env.wall_clock()))
        if self.store is not None and envelope.event == _ACK_EVENT:
            self._store_ack()

    def _on_unparseable(self, msg: Unparseable) -> None:
        try:
            if msg.conn_id == self.protocol.conn_id:
                self._carry_out(self.protocol.unparseable(msg.error, msg.correlation_id,
                                                          now=self.env.monotonic(),
                                                          wall=self.env.wall_clock()))
        finally:
            _release(msg)

    def _on_flush_ack(self, msg: _FlushAck) -> None:
        if self.busy_token is not None:
            # The frame that asked for this ack runs in a handler's actor and has not
            # finished: neither the client nor the store may hear that it ran before its
            # broadcasts are gated on and its reply is queued. _on_handler_finished
            # flushes then (SPEC §6: an acknowledged frame never runs again).
            self._flush_after_handler = True
            return
        store = self.store
        highest = self.protocol.inbound.highest
        if store is not None and highest > self._inbound_stored and not self._gone:
            # Stored before the sys.ack goes out: an acknowledged frame never runs twice,
            # and its replies (stored before this write) are in the log (SPEC §6).
            self._inbound_stored = highest
            if self._unordered:
                # A room behaviour's publish of one of these frames is submitted by the
                # room's actor, not ordered with this session's writes: a node crash
                # must not leave Redis saying the frame ran when its broadcast never
                # reached Redis (the client, never acknowledged, re-sends it to a node
                # that would skip it). So the position waits for what came before.
                self._out.append((_INBOUND, highest, None, None))
            else:
                self._gate(store.record_inbound(self.view.id, self.epoch, highest))
        self._carry_out(self.protocol.flush_ack(wall=self.env.wall_clock()))

    # -- running handlers --------------------------------------------------------------------
    def _dispatch(self, env: Envelope) -> None:
        """Run the application's handler for an admitted frame (values layer, not protocol)."""
        event = env.event
        c = env.correlation_id
        spec = self.env.handlers.get(event)
        if spec is None:
            # The name is the client's own text: echo at most 200 characters of it back.
            name = event[:200]
            self._push_error(WsError(ErrorCode.HANDLER_NOT_FOUND, f"no handler for event {name!r}",
                                     {"event": name}), c)
            return
        try:
            if spec.schema is not None:
                check_schema(spec.schema, env.payload)
        except WsError as err:
            self._push_error(err, c)
            return
        if spec.actor_ref is not None:
            self._run_in_handler_actor(spec, env)
            return
        ctx = WsContext(env, self.view, push=self._push, route_room=self._route_room,
                        now_ms=self._now_ms)
        try:
            result = spec.fn(ctx)
        except WsError as err:
            self._push_error(err, c)
            return
        except Exception:
            log.exception("handler for %r raised", event)
            self._push(internal_error_frame(c, wall=self.env.wall_clock()))
            return
        finally:
            if self.store is not None:
                self._persist_data()
        if not ctx.replied and (result is not None or c is not None):
            self._reply(result, c)

    def _reply(self, result: Any, c: Any) -> None:
        try:
            frame = encode_reply(result, c, now_ms=self._now_ms())
        except (TypeError, ValueError):
            log.error("handler reply is not JSON-serialisable: %r", type(result).__name__)
            frame = internal_error_frame(c, wall=self.env.wall_clock())
        self._push(frame)

    # -- rooms --------------------------------------------------------------------------------
    def _route_room(self, room_id: str, frame: EncodedFrame, event: str, payload: Any,
                    exclude: str | None) -> None:
        store = self.store
        if store is not None:
            # Gated like a frame, so the client's sys.ack waits for the publish too.
            if self._gone:
                return
            if not self.env.room_has_behaviour(room_id):
                self._gate(store.publish(room_id, room_wire(exclude, frame.body)))
                return
            # The room's actor runs on_message first, then publishes: ``done`` says when.
            done = gevent.event.AsyncResult()
            self._gate_unordered(done)
            try:
                self.env.router.tell(RoomBroadcast(room_id, frame, event, payload, exclude,
                                                   self.view.id, done))
            except pykka.ActorDeadError as exc:  # the node is stopping
                done.set_exception(exc)
            return
        self.env.router.tell(RoomBroadcast(room_id, frame, event, payload, exclude, self.view.id))

    def _member_of(self) -> list[str]:
        """The rooms this node's room actors hold this session in: the app's, and (with
        Redis) the everyone room, which the app never sees."""
        rooms = list(self.view._rooms)
        if EVERYONE_ROOM in self.room_cursors:
            rooms.append(EVERYONE_ROOM)
        return rooms

    def _on_joined(self, msg: JoinedRoom) -> None:
        if msg.room_id == EVERYONE_ROOM:
            # Stored by the session's create (or already in the rooms it resumed with):
            # no write, no cap, not among the app's rooms.
            if msg.cursor is not None and not self._gone:
                cursor = self.room_cursors.setdefault(msg.room_id, msg.cursor)
                if msg.room_last > cursor:
                    self._fill(msg.room_id, msg.room_last + 1)
            return
        rooms = self.view._rooms
        if msg.room_id not in rooms and len(rooms) >= self.env.config.max_rooms_per_session:
            # Joins by session id (server code) are not checked before routing:
            # enforce the cap here too, so no path exceeds it.
            log.warning("session of user %r is at max_rooms_per_session; left a room over the cap",
                        self.view.user_id)
            tell_quietly(self.env.router, LeaveRoom(msg.room_id, self.view.id))
            return
        rooms.add(msg.room_id)
        store = self.store
        if store is not None and msg.cursor is not None and not self._gone:
            cursor = self.room_cursors.setdefault(msg.room_id, msg.cursor)
            self._gate(store.join_room(self.view.id, self.epoch, msg.room_id, cursor))
            if msg.room_last > cursor:
                # The room delivered messages after this session's cursor before the
                # join reached it: fill them now, not at the room's next message.
                self._fill(msg.room_id, msg.room_last + 1)

    def _on_left(self, msg: LeftRoom) -> None:
        self.view._rooms.discard(msg.room_id)
        store = self.store
        if store is not None and self.room_cursors.pop(msg.room_id, None) is not None \
                and not self._gone:
            run_last = 0
            if self._run_room == msg.room_id:
                run_last, self._run_room = self._run_last, None  # the run closes there
            self._gate(store.leave_room(self.view.id, self.epoch, msg.room_id, run_last))

    # -- actor-based handlers ------------------------------------------------------------------
    def _run_in_handler_actor(self, spec: HandlerSpec, env: Envelope) -> None:
        token = next(_tokens)
        self.busy_token = token
        ref = self.actor_ref
        router = self.env.router
        sender = self.view.id

        def push(frame: EncodedFrame) -> None:
            ref.tell(SessionOutbound(frame))

        store = self.store

        def route_room(room_id: str, frame: EncodedFrame, event: str, payload: Any,
                       exclude: str | None) -> None:
            # Runs in the handler's actor. With a store the session gates its reply (told
            # after this) on the publish, as for a handler run in the session itself.
            done = gevent.event.AsyncResult() if store is not None else None
            if done is not None:
                ref.tell(_GateOn(done))
            try:
                router.tell(RoomBroadcast(room_id, frame, event, payload, exclude, sender, done))
            except pykka.ActorDeadError as exc:
                if done is not None:
                    done.set_exception(exc)
                raise

        ctx = WsContext(env, self.view, push=push, route_room=route_room, now_ms=self._now_ms)
        spec.actor_ref.tell(RunHandler(token, spec.fn, ctx, ref))

    def _on_handler_finished(self, msg: HandlerFinished) -> None:
        if msg.token != self.busy_token:
            return
        self.busy_token = None
        if self.store is not None:
            self._persist_data()
        if msg.error is not None:
            self._push_error(msg.error, msg.correlation_id)
        elif not msg.replied and (msg.result is not None or msg.correlation_id is not None):
            self._reply(msg.result, msg.correlation_id)
        if self._flush_after_handler:
            # Now, before the deferred frames run (another actor handler among them would
            # hold the ack again): the handler's _GateOn messages came before this one
            # (same sender), so its publishes are gated on and the position waits for them.
            self._flush_after_handler = False
            self._on_flush_ack(_FLUSH_ACK)
        while self.deferred and self.busy_token is None:
            frame = self.deferred.popleft()
            try:
                if frame.conn_id == self.protocol.conn_id:
                    self._receive(frame.envelope)
            finally:
                _release(frame)

    def _on_stats(self, msg: Stats) -> dict[str, Any]:
        p = self.protocol
        return {
            "state": p.state.value,
            "last_seq": p.stream.last_seq,
            "acked": p.stream.acked,
            "buffered": p.stream.buffered,
            "buffered_bytes": p.stream.buffered_bytes,
            "client_seq": p.inbound.highest,
            "rooms": len(self.view._rooms),
            "frames_in": p.frames_in,
            "epoch": self.epoch,
            "inbox": self.inbox_cursor,
            "waiting_for_store": len(self._out),
        }


#: Message type → handler. Class-level, so a session costs no per-instance table.
_DISPATCH: dict[type, Callable[[SessionActor, Any], Any]] = {
    ClientFrame: SessionActor._on_client_frame,
    Deliver: SessionActor._on_deliver,
    SessionOutbound: SessionActor._on_deliver,
    _FlushAck: SessionActor._on_flush_ack,
    _GateOn: SessionActor._on_gate_on,
    Attach: SessionActor._on_attach,
    Detach: SessionActor._on_detach,
    Unparseable: SessionActor._on_unparseable,
    HandlerFinished: SessionActor._on_handler_finished,
    JoinedRoom: SessionActor._on_joined,
    LeftRoom: SessionActor._on_left,
    TimerFired: SessionActor._on_timer,
    EndSession: SessionActor._on_end,
    DropSession: SessionActor._on_drop,
    RoomGapped: SessionActor._on_room_gapped,
    _Drain: SessionActor._on_drain,
    _InboxRead: SessionActor._on_inbox_read,
    InboxCheck: SessionActor._on_inbox_check,
    _StoreLost: SessionActor._on_store_lost,
    Stats: SessionActor._on_stats,
}


def _release(msg: ClientFrame | Unparseable) -> None:
    if msg.release is not None:
        msg.release()
