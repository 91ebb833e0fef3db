"""The scenarios' custom counters, one set per locust ``Environment``, judged by the one policy.

Counters are summed over workers in distributed runs (:meth:`WsCounters.take_unreported`
on a worker, :meth:`WsCounters.merge` on the master), logged when a test stops
(logger ``wscore.loadtests``) and served as JSON at ``/ws-counters`` by the web
UI. Which of them are broken guarantees is :mod:`sandbox.guarantees`' to say
(:data:`GUARANTEE_COUNTERS`): when one is non-zero at exit, the process exit
code is 1. So is a run in which nobody connected, or in which connection
attempts failed and nothing was sent (:func:`run_problem`: a wrong ``--host`` or
a dead server never passes, whatever ``-t`` is). The listeners doing all that
are in this module but registered only by :func:`loadtests.hooks.install`.

Everything runs in locust's gevent hub (WsClient is gevent-based): no threads,
so counters need no locks.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Mapping
from typing import Any

from locust.env import Environment
from locust.runners import WorkerRunner

from wscore.sandbox.guarantees import Evidence, breaches

__all__ = [
    "COUNTER_NAMES",
    "GUARANTEE_COUNTERS",
    "WsCounters",
    "counters_of",
    "is_worker",
    "on_init",
    "on_quitting",
    "on_report_to_master",
    "on_test_start",
    "on_test_stop",
    "on_worker_report",
    "requests_sent",
    "run_problem",
]

log = logging.getLogger("wscore.loadtests")

#: Every custom counter, in the order the summary lists them.
COUNTER_NAMES = (
    "connects",              # sessions opened or resumed (ClientStats.connects)
    "reconnects",            # connects after a user's first one
    "resumes",               # reconnects that resumed the session
    "sessions_lost",         # reconnects refused with 1006: a new session, state gone
    "failed_attempts",       # connection attempts that never reached sys.connected
    "duplicates_dropped",    # server frames the client dropped as already delivered
    "gaps",                  # server frames that skipped sequence numbers
    "unmatched_replies",     # replies no request waited for (ClientStats): late or second ones
    "requests_given_up",     # requests that stopped waiting: timed out, user stopped, client closed
    "stray_replies",         # unmatched replies beyond those, per user: requests answered twice
    "broadcasts_received",   # BroadcastProbe messages received from other users
    "broadcast_gaps",        # … that skipped a sender's message
    "broadcast_duplicates",  # … that repeated a sender's message
    "broadcast_reordered",   # … that came after a later one of its sender
    "drops",                 # links users cut themselves (reconnect_storm.py)
    "storms",                # proxy-wide cuts (reconnect_storm.py --proxy-control)
    "storm_links_cut",       # connections those cuts reset
)

#: The guarantee each counter is evidence of (sandbox.guarantees.Evidence fields).
_EVIDENCE = {
    "broadcast_gaps": "lost",
    "broadcast_duplicates": "duplicated",
    "broadcast_reordered": "reordered",
    "gaps": "stream_gaps",
    "duplicates_dropped": "stream_duplicates",
    "stray_replies": "stray_replies",
}

#: Counters that must stay 0: any other value means a delivery guarantee broke.
GUARANTEE_COUNTERS = tuple(_EVIDENCE)


class WsCounters:
    """Monotonic custom counters of one locust ``Environment``.

    On a worker, :meth:`take_unreported` hands what grew since the last
    report to the master, which :meth:`merge` s it; locally both are unused.
    """

    def __init__(self) -> None:
        self._values = dict.fromkeys(COUNTER_NAMES, 0)
        self._unreported = dict.fromkeys(COUNTER_NAMES, 0)

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (one of :data:`COUNTER_NAMES`; KeyError otherwise)."""
        self._values[name] += n
        self._unreported[name] += n

    def __getitem__(self, name: str) -> int:
        return self._values[name]

    def snapshot(self) -> dict[str, int]:
        return dict(self._values)

    def take_unreported(self) -> dict[str, int]:
        """What grew since the previous call (non-zero entries only), and forget it."""
        delta = {k: v for k, v in self._unreported.items() if v}
        self._unreported = dict.fromkeys(COUNTER_NAMES, 0)
        return delta

    def merge(self, delta: Mapping[str, object]) -> None:
        """Add a worker's report; unknown names and non-integers are ignored (version skew)."""
        for name, value in delta.items():
            if name in self._values and isinstance(value, int) and not isinstance(value, bool):
                self._values[name] += value

    def reset(self) -> None:
        self._values = dict.fromkeys(COUNTER_NAMES, 0)
        self._unreported = dict.fromkeys(COUNTER_NAMES, 0)

    def broken_guarantees(self) -> dict[str, int]:
        """The non-zero :data:`GUARANTEE_COUNTERS` (empty when every guarantee held)."""
        evidence = Evidence(**{field: self._values[name] for name, field in _EVIDENCE.items()})
        broken = breaches(evidence)
        return {name: self._values[name] for name, field in _EVIDENCE.items() if field in broken}

    def summary(self) -> str:
        return " ".join(f"{name}={self._values[name]}" for name in COUNTER_NAMES)


