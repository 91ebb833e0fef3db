"""``python -m wscore.client URL`` and ``wscore.client.cli.main`` against a real server."""

from __future__ import annotations

import io
import socket
import subprocess
import sys
from typing import Any

from wscore.client.cli import main


def run_main(argv: list[str], stdin: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(argv, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def test_interactive_session(app: Any) -> None:
    status, out, err = run_main(
        [app.url], '?echo {"a": 1}\nrecord 5\nbad {json\n\n?fail\n?count\n/quit\n?echo 2\n'
    )
    assert status == 0
    assert "# connected (new session" in out
    assert '< {"a":1}' in out and "< 1" in out  # count: the 'record' ran once
    assert "< 2" not in out  # nothing after /quit
    lines = err.splitlines()
    assert any(line.startswith("error: payload is not JSON") for line in lines)
    assert any("validationFailed" in line for line in lines)
    assert len(lines) == 2


def test_bad_url_is_a_one_line_error_and_status_2() -> None:
    status, _out, err = run_main(["http://nope/ws"], "")
    assert status == 2 and err.count("\n") == 1 and err.startswith("error:") and "ws://" in err


def test_unreachable_server_is_status_1() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    status, _, err = run_main([f"ws://127.0.0.1:{port}/ws", "--timeout", "0.5"], "")
    assert status == 1 and err.count("\n") == 1 and err.startswith("error: cannot connect")


def test_python_dash_m_prints_events(app: Any) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wscore.client", app.url],
        input='emit 2\n?echo "sync"\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tick 0\ntick 1\n" in proc.stdout and '< "sync"' in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "wscore.client"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage:" in proc.stderr
