"""Pacing for scenarios: a steady task rate per user, with a random phase."""

from __future__ import annotations

import random
import time

import gevent

__all__ = ["Pacer"]


class Pacer:
    """Constant pacing with a random phase: one task every ``interval`` seconds per user.

    Like locust's ``constant_pacing`` (a slow task delays the next one, no
    catch-up burst follows), but :meth:`stagger` first waits a random offset
    in [0, interval): locust starts each second's users together, and users
    paced in lockstep would all send in the same instant — a burst every
    interval instead of the steady rate the scenario means to apply.
    """

    def __init__(self, interval: float, rng: random.Random | None = None) -> None:
        self.interval = interval
        self._rng = rng or random.Random()
        self._due = time.monotonic()  # when the task that just ran was due

    def stagger(self) -> None:
        """Block for a random phase (call at the end of ``on_start``); the first task then runs."""
        gevent.sleep(self._rng.uniform(0.0, self.interval))
        self._due = time.monotonic()

    def wait_time(self) -> float:
        """Seconds until the next task is due (locust's ``wait_time``)."""
        now = time.monotonic()
        self._due = max(self._due + self.interval, now)
        return self._due - now
