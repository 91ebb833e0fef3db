"""Process helpers the benchmark scripts share (no gevent here: some parents stay unpatched)."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request

__all__ = ["free_port", "rss_kib", "wait_until_up"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (0 if unknown)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_until_up(proc: subprocess.Popen[bytes], port: int, timeout: float = 15.0) -> None:
    """Poll ``GET /healthz`` on 127.0.0.1:``port``; kill ``proc`` and exit if it never answers.

    Polling a process we do not control: there is no event to wait on.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("bench: the server did not come up")
