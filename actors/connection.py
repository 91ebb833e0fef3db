"""ConnectionActor: the writer of one socket. One per WebSocket connection.

Job: carry out, one at a time, the writes and the close that the connection's
outbox (:class:`wscore.outbox.Outbox`, transport layer) could not do without
waiting — a slow peer, a full socket buffer. It never reads (the
connection's reader greenlet does, see :mod:`wscore.server`), never waits on
another actor, and knows nothing of sockets: it drives a :class:`WriteQueue`,
so the actors depend on no transport (the layering test in
``tests/test_exports.py``).

Rules it keeps:

* one message at a time; a blocked write blocks only this actor;
* after :class:`CloseConnection` nothing more is written, and it stops.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import pykka

from wscore.actors._runtime import GeventActor
from wscore.actors.messages import CloseConnection, Flush, Stats

__all__ = ["ActorWriter", "ConnectionActor", "WriteQueue"]

log = logging.getLogger("wscore.actors.connection")

_FLUSH = Flush()


class WriteQueue(Protocol):
    """What the actor writes for: an outbox (the server's) or anything shaped like one."""

    def __len__(self) -> int: ...
    def flush_blocking(self) -> None: ...
    def close_blocking(self, code: int, reason: str) -> None: ...


class ConnectionActor(GeventActor):
    """Writes what the outbox could not write without waiting; closes the connection."""

    def __init__(self, queue: WriteQueue) -> None:
        super().__init__()
        self.queue = queue

    def on_receive(self, message: Any) -> Any:
        if message is _FLUSH:
            self.queue.flush_blocking()
        elif isinstance(message, CloseConnection):
            self.queue.close_blocking(message.code, message.reason)
            self.stop()
        elif isinstance(message, Stats):
            return {"queued": len(self.queue)}
        return None


class ActorWriter:
    """The outbox's handle on its :class:`ConnectionActor` (``wscore.outbox.Writer``)."""

    __slots__ = ("ref",)

    def __init__(self, ref: Any) -> None:
        self.ref = ref

    def request_flush(self) -> bool:
        try:
            self.ref.tell(_FLUSH)
        except pykka.ActorDeadError:
            return False
        return True

    def request_close(self, code: int, reason: str) -> bool:
        try:
            self.ref.tell(CloseConnection(code, reason))
        except pykka.ActorDeadError:
            return False
        return True

    def stop(self) -> None:
        try:
            self.ref.stop(block=False)
        except pykka.ActorDeadError:
            pass
