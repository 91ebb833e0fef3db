"""``wscore sandbox run --nodes N --redis URL``: N app nodes behind the proxy, and node restarts.

:class:`NodeCluster` runs N nodes, each ``python -m wscore.cli run MODULE:ATTR
--host 127.0.0.1 --port P --redis URL`` in its own process on its own fixed
port (a restarted node comes back on the same port, as a node behind a
balancer does), their output appended to one log file. The proxy balances
client connections across them (:class:`sandbox.balance.RoundRobin`).

:class:`NodeRestarts` is the ``node-restarts`` profile's process half (its
network half is clean): during the sending phase it takes one node down at a
time — SIGTERM and SIGKILL alternating, the first drawn from the seed —
keeps it down for a seeded 0.3–1.0 s, starts it again on its port and waits
until it answers ``/healthz`` before the next; at most
:data:`DEFAULT_MAX_RESTARTS` restarts, none started in the last second of
sending. Each kill and start is a record in the proxy's fault log
(``node_sigterm`` / ``node_sigkill`` / ``node_start``, connection -1,
trigger ``time``, ``params.node``), so reports count them. :meth:`NodeRestarts.stop`
(at heal) waits for a restart in progress to finish: the drain always runs
with every node up.

With Redis-backed sessions (SPEC §6) the verdict must stay 0 lost, 0
duplicated, 0 reordered: a client of a killed node resumes on another.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import IO

import gevent
import gevent.event

from wscore.sandbox.app import ScenarioError, _subprocess_env, wait_until_healthy
from wscore.sandbox.fault_proxy import FaultProxy
from wscore.sandbox.faults import Trigger

__all__ = ["DEFAULT_MAX_RESTARTS", "NODE_PROFILES", "NodeCluster", "NodeProcess", "NodeRestarts",
           "check_nodes_args"]

log = logging.getLogger("wscore.sandbox.nodes")

#: Profiles that restart nodes (they need ``--nodes`` >= 2 and Redis).
NODE_PROFILES = frozenset({"node-restarts"})
#: Restarts one ``node-restarts`` run does at most.
DEFAULT_MAX_RESTARTS = 4


def check_nodes_args(profile: str, nodes: int, redis_url: str | None) -> None:
    """Raise :class:`ScenarioError` (one line) for a node set-up that cannot run."""
    if nodes < 1:
        raise ScenarioError(f"--nodes must be >= 1, got {nodes}")
    if nodes > 1 and not redis_url:
        raise ScenarioError(f"--nodes {nodes} needs --redis URL: nodes share sessions and rooms "
                            f"only through Redis")
    if profile in NODE_PROFILES and nodes < 2:
        raise ScenarioError(f"profile {profile!r} needs --nodes >= 2 (one node restarts while "
                            f"another serves) and --redis URL")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NodeProcess:
    """One node: ``wscore run TARGET --port PORT --redis URL``; :meth:`start` may be called again."""

    def __init__(self, index: int, target: str, *, port: int, redis_url: str | None,
                 log_file: IO[bytes], python: str = sys.executable,
                 env: Mapping[str, str] | None = None) -> None:
        self.index = index
        self.target = target
        self.port = port
        self.redis_url = redis_url
        self._log_file = log_file
        self._python = python
        self._env = _subprocess_env(env)
        self.proc: subprocess.Popen[bytes] | None = None
        #: Exit statuses of the node's previous processes (negative: killed by that signal).
        self.exits: list[int] = []

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the node and wait until ``/healthz`` answers; :class:`ScenarioError` if it does not."""
        if self.running():
            raise ScenarioError(f"node {self.index} is already running")
        cmd = [self._python, "-m", "wscore.cli", "run", self.target, "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "WARNING"]
        if self.redis_url:
            cmd += ["--redis", self.redis_url]
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=self._env)
        code = wait_until_healthy(self.proc, self.port, timeout=timeout, name=f"node {self.index}")
        if code is not None:
            self.exits.append(code)
            raise ScenarioError(f"node {self.index} ({self.target} on port {self.port}) exited "
                                f"with code {code} before answering /healthz")

    def kill(self, sig: int, timeout: float = 30.0) -> int:
        """Send ``sig``, wait for the exit (SIGKILL after ``timeout``); return the exit status."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            raise ScenarioError(f"node {self.index} is not running")
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("node %d ignored %s for %g s; killing it", self.index,
                        signal.Signals(sig).name, timeout)
            proc.kill()
            code = proc.wait()
        self.exits.append(code)
        return code

    def stop(self, timeout: float = 10.0) -> None:
        if self.running():
            self.kill(signal.SIGTERM, timeout)


class NodeCluster:
    """N nodes of ``target`` on free loopback ports sharing ``redis_url``; one log file for all.

    Duck-types :class:`sandbox.app.AppProcess` for the runner (``address``,
    ``log_path``, ``log_removed``, ``exit_code()``, ``stop()``) and adds
    ``addresses`` (what the proxy balances across) and ``nodes``.
    """

    def __init__(self, target: str, *, nodes: int, redis_url: str | None,
                 python: str = sys.executable, env: Mapping[str, str] | None = None,
                 start_timeout: float = 30.0) -> None:
        self.target = target
        self._log_file: IO[bytes] = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="wscore-sandbox-nodes-", suffix=".log", delete=False)
        self.log_path = self._log_file.name
        self.log_removed = False
        #: Set by :func:`node_restarts_for`; :meth:`stop` stops it first (no restart after a stop).
        self.restarts: NodeRestarts | None = None
        self.nodes = [NodeProcess(i, target, port=_free_port(), redis_url=redis_url,
                                  log_file=self._log_file, python=python, env=env)
                      for i in range(nodes)]
        try:
            for node in self.nodes:
                node.start(start_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> tuple[str, int]:
        return self.nodes[0].address

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [node.address for node in self.nodes]

    def exit_code(self) -> int | None:
        """None while every node runs; else the first stopped node's status."""
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is not None:
                return node.proc.returncode
        return None

    def stop(self, timeout: float = 10.0) -> None:
        if self.restarts is not None:
            self.restarts.stop()
        for node in self.nodes:
            node.stop(timeout)
        self._log_file.close()
        if not self.log_removed and os.path.getsize(self.log_path) == 0:
            os.unlink(self.log_path)
            self.log_removed = True


