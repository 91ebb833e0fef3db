"""The drain of a ``sandbox run``: after the network heals, wait until the traffic has settled.

Bounded by one deadline, with no sleeps — every wait is on an event:

1. **barrier**: every client completes its workload's barrier request
   (:meth:`~sandbox.workload.Workload.barrier`, ``echo`` by default; retried with
   backoff while the error is retryable), so all its earlier frames ran — a
   session runs its frames one at a time, in order — and, if its session was
   lost, has re-joined its room;
2. **fences**: every client publishes one last probe, the *fence* (filler
   :attr:`Fences.FILLER`), and the drain waits until every receiver has the
   fence of every other member of its room — per-sender order means
   everything sent before it has arrived or never will;
3. the outstanding RPCs get the remaining time.

A barrier refused with an error no retry mends (e.g. ``1008 handlerNotFound``)
stops the drain at once with that one line as its reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import gevent
import gevent.event

from wscore.client import ConnectionClosed
from wscore.sandbox.retry import NotRetryable, retrying

if TYPE_CHECKING:
    from wscore.sandbox.driver import Driver

__all__ = ["DrainResult", "Fences", "drain"]

log = logging.getLogger("wscore.sandbox.runner")


class Fences:
    """Which receivers have the fence of which senders (a receiver needs every other member's)."""

    #: The filler of a fence probe (random fillers are 8..160 characters: never this).
    FILLER = "fence"

    def __init__(self, rooms: Sequence[str]) -> None:
        self._rooms = list(rooms)
        self.seen: set[tuple[int, str]] = set()
        self.needed = sum(sum(1 for other in rooms if other == room) - 1 for room in rooms)
        self.complete = gevent.event.Event()
        if not self.needed:
            self.complete.set()

    def arrived(self, receiver: int, sender: str) -> None:
        self.seen.add((receiver, sender))
        if len(self.seen) >= self.needed:
            self.complete.set()


@attrs.frozen
class DrainResult:
    drained: bool
    #: Why not, in one line (None when drained).
    problem: str | None = None


def drain(driver: Driver, deadline: float) -> DrainResult:
    """Barrier, fences, outstanding RPCs (module docstring), all by ``deadline``."""
    n = len(driver.clients)
    barriers = [gevent.spawn(_barrier, driver, i, deadline) for i in range(n)]
    gevent.joinall(barriers)
    problems = [g.value for g in barriers if g.value is not None]
    if problems:
        log.warning("drain: %d of %d clients passed the barrier", n - len(problems), n)
        # A refusal no retry mends says more than the timeouts it may have caused.
        problems.sort(key=lambda p: not p[1])
        return DrainResult(False, problems[0][0])
    for i in range(n):
        driver.publish(i, Fences.FILLER)
    fences = driver.fences
    if not fences.complete.wait(max(0.0, deadline - time.monotonic())):
        log.warning("drain: %d of %d fences arrived", len(fences.seen), fences.needed)
        return DrainResult(False, f"{len(fences.seen)} of {fences.needed} fences arrived")
    driver.rpcs.join(timeout=max(0.0, deadline - time.monotonic()))
    if len(driver.rpcs):
        return DrainResult(False, f"{len(driver.rpcs)} RPCs still unanswered")
    return DrainResult(True)


def _barrier(driver: Driver, i: int, deadline: float) -> tuple[str, bool] | None:
    """None when client ``i`` passed the barrier, else why not (one line) and whether it
    was a refusal no retry mends."""
    client = driver.clients[i]
    request = driver.workloads[i].barrier()
    what = f"client {i}'s barrier"
    try:
        retrying(lambda: driver.request(i, request, timeout=max(0.0, deadline - time.monotonic())),
                 what=what, event=request.event, deadline=deadline)
    except NotRetryable as exc:
        log.error("%s", exc)
        return str(exc), True
    except TimeoutError:
        return f"{what} did not complete in time", False
    except ConnectionClosed as exc:
        return f"{what}: the client closed for good ({exc})", False
    # Every session loss must have been followed by a completed re-join.
    while driver.rejoins_done[i] < client.stats().sessions_lost:
        left = deadline - time.monotonic()
        if left <= 0:
            return f"client {i} did not re-join its room in time", False
        driver.rejoined[i].clear()
        driver.rejoined[i].wait(left)
    return None
