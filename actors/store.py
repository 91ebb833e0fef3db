"""The durability seam of a session: what a :class:`~actors.session.SessionActor` stores, and where.

The embedded default has no store (``SessionEnv.store is None``): the session's
in-memory :class:`~wscore.protocol.server_session.ServerSession` is all there
is, exactly as before. With Redis (SPEC §6) the server hands every session a
:class:`SessionStore` — implemented by :class:`wscore.cluster.store.RedisSessionStore`,
which this package never imports (layers run one way: the server composes).

Contract the actor keeps with a store (docs/scaling.md "Store before send"):

* every write returns a future (``gevent.event.AsyncResult``) at once, never
  blocking the actor for a round trip; the store's writes of one node run in
  submission order down one connection, and a write submitted after one that
  failed for a lost connection fails too;
* the actor writes nothing to a socket until every store write it submitted
  before that socket write has succeeded (numbered frames, the inbound
  position behind a ``sys.ack``, ``data``, room membership, room publishes);
* a failed write ends the node's hold on the session: :meth:`SessionStore.failure`
  says whether another node owns it now (``"fenced"``: close 4000), Redis lost
  it (``"lost"``) or Redis is unreachable (``"unavailable"``); the session is
  then dropped from this node, never silently continued;
* a room message is stored once, in its room's stream, before it is published;
  the session stores only where it sits in its stream: :meth:`SessionStore.start_run`
  ("from seq q on, this room's messages after room seq c") when a room message
  follows anything else, and nothing for the next ones of the same run (at
  most :attr:`SessionStore.run_limit`). Its next own frame, run or leaving that
  room closes the run; the store checks the seqs;
* pushes to the session (``send_to_session``/``send_to_user``, from any node)
  wait in its inbox in the store; the actor appends push ``n`` only as
  ``append(..., inbox_pos=n)`` with ``n`` its inbox cursor + 1 (the store
  takes it out of the inbox in the same write, refusing any other ``n``), and
  reads :meth:`SessionStore.inbox` when it sees a gap, when ``on_inbox`` says
  pushes wait, and once when it starts hydrated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs
import gevent.event

__all__ = ["ClusterLinks", "Hydration", "RoomEntries", "SessionStore", "room_wire", "split_room_wire"]

#: (room's current seq, [(seq, wire as published), …]) from a room's short stream.
RoomEntries = tuple[int, list[tuple[int, str]]]


@attrs.frozen(kw_only=True)
class Hydration:
    """A session's state read from the store by the node that claimed it (a resume elsewhere)."""

    epoch: int
    #: The client's ``last_seq``: the stream is positioned there, acknowledged.
    resume_from: int
    #: The numbered frames after ``resume_from`` (wire text, in order).
    frames: list[str]
    inbound: int
    data: Any
    #: room id → the room seq this session's log holds up to.
    rooms: dict[str, int]
    #: The last position of the session's inbox already in its log (pushes after it wait).
    inbox: int = 0
    #: The room of the log's open run (the replay read it up to ``rooms[run]``), if any.
    run: str | None = None


class SessionStore(Protocol):
    """Where a node's sessions keep what must outlive the node (see the module docstring)."""

    node_id: str
    #: The most room messages one run covers before the session starts another.
    run_limit: int

    def append(self, session_id: str, epoch: int, seq: int, wire: str, inbox_pos: int = 0,
               close_cursor: int = 0) -> gevent.event.AsyncResult:
        """Store numbered frame ``seq``; with ``inbox_pos`` it is that push of the session's
        inbox, which leaves the inbox in the same step (refused unless it is the next).
        An open run closes at ``seq - 1``; ``close_cursor`` is the session's cursor for
        that run's room."""
        ...
    def start_run(self, session_id: str, epoch: int, seq: int, room_id: str, after: int,
                  close_cursor: int = 0) -> gevent.event.AsyncResult:
        """Store that seq ``seq`` on are ``room_id``'s messages after room seq ``after``
        (those excluding this session left out); it closes an open run as :meth:`append`."""
        ...
    def inbox(self, session_id: str) -> gevent.event.AsyncResult:
        """The pushes waiting in the session's inbox: a future of ``(taken, lost, bodies)``,
        the bodies being positions ``taken + 1`` … in order; ``lost``: one was refused."""
        ...
    def ack(self, session_id: str, epoch: int, seq: int) -> None: ...
    def record_inbound(self, session_id: str, epoch: int, s: int) -> gevent.event.AsyncResult: ...
    def set_data(self, session_id: str, epoch: int, data: Any) -> gevent.event.AsyncResult: ...
    def join_room(self, session_id: str, epoch: int, room_id: str, cursor: int
                  ) -> gevent.event.AsyncResult: ...
    def leave_room(self, session_id: str, epoch: int, room_id: str, run_last: int = 0
                   ) -> gevent.event.AsyncResult:
        """Leave ``room_id``; the open run, if it is that room's, closes at ``run_last``."""
        ...
    def publish(self, room_id: str, wire: str) -> gevent.event.AsyncResult:
        """Publish a room message (``wire``: :func:`room_wire`); the room's seq is assigned by the store."""
        ...
    def room_since(self, room_id: str, after: int) -> RoomEntries:
        """Blocking (a gap fill): raises if the store cannot answer."""
        ...
    def end(self, session_id: str, epoch: int) -> None: ...
    def release(self, session_id: str, epoch: int) -> None: ...
    def own(self, session_id: str, epoch: int, on_lost: Callable[[str], None],
            on_inbox: Callable[[bool], None] | None = None) -> None:
        """Keep the session's lease alive until :meth:`disown`; ``on_lost(kind)`` if that fails;
        ``on_inbox(lost)`` when a renewal finds pushes waiting in its inbox (or one lost)."""
        ...
    def disown(self, session_id: str) -> None: ...
    def failure(self, error: BaseException) -> str:
        """``"fenced"``, ``"lost"`` or ``"unavailable"`` for a failed write's exception."""
        ...


def split_room_wire(wire: str) -> tuple[str | None, str]:
    """(excluded sender or None, frame body) of a room message as published (see the store)."""
    exclude, _, body = wire.partition("\n")
    return exclude or None, body


def room_wire(exclude: str | None, body: str) -> str:
    """A room message as published: the excluded sender's id, a newline, the frame body."""
    return f"{exclude or ''}\n{body}"


@attrs.frozen(kw_only=True)
class ClusterLinks:
    """What the router calls to reach beyond this node (Redis mode), handed over by the server."""

    #: Publish a room message (the room's order is assigned in Redis); a future.
    publish: Callable[[str, str | None, str], gevent.event.AsyncResult]
    #: This node starts/stops receiving a room's messages (first/last local member).
    subscribe: Callable[[str, int | None], None]
    unsubscribe: Callable[[str], None]
