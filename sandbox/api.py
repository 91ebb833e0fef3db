"""The Python API for tests: ``with sandbox.proxy(upstream) as net: …``.

The handle wraps a running :class:`~sandbox.fault_proxy.FaultProxy` on
127.0.0.1 with an ephemeral port.  Every ``wait_*`` method blocks the calling
greenlet on the proxy's change events (never a bare sleep) and returns
``False`` on timeout instead of raising, so tests can ``assert net.wait_…``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any

from wscore.sandbox.balance import RoundRobin
from wscore.sandbox.control import ControlServer
from wscore.sandbox.fault_proxy import FaultProxy
from wscore.sandbox.faults import Fault, FaultRecord, RefuseMode
from wscore.sandbox.profiles import ProfileParams, build_profile

__all__ = ["BlackholeWindow", "ProxyHandle", "proxy"]


class BlackholeWindow:
    """A proxy-wide blackhole started by :meth:`ProxyHandle.blackhole`.

    Usable as a context manager: the blackhole ends when the block exits
    (or earlier, when its ``seconds`` run out).
    """

    def __init__(self, proxy: FaultProxy, seconds: float | None) -> None:
        self._proxy = proxy
        self.seconds = seconds
        self.started_at = time.monotonic()
        proxy.blackhole(seconds)

    def end(self) -> None:
        """End the proxy-wide blackhole now (held data then flows)."""
        self._proxy.end_blackhole()

    @property
    def active(self) -> bool:
        return self._proxy.blackholed

    def wait_ended(self, timeout: float) -> bool:
        """Block until the window is over; False on timeout."""
        return self._proxy.wait_until(lambda: not self._proxy.blackholed, timeout)

    def __enter__(self) -> BlackholeWindow:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.end()


class ProxyHandle:
    """Control a running sandbox proxy from a test."""

    def __init__(self, proxy: FaultProxy, control: ControlServer | None = None) -> None:
        self.proxy = proxy
        self.control = control

    @property
    def host(self) -> str:
        return self.proxy.address[0]

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def control_url(self) -> str | None:
        """``http://127.0.0.1:PORT`` of the control API, if one was started."""
        return self.control.url if self.control else None

    def url(self, path: str = "/ws", *, scheme: str = "ws") -> str:
        """A URL that reaches the upstream through the proxy."""
        if not path.startswith("/"):
            path = "/" + path
        return f"{scheme}://{self.host}:{self.port}{path}"

    # -- faults ------------------------------------------------------------

    def set_faults(self, faults: Iterable[Fault]) -> None:
        """Replace the active faults (live connections re-plan from now)."""
        self.proxy.set_faults(faults)

    @property
    def faults(self) -> tuple[Fault, ...]:
        return self.proxy.current_faults

    def cut_all(self) -> int:
        """Reset every live connection now; returns how many were cut."""
        return self.proxy.cut_all()

    def blackhole(self, seconds: float | None = None) -> BlackholeWindow:
        """Hold all traffic (live and new connections) for ``seconds``, or
        until the returned window's ``end()``/``with`` block exit."""
        return BlackholeWindow(self.proxy, seconds)

    def refuse(self, seconds: float, mode: RefuseMode | str = RefuseMode.RESET) -> None:
        """Refuse new connections for ``seconds``."""
        self.proxy.refuse(seconds, mode)

    # -- observation ---------------------------------------------------------

    @property
    def fault_log(self) -> list[FaultRecord]:
        return self.proxy.fault_log

    def stats(self) -> dict[str, Any]:
        return self.proxy.stats()

    def wait_for_connections(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` connections were accepted in total."""
        return self.proxy.wait_until(lambda: self.proxy.accepted >= n, timeout)

    def wait_for_active(self, n: int, timeout: float = 5.0) -> bool:
        """Block until exactly ``n`` connections are live."""
        return self.proxy.wait_until(lambda: self.proxy.active == n, timeout)

    def wait_for_fault(self, name: str, count: int = 1, timeout: float = 5.0) -> bool:
        """Block until ``count`` faults named ``name`` were injected."""
        return self.proxy.wait_until(
            lambda: self.proxy.stats()["faults_injected"].get(name, 0) >= count, timeout)

    def wait_for_frames(self, direction: str, n: int, timeout: float = 5.0) -> bool:
        """Block until ``n`` frames were seen in ``direction`` (``up``/``down``)."""
        return self.proxy.wait_until(lambda: self.proxy.frames[direction] >= n, timeout)


@contextlib.contextmanager
def proxy(upstream: tuple[str, int] | str, *, seed: int = 0, profile: str | None = None,
          profile_params: ProfileParams | None = None, faults: Sequence[Fault] = (),
          control: bool = False, fault_log_path: str | None = None,
          connect_timeout: float = 5.0,
          upstreams: Sequence[tuple[str, int]] | None = None) -> Iterator[ProxyHandle]:
    """Run a fault proxy in front of ``upstream`` for the ``with`` block.

    The proxy listens on 127.0.0.1 with an ephemeral port; its faults are the
    named ``profile`` (built with ``profile_params``) followed by ``faults``.
    ``control=True`` also serves the HTTP control API on another ephemeral
    port (``handle.control_url``).  On exit every connection is reset and all
    greenlets are stopped. ``upstreams`` (several nodes): connections are
    balanced round robin across them (:class:`sandbox.balance.RoundRobin`).
    """
    all_faults = (build_profile(profile, profile_params) if profile else ()) + tuple(faults)
    fp = FaultProxy(upstream=upstream, listen=("127.0.0.1", 0), faults=all_faults, seed=seed,
                    fault_log_path=fault_log_path, connect_timeout=connect_timeout,
                    balancer=RoundRobin(upstreams) if upstreams else None)
    fp.start()
    server: ControlServer | None = None
    try:
        if control:
            server = ControlServer(fp, ("127.0.0.1", 0))
            server.start()
        yield ProxyHandle(fp, server)
    finally:
        if server is not None:
            server.stop()
        fp.stop()
