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


def test_help_lists_each_command_on_one_line() -> None:
    result = run_cli("--help")
    assert result.returncode == 0 and "The ``wscore`` command" not in result.stdout
    for command in ("run", "client", "sandbox", "loadtest"):
        (line,) = [ln for ln in result.stdout.splitlines() if ln.strip().startswith(command + " ")]
        assert len(line.split()) > 3, line  # the command and its one-line description


def test_an_unknown_log_level_is_refused_in_one_line() -> None:
    result = run_cli("run", "examples.chat.app:server", "--log-level", "LOUD")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--log-level" in result.stderr
    assert "invalid choice: 'LOUD'" in result.stderr


def test_a_lower_case_log_level_is_accepted() -> None:
    with socket.socket() as s:  # fails at the bind, after the options were accepted
        s.bind(("127.0.0.1", 0))
        s.listen()
        result = run_cli("run", "examples.chat.app:server", "--log-level", "warning",
                         "--port", str(s.getsockname()[1]))
    assert result.returncode == 2 and "cannot listen" in result.stderr


# -- serve_forever() in a plain script (``python app.py``) ----------------------------------------

SCRIPT = """\
import logging, sys
from wscore import WsServer, WsServerConfig
if sys.argv[2] == "app-logging":
    logging.basicConfig(level=logging.INFO, format="APP %(name)s %(message)s")
server = WsServer(config=WsServerConfig.dev(port=int(sys.argv[1])))
if __name__ == "__main__":
    server.serve_forever()
    print("returned", flush=True)
"""


def script(tmp_path: Any, port: int, mode: str = "plain") -> subprocess.Popen[str]:
    path = tmp_path / "app.py"
    path.write_text(SCRIPT)
    return subprocess.Popen([sys.executable, str(path), str(port), mode], cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def read_line_with(stream: Any, text: str) -> str:
    while True:
        line = stream.readline()
        assert line, f"stream ended before {text!r}"
        if text in line:
            return str(line)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_plain_script_says_where_it_listens_and_that_it_stopped(tmp_path: Any, sig: int) -> None:
    port = free_port()
    proc = script(tmp_path, port)
    try:
        line = read_line_with(proc.stderr, "listening on")
        assert f"INFO wscore.server: wscore listening on ws://127.0.0.1:{port}/ws" in line
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and out == "returned\n"
    assert "shutting down" in err and err.rstrip().endswith("INFO wscore.server: wscore stopped")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err


def test_the_apps_own_logging_is_left_alone(tmp_path: Any) -> None:
    proc = script(tmp_path, free_port(), "app-logging")
    try:
        first = read_line_with(proc.stderr, "listening on")
        proc.send_signal(signal.SIGTERM)
        _out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [ln for ln in (first + rest).splitlines() if ln.startswith(("APP wscore", "20"))]
    # Only the app's handler: every wscore line in its format, none twice.
    assert any("APP wscore.server wscore listening on" in ln for ln in lines)
    assert all(ln.startswith("APP ") for ln in lines), lines
    assert sum("listening on" in ln for ln in lines) == 1


def test_a_plain_script_on_a_port_in_use_is_one_line(tmp_path: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        proc = script(tmp_path, s.getsockname()[1])
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == ""
    assert err.count("\n") == 1 and "ERROR wscore.server: cannot listen on 127.0.0.1:" in err
    assert "Address already in use" in err
