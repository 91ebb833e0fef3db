"""Helpers for the one-port examples' tests (tests/examples/test_wsgi_*.py): real processes, real sockets."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wshelpers import RawClient, wait_for

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A server process (its output in a file), ready once ``/healthz`` answers ok; stopped by PID."""

    def __init__(self, args: list[str], port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wait_for(self._healthy, timeout=60, what=f"{args} to serve /healthz")

    def _healthy(self) -> bool:
        assert self.popen.poll() is None, self.output()
        try:
            return bool(get(self.port, "/healthz")[2]["status"] == "ok")
        except OSError:
            return False

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=30)
        self._log.close()
        return self.popen.returncode


def get(port: int, path: str, json_body: Any = None) -> tuple[int, dict[str, str], Any]:
    """``GET path`` (``POST`` with ``json_body``): status, headers, body (decoded when JSON)."""
    data = None if json_body is None else json.dumps(json_body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, headers, raw = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as err:
        status, headers, raw = err.code, dict(err.headers), err.read()
    body: Any = raw
    if headers.get("Content-Type", "").startswith("application/json"):
        body = json.loads(raw)
    return status, headers, body


def connect(port: int, query: str = "") -> tuple[RawClient, dict[str, Any]]:
    """A raw WebSocket peer on ``port``'s ``/ws`` and its ``sys.connected`` payload."""
    peer = RawClient(f"ws://127.0.0.1:{port}/ws{query}", timeout=30)
    hello = peer.recv()
    assert hello["e"] == "sys.connected", hello
    return peer, hello["p"]


def chat_pair(port: int, room: str = "lobby") -> tuple[RawClient, RawClient, str]:
    """Two peers in ``room``: the first says hello, the second hears it. Returns the first's session id."""
    (alice, hello), (bob, _) = connect(port), connect(port)
    for peer in (alice, bob):
        assert peer.request("room.join", {"roomId": room}, c="j")["p"] == {"joined": room}
    assert alice.request("chat.message", {"roomId": room, "text": "hello"}, c="m")["p"] == {"status": "sent"}
    heard = bob.recv_until(lambda f: f["e"] == "chat.new_message")
    assert heard["p"]["text"] == "hello"
    return alice, bob, str(hello["sessionId"])


def assert_wscore_paths(port: int) -> None:
    """``/healthz`` and ``/wscore.js`` are wscore's, whatever app is mounted."""
    from wscore import static

    status, _, health = get(port, "/healthz")
    assert status == 200 and health["status"] == "ok" and "sessions" in health, health
    status, headers, js = get(port, "/wscore.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert js == static.client_bytes() and headers["ETag"] == static.client_etag()
    # A plain GET of the WebSocket path is wscore's answer too, not the app's.
    status, headers, body = get(port, "/ws")
    assert status == 426 and headers["Upgrade"] == "websocket", body


def serve_with_wscore_run(target: str, tmp_path: Path) -> Iterator[Served]:
    """``wscore run TARGET`` on a free port for one test (a fixture's body): stopped cleanly, no traceback."""
    port = free_port()
    proc = Served(["-m", "wscore", "run", target, "--host", "127.0.0.1", "--port", str(port)], port,
                  tmp_path / "server.log")
    yield proc
    assert proc.stop() == 0, proc.output()
    assert "Traceback" not in proc.output(), proc.output()
