"""ConnectionActor: writes one socket's frames. One per WebSocket connection.

Job: turn the frames queued in its :class:`Outbox` into writes, coalescing
whatever is waiting into one ``sendall``. It never reads (the connection's
reader greenlet does, see :mod:`wscore.server`) and never waits on another
actor.

Rules it keeps:

* one message at a time; a blocked write blocks only this actor;
* the outbox is bounded (``max_queued_frames``): a consumer too slow to keep
  up has its TCP connection dropped rather than growing memory. The
  session still holds every numbered frame in its replay buffer, so a
  resume loses nothing (SPEC §4);
* after ``CloseConnection`` nothing more is written.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

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
    """The bounded queue of frames for one connection, and its actor's address.

    Senders (the session actor, the heartbeat ticker) call :meth:`send`; the
    first frame into an empty outbox tells the actor to flush. This keeps one
    wake-up per burst instead of one message per frame.
    """

    __slots__ = ("_flush_pending", "_limit", "_queue", "closed", "conn_id", "overflowed", "ref",
                 "transport")

    def __init__(self, conn_id: int, transport: WsTransport, *, limit: int) -> None:
        self.conn_id = conn_id
        self.transport = transport
        self._queue: deque[Any] = deque()
        self._limit = limit
        self._flush_pending = False
        self.closed = False
        self.overflowed = False
        self.ref: Any = None

    def __len__(self) -> int:
        return len(self._queue)

    def send(self, wire: str) -> bool:
        """Queue one frame; False if the connection is closed or was just cut for being slow."""
        if self.closed:
            return False
        q = self._queue
        if not q and not self._flush_pending:
            # Idle writer, nothing queued: write now if the socket takes it without
            # waiting (saves waking the actor); a partial write leaves a tail to flush.
            transport = self.transport
            if transport.send_text_nowait(wire):
                if transport.has_tail:
                    self._wake()
                return True
        if len(q) >= self._limit:
            # The peer stopped reading: a close frame could not get through either,
            # so drop the TCP connection. The session keeps every numbered frame.
            self.overflowed = True
            self.closed = True
            log.warning("connection %d: outbox full (%d frames), dropping a slow consumer",
                        self.conn_id, self._limit)
            self.transport.abort()
            return False
        q.append(wire)
        self._wake()
        return True

    def send_batch(self, wires: list[str]) -> bool:
        """Queue a burst (a resume's replay) as one entry: a replay is not a slow consumer."""
        if self.closed:
            return False
        if wires:
            self._queue.append(wires)
            self._wake()
        return True

    def ping(self) -> None:
        if not self.closed:
            self._queue.append(_PING)
            self._wake()

    def close(self, code: int, reason: str = "") -> None:
        """Close after the frames already queued (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.ref.tell(CloseConnection(code, reason))
        except Exception:
            self.transport.abort()

    def _wake(self) -> None:
        if not self._flush_pending:
            self._flush_pending = True
            try:
                self.ref.tell(_FLUSH)
            except Exception:
                self.closed = True

    def take_all(self) -> list[Any]:
        self._flush_pending = False
        items = list(self._queue)
        self._queue.clear()
        return items


class ConnectionActor(GeventActor):
    """Writes frames from an :class:`Outbox` to its transport."""

    def __init__(self, outbox: Outbox) -> None:
        super().__init__()
        self.outbox = outbox
        self.transport = outbox.transport
        self.frames_written = 0

    def on_receive(self, message: Any) -> Any:
        if message is _FLUSH:
            self._flush()
        elif isinstance(message, CloseConnection):
            self._flush()
            self.transport.close(message.code, message.reason)
            self.stop()
        elif isinstance(message, Stats):
            return {"queued": len(self.outbox), "written": self.frames_written}
        return None

    def _flush(self) -> None:
        items = self.outbox.take_all()
        if self.transport.closed:
            return
        texts: list[str] = []
        try:
            self.transport.flush_tail()
            for item in items:
                if item is _PING:
                    if texts:
                        self.transport.send_texts(texts)
                        texts = []
                    self.transport.send_ping()
                elif isinstance(item, list):
                    texts.extend(item)
                else:
                    texts.append(item)
            if texts:
                self.transport.send_texts(texts)
            self.frames_written += len(items)
        except ConnectionClosed:
            # The reader greenlet sees the same loss and reports it to the session.
            self.outbox.closed = True
