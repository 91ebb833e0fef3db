"""pykka on gevent: actors whose loop is a greenlet and whose inbox is a gevent queue.

pykka 4 dropped its gevent backend; this is the small adapter wscore needs.
An actor's messages are handled one at a time in its own greenlet, so a
handler that blocks on cooperative I/O only blocks that actor.
"""

from __future__ import annotations

import queue
import sys
from typing import Any

import gevent
import gevent.event
import gevent.queue
import pykka

__all__ = ["GeventActor", "GeventFuture"]


class GeventFuture(pykka.Future[Any]):
    """A pykka future backed by :class:`gevent.event.AsyncResult`."""

    def __init__(self) -> None:
        super().__init__()
        self._async = gevent.event.AsyncResult()

    def get(self, *, timeout: float | None = None) -> Any:
        try:
            return super().get(timeout=timeout)
        except NotImplementedError:
            pass
        try:
            return self._async.get(timeout=timeout)
        except gevent.Timeout:
            raise pykka.Timeout(f"{timeout} seconds") from None

    def set(self, value: Any | None = None) -> None:
        if self._async.ready():
            raise queue.Full
        self._async.set(value)

    def set_exception(self, exc_info: Any = None) -> None:
        if exc_info is None:
            exc_info = sys.exc_info()
        if self._async.ready():
            raise queue.Full
        self._async.set_exception(exc_info[1], exc_info=exc_info)


class GeventActor(pykka.Actor):
    """Base class of every wscore actor: a pykka actor running in one greenlet."""

    @staticmethod
    def _create_actor_inbox() -> Any:
        return gevent.queue.SimpleQueue()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return GeventFuture()

    def _start_actor_loop(self) -> None:
        gevent.spawn(self._actor_loop)
