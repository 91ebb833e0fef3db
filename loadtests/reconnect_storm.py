"""Reconnect storms: links cut under traffic, sessions resumed with nothing lost.

    # each user cuts its own link every ~5 s (random in 0.5x..1.5x)
    locust -f loadtests/reconnect_storm.py --host ws://127.0.0.1:8080/ws --drop-interval 5

    # through a sandbox proxy: also cut *every* connection at once every 10 s
    wscore sandbox proxy --listen 127.0.0.1:9000 --upstream 127.0.0.1:8080 --control 127.0.0.1:9001
    locust -f loadtests/reconnect_storm.py --host ws://127.0.0.1:9000/ws \\
        --proxy-control http://127.0.0.1:9001 --storm-interval 10 --headless -u 50 -r 25 -t 60s

Needs the chat example's events. Users join ``room-<i mod K>`` and, at
``--message-interval`` pacing, chat (numbered broadcasts checked by every
receiver), echo, and write then read back a session counter — so the
server's stream to each client (acks and broadcasts) and the session's
state must survive every cut. A cut is an abrupt TCP reset without a close
frame; the client reconnects with backoff and resumes.

Entries: ``RECONNECT resume`` (the outage: cut → session resumed; a failure
if the session was lost), ``STORM proxy cut`` (one control API call;
response length = connections reset), plus the ``WS`` and ``BROADCAST``
entries of the traffic, whose latencies include the outages. Counters
``drops``, ``storms``, ``storm_links_cut``, ``resumes``, ``sessions_lost``
and the guarantee counters (which must stay 0) are logged at the end.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import time
import urllib.request
import weakref
from pathlib import Path
from typing import Any

if not __package__:  # loaded by path (`locust -f`): put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gevent
from locust import events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from wscore.loadtests.broadcast import RoomChatter, set_and_read_session_counter
from wscore.loadtests.counters import counters_of
from wscore.loadtests.hooks import fire_request, install, listen
from wscore.loadtests.options import DROP_INTERVAL, PROXY_CONTROL, STORM_INTERVAL, loopback_http_url

install()

__all__ = ["StormUser", "cut_all_via_proxy"]

log = logging.getLogger("wscore.loadtests.reconnect_storm")

#: Seconds one control API call may take.
_CONTROL_TIMEOUT = 5.0


class StormUser(RoomChatter):
    """Chats, echoes and keeps a session counter while its link keeps being cut."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._drop_interval = DROP_INTERVAL.get(self.environment)
        self._next_drop = self._draw_next_drop()
        self._counter = 0

    def _draw_next_drop(self) -> float:
        # Spread over 0.5x..1.5x so users do not all drop in lockstep (that is the proxy's job).
        if self._drop_interval <= 0:
            return float("inf")
        return time.monotonic() + self._drop_interval * random.uniform(0.5, 1.5)

    def _maybe_drop(self) -> None:
        """Cut the link when this user's next drop is due; the task then runs while offline."""
        if time.monotonic() >= self._next_drop:
            self.drop_connection()
            self._next_drop = self._draw_next_drop()

    @task(2)
    def chat(self) -> None:
        self._maybe_drop()
        super().chat()

    @task(2)
    def echo(self) -> None:
        self._maybe_drop()
        self.call(self.workload.echo({"user": self.index, "t": time.time_ns()}))

    @task(1)
    def session_counter(self) -> None:
        # The session variables must survive every resume: read back what was just written.
        self._maybe_drop()
        self._counter += 1
        value = self._counter
        set_and_read_session_counter(self, value)


# -- proxy-wide storms ----------------------------------------------------------------------------


def cut_all_via_proxy(control_url: str) -> int:
    """``POST <control_url>/actions/cut``: the proxy resets every live connection; returns how many.

    Raises ``ValueError`` for a URL that is not http:// on loopback or an unexpected answer,
    ``OSError`` (``urllib.error.URLError``) when the proxy cannot be reached.
    """
    request = urllib.request.Request(
        loopback_http_url(control_url) + "/actions/cut", data=b"{}", method="POST",
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=_CONTROL_TIMEOUT) as response:
        body = json.loads(response.read())
    cut = body.get("cut") if isinstance(body, dict) else None
    if not isinstance(cut, int):
        raise ValueError(f"unexpected answer from the proxy control API: {body!r}")
    return cut


def _storm_loop(environment: Environment, control_url: str, interval: float) -> None:
    counters = counters_of(environment)
    while True:
        gevent.sleep(interval)
        start = time.perf_counter()
        error: Exception | None = None
        cut = 0
        try:
            cut = cut_all_via_proxy(control_url)
        except (OSError, ValueError) as exc:
            error = exc
            log.warning("proxy storm failed: %s", exc)
        else:
            counters.add("storms")
            counters.add("storm_links_cut", cut)
            log.info("proxy storm: %d connection(s) cut", cut)
        fire_request(environment, "STORM", "proxy cut", (time.perf_counter() - start) * 1000.0,
                     response_length=cut, exception=error)


_storms: weakref.WeakKeyDictionary[Environment, gevent.Greenlet] = weakref.WeakKeyDictionary()


def _start_storms(environment: Environment, **_: Any) -> None:
    # One storm source per test: the master (or the local runner), never each worker.
    if isinstance(environment.runner, WorkerRunner):
        return
    if not any(issubclass(cls, StormUser) for cls in environment.user_classes):
        return
    url = PROXY_CONTROL.get(environment)
    if not url:
        return
    _stop_storms(environment)
    _storms[environment] = gevent.spawn(_storm_loop, environment, url, STORM_INTERVAL.get(environment))


def _stop_storms(environment: Environment, **_: Any) -> None:
    # test_stopping precedes stopping the users: no storm cuts into their close handshakes.
    storm = _storms.pop(environment, None)
    if storm is not None:
        storm.kill(block=True)


listen(events.test_start, _start_storms)
listen(events.test_stopping, _stop_storms)
