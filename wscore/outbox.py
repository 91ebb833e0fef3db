"""The outbox: one connection's bounded, non-blocking write queue (transport layer).

Senders (the session actor through its frame sink, the reader, the heartbeat
ticker) call :meth:`Outbox.send`, which never blocks. What cannot be written
without waiting is left to the connection's *writer* — an actor in the
server (:class:`actors.connection.ConnectionActor`), reached only through
the small :class:`Writer` interface, so this module knows no actors and the
actors know no transport (the layering test in ``tests/test_exports.py``).

Rules it keeps:

* bounded (``limit`` = ``max_queued_frames``): a consumer too slow to keep
  up — its socket holds an unwritten tail *and* the queue is full — has its
  TCP connection dropped rather than growing memory. The session still holds
  every numbered frame in its replay buffer, so a resume loses nothing (SPEC
  §4). Replies to the client's own frames do not fill it: the reader waits
  (:meth:`Outbox.wait_for_room`) before reading more, so only pushes the
  client did not ask for (broadcasts) can;
* frames are written in the order queued; after :meth:`Outbox.close` nothing
  more is queued; a closing connection that cannot flush is dropped after a
  grace period.

Tested directly over ``socket.socketpair()`` with a small send buffer
(``tests/wscore/test_outbox.py``).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any, Protocol

import gevent
import gevent.event

from wscore.errors import ConnectionClosed
from wscore.transport import WsTransport

__all__ = ["Outbox", "Writer", "encode_items"]

log = logging.getLogger("wscore.outbox")

#: Seconds a closing connection may take to flush before its socket is dropped.
_CLOSE_GRACE_SECONDS = 5.0
_PING = object()  # marker in the outbox: send an RFC 6455 ping here


class Writer(Protocol):
    """The connection's writer, as the outbox sees it. Each returns False once it is gone."""

    def request_flush(self) -> bool:
        """Ask for :meth:`Outbox.flush_blocking` to run soon (not in the caller)."""
        ...

    def request_close(self, code: int, reason: str) -> bool:
        """Ask for :meth:`Outbox.close_blocking` to run soon (not in the caller)."""
        ...


