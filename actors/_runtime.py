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
from pykka._envelope import Envelope

__all__ = ["GeventActor", "GeventFuture", "offer_quietly", "tell_quietly"]

_WAKE = object()  # an inbox entry that only wakes a stopped actor's loop


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
    """Base class of every wscore actor: a pykka actor running in one greenlet.

    **The idle fast path.** :meth:`offer` hands a message to the actor like
    ``tell`` does, but when the actor is idle — not inside a message and with
    an empty inbox — it runs the handler right away in the caller's greenlet
    instead of waking the actor's own. The actor then still sees one message
    at a time and in the order sent: nothing else of its can run meanwhile
    (gevent switches only on I/O or waits), and no earlier message is pending.
    Only message types whose handling never yields may be offered (each actor
    lists them in ``inline_types``); anything else falls back to ``tell``. This
    saves two greenlet switches per fan-out delivery.
    """

    #: Message types :meth:`offer` may run inline (their handling must not yield).
    inline_types: frozenset[type] = frozenset()
    _busy = False

    @staticmethod
    def _create_actor_inbox() -> Any:
        return gevent.queue.SimpleQueue()

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return GeventFuture()

    def _start_actor_loop(self) -> None:
        gevent.spawn(self._actor_loop)

    def _handle_receive(self, message: Any) -> Any:
        if message is _WAKE:
            return None
        self._busy = True
        try:
            return super()._handle_receive(message)
        finally:
            self._busy = False

    def offer(self, message: Any) -> None:
        """``tell``, or run now when idle (see the class docstring). Raises ``ActorDeadError``."""
        if (self._busy or type(message) not in self.inline_types
                or not self.actor_inbox.empty()):
            self.actor_ref.tell(message)
            return
        if self.actor_stopped.is_set():
            raise pykka.ActorDeadError(f"{self} stopped")
        self._busy = True
        try:
            self.on_receive(message)
        except Exception:
            # Same outcome as a failing tell in the actor's own loop: log and stop.
            exc_info = sys.exc_info()
            self._handle_failure(*exc_info)
            try:
                self.on_failure(*exc_info)
            except Exception:
                self._handle_failure(*sys.exc_info())
            # Wake the actor's own loop (blocked on an empty inbox) so it sees the
            # stop flag and ends its greenlet.
            self.actor_inbox.put(Envelope(_WAKE))
        finally:
            self._busy = False

    @classmethod
    def start_actor(cls, *args: Any, **kwargs: Any) -> Any:
        """Like ``start()``, but return the actor (for :meth:`offer`); share only its ref/offer."""
        actor = cls(*args, **kwargs)
        pykka.ActorRegistry.register(actor.actor_ref)
        actor._start_actor_loop()
        return actor


def tell_quietly(ref: Any, message: Any) -> None:
    """``ref.tell(message)`` unless the actor has stopped: then nobody is left to act on it
    (timers, clean-up and fan-out race with actors ending; that is not an error)."""
    try:
        ref.tell(message)
    except pykka.ActorDeadError:
        pass


def offer_quietly(offer: Any, message: Any) -> bool:
    """``offer(message)`` (see :meth:`GeventActor.offer`); False if the actor has stopped."""
    try:
        offer(message)
    except pykka.ActorDeadError:
        return False
    return True
