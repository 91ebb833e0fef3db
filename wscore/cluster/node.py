"""One node's Redis parts, composed: what :class:`wscore.WsServer` starts when ``redis_url`` is set.

:class:`ClusterNode` owns the node's one :class:`RedisWriter` (every command of
the node goes through it, STYLE §14), the :class:`Generation`, the
:class:`SessionLog`, the room publisher and subscriber and the
:class:`~wscore.cluster.bus.NodeBus`. :class:`RedisSessionStore` is the
durability a session actor is handed (it implements the protocol
``actors.store.SessionStore`` structurally: this package never imports
``actors``).

Failures are classified for the session (``failure()``): ``"fenced"`` (another
node claimed it), ``"lost"`` (Redis has no such session: flushed, restarted
empty, expired), ``"unavailable"`` (Redis unreachable, or the writer's queue
full). Every write method returns a future and never raises: a refusal at
submit time (writer down) is a failed future, so the actor handles one path.

Pushes (:meth:`ClusterNode.push`, :meth:`ClusterNode.push_user`) go into the
target session's inbox in Redis, whichever node holds it (docs/scaling.md
"Pushes across nodes"); the inbox script announces each one to the owner on
its node channel, and the owner's session actor appends it to its log
(:meth:`RedisSessionStore.append` with ``inbox_pos``). Lease renewal reports
pushes still waiting (an announcement pub/sub lost), and so does every
re-subscription of the node bus (renewing at once).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

import attrs
import gevent
import gevent.event

from wscore.cluster.bus import NodeBus
from wscore.cluster.errors import ClusterError, Fenced, PushNotStored, RedisDataLost, SessionMissing
from wscore.cluster.generation import Generation
from wscore.cluster.rooms import RoomGap, RoomPublisher, RoomsLayout, RoomSubscriber
from wscore.cluster.session_log import RUN_LIMIT, Claim, LogLimits, SessionLog
from wscore.cluster.writer import RedisWriter, wait_result
from wscore.config import redacted_url
from wscore.protocol.codes import EVERYONE_ROOM
from wscore.protocol.session import ResumeImpossible

__all__ = ["ClusterNode", "RedisSessionStore", "Resumed", "make_node_id"]

log = logging.getLogger("wscore.cluster.node")


def make_node_id() -> str:
    """``hostname-pid-random``: unique per process, readable in Redis and in logs."""
    host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname())[:32] or "node"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def _failed(error: BaseException) -> gevent.event.AsyncResult:
    result: gevent.event.AsyncResult = gevent.event.AsyncResult()
    result.set_exception(error)
    return result


@attrs.frozen
class Resumed:
    """A session this node just claimed for a resume: its record and the frames to replay."""

    claim: Claim
    resume_from: int
    frames: list[str]
    #: The room of the session log's open run (None: none) and the room seq the replay
    #: read it to: the session's cursor for that room, and its run goes on from there.
    run_room: str | None = None
    run_cursor: int = 0


class RedisSessionStore:
    """A session actor's durability in Redis (see ``actors.store`` for the contract)."""

    #: A session starts a new run entry after this many room messages in one run, so a
    #: resume never needs more of a room stream than its history holds (see SessionLog).
    run_limit = RUN_LIMIT

    def __init__(self, node: ClusterNode) -> None:
        self.node = node
        self.log = node.log
        self.node_id = node.node_id
        #: session id -> (epoch, on_lost, on_inbox, owned since)
        self._owned: dict[str, tuple[int, Callable[[str], None], Callable[[bool], None] | None,
                                     float]] = {}
        #: session id -> when its record was known to be in Redis (its create answered, or
        #: its resume claimed it): renewed at any age. Marked before or after own().
        self._stored: dict[str, float] = {}

    def _guard(self, make: Callable[[], gevent.event.AsyncResult]) -> gevent.event.AsyncResult:
        try:
            return make()
        except ClusterError as exc:
            return _failed(exc)

    def append(self, session_id: str, epoch: int, seq: int, wire: str, inbox_pos: int = 0,
               close_cursor: int = 0) -> gevent.event.AsyncResult:
        return self._guard(lambda: self.log.append_nowait(session_id, epoch, seq, wire,
                                                          inbox_pos=inbox_pos,
                                                          close_cursor=close_cursor))

    def start_run(self, session_id: str, epoch: int, seq: int, room_id: str, after: int,
                  close_cursor: int = 0) -> gevent.event.AsyncResult:
        return self._guard(lambda: self.log.start_run_nowait(session_id, epoch, seq, room_id, after,
                                                             close_cursor=close_cursor))

    def inbox(self, session_id: str) -> gevent.event.AsyncResult:
        return self._guard(lambda: self.log.inbox_nowait(session_id))

    def ack(self, session_id: str, epoch: int, seq: int) -> None:
        self._guard(lambda: self.log.ack_nowait(session_id, epoch, seq))

    def record_inbound(self, session_id: str, epoch: int, s: int) -> gevent.event.AsyncResult:
        return self._guard(lambda: self.log.accept_inbound_nowait(session_id, epoch, s))

    def set_data(self, session_id: str, epoch: int, data: Any) -> gevent.event.AsyncResult:
        return self._guard(lambda: self.log.set_data_nowait(session_id, epoch, data))

    def join_room(self, session_id: str, epoch: int, room_id: str, cursor: int
                  ) -> gevent.event.AsyncResult:
        return self._guard(lambda: self.log.join_room_nowait(session_id, epoch, room_id, cursor=cursor))

    def leave_room(self, session_id: str, epoch: int, room_id: str, run_last: int = 0
                   ) -> gevent.event.AsyncResult:
        return self._guard(lambda: self.log.leave_room_nowait(session_id, epoch, room_id,
                                                              run_last=run_last))

    def publish(self, room_id: str, wire: str) -> gevent.event.AsyncResult:
        return self._guard(lambda: self.node.publisher.publish_nowait(room_id, wire))

    def room_since(self, room_id: str, after: int) -> tuple[int, list[tuple[int, str]]]:
        current, _epoch, entries = self.node.publisher.since(room_id, after)
        return current, entries

    def end(self, session_id: str, epoch: int) -> None:
        self._guard(lambda: self.log.end_nowait(session_id, epoch))

    def release(self, session_id: str, epoch: int) -> None:
        self._guard(lambda: self.log.release_nowait(session_id, epoch))

    def own(self, session_id: str, epoch: int, on_lost: Callable[[str], None],
            on_inbox: Callable[[bool], None] | None = None) -> None:
        self._owned[session_id] = (epoch, on_lost, on_inbox, time.monotonic())

    def disown(self, session_id: str) -> None:
        self._owned.pop(session_id, None)
        self._stored.pop(session_id, None)

    def stored(self, session_id: str) -> None:
        """``session_id``'s record is in Redis (its create was answered, or a resume claimed it)."""
        self._stored[session_id] = time.monotonic()

    @property
    def owned(self) -> int:
        return len(self._owned)

    def failure(self, error: BaseException) -> str:
        if isinstance(error, Fenced):
            return "fenced"
        if isinstance(error, RedisDataLost):
            self.node.data_lost()
            return "lost"
        if isinstance(error, SessionMissing):
            return "lost"
        return "unavailable"

    def renew_all(self, min_age: float) -> None:
        """Renew every owned session's lease and TTL (pipelined); report refusals to their actors.

        Sessions owned for less than ``min_age`` are skipped unless their record is
        known to be stored (:meth:`stored`): a new session's actor owns it before
        its ``create`` is submitted, and a renewal in between would find no record
        and drop it as lost.
        """
        now = time.monotonic()
        stored = self._stored
        for session_id in [s for s, at in stored.items() if s not in self._owned and now - at > min_age]:
            del stored[session_id]  # marked, never owned (its actor did not start): forget it
        for session_id, (epoch, on_lost, on_inbox, since) in list(self._owned.items()):
            if now - since < min_age and session_id not in stored:
                continue
            try:
                future = self.log.renew_nowait(session_id, epoch)
            except ClusterError:
                return  # Redis is down: nothing to renew with; the writes will tell
            future.rawlink(self._renewed(session_id, epoch, on_lost, on_inbox))

    def _renewed(self, session_id: str, epoch: int, on_lost: Callable[[str], None],
                 on_inbox: Callable[[bool], None] | None
                 ) -> Callable[[gevent.event.AsyncResult], None]:
        def done(result: gevent.event.AsyncResult) -> None:
            if result.successful():
                waiting, lost = result.value
                if (waiting or lost) and on_inbox is not None:
                    on_inbox(lost)  # pushes whose announcement this node never got
                return
            kind = self.failure(result.exception)
            owned = self._owned.get(session_id)
            if kind != "unavailable" and owned is not None and owned[0] == epoch:
                del self._owned[session_id]
                on_lost(kind)
        return done