class Outbox:
    """The bounded queue of frames for one connection, and its writer's address.

    Senders (the session actor, the reader, the heartbeat ticker) call
    :meth:`send`, which never blocks. Frames queued during one turn of the
    event loop go out together at the end of that turn, in one non-blocking
    write run from the gevent hub: an emit and its reply share a packet, a
    broadcast burst that piled up for one member is one write, and nothing
    wakes a greenlet. Only when the socket cannot take everything at once does
    the :class:`ConnectionActor` take over with blocking writes.

    Why not leave the batching to Nagle: wscore sets ``TCP_NODELAY`` because a
    frame written while a previous one is unacknowledged would otherwise wait
    for the peer's delayed ACK — measured, 44 ms for every emit-then-reply.
    Coalescing per loop turn gets Nagle's packet savings without that stall.
    """

    __slots__ = ("_flush_pending", "_limit", "_loop", "_queue", "_room", "_scheduled", "closed",
                 "conn_id", "transport", "writer")

    def __init__(self, conn_id: int, transport: WsTransport, *, limit: int) -> None:
        self.conn_id = conn_id
        self.transport = transport
        self._queue: deque[Any] = deque()
        self._limit = limit
        self._loop = gevent.get_hub().loop
        self._scheduled = False  # a hub flush is pending
        self._flush_pending = False  # the actor was told to flush
        self.closed = False
        #: The connection's writer (its actor), set by whoever starts it: see :class:`Writer`.
        self.writer: Writer | None = None
        #: Set when the queue empties; made only once the reader waits (idle cost: none).
        self._room: gevent.event.Event | None = None

    def __len__(self) -> int:
        return len(self._queue)

    def send(self, wire: str) -> bool:
        """Queue one frame; False if the connection is closed or was just cut for being slow."""
        if self.closed:
            return False
        q = self._queue
        if len(q) >= self._limit and self.transport.busy:
            # The peer stopped reading (the socket holds an unwritten tail): a close
            # frame could not get through either, so drop the TCP connection. The
            # session keeps every numbered frame. A long queue the hub simply has not
            # flushed yet this loop turn is not slowness.
            self.closed = True
            log.warning("connection %d: outbox full (%d frames), dropping a slow consumer",
                        self.conn_id, self._limit)
            self.transport.abort()
            return False
        q.append(wire)
        self._schedule()
        return True

    def send_batch(self, wires: list[str]) -> bool:
        """Queue a burst (a resume's replay) as one entry: a replay is not a slow consumer."""
        if self.closed:
            return False
        if wires:
            self._queue.append(wires)
            self._schedule()
        return True

    def wait_for_room(self, high_water: int, *, recheck: float) -> None:
        """Block the caller (the connection's reader) while ``high_water`` or more frames wait.

        Returns once the queue was drained below it, or the connection is over;
        ``recheck`` seconds bound each wait so a socket dropped from elsewhere is noticed.
        """
        while len(self._queue) >= high_water and not self.closed and not self.transport.closed:
            if self._room is None:
                self._room = gevent.event.Event()
            self._room.clear()
            self._room.wait(timeout=recheck)

    def abort(self) -> None:
        """Drop the TCP connection now (a dead or silent peer); wakes a waiting reader."""
        self.closed = True
        self.transport.abort()
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._room is not None:
            self._room.set()

    def ping(self) -> None:
        if not self.closed:
            self._queue.append(_PING)
            self._schedule()

    def close(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._wake_reader()
        if self.writer is None or not self.writer.request_close(code, reason):
            self.transport.abort()  # the writer is gone: drop the socket directly
            return
        # If the writer is stuck behind a peer that does not read, give up on the
        # closing handshake after a grace period.
        gevent.spawn_later(_CLOSE_GRACE_SECONDS, self.transport.abort)

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.run_callback(self._flush_nowait)

    def _flush_nowait(self) -> None:
        """End of the loop turn, in the hub: write what is queued without ever waiting."""
        self._scheduled = False
        if not self._queue:
            return
        transport = self.transport
        try:
            if self._flush_pending or transport.busy:
                self._wake()  # the actor is (or will be) writing: it drains the queue
                return
            if transport.closed:
                return
            queue = self._queue
            if len(queue) == 1 and type(queue[0]) is str:  # the common case, without the loop
                data = WsTransport.encode_text(queue.popleft())
            else:
                data = encode_items(self.take_all())
            if transport.write_nowait(data) and transport.has_tail:
                self._wake()  # the socket took part of it: the actor finishes, waiting
        except Exception:
            log.exception("connection %d: write failed", self.conn_id)
            transport.abort()

    def _wake(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            if self.writer is None or not self.writer.request_flush():
                self.closed = True  # the writer is gone; the reader reports the loss

    def take_all(self) -> list[Any]:
        self._flush_pending = False
        items = list(self._queue)
        self._queue.clear()
        self._wake_reader()
        return items

    # -- called by the writer (the connection's actor), one call at a time -----------------------
    def flush_blocking(self) -> None:
        """Write everything queued, waiting for the socket as long as needed (not from the hub).

        Items queued while a write waits are picked up by the next flush
        (:meth:`take_all` re-arms it), so the loop ends.
        """
        transport = self.transport
        try:
            transport.flush_tail()
            while self._queue and not transport.closed:
                transport.write(encode_items(self.take_all()))
            self._flush_pending = False
        except ConnectionClosed:
            # The reader greenlet sees the same loss and reports it to the session.
            self.closed = True

    def close_blocking(self, code: int, reason: str) -> None:
        """Flush what is queued, then start the closing handshake with ``code``."""
        self.flush_blocking()
        self.transport.close(code, reason)


def encode_items(items: list[Any]) -> bytes:
    """Wire bytes for queued items: text frames, replay bursts and ping markers, in order."""
    texts: list[str] = []
    parts: list[bytes] = []
    for item in items:
        if item is _PING:
            if texts:
                parts.append(WsTransport.encode_texts(texts))
                texts = []
            parts.append(WsTransport.PING_FRAME)
        elif isinstance(item, list):
            texts.extend(item)
        else:
            texts.append(item)
    if texts:
        parts.append(WsTransport.encode_texts(texts))
    return b"".join(parts)
