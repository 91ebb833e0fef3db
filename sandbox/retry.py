"""Retrying in the sandbox: every loop backs off, and an error no retry can mend stops it at once.

:class:`Backoff` doubles its pause from ``base`` up to ``cap`` (bounded by a
deadline); :func:`retrying` runs a call until it succeeds, retrying only
what can succeed later — a timeout, or a ``WsError`` whose code is in
:data:`RETRYABLE_CODES` (the session was lost meanwhile, the rate limit, an
internal error, an expired token the client is refreshing) — and raises
:class:`NotRetryable` with a one-line message for the rest (an event the app
has no handler for, 1008; a payload it refuses, 1009; auth, 1003/1004).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import gevent

from wscore import ErrorCode
from wscore.errors import WsError

__all__ = ["RETRYABLE_CODES", "Backoff", "NotRetryable", "retrying"]

log = logging.getLogger("wscore.sandbox.runner")

T = TypeVar("T")

#: Error codes a later attempt of the same request can get past.
RETRYABLE_CODES = frozenset({ErrorCode.TOKEN_EXPIRED, ErrorCode.SESSION_NOT_FOUND,
                             ErrorCode.RATE_LIMIT_EXCEEDED, ErrorCode.INTERNAL_ERROR})


class NotRetryable(Exception):
    """A request failed in a way no retry mends; the message is one line naming it."""


class Backoff:
    """Exponential pauses: ``base``, ``2 × base`` … up to ``cap`` seconds."""

    def __init__(self, base: float = 0.05, cap: float = 1.0) -> None:
        self.base = base
        self.cap = cap
        self._next = base

    def reset(self) -> None:
        """Start again from ``base`` (after a success)."""
        self._next = self.base

    def pause(self, deadline: float | None = None) -> bool:
        """Sleep the next pause (never past ``deadline``, a ``time.monotonic()``); False if
        the deadline has passed, so there is no time for another attempt."""
        wait = self._next
        self._next = min(self._next * 2, self.cap)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            wait = min(wait, left)
        gevent.sleep(wait)  # a pause between attempts, not synchronisation
        return deadline is None or time.monotonic() < deadline


def retrying(call: Callable[[], T], *, what: str, event: str, deadline: float | None = None,
             backoff: Backoff | None = None) -> T:
    """``call()`` until it returns, backing off between attempts.

    ``what`` names the attempt in messages (``client 3's barrier``), ``event``
    the request it makes. Raises :class:`NotRetryable` for a ``WsError`` outside
    :data:`RETRYABLE_CODES`, ``TimeoutError`` when ``deadline`` passes; anything
    else ``call`` raises (e.g. ``ConnectionClosed``) propagates.
    """
    backoff = backoff or Backoff()
    while True:
        try:
            return call()
        except WsError as exc:
            if exc.code not in RETRYABLE_CODES:
                raise NotRetryable(f"{what}: the app answered {event!r} with {int(exc.code)} "
                                   f"{exc.code.wire_name} ({exc.message}); not retryable") from None
            log.info("%s: %s failed (%s); retrying", what, event, exc)
        except TimeoutError:
            log.info("%s: %s timed out; retrying", what, event)
        if not backoff.pause(deadline):
            raise TimeoutError(f"{what}: {event} did not succeed before the deadline")
