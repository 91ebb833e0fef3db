"""The chat example for real: its app under ``wscore run``, its client as a user runs it.

The client must keep receiving across a server restart that loses every
session (in-memory sessions): it re-joins its room in ``on_connect`` when the
session is new. And the app refuses a message to a room the sender is not in.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import gevent
import pytest
from wshelpers import wait_for

from examples.chat.app import build_chat_server
from wscore import ErrorCode, WsError, WsServer, WsServerConfig
from wscore.client import WsClient

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A subprocess whose stdout lines are collected by a greenlet (cooperative pipes)."""

    def __init__(self, *args: str, stdin: bool = False) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, text=True, bufsize=1,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._readers = [gevent.spawn(self._collect, self.popen.stdout, self.lines),
                         gevent.spawn(self._collect, self.popen.stderr, self.errors)]

    @staticmethod
    def _collect(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)

    def wait_line(self, text: str, *, count: int = 1, timeout: float = 60) -> None:
        try:
            wait_for(lambda: self.count(text) >= count or self.popen.poll() is not None,
                     timeout=timeout, what=f"{count}× {text!r}")
        finally:
            assert self.count(text) >= count, (text, self.lines, self.errors[-20:])

    def write(self, line: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(line + "\n")
        self.popen.stdin.flush()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=30)
        gevent.joinall(self._readers, timeout=10)


def start_app(port: int) -> Proc:
    """``wscore run examples.chat.app:server`` on ``port``, once /healthz answers."""
    proc = Proc("-m", "wscore", "run", "examples.chat.app:server", "--host", "127.0.0.1",
                "--port", str(port))

    def healthy() -> bool:
        assert proc.popen.poll() is None, proc.errors
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                return bool(json.loads(r.read())["status"] == "ok")
        except OSError:
            return False

    wait_for(healthy, timeout=60, what="the chat app to serve")
    return proc


def member(url: str, room: str, received: list[str] | None = None) -> WsClient:
    client = WsClient(url)
    if received is not None:
        client.on("chat.new_message", lambda p: received.append(p["text"]))
    client.connect(timeout=30)
    assert client.request("room.join", {"roomId": room}, timeout=30) == {"joined": room}
    return client


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    made: list[Proc] = []
    yield made
    for proc in made:
        proc.stop()


def test_the_example_client_keeps_receiving_across_a_server_restart(procs: list[Proc]) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    procs.append(server := start_app(port))
    procs.append(chat := Proc("examples/chat/client.py", url, "--room", "lobby", stdin=True))
    chat.wait_line("joined lobby (new session)")

    received: list[str] = []
    other = member(url, "lobby", received)
    other.send("chat.message", {"roomId": "lobby", "text": "before the restart"})
    chat.wait_line("before the restart")
    chat.write("hello from the example")
    wait_for(lambda: "hello from the example" in received, timeout=60, what="the client's message")
    other.close()

    # A restart with in-memory sessions: every session is gone; the client reconnects,
    # its resume is answered 1006, and it must re-join on the new session.
    server.popen.send_signal(signal.SIGTERM)
    assert server.popen.wait(timeout=60) == 0
    procs.append(start_app(port))
    chat.wait_line("session lost")
    chat.wait_line("joined lobby (new session)", count=2)

    received.clear()
    other = member(url, "lobby", received)
    other.send("chat.message", {"roomId": "lobby", "text": "after the restart"})
    chat.wait_line("after the restart")
    chat.write("still talking")  # and what it sends reaches the room again
    wait_for(lambda: "still talking" in received, timeout=60, what="the client's message")
    other.close()
    assert chat.count("refused") == 0, chat.lines

    chat.write("/quit")
    assert chat.popen.wait(timeout=60) == 0


@pytest.fixture
def chat_server() -> Iterator[WsServer]:
    server = build_chat_server(WsServerConfig.dev(host="127.0.0.1", port=0))
    server.start()
    yield server
    server.stop()


