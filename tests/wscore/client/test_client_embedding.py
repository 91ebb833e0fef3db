"""The client works from a plain script, from gevent code and inside a locust user."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import gevent

from wscore.client import WsClient

SCRIPT = """
import sys
import wscore  # makes the process gevent-ready
from wscore.client import WsClient

client = WsClient(sys.argv[1])
got = []
client.on("tick", got.append)
client.connect()
client.send("emit", 3)
print(client.request("echo", {"n": 1})["n"])
client.close()
print(got)
"""


def test_plain_script(app: Any) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, app.url], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["1", "[0, 1, 2]"]


def test_many_clients_from_gevent_code(app: Any) -> None:
    clients = [WsClient(app.url) for _ in range(20)]
    try:
        gevent.joinall([gevent.spawn(c.connect) for c in clients], raise_error=True)
        jobs = [gevent.spawn(c.request, "echo", i) for i, c in enumerate(clients)]
        gevent.joinall(jobs, raise_error=True, timeout=30)
        assert [j.value for j in jobs] == list(range(20))
    finally:
        gevent.joinall([gevent.spawn(c.close) for c in clients])


def test_inside_a_locust_user(app: Any, wait_until: Any) -> None:
    from locust import User, constant, task
    from locust.env import Environment

    class WsUser(User):
        wait_time = constant(0.01)

        def on_start(self) -> None:
            self.ws = WsClient(self.host)
            self.ws.connect()

        @task
        def echo(self) -> None:
            started = time.perf_counter()
            error: Exception | None = None
            try:
                self.ws.request("echo", "hi", timeout=10)
            except Exception as exc:  # report, as locust users do
                error = exc
            self.environment.events.request.fire(
                request_type="WS",
                name="echo",
                response_length=0,
                exception=error,
                response_time=(time.perf_counter() - started) * 1000,
                context={},
            )

        def on_stop(self) -> None:
            self.ws.close()

    env: Any = Environment(user_classes=[WsUser], host=app.url)
    runner = env.create_local_runner()
    try:
        runner.start(3, spawn_rate=100)
        wait_until(lambda: env.stats.total.num_requests >= 30, timeout=30, what="locust requests")
    finally:
        runner.quit()
    assert env.stats.total.num_failures == 0