class ClusterNode:
    """The node's Redis parts; :meth:`start` raises :class:`ClusterError` when Redis is unusable."""

    def __init__(
        self,
        url: str,
        node_id: str,
        *,
        limits: LogLimits,
        on_room_message: Callable[[str, int, str], None],
        on_room_gap: Callable[[RoomGap], None],
        on_bus: Callable[[dict[str, Any]], None],
        on_state: Callable[[bool], None] | None = None,
        on_data_lost: Callable[[], None] | None = None,
        prefix: str = "wscore",
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.node_id = node_id
        self.prefix = prefix
        self._on_state = on_state
        self._on_data_lost = on_data_lost
        self.writer = RedisWriter(url, on_state=self._writer_state, name=f"wscore-{node_id}"[:60])
        self.generation = Generation(self.writer, prefix=prefix)
        self.log = SessionLog(self.writer, self.generation, limits=limits, prefix=prefix, timeout=timeout)
        # A room stream holds what a resume may replay of a run: a session's unacknowledged
        # frames (max_buffered_messages at most) plus the part of a run before them.
        self.publisher = RoomPublisher(
            self.writer, layout=RoomsLayout(prefix=prefix), timeout=timeout,
            history=max(1000, limits.max_buffered_messages + RUN_LIMIT))
        self.subscriber = RoomSubscriber(url, self.publisher, on_message=on_room_message,
                                         on_gap=on_room_gap)
        self.bus = NodeBus(url, self.writer, node_id=node_id, on_message=on_bus, prefix=prefix,
                           on_resubscribed=self._bus_resubscribed)
        self.store = RedisSessionStore(self)
        self._renewer: gevent.Greenlet[Any, Any] | None = None
        self._recovering = False
        self._started = False
        self.renew_interval = max(min(limits.lease_ttl, limits.session_ttl) / 3, 0.05)
        #: How often the rooms this node has members in get their TTL refreshed (a
        #: quarter of ``room_ttl``, at most an hour: 2 commands per room per node).
        self.rooms_keep_alive_interval = min(self.publisher.room_ttl / 4, 3600.0)

    # -- life -----------------------------------------------------------------------------
    def start(self, timeout: float = 5.0) -> None:
        """Connect, adopt the generation, subscribe; raises ClusterError if Redis is unusable."""
        self.writer.start()
        try:
            self.generation.establish()
            self.subscriber.start()
            self.bus.start()
            if not self.bus.wait_subscribed(timeout):
                raise ClusterError(f"Redis at {redacted_url(self.url)} did not confirm a subscription "
                                   f"in {timeout}s")
        except BaseException:
            self.stop()
            raise
        self._started = True
        self._renewer = gevent.spawn(self._renew_loop)

    def stop(self) -> None:
        if self._renewer is not None:
            self._renewer.kill(block=False)
            self._renewer = None
        self.bus.stop()
        self.subscriber.stop()
        self.writer.stop()

    def flush(self, timeout: float) -> bool:
        """Wait until every command queued so far was answered (True) or ``timeout`` passed."""
        try:
            wait_result(self.writer.submit("PING"), timeout)
        except ClusterError:
            return False
        return True

    @property
    def up(self) -> bool:
        return self.writer.up

    def _writer_state(self, up: bool) -> None:
        if up and self._started:
            gevent.spawn(self._verify)
        if self._on_state is not None:
            self._on_state(up)

    def _verify(self) -> None:
        try:
            self.generation.verify()
        except RedisDataLost as exc:
            log.error("%s: every session this node holds is lost (resumes get 1006)", exc)
            self.data_lost()
        except ClusterError as exc:
            log.debug("generation check after reconnect failed: %s", exc)

    def data_lost(self) -> None:
        """Redis lost its data: tell the server (it drops every session it holds: their
        resumes then get 1006), and adopt a new generation, so new sessions work again."""
        if self._recovering:
            return
        self._recovering = True
        if self._on_data_lost is not None:
            try:
                self._on_data_lost()
            except Exception:
                log.exception("on_data_lost callback failed")

        def recover() -> None:
            try:
                self.generation.recover()
            except ClusterError as exc:
                log.warning("could not adopt a new generation yet: %s", exc)
            finally:
                self._recovering = False

        gevent.spawn(recover)

    def _bus_resubscribed(self) -> None:
        # Inbox announcements published while the bus was away are lost: renew now,
        # which reports every owned session with pushes waiting (its actor reads them).
        # Young sessions whose record may not be stored yet wait for the next renewal.
        try:
            self.store.renew_all(self.renew_interval)
        except Exception:
            log.exception("renewal after a bus re-subscription failed")

    def _renew_loop(self) -> None:
        rooms_kept = time.monotonic()
        while True:
            # A periodic lease renewal, not a synchronisation.
            gevent.sleep(self.renew_interval)
            try:
                self.store.renew_all(self.renew_interval)
            except Exception:
                log.exception("lease renewal failed")
            if time.monotonic() - rooms_kept >= self.rooms_keep_alive_interval:
                rooms_kept = time.monotonic()
                try:
                    self.subscriber.keep_alive()
                except ClusterError:
                    pass  # Redis is down: the writes will tell; next time again
                except Exception:
                    log.exception("refreshing the rooms' TTL failed")

    # -- pushes (never block, so server code calls them from anywhere; refused at once
    #    with PushNotStored while Redis is known down) ----------------------------------------
    def push(self, session_id: str, body: str) -> None:
        """Put a push into ``session_id``'s inbox (its owner, on any node, appends it).

        Unknown, ended or expired sessions: nothing happens (logged at debug).
        Redis known down or the writer full: :class:`PushNotStored` at once (the
        caller hears it; in a handler its request gets the error). A push whose
        connection breaks after it was sent has an unknown outcome, as any
        command: logged at warning.
        """
        self._submit_push("a session", lambda: self.log.push_nowait(session_id, body), self._pushed)

    def push_user(self, user_id: str, body: str) -> None:
        """Put a push into the inbox of every session of ``user_id`` (on every node); as :meth:`push`."""
        self._submit_push("a user", lambda: self.log.push_user_nowait(user_id, body), self._pushed)

    def broadcast(self, wire: str) -> None:
        """Publish ``wire`` (a room message) to the everyone room: every session, every node.

        Redis known down or the writer full: :class:`PushNotStored` at once (nothing
        was sent). A publish whose connection breaks after it was sent has an
        unknown outcome, as any command: logged at warning.
        """
        self._submit_push("everyone", lambda: self.publisher.publish_nowait(EVERYONE_ROOM, wire),
                          self._broadcast_done)

    @staticmethod
    def _submit_push(to: str, submit: Callable[[], gevent.event.AsyncResult],
                     done: Callable[[gevent.event.AsyncResult], None]) -> None:
        """``submit()``; refused at once (Redis known down, writer full): PushNotStored."""
        try:
            future = submit()
        except ClusterError as exc:
            log.warning("push to %s not stored (Redis): %s", to, exc)
            raise PushNotStored() from exc
        future.rawlink(done)

    def _broadcast_done(self, result: gevent.event.AsyncResult) -> None:
        if not result.successful():
            log.warning("broadcast not published (Redis): %s", result.exception)

    def _pushed(self, result: gevent.event.AsyncResult) -> None:
        if not result.successful():
            error = result.exception
            if isinstance(error, SessionMissing):
                log.debug("push to an unknown session: nothing to do")
            elif isinstance(error, RedisDataLost):
                self.data_lost()
            else:
                log.warning("push not stored (Redis): %s", error)
            return
        value = result.value
        # (position, owner) of one session, or {session id: position} of a user's
        refused = ([] if value[0] else ["session"]) if isinstance(value, tuple) else [
            sid for sid, pos in value.items() if pos == 0]
        if refused:
            log.warning("a push was refused by a full session inbox (%s); that session can no "
                        "longer be resumed intact", ", ".join(refused))

    # -- sessions (blocking: called from a connection's reader greenlet) --------------------
    def create(self, session_id: str, user_id: str | None) -> int:
        """Record a new session owned here, a member of the everyone room (``broadcast``)
        from now on; returns its cursor for that room (the room's seq now)."""
        def create() -> Claim:
            return self.log.create(session_id, self.node_id, user_id=user_id, data={},
                                   everyone=EVERYONE_ROOM)

        try:
            claim = create()
        except RedisDataLost:
            self.generation.recover()
            claim = create()
        self.store.stored(session_id)
        return claim.rooms[EVERYONE_ROOM]

    def resume(self, session_id: str, user_id: str | None, last_seq: int) -> Resumed | str:
        """Claim ``session_id`` for a resume from ``last_seq`` on this node.

        Returns :class:`Resumed`, or why not: ``"missing"`` (unknown, ended,
        expired, or Redis lost it: 1006), ``"wrong_user"`` (1004; the session
        is left untouched), ``"impossible"`` (the log cannot replay from
        ``last_seq``, or a push was refused by its full inbox: 1006; untouched).
        Raises ClusterError when Redis cannot answer (the caller must not answer
        1006 then: the session may exist).
        """
        try:
            record = self.log.read(session_id)
        except RedisDataLost:
            return "missing"
        if record is None:
            return "missing"
        if record.user_id != user_id:
            return "wrong_user"
        if ((last_seq > record.last_seq and not record.run) or last_seq < record.dropped_through
                or last_seq + 1 < record.first_seq or record.inbox_lost):
            # The same refusals as the replay, before claiming (past an open run, only the
            # replay can tell: it reads the room stream).
            return "impossible"
        try:
            claim = self.log.claim(session_id, self.node_id)
        except (SessionMissing, RedisDataLost):
            return "missing"
        owner = claim.previous_owner
        if owner and owner != self.node_id and claim.previous_lease_live:
            try:  # cooperative hand-over; the fence enforces it if this is lost
                self.bus.send_to_node(owner, {"k": "handover", "sid": session_id})
            except ClusterError:
                pass
        try:
            replay = self.log.replay(session_id, claim.epoch, last_seq)
        except (ResumeImpossible, SessionMissing, RedisDataLost):
            return "impossible"
        self.store.stored(session_id)
        return Resumed(claim, last_seq, replay.frames, replay.run_room, replay.run_cursor)
