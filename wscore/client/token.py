"""Tokens of the client: the handshake token and the in-band refresh (``sys.auth``).

With a ``token_provider`` every connection attempt authenticates with a fresh
token, and a token the server says expires (``expiresAt``) is refreshed
``token_refresh_margin`` before it does (at most halfway through its remaining
life, :func:`~wscore.protocol.client_session.token_refresh_at`) by a refresher
greenlet per link. A provider that raises is logged and retried with the
reconnect backoff; it never stops the client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.lock

from wscore.client.link import Link
from wscore.errors import ConnectionClosed, WsError
from wscore.protocol.client_session import expiry, token_refresh_at
from wscore.protocol.codes import ErrorCode

if TYPE_CHECKING:
    from wscore.client.client import WsClient

__all__ = ["TokenKeeper", "TokenProvider", "TokenUnavailable", "usable_token", "wait_result"]

log = logging.getLogger("wscore.client")

#: Returns a fresh token; may block cooperatively (e.g. ask an auth server).
TokenProvider = Callable[[], str]


class TokenUnavailable(Exception):
    """The ``token_provider`` failed for a handshake; the attempt counts as failed."""


def usable_token(token: object) -> bool:
    """A token fits an HTTP header and a query value: a non-empty str without line breaks."""
    return isinstance(token, str) and bool(token) and "\r" not in token and "\n" not in token


class TokenKeeper:
    """Where a client's tokens come from, and the refresh of the open link's token."""

    def __init__(self, client: WsClient, token: str | None, provider: TokenProvider | None) -> None:
        self._client = client
        self.token = token
        self.provider = provider
        self._static_used = False  # with a provider, `token` serves the first attempt only
        self._lock = gevent.lock.Semaphore()  # one sys.auth at a time
        self.refreshes = 0  # in-band refreshes the server acknowledged
        self.failures = 0  # failed provider calls and refused/unanswered sys.auth

    def fetch(self, timeout: float) -> str:
        """Call ``token_provider``, bounded by ``timeout``.

        Raises what the provider raised, ``TimeoutError``, or ``ValueError``
        for a return value that is no usable token.
        """
        provider = self.provider
        assert provider is not None
        if timeout <= 0:
            raise TimeoutError("no time left to call token_provider")
        timer = gevent.Timeout(timeout)
        timer.start()
        try:
            token = provider()
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            raise TimeoutError(f"token_provider did not return within {timeout:g} s") from None
        finally:
            timer.close()
        if not usable_token(token):
            # Never echo the value: it may be (part of) a secret.
            raise ValueError("token_provider returned no usable token "
                             "(want a non-empty string without line breaks)")
        return token

    def for_handshake(self, deadline: float) -> str | None:
        """The token for a connection attempt: the provider's, except a first-attempt ``token``."""
        if self.provider is None:
            return self.token
        if self.token is not None and not self._static_used:
            self._static_used = True
            return self.token
        try:
            return self.fetch(deadline - time.monotonic())
        except Exception as exc:
            self.failures += 1
            log.warning("token_provider failed for a connection attempt: %s: %s",
                        type(exc).__name__, exc)
            raise TokenUnavailable(f"token_provider failed: {type(exc).__name__}") from exc

    def refresh(self, link: Link, token: str | None, deadline: float) -> float | None:
        """Send ``sys.auth`` on ``link`` and wait for its ack; record and return the expiry."""
        if not self._lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise TimeoutError("another token refresh is still in flight")
        client = self._client
        try:
            if token is None:
                token = self.fetch(deadline - time.monotonic()) if self.provider else self.token
            assert token is not None  # refresh_token() checked there is a source
            if client._link is not link or not link.ready:
                raise ConnectionClosed(None, "connection ended during the token refresh",
                                       by_peer=None)
            result: gevent.event.AsyncResult = gevent.event.AsyncResult()
            cid, actions = client._session.auth(token)
            client._pending[cid] = result
            try:
                client._apply(actions)
                try:
                    reply = wait_result(result, max(deadline - time.monotonic(), 0.0))
                except TimeoutError:
                    raise TimeoutError("no answer to sys.auth in time") from None
            finally:
                client._pending.pop(cid, None)
                client._session.abandon(cid)
            expires_at = expiry(reply.get("expiresAt") if isinstance(reply, dict) else None)
            if not isinstance(reply, dict) or "expiresAt" not in reply:
                log.warning("sys.auth ack without expiresAt: automatic refresh stops")
            self.set_expiry(link, expires_at)
            self.refreshes += 1
            log.debug("token refreshed; %s", "no expiry" if expires_at is None else
                      f"expires in {expires_at - time.time():.1f} s")
            return expires_at
        finally:
            self._lock.release()

    def set_expiry(self, link: Link, expires_at: float | None) -> None:
        """Record ``link``'s token expiry and (re)arm its refresher."""
        link.expires_at = expires_at
        if expires_at is not None:
            link.refresh_at = token_refresh_at(
                expires_at, time.time(), self._client.config.token_refresh_margin)
        link.refresh_wake.set()

    def start(self, link: Link, expires_at: float | None) -> None:
        """Arm ``link``'s expiry; with a provider and an expiry, start its refresher."""
        self.set_expiry(link, expires_at)
        if expires_at is not None and self.provider is not None:
            link.refresher = gevent.spawn(self._loop, link)

    def _loop(self, link: Link) -> None:
        """Keep ``link``'s token fresh until the link ends (its end kills this greenlet).

        Never raises: a failure is logged and retried with the reconnect
        backoff; if retries run past the expiry, the server closes with 4005
        and the runner reconnects with a fresh token.
        """
        failures = 0
        timeout = self._client.config.token_refresh_timeout
        while link.expires_at is not None:
            link.refresh_wake.clear()
            now = time.time()
            if now < link.refresh_at:
                # Re-checked after every wake-up: a gevent timer armed from an I/O-woken
                # greenlet may fire early, and refresh_token() moves refresh_at (and wakes us).
                link.refresh_wake.wait(link.refresh_at - now)
                continue
            try:
                self.refresh(link, None, time.monotonic() + timeout)
                failures = 0
            except ConnectionClosed:
                return  # the link is ending; the runner takes it from here
            except WsError as exc:
                if exc.code is ErrorCode.AUTH_FAILED:
                    return  # refused: the server closes with 4004, which is terminal
                failures = self._failed(link, failures, exc)
            except Exception as exc:
                failures = self._failed(link, failures, exc)

    def _failed(self, link: Link, failures: int, exc: Exception) -> int:
        self.failures += 1
        delay = self._client._session.backoff_delay(failures)
        log.warning("token refresh failed (%s: %s); retrying in %.2f s",
                    type(exc).__name__, exc, delay)
        link.refresh_at = time.time() + delay
        return failures + 1


def wait_result(result: gevent.event.AsyncResult, timeout: float) -> Any:
    """``result.get()`` with a deadline that is re-checked (gevent timers may fire early)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 and not result.ready():
            raise TimeoutError
        try:
            return result.get(timeout=max(remaining, 0.0))
        except gevent.Timeout:
            continue
