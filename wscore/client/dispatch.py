"""Callback dispatch of the client: listeners, hooks, and the greenlet that runs them.

Received events and hook calls are queued (bounded: a full queue makes the
reader wait, which is TCP backpressure towards the server) and run by one
dispatcher greenlet, in arrival order, one at a time. The reader never waits
for a callback, so a callback may call :meth:`WsClient.request`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gevent
import gevent.queue

__all__ = ["HOOKS", "Dispatcher", "EventCallback"]

log = logging.getLogger("wscore.client")

EventCallback = Callable[[Any], object]
F = TypeVar("F", bound=Callable[..., object])
HOOKS = ("connect", "disconnect", "resume", "session_lost")


class Dispatcher:
    """Registered callbacks and the queue of what they still have to see."""

    def __init__(self, max_queued: int) -> None:
        self._listeners: dict[str, list[EventCallback]] = {}
        self._any: list[Callable[[str, Any], object]] = []
        self._hooks: dict[str, list[Callable[[Any], object]]] = {name: [] for name in HOOKS}
        self._queue: gevent.queue.Queue[Any] = gevent.queue.Queue(max_queued)
        self.greenlet: gevent.Greenlet | None = None

    # -- registration ------------------------------------------------------------------------
    def add_listener(self, event: str, fn: EventCallback) -> None:
        self._listeners.setdefault(event, []).append(fn)

    def remove_listener(self, event: str, fn: EventCallback | None) -> None:
        if fn is None:
            self._listeners.pop(event, None)
            return
        fns = self._listeners.get(event, [])
        if fn in fns:
            fns.remove(fn)

    def add_any(self, fn: Callable[[str, Any], object]) -> None:
        self._any.append(fn)

    def add_hook(self, name: str, fn: Callable[[Any], object]) -> None:
        self._hooks[name].append(fn)

    def has_listeners(self, event: str) -> bool:
        return bool(self._listeners.get(event)) or bool(self._any)

    # -- queueing ----------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        size: int = self._queue.qsize()
        return size

    def event(self, event: str, payload: Any) -> None:
        """Queue ``event`` for its listeners (blocks while the queue is full)."""
        self._queue.put(("event", event, payload))

    def hook(self, name: str, arg: Any) -> None:
        """Queue a call of the ``name`` hooks, if any are registered."""
        if self._hooks[name]:
            self._queue.put(("hook", name, arg))

    # -- the greenlet --------------------------------------------------------------------------
    def start(self) -> None:
        if self.greenlet is None:
            self.greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        """Let the greenlet end after the callbacks already queued."""
        if self.greenlet is not None:
            # put_nowait would drop the sentinel when the queue is full.
            gevent.spawn(self._queue.put, None)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, name, arg = item
            if kind == "hook":
                for fn in list(self._hooks[name]):
                    _call(fn, arg)
                continue
            for fn in list(self._listeners.get(name, ())):
                _call(fn, arg)
            for any_fn in list(self._any):
                _call(any_fn, name, arg)


def _call(fn: Callable[..., object], *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        log.exception("callback %r raised; the client carries on", fn)
    except gevent.Timeout as exc:
        log.error("callback %r let a gevent.Timeout escape: %s", fn, exc)
