"""Wiring into locust's events: typed helpers, and :func:`install`, the one explicit registration.

No module of ``loadtests`` registers a listener when it is imported. Every
scenario file calls :func:`install` once at its top level, which adds the
scenarios' options to locust's parser and the counters' listeners
(:mod:`loadtests.counters`) and the progress line's (:mod:`loadtests.progress`)
to locust's events — once per events object, however many scenario files call
it (``locust -f a.py,b.py``).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, cast

import locust
from locust.env import Environment
from locust.event import DeprecatedEventHook, EventHook, Events

from wscore.loadtests import counters, progress
from wscore.loadtests.options import add_options

__all__ = ["fire_request", "install", "listen"]

_installed: weakref.WeakSet[Events] = weakref.WeakSet()


def listen(hook: EventHook | DeprecatedEventHook, handler: Callable[..., None]) -> None:
    """``hook.add_listener(handler)``, typed (locust's ``EventHook`` is not annotated)."""
    cast(Any, hook).add_listener(handler)


def fire_request(environment: Environment, request_type: str, name: str, response_time_ms: float,
                 response_length: int = 0, exception: BaseException | None = None) -> None:
    """Add one entry to ``environment``'s statistics (a failure when ``exception`` is given)."""
    cast(Any, environment.events.request).fire(
        request_type=request_type, name=name, response_time=response_time_ms,
        response_length=response_length, exception=exception, context={})


def install(events: Events | None = None) -> None:
    """Register the options and counter listeners on ``events`` (default: ``locust.events``).

    Idempotent: a second call for the same events object does nothing.
    """
    events = events if events is not None else locust.events
    if events in _installed:
        return
    _installed.add(events)
    listen(events.init_command_line_parser, add_options)
    listen(events.init, counters.on_init)
    listen(events.test_start, counters.on_test_start)
    listen(events.report_to_master, counters.on_report_to_master)
    listen(events.worker_report, counters.on_worker_report)
    listen(events.test_stop, counters.on_test_stop)
    listen(events.test_start, progress.on_test_start)
    listen(events.test_stop, progress.on_test_stop)
    listen(events.quitting, counters.on_quitting)
