"""Real processes for tests: a ``wscore`` command whose log is collected, stopped by PID.

Importable from any test as ``processes`` (``tests/`` is on the path via the root conftest).
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Sequence

import gevent

__all__ = ["ROOT", "LoggedProcess", "alive", "run_under_a_terminal"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def alive(pid: int) -> bool:
    """``pid`` runs (a zombie, exited but not reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class LoggedProcess:
    """``argv`` started in ROOT with stderr (the log) collected line by line by a greenlet."""

    def __init__(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        self.argv = list(argv)
        self.lines: list[str] = []
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self._reader = gevent.spawn(self._read)

    @classmethod
    def wscore(cls, *args: str) -> LoggedProcess:
        return cls([sys.executable, "-m", "wscore", *args])

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def find(self, pattern: str) -> list[re.Match[str]]:
        """Every match of ``pattern`` in the log so far, in order."""
        rx = re.compile(pattern)
        return [m for m in (rx.search(line) for line in list(self.lines)) if m]

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not end; idempotent (test teardown)."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait()
        self._reader.join(timeout=5)


def run_under_a_terminal(argv: list[str], timeout: float = 100.0, *,
                         stderr_too: bool = True) -> tuple[int, str]:
    """Run ``argv`` (in ROOT) with stdout on a pseudo-terminal of 160 columns; (exit code, all it wrote).

    ``stderr_too``: stderr goes to the terminal too, else to /dev/null. The child is killed
    if it has not ended after ``timeout`` seconds.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=subprocess.STDOUT if stderr_too else subprocess.DEVNULL,
                            env={**os.environ, "TERM": "xterm"})
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)  # wakes on output or each second
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")
