"""A load test that tested nothing fails: nobody connected, or attempts failed and nothing was sent.

The plain ``locust`` command against a port nobody listens on, with ``-t`` far shorter
than the client's 30 s connect timeout, must exit non-zero with a one-line reason —
not report "0 requests, 0 failures" and exit 0.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import locust
import pytest
from locust.env import Environment
from locust.util.load_locustfile import load_locustfile

from wscore.loadtests.counters import WsCounters, counters_of, run_problem

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def closed_port() -> int:
    """A loopback port that was free a moment ago and is closed now (connections refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_locust_against_a_closed_port_fails_with_a_one_line_reason(tmp_path: Path) -> None:
    port = closed_port()
    proc = subprocess.run(
        [str(BIN / "locust"), "-f", str(ROOT / "loadtests" / "chat.py"),
         "--host", f"ws://127.0.0.1:{port}/ws", "--headless", "-u", "2", "-r", "2", "-t", "5s"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0, proc.stderr[-3000:]
    reasons = [line for line in proc.stderr.splitlines() if "load test failed:" in line]
    assert len(reasons) == 1, proc.stderr[-3000:]
    assert "nobody connected" in reasons[0] and "connection attempts failed" in reasons[0]
    counters_line = next(line for line in proc.stderr.splitlines() if "wscore counters:" in line)
    assert "connects=0" in counters_line and "FAILED: nobody connected" in counters_line
    # Each user's unfinished first connect is a failure in locust's table too.
    assert "NotConnected" in proc.stdout + proc.stderr


def test_run_problem_policy() -> None:
    c = WsCounters()
    assert run_problem(c, 0) is not None and "nobody connected" in str(run_problem(c, 0))
    c.add("connects")
    assert run_problem(c, 0) is None  # connected, nothing failed: a quiet run, not a broken one
    c.add("failed_attempts", 3)
    assert run_problem(c, 0) == "3 connection attempts failed and nothing was sent"
    assert run_problem(c, 5) is None


@pytest.fixture(scope="module")
def rpc_loaded() -> None:
    load_locustfile(str(ROOT / "loadtests" / "rpc.py"))  # installs the listeners once


def test_a_run_nobody_connected_to_sets_exit_code_1(rpc_loaded: None) -> None:
    env = Environment(user_classes=[], events=locust.events)
    counters_of(env).add("failed_attempts", 2)
    locust.events.quitting.fire(environment=env, reverse=True)
    assert env.process_exit_code == 1
