"""``wscore run MODULE:ATTR --workers N``: N server processes on one port under a supervisor.

The parent (the *supervisor*) binds the listening socket once, then runs N
worker processes (``python -m wscore run … --workers 1`` plus a hidden
``--worker-fds``) that inherit that one socket and all accept on it: one
accept queue, so a worker that dies loses only the connections it had
accepted, none waiting in the queue (SO_REUSEPORT would give each worker its
own queue and drop what waited in a dead worker's). ``--port 0`` works: the
parent logs the bound address before any worker starts.

Contracts:

* N > 1 needs Redis (``--redis URL`` or the app's ``config.redis_url``):
  the workers share sessions and rooms only through it. Without it:
  :class:`~wscore.errors.ConfigError` (one line, exit 2).
* Start-up: worker 0 starts first; if it exits before it is ready (e.g. the
  app's Redis is unreachable: the worker prints its one-line error), the
  supervisor exits with the worker's status (2 for a user error) and starts no
  other. Then the others start and ``all N workers ready`` is logged.
* A worker that dies afterwards is replaced after a backoff that doubles with
  each failure in a row (0.1 s up to 30 s; a worker that served for 10 s
  resets it); each death and restart is logged (``wscore.workers``).
* SIGTERM or SIGINT: SIGTERM goes to every worker (each drains its
  connections as a single ``wscore run`` does: 1012 with Redis), the
  supervisor waits for them at most ``shutdown_timeout + 10`` seconds, then
  SIGKILLs the rest. Exit 0 when every worker stopped on its own, 1 if one had
  to be killed. A second signal kills the workers at once.
* Each worker is a node of its own (``node_id`` None: each picks one; a
  configured ``node_id`` gets ``-w<index>`` appended, so workers never share one).
* Workers run in their own session (a terminal's Ctrl-C reaches only the
  supervisor, which forwards one SIGTERM) and watch a socketpair to the
  supervisor: if the supervisor dies (even by SIGKILL) they stop too.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import attrs
import gevent
import gevent.event

from wscore.errors import ConfigError

__all__ = ["Supervisor", "add_arguments", "bind_listener", "run_worker", "supervise"]

log = logging.getLogger("wscore.workers")

#: The hidden option the supervisor passes to a worker: ``LISTEN_FD,CHANNEL_FD,INDEX``.
WORKER_FDS = "--worker-fds"
#: What a worker sends the supervisor once it serves.
_READY = b"R"


def add_arguments(run: argparse.ArgumentParser) -> None:
    """Add ``--workers N`` to ``wscore run`` (whose ``--redis URL`` the workers need for N > 1)."""
    run.add_argument("--workers", type=int, default=1, metavar="N",
                     help="server processes sharing the port (N > 1 needs Redis)")
    run.add_argument(WORKER_FDS, default=None, help=argparse.SUPPRESS)


def redis_url_of(config: Any, flag: str | None) -> str | None:
    """The Redis URL a server will use: the flag, else the config's ``redis_url``."""
    return flag or config.redis_url or None


