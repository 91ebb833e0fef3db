"""A real ``redis-server`` for tests and benchmarks: own port, own directory, stopped by PID.

No fakeredis, no mocks (issue 10 §9). Importable as ``redisproc`` from the
cluster tests (their directory is on the path) and from the benchmarks.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import redis

__all__ = ["RedisServer", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process on 127.0.0.1, with its data in ``directory``.

    ``appendonly`` turns AOF on (``appendfsync`` as given); RDB snapshots are
    always off (``--save ''``), so without AOF a restart comes back empty.
    ``tls`` serves TLS only (a throwaway CA and certificate for 127.0.0.1 made
    with ``openssl`` in ``directory``); :attr:`url` is then a ``rediss://`` URL
    that verifies the server against that CA.
    """

    def __init__(self, directory: Path, *, appendonly: bool = False, appendfsync: str = "always",
                 tls: bool = False) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (make's set-up installs Debian's package)")
        self.directory = Path(directory)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.tls = tls
        if tls:
            self._make_certificates()
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._admin: redis.Redis | None = None

    @property
    def url(self) -> str:
        if self.tls:
            return (f"rediss://127.0.0.1:{self.port}/0?ssl_cert_reqs=required"
                    f"&ssl_ca_certs={self.directory / 'ca.pem'}")
        return f"redis://127.0.0.1:{self.port}/0"

    def _make_certificates(self) -> None:
        d = self.directory

        def run(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "ca.key"),
            "-out", str(d / "ca.pem"), "-days", "2", "-subj", "/CN=wscore test CA")
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "server.key"),
            "-out", str(d / "server.csr"), "-subj", "/CN=127.0.0.1")
        (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        run("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-out", str(d / "server.pem"),
            "-days", "2", "-extfile", str(d / "server.ext"))

    def _client_options(self) -> dict[str, Any]:
        if not self.tls:
            return {}
        return {"ssl": True, "ssl_ca_certs": str(self.directory / "ca.pem"), "ssl_cert_reqs": "required"}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 10.0) -> None:
        """Start (on a free port the first time, the same port after) and wait until it answers PING."""
        restart = bool(self.port)
        for _attempt in range(5):
            if not restart:
                self.port = free_port()
            self._spawn()
            if self._wait_ready(timeout):
                return
            self.kill9()
            # first start only: the free port may have been taken meanwhile, try another
        raise RuntimeError(f"redis-server did not start on port {self.port}: {self.log_tail()}")

    def _spawn(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--save", "", "--daemonize", "no",
                "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", self.appendfsync,
                "--logfile", str(self.directory / "redis.log"), "--protected-mode", "no",
                *self._tls_arguments(),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def _tls_arguments(self) -> list[str]:
        if not self.tls:
            return []
        d = self.directory
        # TLS on the port the URL names, and no plain TCP port at all
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(d / "server.pem"),
                "--tls-key-file", str(d / "server.key"), "--tls-ca-cert-file", str(d / "ca.pem"),
                "--tls-auth-clients", "no"]

    def _wait_ready(self, timeout: float) -> bool:
        probe = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5,
                            socket_connect_timeout=0.5, **self._client_options())
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    return False
                try:
                    if probe.ping():
                        return True
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    pass
                time.sleep(0.01)  # polling a condition (the server answering), not a delay
            return False
        finally:
            probe.close()

    def admin(self) -> redis.Redis:
        """A plain redis-py client for inspecting and poking the server in tests."""
        if self._admin is None:
            self._admin = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5,
                                      **self._client_options())
        return self._admin

    def _close_admin(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def flushall(self) -> None:
        self.admin().flushall()

    def kill9(self) -> None:
        """SIGKILL the server (no shutdown, no final AOF rewrite) and reap it."""
        self._close_admin()
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def restart(self) -> None:
        """Start again on the same port and directory (an AOF there is loaded)."""
        self.kill9()
        self.start()

    def stop(self) -> None:
        self._close_admin()
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def info(self, section: str) -> dict[str, Any]:
        found: dict[str, Any] = self.admin().info(section)
        return found

    def log_tail(self, lines: int = 20) -> str:
        path = self.directory / "redis.log"
        return "\n".join(path.read_text().splitlines()[-lines:]) if path.exists() else "(no log)"