class NodeRestarts:
    """Takes the cluster's nodes down and up during sending (see the module docstring)."""

    def __init__(self, cluster: NodeCluster, proxy: FaultProxy, *, seed: int, duration: float,
                 after: float, max_restarts: int = DEFAULT_MAX_RESTARTS) -> None:
        self._cluster = cluster
        self._proxy = proxy
        self._rng = random.Random(f"{seed}/node-restarts")
        self._duration = duration
        self._after = after
        self._max = max_restarts
        self._stopping = gevent.event.Event()
        self._greenlet: gevent.Greenlet[[], None] | None = None
        #: (node index, signal name or "exited", exit status) of each restart done, in order.
        self.done: list[tuple[int, str, int]] = []
        self.error: str | None = None

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._greenlet = gevent.spawn(self._run)

    def _run(self) -> None:
        nodes = self._cluster.nodes
        first = self._rng.randrange(len(nodes))
        signals = [signal.SIGTERM, signal.SIGKILL]
        if self._rng.random() < 0.5:
            signals.reverse()
        end = self._t0 + self._duration - 1.0
        if self._stopping.wait(self._after):
            return
        for k in range(self._max):
            if self._stopping.is_set() or time.monotonic() >= end:
                return
            node = nodes[(first + k) % len(nodes)]
            sig = signals[k % 2]
            name = "node_" + signal.Signals(sig).name.lower()
            down = self._rng.uniform(0.3, 1.0)
            how = signal.Signals(sig).name
            try:
                if node.running():
                    self._proxy.record(-1, "both", name, 0, Trigger.TIME,
                                       {"node": node.index, "pid": node.pid})
                    code = node.kill(sig)
                    log.info("node %d: %s -> exit %d; down for %.2f s", node.index, name, code, down)
                else:  # it died by itself: only bring it back
                    code = node.proc.returncode if node.proc is not None else 0
                    how = "exited"
                # Down for a while even if the run heals meanwhile: a restart is not cut short.
                gevent.sleep(down)
                node.start()
            except ScenarioError as exc:
                # The report shows it: the node stays down, so the app's exit code is set.
                self.error = str(exc)
                log.error("node restarts stopped: %s", exc)
                return
            self._proxy.record(-1, "both", "node_start", 0, Trigger.TIME,
                               {"node": node.index, "pid": node.pid})
            self.done.append((node.index, how, code))
            if self._stopping.wait(self._rng.uniform(0.5, 1.5)):
                return

    def stop(self) -> None:
        """No new restart; wait for one in progress to finish (its node up again)."""
        self._stopping.set()
        if self._greenlet is not None:
            self._greenlet.join()


def node_restarts_for(profile: str, process: object, proxy: FaultProxy, *, seed: int, duration: float,
                      after: float) -> NodeRestarts | None:
    """The runner's hook: a started :class:`NodeRestarts` for a node profile, else None."""
    if profile not in NODE_PROFILES or not isinstance(process, NodeCluster):
        return None
    restarts = process.restarts = NodeRestarts(process, proxy, seed=seed, duration=duration, after=after)
    restarts.start()
    return restarts


def start_app_nodes(target: str, *, nodes: int, redis_url: str | None, python: str = sys.executable,
                    env: Mapping[str, str] | None = None) -> NodeCluster:
    """The runner's hook: :class:`NodeCluster` (``--nodes N``)."""
    return NodeCluster(target, nodes=nodes, redis_url=redis_url, python=python, env=env)


def node_addresses(process: object) -> Sequence[tuple[str, int]] | None:
    """What the proxy balances across: the cluster's nodes, or None for one app process."""
    return process.addresses if isinstance(process, NodeCluster) else None