def test_a_message_to_a_room_one_is_not_in_is_refused(chat_server: WsServer) -> None:
    received: list[str] = []
    inside = member(chat_server.url, "r", received)
    outsider = member(chat_server.url, "elsewhere")
    errors: list[Any] = []
    outsider.on("sys.error", errors.append)
    try:
        with pytest.raises(WsError) as refused:
            outsider.request("chat.message", {"roomId": "r", "text": "gate-crash"}, timeout=30)
        assert refused.value.code == ErrorCode.VALIDATION_FAILED
        assert refused.value.details == {"fields": ["roomId"]}
        assert "not a member" in refused.value.message
        outsider.send("chat.message", {"roomId": "r", "text": "gate-crash again"})  # no reply
        wait_for(lambda: bool(errors), timeout=30, what="the refusal of a send")
        assert errors[0]["code"] == 1009
        # Once a member, the same client may post; the room saw nothing of the refused ones.
        assert outsider.request("room.join", {"roomId": "r"}, timeout=30) == {"joined": "r"}
        assert outsider.request("chat.message", {"roomId": "r", "text": "welcome"},
                                timeout=30) == {"status": "sent"}
        wait_for(lambda: bool(received), timeout=30, what="the member's message")
        assert received == ["welcome"]
        # A left room is closed again.
        outsider.request("room.leave", {"roomId": "r"}, timeout=30)
        with pytest.raises(WsError):
            outsider.request("chat.message", {"roomId": "r", "text": "gone"}, timeout=30)
    finally:
        inside.close()
        outsider.close()


def readme_client(port: int, tmp_path: Any) -> str:
    """The README's quick-start client snippet, verbatim but for the port, as a script."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    (snippet,) = [b for b in blocks if "WsClient('ws://127.0.0.1:8080/ws')" in b]
    path = tmp_path / "readme_client.py"
    path.write_text(snippet.replace("127.0.0.1:8080", f"127.0.0.1:{port}"))
    return str(path)


def test_the_readme_client_prints_what_it_receives_across_a_restart(
        procs: list[Proc], tmp_path: Any) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    procs.append(server := start_app(port))
    received: list[str] = []
    other = member(url, "lobby", received)
    # -u: a terminal would show each line at once; a pipe would buffer them.
    procs.append(snippet := Proc("-u", readme_client(port, tmp_path)))
    snippet.wait_line("joined lobby (new session)")
    wait_for(lambda: received == ["hi"], timeout=60, what="the snippet's hi")
    other.send("chat.message", {"roomId": "lobby", "text": "before the restart"})
    snippet.wait_line("anon: before the restart")
    other.close()

    server.popen.send_signal(signal.SIGTERM)
    assert server.popen.wait(timeout=60) == 0
    procs.append(start_app(port))
    snippet.wait_line("joined lobby (new session)", count=2)
    received.clear()
    other = member(url, "lobby", received)
    other.send("chat.message", {"roomId": "lobby", "text": "after the restart"})
    snippet.wait_line("anon: after the restart")
    other.close()

    snippet.popen.send_signal(signal.SIGINT)  # Ctrl-C: closes, no traceback
    assert snippet.popen.wait(timeout=60) == 0
    snippet.stop()
    # stderr holds the client's WARNING that the session was lost, and nothing else.
    assert not any("Traceback" in line or "KeyboardInterrupt" in line for line in snippet.errors)
    assert len(snippet.errors) == 1 and "session lost" in snippet.errors[0], snippet.errors


def test_ctrl_c_ends_the_example_client_cleanly(chat_server: WsServer, procs: list[Proc]) -> None:
    procs.append(chat := Proc("examples/chat/client.py", chat_server.url, stdin=True))
    chat.wait_line("joined lobby (new session)")
    chat.popen.send_signal(signal.SIGINT)
    assert chat.popen.wait(timeout=60) == 0
    chat.stop()
    assert chat.errors == []
