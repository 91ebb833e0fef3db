"""wscore under gunicorn's gevent worker for real: the Flask example's ``application``.

``gunicorn -k gevent -w 1 --bind 127.0.0.1:PORT examples.flask_app.app:application``
(docs/wsgi.md) serves Flask and the chat on one port; a peer that loses its TCP
connection resumes its session on the same worker with every missed message.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gunicorn
import pytest
import websocket
from wsgi_support import ROOT, Served, assert_wscore_paths, chat_pair, connect, free_port, get
from wshelpers import wait_for


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    args = ["-m", "gunicorn", "-k", "gevent", "-w", "1", "--bind", f"127.0.0.1:{port}",
            "--graceful-timeout", "10", "examples.flask_app.app:application"]
    if gunicorn.version_info >= (25,):
        args[2:2] = ["--no-control-socket"]  # a per-user socket: parallel runs would share it
    proc = Served(args, port, tmp_path / "gunicorn.log")
    yield proc
    assert proc.stop() == 0, proc.output()
    out = proc.output()
    # Nothing wscore did looks like an error to gunicorn: no traceback, no [ERROR] line.
    assert "Traceback" not in out and "[ERROR]" not in out, out
    assert "Shutting down: Master" in out, out


def test_flask_and_the_chat_on_gunicorns_port_with_a_resume(served: Served) -> None:
    port = served.port
    status, headers, page = get(port, "/")
    assert status == 200 and b"Flask + wscore on one port" in page
    assert headers["Server"] == "gunicorn"  # gunicorn, not wscore's listener, answers
    status, _, echoed = get(port, "/api/echo", {"x": [1, 2]})  # bodies reach the app here
    assert status == 200 and echoed == {"echo": {"x": [1, 2]}}
    assert_wscore_paths(port)

    alice, bob, session_id = chat_pair(port)
    last_seen = alice.request("session.get", None, c="g")["s"]
    alice.cut()
    wait_for(lambda: get(port, "/healthz")[2]["connections"] == 1, what="the worker to see the cut")
    for i in range(3):
        assert bob.request("chat.message", {"roomId": "lobby", "text": f"m{i}"}, c=f"m{i}")["e"] == "ack"
    status, _, body = get(port, "/api/status")
    assert body["wscore"]["sessions"] == 2  # alice's session waits for her, in this worker

    again, hello = connect(port, f"?session={session_id}&last_seq={last_seen}")
    assert hello["sessionId"] == session_id and hello["resumed"] is True
    missed = [again.recv() for _ in range(3)]
    assert [m["p"]["text"] for m in missed] == ["m0", "m1", "m2"]
    assert [m["s"] for m in missed] == [last_seen + 1, last_seen + 2, last_seen + 3]
    assert again.request("session.get", None, c="g2")["p"]["rooms"] == ["lobby"]
    # And the resumed peer talks to the room again.
    again.request("chat.message", {"roomId": "lobby", "text": "back"}, c="b")
    assert bob.recv_until(lambda f: f["e"] == "chat.new_message")["p"]["text"] == "back"
    again.close()
    bob.close()
    wait_for(lambda: get(port, "/healthz")[2]["connections"] == 0, what="both to close")


def test_a_bad_upgrade_through_gunicorn_gets_wscores_refusal(served: Served) -> None:
    # The same checks as wscore's own listener (transport.upgrade_refusal): 426 with the version.
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 8\r\n\r\n")
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 426"), reply
    assert b"Sec-WebSocket-Version: 13" in head
    assert json.loads(body) == {"error": "unsupported Sec-WebSocket-Version"}


def test_gunicorns_sync_worker_serves_http_but_refuses_websockets_501(tmp_path: Path) -> None:
    # One request at a time: a WebSocket would block the worker, so the upgrade is refused.
    port = free_port()
    args = ["-m", "gunicorn", "-w", "1", "--bind", f"127.0.0.1:{port}", "examples.flask_app.app:application"]
    if gunicorn.version_info >= (25,):
        args[2:2] = ["--no-control-socket"]
    proc = Served(args, port, tmp_path / "gunicorn.log")
    try:
        assert get(port, "/api/status")[2]["app"] == "flask"
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=30)
        assert refused.value.status_code == 501
        assert b"run gunicorn -k gevent" in refused.value.resp_body
    finally:
        assert proc.stop() == 0, proc.output()


def test_a_worker_that_cannot_start_wscore_answers_503_in_one_line(tmp_path: Path) -> None:
    # Redis unreachable when the worker's first request starts wscore: 503 and one log
    # line, never a traceback with the request (its query carries tokens) or the password.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    port = free_port()
    app = f'tests.examples.gunicorn_redis_app:make("redis://:hunter2@127.0.0.1:{dead}/0")'
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", "1", "--bind",
                                 f"127.0.0.1:{port}", "--no-control-socket", app], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            def answered() -> bool:
                assert proc.poll() is None, log_path.read_text()
                try:
                    return get(port, "/healthz?token=secret123")[0] == 503
                except OSError:
                    return False

            wait_for(answered, timeout=60, what="gunicorn to answer")
            status, headers, body = get(port, "/ws?token=secret123")
            assert (status, body, headers["Retry-After"]) == (503, {"error": "wscore is not available"}, "1")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    out = log_path.read_text()
    assert "wscore could not start in this worker: Redis at redis://:***@127.0.0.1" in out, out
    assert "Traceback" not in out and "secret123" not in out and "hunter2" not in out, out
