"""The seeded fault-injecting WebSocket-aware TCP proxy: listener, fault set, fault log.

How one connection is carried is in :mod:`sandbox.pumps` (the I/O) and
:mod:`sandbox.stream_plan` (pure: HTTP upgrade and frame scanning, where each
fault cuts the stream). This module owns what spans connections: accepting
and refusing, the proxy-wide blackhole (a partition), the seeded RNGs, the
fault log and the statistics.

All draws come from per-(connection, direction, fault) RNGs derived from the
seed (:meth:`FaultProxy.rng`), so the same seed and the same traffic yield the
same fault log. Continuous faults (latency, bandwidth, slicer) are logged once
per connection and direction when installed.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import random
import socket
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

import gevent
import gevent.event

from wscore.sandbox.balance import RoundRobin
from wscore.sandbox.faults import Blackhole, Fault, FaultRecord, Refuse, RefuseMode, Trigger
from wscore.sandbox.pumps import LINGER_RESET, Connection, spawn_timer
from wscore.sandbox.retry import Backoff
from wscore.sandbox.stream_plan import Window, windows

__all__ = ["FaultProxy", "ProxyError", "format_address", "parse_address"]

log = logging.getLogger("wscore.sandbox.proxy")


class ProxyError(Exception):
    """The proxy was misconfigured or misused (bad address, not started …)."""


def parse_address(text: str | tuple[str, int]) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` too) into ``(host, port)``.

    Raises :class:`ProxyError` with a one-line message on bad input.
    """
    if isinstance(text, tuple):
        host, port = text
        if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ProxyError(f"bad address {text!r}")
        return host, port
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ProxyError(f"bad address {text!r}: expected HOST:PORT")
    port = int(port_text)
    if port > 65535:
        raise ProxyError(f"bad address {text!r}: port out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"



class FaultProxy:
    """A seeded fault-injecting proxy from ``listen`` to ``upstream``.

    Lifecycle: ``start()`` binds and serves in background greenlets;
    ``stop()`` closes the listener and resets every live connection.  All
    methods must be called from the gevent hub's thread.  Faults may be
    replaced at any time with :meth:`set_faults`; live connections re-plan
    with counts starting from that moment.
    """

    def __init__(self, *, upstream: str | tuple[str, int],
                 listen: str | tuple[str, int] = ("127.0.0.1", 0),
                 faults: Iterable[Fault] = (), seed: int = 0,
                 fault_log_path: str | None = None, connect_timeout: float = 5.0,
                 max_fault_log: int = 100_000, balancer: RoundRobin | None = None) -> None:
        self.upstream = parse_address(upstream)
        #: Several upstreams (``sandbox run --nodes N``): connection k goes where this says.
        self.balancer = balancer
        self.listen_address = parse_address(listen)
        self.seed = seed
        self.connect_timeout = connect_timeout
        self.current_faults: tuple[Fault, ...] = tuple(faults)
        self.generation = 0
        self.hold_until = 0.0
        self.wake = gevent.event.Event()
        self.bytes_forwarded = {"up": 0, "down": 0}
        self.frames = {"up": 0, "down": 0}
        self.upstream_errors = 0
        self._fault_counts: collections.Counter[str] = collections.Counter()
        self._log: collections.deque[FaultRecord] = collections.deque(maxlen=max_fault_log)
        self._log_total = 0
        self._log_path = fault_log_path
        self._log_file: IO[str] | None = None
        self._refuse_until = 0.0
        self._refuse_mode = RefuseMode.RESET
        self._conns: dict[int, Connection] = {}
        self._accepted = 0
        self._refused = 0
        self._listener: socket.socket | None = None
        self._greenlets: list[gevent.Greenlet[Any, Any]] = []
        self._proxy_timers: list[gevent.Greenlet[Any, Any]] = []
        self._changed = gevent.event.Event()
        self._t0 = time.monotonic()
        self.address: tuple[str, int] = self.listen_address

    @property
    def started_at(self) -> float:
        """``time.monotonic()`` at :meth:`start`: the zero of every ``FaultRecord.time_seconds``."""
        return self._t0

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Bind, listen and serve in the background.  Raises :class:`ProxyError`."""
        if self._listener is not None:
            raise ProxyError("proxy already started")
        host, port = self.listen_address
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(512)
        except OSError as exc:
            raise ProxyError(f"cannot listen on {format_address((host, port))}: {exc}") from None
        if self._log_path:
            try:
                self._log_file = open(self._log_path, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                sock.close()
                raise ProxyError(f"cannot open fault log {self._log_path}: {exc}") from None
        self._listener = sock
        self.address = sock.getsockname()[:2]
        self._t0 = time.monotonic()
        self._greenlets.append(gevent.spawn(self._accept_loop))
        self._start_proxy_timers()
        log.info("proxy %s -> %s (seed %d, %d faults)", format_address(self.address),
                 self.upstream_text, self.seed, len(self.current_faults))

    def stop(self) -> None:
        """Stop accepting, reset all live connections, flush the fault log."""
        gevent.killall(self._greenlets + self._proxy_timers, block=True)
        self._greenlets, self._proxy_timers = [], []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for conn in list(self._conns.values()):
            conn.abort(reset=True, reason="proxy stopped")
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._pulse()

    @property
    def port(self) -> int:
        return self.address[1]

    @property
    def upstream_text(self) -> str:
        if self.balancer is not None:
            return "every upstream (" + ", ".join(map(format_address, self.balancer.upstreams)) + ")"
        return format_address(self.upstream)

    def connect_upstream(self, index: int) -> socket.socket:
        """A socket to the upstream (or the balancer's pick) for connection ``index``; OSError."""
        if self.balancer is not None:
            return self.balancer.connect(index, self.connect_timeout)
        return socket.create_connection(self.upstream, timeout=self.connect_timeout)

    # -- randomness / logging -------------------------------------------

    def rng(self, *key: object) -> random.Random:
        """The RNG for one stream, derived from the seed and ``key``.

        ``random.Random(str)`` hashes the string with SHA-512, so it is
        stable across processes (unlike ``hash()``).
        """
        return random.Random("/".join(map(str, (self.seed, *key))))

    def record(self, connection: int, direction: str, fault: str, frame: int,
               trigger: Trigger, params: dict[str, Any]) -> None:
        rec = FaultRecord(time_seconds=time.monotonic() - self._t0, connection=connection,
                          direction=direction, fault=fault, frame=frame,
                          trigger=trigger.value, params=params)
        self._log.append(rec)
        self._log_total += 1
        self._fault_counts[fault] += 1
        log.info("fault %s conn=%d dir=%s frame=%d %s", fault, connection, direction, frame,
                 json.dumps(params, sort_keys=True))
        if self._log_file is not None:
            self._log_file.write(rec.to_json() + "\n")
            self._log_file.flush()
        self._pulse()

    @property
    def fault_log(self) -> list[FaultRecord]:
        """A copy of the in-memory fault log (the newest ``max_fault_log`` records)."""
        return list(self._log)

    def _pulse(self) -> None:
        changed, self._changed = self._changed, gevent.event.Event()
        changed.set()

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` is true (re-checked on every proxy event
        and at least every 50 ms); False on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.wait(min(left, 0.05))
        return True

    # -- faults ------------------------------------------------------------

    def set_faults(self, faults: Iterable[Fault]) -> None:
        """Replace the fault set; live connections re-plan immediately."""
        self.current_faults = tuple(faults)
        self.generation += 1
        gevent.killall(self._proxy_timers, block=False)
        self._proxy_timers = []
        if self._listener is not None:
            self._start_proxy_timers()
        for conn in list(self._conns.values()):
            if conn.pumps:
                conn.install(self.current_faults, self.generation)
        self._pulse()

    def _start_proxy_timers(self) -> None:
        for index, fault in enumerate(self.current_faults):
            if isinstance(fault, Refuse) and fault.after_seconds is not None:
                refuse = fault
                rng = self.rng("proxy", index, self.generation)

                def start_refuse(window: Window, mode: RefuseMode = refuse.mode) -> None:
                    assert window.duration is not None
                    self._start_refuse(window.duration, mode, Trigger.TIME,
                                       {"after_seconds": round(window.after, 6)})

                schedule = windows(rng, fault.after_seconds, fault.duration_seconds, fault.repeat)
                self._proxy_timers.append(spawn_timer(schedule, start_refuse))
            elif isinstance(fault, Blackhole) and fault.all_connections:
                assert fault.after_seconds is not None
                rng = self.rng("proxy", index, self.generation)
                schedule = windows(rng, fault.after_seconds, fault.duration_seconds, fault.repeat)
                self._proxy_timers.append(spawn_timer(schedule, self._partition_fired))

    def _partition_fired(self, window: Window) -> None:
        assert window.duration is not None
        self._start_blackhole(window.duration, Trigger.TIME,
                              {"after_seconds": round(window.after, 6)})

    # -- manual actions ------------------------------------------------------

    def cut_all(self) -> int:
        """Reset (RST) every live connection now; returns how many."""
        conns = list(self._conns.values())
        for conn in conns:
            frame = max((p.frame for p in conn.pumps), default=0)
            self.record(conn.index, "both", "reset_peer", frame, Trigger.MANUAL, {})
            conn.abort(reset=True, reason="cut_all")
        return len(conns)

    def blackhole(self, seconds: float | None) -> None:
        """Hold every live and new connection for ``seconds`` (None: until
        :meth:`end_blackhole`)."""
        if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError("seconds must be a finite number >= 0")
        self._start_blackhole(math.inf if seconds is None else seconds, Trigger.MANUAL, {})

    def _start_blackhole(self, seconds: float, trigger: Trigger, params: dict[str, Any]) -> None:
        params = {**params, "duration_seconds": None if math.isinf(seconds) else round(seconds, 6)}
        self.record(-1, "both", "blackhole", 0, trigger, params)
        self.hold_until = max(self.hold_until, time.monotonic() + seconds)

    def end_blackhole(self) -> None:
        """End a proxy-wide blackhole early (per-connection ones keep running)."""
        self.hold_until = 0.0
        self.wake.set()
        self.wake = gevent.event.Event()
        self._pulse()

    @property
    def blackholed(self) -> bool:
        return self.hold_until > time.monotonic()

    def refuse(self, seconds: float, mode: RefuseMode | str = RefuseMode.RESET) -> None:
        """Refuse new connections for ``seconds`` (see :class:`RefuseMode`)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError("seconds must be a finite number >= 0")
        self._start_refuse(seconds, RefuseMode(mode), Trigger.MANUAL, {})

    def _start_refuse(self, seconds: float, mode: RefuseMode, trigger: Trigger,
                      params: dict[str, Any]) -> None:
        self.record(-1, "both", "refuse", 0, trigger,
                    {**params, "duration_seconds": round(seconds, 6), "mode": mode.value})
        self._refuse_until = max(self._refuse_until, time.monotonic() + seconds)
        self._refuse_mode = mode

    @property
    def refusing(self) -> bool:
        return self._refuse_until > time.monotonic()

    def wait_refuse_hold(self) -> None:
        while self._refuse_mode is RefuseMode.HOLD and self.refusing:
            gevent.sleep(self._refuse_until - time.monotonic())

    # -- accept ------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        backoff = Backoff(base=0.05, cap=1.0)
        while True:
            try:
                client, _addr = listener.accept()
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                backoff.pause()  # e.g. EMFILE: back off instead of spinning
                continue
            backoff.reset()
            index = self._accepted
            self._accepted += 1
            if self._should_refuse(index):
                self._refused += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                client.close()
                self._pulse()
                continue
            conn = Connection(self, index, client)
            self._conns[index] = conn
            self._pulse()
            conn.greenlets.append(gevent.spawn(conn.run))

    def _should_refuse(self, index: int) -> bool:
        if self.refusing and self._refuse_mode is RefuseMode.RESET:
            return True
        for fi, fault in enumerate(self.current_faults):
            if (isinstance(fault, Refuse) and fault.probability > 0
                    and self.rng(index, "refuse", fi, self.generation).random()
                    < fault.probability):
                self.record(index, "both", fault.name, 0, Trigger.CONNECTION,
                            {"probability": fault.probability})
                return True
        return False

    def on_closed(self, conn: Connection) -> None:
        self._conns.pop(conn.index, None)
        self._pulse()

    # -- stats ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Cheap snapshot: connections, bytes/frames per direction, faults."""
        return {
            "seed": self.seed,
            "listen": format_address(self.address),
            "upstream": format_address(self.upstream),
            "uptime_seconds": round(time.monotonic() - self._t0, 3),
            "connections": {"accepted": self._accepted, "active": len(self._conns),
                            "refused": self._refused, "upstream_errors": self.upstream_errors},
            "bytes": dict(self.bytes_forwarded),
            "frames": dict(self.frames),
            "faults_injected": dict(self._fault_counts),
            "fault_log_records": self._log_total,
            **({"upstreams": self.balancer.stats()} if self.balancer is not None else {}),
            "blackholed": self.blackholed,
            "refusing": self.refusing,
        }

    @property
    def accepted(self) -> int:
        return self._accepted

    @property
    def active(self) -> int:
        return len(self._conns)
