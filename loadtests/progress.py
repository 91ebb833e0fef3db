"""The load tests' live progress line (:mod:`sandbox.progress`), for headless runs on a terminal.

Shown when locust runs headless with ``--only-summary`` (``wscore loadtest``
passes it) and its stdout is a TTY, in the process that owns the statistics
(a local run or the master): elapsed and remaining of ``-t``, broadcasts
delivered, faults fired (links the users cut and proxy-wide cuts), resumes,
losses so far (broadcast gaps), sessions lost and failures. Without
``--only-summary`` locust prints its own table every few seconds, which a
redrawn line would garble, so there is none; in a pipe or a CI log never.
The listeners are registered by :func:`loadtests.hooks.install`.
"""

from __future__ import annotations

import sys
import time
import weakref
from typing import Any

from locust.env import Environment

from wscore.loadtests.counters import counters_of, is_worker
from wscore.sandbox.progress import LiveLine, ProgressSnapshot

__all__ = ["on_test_start", "on_test_stop", "wanted"]

_lines: weakref.WeakKeyDictionary[Environment, LiveLine] = weakref.WeakKeyDictionary()


def wanted(environment: Environment) -> bool:
    """Whether this run gets a progress line (TTY aside: :class:`LiveLine` checks that)."""
    options = environment.parsed_options
    return (options is not None and bool(getattr(options, "headless", False))
            and bool(getattr(options, "only_summary", False)) and not is_worker(environment))


def _snapshot(environment: Environment, start: float) -> ProgressSnapshot:
    c = counters_of(environment)
    options = environment.parsed_options
    run_time = getattr(options, "run_time", None)
    return ProgressSnapshot(
        title="wscore loadtest", phase=f"{environment.runner.user_count if environment.runner else 0}"
                                       " users", elapsed=time.monotonic() - start,
        total=float(run_time) if run_time else None, deliveries=c["broadcasts_received"],
        faults=c["drops"] + c["storm_links_cut"], resumes=c["resumes"], losses=c["broadcast_gaps"],
        sessions_lost=c["sessions_lost"], failures=environment.stats.total.num_failures)


def on_test_start(environment: Environment, **_: Any) -> None:
    if not wanted(environment) or environment in _lines:
        return
    start = time.monotonic()
    line = LiveLine(lambda: _snapshot(environment, start), stream=sys.stdout)
    _lines[environment] = line.start()


def on_test_stop(environment: Environment, **_: Any) -> None:
    line = _lines.pop(environment, None)
    if line is not None:
        line.stop()
