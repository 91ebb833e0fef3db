"""The ``wscore`` command: serving a module's server, one-line errors, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from wshelpers import RawClient, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wscore", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("nope", "must look like MODULE:ATTR"),
        ("no_such_module:server", "cannot import module"),
        ("examples.chat.app:nothing", "has no attribute"),
        ("examples.chat.app:chat_schema", "not a wscore.WsServer"),
    ],
)
def test_bad_targets_get_one_line_and_exit_2(target: str, message: str) -> None:
    result = run_cli("run", target)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        result = run_cli("run", "examples.chat.app:server", "--port", str(s.getsockname()[1]))
    assert result.returncode == 2 and "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_serves_the_example_and_sigterm_closes_with_1001() -> None:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "wscore", "run", "examples.chat.app:server",
                             "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    try:
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    body: dict[str, Any] = json.loads(r.read())
                    return body["status"] == "ok"
            except OSError:
                return False

        wait_for(healthy, timeout=30, what="wscore run to serve")
        client = RawClient(f"ws://127.0.0.1:{port}/ws")
        assert client.recv()["e"] == "sys.connected"
        assert client.request("room.join", {"roomId": "lobby"})["p"] == {"joined": "lobby"}
        proc.send_signal(signal.SIGTERM)
        assert client.recv_close() == 1001
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = proc.stderr.read() if proc.stderr else ""
    assert "listening on ws://127.0.0.1" in log and "SIGTERM" in log