def bind_listener(host: str, port: int, backlog: int = socket.SOMAXCONN) -> socket.socket:
    """Bind and listen on ``host:port`` (SO_REUSEADDR, as gevent's servers do)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=backlog)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


# -- the worker side --------------------------------------------------------------------------------
def run_worker(server: Any, spec: str) -> int:
    """Serve ``server`` on the inherited listener named by ``spec`` until SIGTERM or the supervisor dies."""
    try:
        listen_fd, channel_fd, index = (int(part) for part in spec.split(","))
    except ValueError:
        raise ConfigError(f"{WORKER_FDS} must be LISTEN_FD,CHANNEL_FD,INDEX, got {spec!r}") from None
    listener = socket.socket(fileno=listen_fd)
    channel = socket.socket(fileno=channel_fd)
    node_id = getattr(server.config, "node_id", None)
    if node_id:
        # Each worker is a node of its own in Redis: a configured id gets the worker's index.
        server.config = attrs.evolve(server.config, node_id=f"{node_id}-w{index}")
    server.start(listener=listener)
    log.info("worker %d (pid %d) serving %s", index, os.getpid(), server.url)
    try:
        channel.sendall(_READY)
    except OSError:
        pass  # the supervisor is gone already: the watcher below stops us

    def watch_supervisor() -> None:
        try:
            while channel.recv(64):
                pass
        except OSError:
            pass
        log.warning("worker %d (pid %d): the supervisor is gone, stopping", index, os.getpid())
        server.stop()

    watcher = gevent.spawn(watch_supervisor)
    try:
        server.serve_forever()
    finally:
        watcher.kill(block=False)
        channel.close()
    return 0


# -- the supervisor -----------------------------------------------------------------------------------
def _describe(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


@attrs.define
class _Worker:
    """One worker slot: the process currently in it and its history."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    channel: socket.socket | None = None
    ready: gevent.event.Event = attrs.field(factory=gevent.event.Event)
    started_at: float = 0.0
    failures: int = 0  # deaths in a row (reset by a worker that served stable_after seconds)


