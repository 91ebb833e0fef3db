"""Closed-loop RPC: each user sends its next request as soon as the previous one is answered.

    locust -f loadtests/rpc.py --host ws://127.0.0.1:8080/ws --headless -u 20 -r 20 -t 20s

Needs the chat example's events (``wscore run examples.chat.app:server``).
Tasks, by weight: ``echo`` (8) with a numbered payload of ``--echo-bytes``
filler that must come back unchanged; ``session.set`` + ``session.get`` (2)
writing a per-user counter into the session variables and reading it back.
Each request is a ``WS <event>`` entry; a wrong reply is a failure
(``ReplyMismatch``), like any ``sys.error``. Requests per second at N users
are N / mean latency: the server's round-trip capacity.

A closed loop on loopback easily exceeds a session's ``rate_limit`` (dev:
1,000 messages/s, then ``1010 rateLimitExceeded``), so each user's task rate
is capped by ``--rpc-rate`` (default 500 tasks/s ≈ 600 messages/s; ``0``
removes the cap — expect 1010 failures with few users): to load the server
harder, add users, not rate.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if not __package__:  # loaded by path (`locust -f`): put the repository root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from locust import task
from locust.user.wait_time import constant, constant_throughput

from wscore.loadtests.broadcast import set_and_read_session_counter
from wscore.loadtests.hooks import install
from wscore.loadtests.options import ECHO_BYTES, RPC_RATE
from wscore.loadtests.user import WsUser

install()

__all__ = ["RpcUser"]


class RpcUser(WsUser):
    """Closed loop of ``echo`` and ``session.set``/``session.get`` requests (rate-capped: ``--rpc-rate``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._filler = "x" * ECHO_BYTES.get(self.environment)
        self._n = 0
        rate = RPC_RATE.get(self.environment)
        # constant_throughput waits only when a task was faster than 1/rate: still a closed
        # loop, but one that stays under the server's per-session rate limit.
        self._wait = constant_throughput(rate) if rate > 0 else constant(0)

    def wait_time(self) -> float:
        return self._wait(self)

    @task(8)
    def echo(self) -> None:
        self._n += 1
        self.call(self.workload.echo({"n": self._n, "filler": self._filler}))

    @task(2)
    def session_roundtrip(self) -> None:
        self._n += 1
        value = self._n
        set_and_read_session_counter(self, value)
