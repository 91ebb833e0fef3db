"""``wscore client``'s first contact: its name, ``/help``, a refused first connection
reported within its ``--connect-timeout``, a clean Ctrl-C; ``connect()``'s INFO log."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import termios
import time
from typing import Any

import pytest

from wscore.client import WsClient, WsClientConfig
from wscore.client.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nobody listens once closed: connections are refused


def run_main(argv: list[str], stdin: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(argv, stdin=io.StringIO(stdin), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wscore", "client", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_help_lists_the_commands_and_is_never_sent(app: Any) -> None:
    status, out, err = run_main([app.url], "/help\n/nope\n?echo 1\n")
    assert status == 0
    assert "/help" in out and "/quit" in out and "?event.name" in out
    # A sent "/help" would have been answered 1008 before the echo's reply.
    assert "1008" not in out and "handlerNotFound" not in out + err
    assert "< 1" in out
    assert err.splitlines() == ["error: unknown command /nope (/help lists them)"]


def test_it_calls_itself_wscore_client() -> None:
    result = cli("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: wscore client ")
    assert "/help" in result.stdout and "--connect-timeout" in result.stdout
    result = cli()
    assert result.returncode == 2 and result.stderr.startswith("usage: wscore client ")
    result = subprocess.run([sys.executable, "-m", "wscore.client", "--connect-timeout", "0", "ws://x/ws"],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr == "error: --connect-timeout must be > 0\n"


def test_a_refused_first_connection_is_one_line_within_the_connect_timeout() -> None:
    url = f"ws://127.0.0.1:{closed_port()}/ws"
    result = cli(url)  # the default --connect-timeout: 5 s, not the library's 30 s
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: cannot connect to {url}")
    assert "within 5 s" in result.stderr and "Connection refused" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_verbose_shows_each_failed_attempt() -> None:
    result = cli(f"ws://127.0.0.1:{closed_port()}/ws", "-v", "--connect-timeout", "1")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("# connection attempt 1 to 127.0.0.1:") and "retrying in" in lines[0]
    assert lines[-1].startswith("error: cannot connect")
    assert all(line.startswith("# connection attempt") for line in lines[:-1])


def test_connect_logs_each_failed_attempt_at_info(caplog: pytest.LogCaptureFixture) -> None:
    client = WsClient(f"ws://127.0.0.1:{closed_port()}/ws",
                      config=WsClientConfig(backoff_base=0.05, backoff_cap=0.2))
    with caplog.at_level(logging.INFO, logger="wscore.client"), pytest.raises(TimeoutError):
        client.connect(timeout=1.0)
    client.close()
    attempts = [r for r in caplog.records if r.name == "wscore.client"
                and r.getMessage().startswith("connection attempt")]
    assert attempts and all(r.levelno == logging.INFO for r in attempts)
    assert attempts[0].getMessage().startswith("connection attempt 1 to 127.0.0.1:")
    assert "Connection refused" in attempts[0].getMessage() and "retrying in" in attempts[0].getMessage()
    assert [int(r.getMessage().split()[2]) for r in attempts] == list(range(1, len(attempts) + 1))


class Terminal:
    """``wscore client`` on a pseudo-terminal that is its controlling terminal (so ^C is SIGINT)."""

    def __init__(self, *args: str) -> None:
        self.master, slave = os.openpty()

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen([sys.executable, "-m", "wscore", "client", *args], cwd=ROOT,
                                     stdin=slave, stdout=slave, stderr=slave,
                                     preexec_fn=controlling_tty)
        os.close(slave)
        self.output = b""

    def read_until(self, text: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.output += os.read(self.master, 4096)
                except OSError:  # the child closed the terminal
                    break
        assert text in self.output, self.output

    def drain(self) -> str:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.5)
            if not ready:
                break
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.output += chunk
        os.close(self.master)
        return self.output.decode(errors="replace")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.parametrize("when", ["connected", "connecting"])
def test_ctrl_c_exits_cleanly(app: Any, when: str) -> None:
    if when == "connected":
        term = Terminal(app.url)
        wait_text = b"# connected ("
    else:  # still retrying a refused first connection
        term = Terminal(f"ws://127.0.0.1:{closed_port()}/ws", "-v", "--connect-timeout", "60")
        wait_text = b"# connection attempt 2"
    try:
        term.read_until(wait_text)
        os.write(term.master, b"\x03")  # Ctrl-C, as typed: the terminal sends SIGINT
        assert term.proc.wait(timeout=60) == 130
        output = term.drain()
    finally:
        term.kill()
    assert "KeyboardInterrupt" not in output and "Traceback" not in output
    assert not TIMESTAMP.search(output), output
    assert "error:" not in output


def test_sigint_without_a_terminal_also_exits_cleanly(app: Any) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "wscore", "client", app.url], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        proc.stdin.write("?echo 7\n")
        proc.stdin.flush()
        while "< 7" not in (line := proc.stdout.readline()):
            assert line, "the client ended early"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and err == "" and out == ""


def serve_chat(port: int) -> subprocess.Popen[str]:
    """``wscore run examples.chat.app:server`` on ``port``, once it says it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "wscore", "run", "examples.chat.app:server",
                             "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    while "listening on" not in (line := proc.stderr.readline()):
        assert line, "wscore run ended early"
    return proc


def test_after_the_first_connection_it_keeps_reconnecting() -> None:
    """The short first-connect timeout is for the first contact only: a later outage
    (here a server restart longer than it, sessions lost) is waited out and survived."""
    port = closed_port()
    server = serve_chat(port)
    client = subprocess.Popen([sys.executable, "-m", "wscore", "client", f"ws://127.0.0.1:{port}/ws",
                               "--connect-timeout", "1", "-v"], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    servers = [server]
    try:
        assert client.stdout is not None and client.stdin is not None

        def read_until(text: str) -> None:
            assert client.stdout is not None
            while text not in (line := client.stdout.readline()):
                assert line, f"the client ended before {text!r}"

        read_until("# connected (new session")
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        read_until("# disconnected")
        assert client.stderr is not None
        while "failed" not in (line := client.stderr.readline()):  # -v: a refused reconnect
            assert line, "the client ended during the outage"
        time.sleep(1.5)  # not a synchronisation: the outage must outlast --connect-timeout
        assert client.poll() is None
        servers.append(serve_chat(port))
        read_until("# session lost")
        read_until("# connected (new session")
        client.stdin.write('?echo "back"\n')
        client.stdin.flush()
        read_until('< "back"')
        client.stdin.write("/quit\n")
        client.stdin.flush()
        assert client.wait(timeout=60) == 0
    finally:
        for proc in [client, *servers]:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