class Supervisor:
    """Runs ``workers`` copies of ``worker_argv`` on ``listener`` and keeps them running.

    ``worker_argv`` is a full command line; the supervisor appends
    ``--worker-fds LISTEN_FD,CHANNEL_FD,INDEX``. See the module docstring for
    the contract; :meth:`run` blocks until the supervisor stops and returns
    its exit status.
    """

    def __init__(
        self, *, worker_argv: Sequence[str], workers: int, listener: socket.socket,
        drain_timeout: float, backoff_min: float = 0.1, backoff_max: float = 30.0,
        stable_after: float = 10.0,
    ) -> None:
        if workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {workers}")
        self._argv = list(worker_argv)
        self._listener = listener
        self._drain_timeout = drain_timeout
        self._backoff_min = backoff_min
        self._backoff_max = backoff_max
        self._stable_after = stable_after
        self._workers = [_Worker(i) for i in range(workers)]
        self._stopping = gevent.event.Event()
        self._signals = 0
        self._status = 0
        self._greenlets: list[gevent.Greenlet] = []
        self._served = False  # some worker has served: later deaths are replaced, not fatal

    @property
    def pids(self) -> list[int]:
        """PIDs of the worker processes alive now."""
        return [w.proc.pid for w in self._workers if w.proc is not None and w.proc.poll() is None]

    def run(self) -> int:
        handlers = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                handlers.append(gevent.signal_handler(sig, self._on_signal, sig))
            except (ValueError, OSError):  # not in the main thread
                pass
        try:
            first = self._workers[0]
            self._greenlets.append(gevent.spawn(self._keep, first))
            # The canary: a worker that cannot start (bad Redis URL, …) fails alone, once.
            gevent.wait([first.ready, self._stopping], count=1)
            if self._stopping.is_set():
                return self._shutdown()
            for worker in self._workers[1:]:
                self._greenlets.append(gevent.spawn(self._keep, worker))
            for worker in self._workers[1:]:
                gevent.wait([worker.ready, self._stopping], count=1)
                if self._stopping.is_set():
                    return self._shutdown()
            log.info("all %d workers ready (pids %s)", len(self._workers),
                     " ".join(str(p) for p in self.pids))
            self._stopping.wait()
            return self._shutdown()
        finally:
            for h in handlers:
                h.cancel()
            self._listener.close()

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("received %s: stopping %d workers", signal.Signals(sig).name, len(self.pids))
            self._stopping.set()
        else:
            log.warning("received %s again: killing the workers", signal.Signals(sig).name)
            self._signal_all(signal.SIGKILL)

    def _signal_all(self, sig: int) -> None:
        for worker in self._workers:
            if worker.proc is not None and worker.proc.poll() is None:
                try:
                    os.kill(worker.proc.pid, sig)
                except ProcessLookupError:
                    pass

    def _shutdown(self) -> int:
        self._stopping.set()
        self._signal_all(signal.SIGTERM)
        if not gevent.joinall(self._greenlets, timeout=self._drain_timeout, raise_error=False) or any(
                not g.dead for g in self._greenlets):
            left = self.pids
            log.warning("workers %s did not stop within %.0f s: killing them",
                        " ".join(map(str, left)), self._drain_timeout)
            self._signal_all(signal.SIGKILL)
            gevent.joinall(self._greenlets, timeout=10, raise_error=False)
            if self._status == 0:
                self._status = 1
        log.info("all workers stopped")
        return self._status

    def _spawn(self, worker: _Worker) -> None:
        mine, theirs = socket.socketpair()
        argv = [*self._argv, WORKER_FDS, f"{self._listener.fileno()},{theirs.fileno()},{worker.index}"]
        try:
            worker.proc = subprocess.Popen(
                argv, pass_fds=(self._listener.fileno(), theirs.fileno()), start_new_session=True)
        finally:
            theirs.close()
        worker.channel = mine
        worker.ready.clear()
        worker.started_at = time.monotonic()
        log.info("worker %d started (pid %d)", worker.index, worker.proc.pid)

    def _watch_ready(self, worker: _Worker, channel: socket.socket, pid: int) -> None:
        try:
            data = channel.recv(1)
        except OSError:
            return
        if data == _READY:
            log.info("worker %d (pid %d) ready", worker.index, pid)
            self._served = True
            worker.ready.set()

    def _keep(self, worker: _Worker) -> None:
        """Run ``worker``'s slot: start, wait for the exit, back off, start again, until stopping."""
        while not self._stopping.is_set():
            self._spawn(worker)
            proc, channel = worker.proc, worker.channel
            assert proc is not None and channel is not None
            reader = gevent.spawn(self._watch_ready, worker, channel, proc.pid)
            if self._stopping.is_set():  # a signal arrived while we spawned
                os.kill(proc.pid, signal.SIGTERM)
            returncode = proc.wait()
            reader.kill(block=False)
            channel.close()
            was_ready = worker.ready.is_set()
            if self._stopping.is_set():
                level = logging.INFO if returncode == 0 else logging.WARNING
                log.log(level, "worker %d (pid %d) %s", worker.index, proc.pid, _describe(returncode))
                return
            if not self._served:
                # Nothing ever served: a start-up error (the worker said why on stderr).
                log.error("worker %d (pid %d) %s before it served: giving up",
                          worker.index, proc.pid, _describe(returncode))
                self._status = returncode if returncode > 0 else 1
                self._stopping.set()
                return
            served = time.monotonic() - worker.started_at
            worker.failures = 1 if was_ready and served >= self._stable_after else worker.failures + 1
            delay = min(self._backoff_max, self._backoff_min * 2 ** (worker.failures - 1))
            log.warning("worker %d (pid %d) %s; starting a new one in %.1f s",
                        worker.index, proc.pid, _describe(returncode), delay)
            if self._stopping.wait(timeout=delay):
                return


def supervise(config: Any, *, workers: int, argv: Sequence[str], redis_flag: str | None) -> int:
    """``wscore run … --workers N`` (N > 1): bind ``config``'s address, run the workers, block.

    ``argv`` is the ``wscore`` command line (after the program name); each
    worker runs it again with ``--workers 1`` appended (the last one wins).
    """
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if redis_url_of(config, redis_flag) is None:
        raise ConfigError(f"--workers {workers} needs Redis (--redis URL or the app's config.redis_url): "
                          f"workers share sessions and rooms only through it")
    listener = bind_listener(config.host, config.port)
    host, port = listener.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    log.info("supervising %d workers on ws://%s:%d%s (healthz: http://%s:%d/healthz)",
             workers, shown, port, config.path, shown, port)
    supervisor = Supervisor(
        worker_argv=[sys.executable, "-m", "wscore", *argv, "--workers", "1"], workers=workers,
        listener=listener, drain_timeout=float(config.shutdown_timeout) + 10.0)
    return supervisor.run()
