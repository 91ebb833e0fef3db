"""A round-robin balancing upstream for the fault proxy (``sandbox run --nodes N``).

Each proxied connection is one client connection, so balancing per
connection is what a TCP balancer in front of wscore nodes does: connection
*k* goes to node ``k mod N`` first, so a client's reconnect usually lands on
another node than its previous connection. A node that refuses the connect
(down, restarting) is skipped for the next one, as nginx's
``proxy_next_upstream error`` does; only when every node refuses does the
client's connection fail. No health checks, no stickiness: wscore nodes that
share Redis serve every session (SPEC §6), which is what this proves.
"""

from __future__ import annotations

import collections
import logging
import socket
from collections.abc import Sequence

__all__ = ["RoundRobin"]

log = logging.getLogger("wscore.sandbox.proxy")


class RoundRobin:
    """Connects proxied connection *k* to ``upstreams[(k + i) % N]``, the first ``i`` that accepts."""

    def __init__(self, upstreams: Sequence[tuple[str, int]]) -> None:
        if not upstreams:
            raise ValueError("RoundRobin needs at least one upstream")
        self.upstreams = [(str(h), int(p)) for h, p in upstreams]
        #: Connections carried per upstream, and connects an upstream refused.
        self.connected: collections.Counter[tuple[str, int]] = collections.Counter()
        self.refused: collections.Counter[tuple[str, int]] = collections.Counter()

    def connect(self, index: int, timeout: float) -> socket.socket:
        """A socket connected to an upstream for connection ``index``; OSError if none accepts."""
        n = len(self.upstreams)
        error: OSError | None = None
        for i in range(n):
            address = self.upstreams[(index + i) % n]
            try:
                sock = socket.create_connection(address, timeout=timeout)
            except OSError as exc:
                self.refused[address] += 1
                log.debug("conn %d: upstream %s:%d refused (%s), trying the next", index, *address, exc)
                error = exc
                continue
            self.connected[address] += 1
            return sock
        assert error is not None
        raise error

    def stats(self) -> dict[str, dict[str, int]]:
        return {f"{h}:{p}": {"connected": self.connected[(h, p)], "refused": self.refused[(h, p)]}
                for h, p in self.upstreams}
