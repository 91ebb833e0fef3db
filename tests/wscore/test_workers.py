"""``wscore run --workers N``: real supervisor and worker processes on one port, a real redis-server.

Workers share sessions and rooms through Redis: a session resumes on the other
worker, and a room spans them.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from cluster.redisproc import RedisServer
from processes import LoggedProcess, alive
from wshelpers import RawClient, wait_for

APP = "tests.wscore.workers_app:server"


class Workers:
    """A ``wscore run --workers N`` supervisor; knows its port and its workers from its log."""

    def __init__(self, redis_url: str, n: int = 2, app: str = APP) -> None:
        self.n = n
        self.proc = LoggedProcess.wscore("run", app, "--host", "127.0.0.1", "--port", "0",
                                         "--workers", str(n), "--redis", redis_url)
        wait_for(lambda: bool(self.proc.find(r"supervising \d+ workers"))
                 or self.proc.proc.poll() is not None, timeout=30, what="the supervisor to bind")
        found = self.proc.find(r"supervising \d+ workers on ws://127\.0\.0\.1:(\d+)/ws")
        assert found, self.proc.log
        self.port = int(found[0].group(1))
        self.url = f"ws://127.0.0.1:{self.port}/ws"

    def ready(self) -> None:
        wait_for(lambda: bool(self.proc.find(r"all \d+ workers ready")), timeout=60,
                 what=f"{self.n} workers to be ready")

    def started(self) -> list[int]:
        """PIDs of every worker started so far, in order."""
        return [int(m.group(1)) for m in self.proc.find(r"worker \d+ started \(pid (\d+)\)")]

    def ready_pids(self) -> list[int]:
        return [int(m.group(1)) for m in self.proc.find(r"worker \d+ \(pid (\d+)\) ready")]


def hello(url: str) -> tuple[RawClient, dict[str, Any]]:
    """Connect and read ``sys.connected``; the client keeps its session id as ``session_id``."""
    client = RawClient(url)
    frame = client.recv()
    assert frame["e"] == "sys.connected"
    client.session_id = frame["p"]["sessionId"]  # type: ignore[attr-defined]
    return client, frame["p"]


def pid_of(client: RawClient, c: str = "who") -> int:
    reply = client.request("whoami", None, c=c)
    assert reply["e"] == "ack", reply
    return int(reply["p"]["pid"])


def clients_on_every_worker(url: str, n: int, tries: int = 400) -> dict[int, RawClient]:
    """Open connections (kept open) until ``n`` distinct workers answered; one client per PID."""
    by_pid: dict[int, RawClient] = {}
    spare: list[RawClient] = []
    for _ in range(tries):
        client, _hello = hello(url)
        pid = pid_of(client)
        if pid in by_pid:
            spare.append(client)
        else:
            by_pid[pid] = client
        if len(by_pid) == n:
            break
    for client in spare:
        client.close()
    assert len(by_pid) == n, f"only workers {sorted(by_pid)} answered {tries} connections"
    return by_pid


def run_cli(*args: str) -> tuple[int, str]:
    proc = LoggedProcess([sys.executable, "-m", "wscore", *args])
    return proc.wait(), proc.log


def test_workers_without_redis_is_one_line_and_exit_2() -> None:
    code, log = run_cli("run", APP, "--port", "0", "--workers", "2")
    assert code == 2, log
    assert log.count("\n") == 0 and "--workers 2 needs Redis" in log


def test_workers_below_one_is_one_line_and_exit_2(redis_server: RedisServer) -> None:
    code, log = run_cli("run", APP, "--port", "0", "--workers", "0", "--redis", redis_server.url)
    assert code == 2, log
    assert log == "wscore: error: --workers must be >= 1, got 0"


def test_a_worker_that_cannot_start_stops_the_supervisor_with_its_status(redis_server: RedisServer) -> None:
    workers = Workers(redis_server.url, 2, app="tests.wscore.workers_app:needs_auth")
    assert workers.proc.wait() == 2
    assert "require_auth=True needs an authenticator" in workers.proc.log
    assert len(workers.started()) == 1, "the canary failed: no other worker may start"
    assert "Traceback" not in workers.proc.log


def test_two_workers_serve_one_port_a_killed_one_is_replaced_and_sigterm_drains(
        redis_server: RedisServer) -> None:
    workers = Workers(redis_server.url, 2)
    try:
        workers.ready()
        first = clients_on_every_worker(workers.url, 2)
        assert sorted(first) == sorted(workers.started())
        victim, survivor = sorted(first)
        first[victim].ws.settimeout(30)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: not alive(victim), what="the killed worker to be gone")
        # The port keeps serving while the slot is refilled, and the survivor's client carries on.
        assert pid_of(first[survivor], c="still") == survivor
        client, _ = hello(workers.url)
        assert pid_of(client) in (survivor, *workers.started())
        client.close()
        wait_for(lambda: len(workers.started()) == 3 and len(workers.ready_pids()) == 3, timeout=60,
                 what="a replacement worker to be ready")
        replacement = workers.started()[-1]
        assert replacement not in first
        assert workers.proc.find(rf"worker \d \(pid {victim}\) was killed by SIGKILL; starting a new one")
        again = clients_on_every_worker(workers.url, 2)
        assert sorted(again) == sorted([survivor, replacement])
        # SIGTERM: every worker drains its connections, then the supervisor exits 0.
        workers.proc.signal(signal.SIGTERM)
        expected = 1012
        for client in again.values():
            client.ws.settimeout(30)
            assert client.recv_close() == expected
        assert workers.proc.wait() == 0, workers.proc.log
        assert not any(alive(pid) for pid in (survivor, replacement))
        assert "all workers stopped" in workers.proc.log
    finally:
        workers.proc.stop()


def test_workers_stop_when_their_supervisor_is_killed(redis_server: RedisServer) -> None:
    workers = Workers(redis_server.url, 2)
    try:
        workers.ready()
        pids = workers.ready_pids()
        workers.proc.signal(signal.SIGKILL)
        workers.proc.wait()
        wait_for(lambda: not any(alive(pid) for pid in pids), timeout=30,
                 what="orphaned workers to stop")
    finally:
        workers.proc.stop()


def test_a_session_resumes_on_the_other_worker_and_rooms_span_workers(redis_server: RedisServer) -> None:
    workers = Workers(redis_server.url, 2)
    try:
        workers.ready()
        by_pid = clients_on_every_worker(workers.url, 2)
        (pid_a, a), (pid_b, b) = sorted(by_pid.items())
        # rooms: a member on each worker, one shout reaches both
        assert a.request("room.join", {"roomId": "r"}, c="ja")["e"] == "ack"
        assert b.request("room.join", {"roomId": "r"}, c="jb")["e"] == "ack"
        b.request("shout", {"roomId": "r", "text": "hi"}, c="s1")
        assert a.recv_until(lambda f: f["e"] == "shouted")["p"] == {"text": "hi"}
        # a session set up on worker A, cut, resumed (anywhere) until worker B serves it:
        # every resume gets the frame it missed, next in its numbering, and its data
        session_id = a.session_id  # type: ignore[attr-defined]
        last = int(a.request("session.set", {"nick": "ann"}, c="set")["s"])
        current, served_by = a, pid_a
        for attempt in range(200):
            current.cut()
            b.request("shout", {"roomId": "r", "text": f"m{attempt}"}, c=f"m{attempt}")
            current, hello_p = hello(f"{workers.url}?session={session_id}&last_seq={last}")
            assert hello_p["resumed"] is True, hello_p
            missed = current.recv()
            assert (missed["e"], missed["p"], missed["s"]) == ("shouted", {"text": f"m{attempt}"}, last + 1)
            state = current.request("session.get", None, c=f"g{attempt}")
            assert state["p"]["data"] == {"nick": "ann"} and state["s"] == last + 2
            last, served_by = int(state["s"]), int(state["p"]["pid"])
            if served_by == pid_b:
                break
        assert served_by == pid_b, "the session never resumed on the other worker"
    finally:
        workers.proc.stop()