#: Statistics types that are not traffic the users sent to the server.
_NOT_SENT = frozenset({"CONNECT", "RECONNECT", "STORM"})


def requests_sent(environment: Environment) -> int:
    """Requests and broadcasts in ``environment``'s statistics (CONNECT, RECONNECT, STORM aside)."""
    return sum(entry.num_requests for (_name, method), entry in environment.stats.entries.items()
               if method not in _NOT_SENT)


def run_problem(counters: WsCounters, sent: int) -> str | None:
    """Why a run measured nothing, in one line; None when users connected and sent.

    Nobody connected, or connection attempts failed and nothing was sent:
    a load test that tested nothing fails (exit code 1).
    """
    failed = counters["failed_attempts"]
    if counters["connects"] == 0:
        return (f"nobody connected ({failed} connection attempts failed); is --host right and "
                f"the server up?")
    if failed and not sent:
        return f"{failed} connection attempts failed and nothing was sent"
    return None


_counters: weakref.WeakKeyDictionary[Environment, WsCounters] = weakref.WeakKeyDictionary()


def counters_of(environment: Environment) -> WsCounters:
    """The counters of ``environment`` (created on first use)."""
    counters = _counters.get(environment)
    if counters is None:
        counters = _counters[environment] = WsCounters()
    return counters


def is_worker(environment: Environment) -> bool:
    return isinstance(environment.runner, WorkerRunner)


# -- listeners (registered by loadtests.hooks.install) --------------------------------------------

def on_init(environment: Environment, **_: Any) -> None:
    web_ui = environment.web_ui
    if web_ui is not None and web_ui.app is not None:
        def ws_counters() -> dict[str, int]:
            return counters_of(environment).snapshot()

        web_ui.app.add_url_rule("/ws-counters", "ws_counters", ws_counters)


def on_test_start(environment: Environment, **_: Any) -> None:
    # Like locust's own statistics, every (web UI) run starts from zero.
    counters_of(environment).reset()


def on_report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    # report_to_master carries no environment: a worker process runs exactly one.
    for environment, counters in list(_counters.items()):
        if is_worker(environment):
            data["ws_counters"] = counters.take_unreported()


def on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    delta = data.get("ws_counters")
    if not isinstance(delta, dict):
        return
    for environment, counters in list(_counters.items()):
        if not is_worker(environment):
            counters.merge(delta)


def on_test_stop(environment: Environment, **_: Any) -> None:
    if not is_worker(environment):
        counters = counters_of(environment)
        problem = run_problem(counters, requests_sent(environment))
        log.info("wscore counters: %s%s", counters.summary(),
                 f" — FAILED: {problem}" if problem else "")


def on_quitting(environment: Environment, **_: Any) -> None:
    if is_worker(environment):
        return
    counters = counters_of(environment)
    problem = run_problem(counters, requests_sent(environment))
    if problem:
        log.error("load test failed: %s", problem)
        environment.process_exit_code = 1
    broken = counters.broken_guarantees()
    if broken:
        log.error("delivery guarantee broken: %s", " ".join(f"{k}={v}" for k, v in broken.items()))
        environment.process_exit_code = 1
