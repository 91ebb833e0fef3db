"""ConnectionActor: writes one socket's frames. One per WebSocket connection.

Job: write what its :class:`Outbox` could not write without waiting (a slow
peer, a full socket buffer), and close the socket. It never reads (the connection's
reader greenlet does, see :mod:`wscore.server`) and never waits on another
actor; it does wait on its socket (blocking writes), which blocks only itself.

Rules it keeps:

* one message at a time; a blocked write blocks only this actor;
* a consumer too slow to keep up has its TCP connection dropped rather than
  growing memory: when ``max_queued_frames`` frames wait *and* the socket
  holds an unwritten tail (the peer stopped reading). A long queue the hub
  has not flushed yet in this loop turn is not slowness, so the queue may
  briefly hold more. The session still holds every numbered frame in its
  replay buffer, so a resume loses nothing (SPEC §3 "Backpressure"). Replies
  to the client's own frames do not fill it: the reader stops reading while
  half of ``max_queued_frames`` wait (:meth:`Outbox.wait_for_room`), so only
  pushes the client did not ask for (broadcasts) can;
* after ``CloseConnection`` nothing more is written.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import gevent
import gevent.event
import pykka

from actors._runtime import GeventActor
from actors.messages import CloseConnection, Flush, Stats
from wscore.errors import ConnectionClosed
from wscore.transport import WsTransport

__all__ = ["ConnectionActor", "Outbox"]

log = logging.getLogger("wscore.actors.connection")

_FLUSH = Flush()
#: Seconds a closing connection may take to flush before its socket is dropped.
_CLOSE_GRACE_SECONDS = 5.0
_PING = object()  # marker in the outbox: send an RFC 6455 ping here


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
                 "conn_id", "ref", "transport")

    def __init__(self, conn_id: int, transport: WsTransport, *, limit: int) -> None:
        self.conn_id = conn_id
        self.transport = transport
        self._queue: deque[Any] = deque()
        self._limit = limit
        self._loop = gevent.get_hub().loop
        self._scheduled = False  # a hub flush is pending
        self._flush_pending = False  # the actor was told to flush
        self.closed = False
        self.ref: Any = None
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
        try:
            self.ref.tell(CloseConnection(code, reason))
        except pykka.ActorDeadError:  # the writer is gone: drop the socket directly
            self.transport.abort()
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
            try:
                self.ref.tell(_FLUSH)
            except pykka.ActorDeadError:  # the writer is gone; the reader reports the loss
                self.closed = True

    def take_all(self) -> list[Any]:
        self._flush_pending = False
        items = list(self._queue)
        self._queue.clear()
        self._wake_reader()
        return items


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


class ConnectionActor(GeventActor):
    """Writes what the :class:`Outbox` could not write without waiting; closes the socket."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__()
        self.outbox = outbox
        self.transport = outbox.transport

    def on_receive(self, message: Any) -> Any:
        if message is _FLUSH:
            self._flush()
        elif isinstance(message, CloseConnection):
            self._flush()
            self.transport.close(message.code, message.reason)
            self.stop()
        elif isinstance(message, Stats):
            return {"queued": len(self.outbox)}
        return None

    def _flush(self) -> None:
        transport = self.transport
        try:
            # Items queued while this write waits are picked up by the next Flush
            # (take_all re-arms it), so the loop below ends.
            transport.flush_tail()
            while self.outbox._queue and not transport.closed:
                transport.write(encode_items(self.outbox.take_all()))
            self.outbox._flush_pending = False
        except ConnectionClosed:
            # The reader greenlet sees the same loss and reports it to the session.
            self.outbox.closed = True
