"""The I/O half of the client: sockets, greenlets, timers, callbacks.

All protocol decisions are delegated: framing to :mod:`wscore.protocol.frames`,
the upgrade to :mod:`wscore.protocol.handshake`, envelopes to
:mod:`wscore.protocol.envelope`, and every resume decision (numbering, the
unacknowledged buffer, de-duplication, ack batching, backoff) to the pure
:mod:`wscore.client.resume`. This module only moves bytes and runs callbacks.

Greenlets of one client (who waits on whom)::

    runner      connects, then *is* the reader of the current link; keeps every
                deadline (open, dead link, probe, delayed ack); sleeps the backoff
    writer      one per link; writes control frames and the numbered frames the
                link has not written yet; never waits on anything but the socket
    dispatcher  runs user callbacks and hooks, in arrival order, one at a time
    refresher   one per link, only with a ``token_provider`` and an expiring token:
                sleeps until the refresh is due, then fetches a token and sends
                ``sys.auth``; killed when its link ends

The runner never waits for a callback, so a callback may call
:meth:`WsClient.request` (the runner resolves it). Everything runs on the
gevent hub of the thread that created the client; the client is not
thread-safe across OS threads.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import secrets
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, overload

import attrs
import gevent
import gevent.event
import gevent.lock
import gevent.queue
import gevent.socket
import gevent.ssl

from wscore.client.config import WsClientConfig
from wscore.client.resume import (
    Backoff,
    ConnectOutcome,
    Delivery,
    ResumeState,
    token_refresh_at,
)
from wscore.errors import ConfigError, ConnectionClosed, PeerProtocolError, UsageError, WsError
from wscore.protocol import frames, handshake
from wscore.protocol.codes import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_REPLACED,
    REPLY_EVENT,
    ErrorCode,
    SysEvent,
)
from wscore.protocol.envelope import Envelope, decode_envelope, encode_envelope

__all__ = ["ClientStats", "SessionInfo", "WsClient"]

log = logging.getLogger("wscore.client")

_READ_CHUNK = 65536

#: Close codes after which reconnecting cannot help (SPEC §3): a takeover by another
#: connection (two clients would fight forever), refused or expired credentials, and
#: "message too big" (the offending frame would be re-sent after every reconnect).
#: 4005 (token expired) is terminal only for a client without a ``token_provider``:
#: with one, the client reconnects with a fresh token and resumes the session.
TERMINAL_CLOSE_CODES = frozenset(
    {
        CLOSE_REPLACED,
        CLOSE_MESSAGE_TOO_BIG,
        ErrorCode.AUTH_REQUIRED.close_code,
        ErrorCode.AUTH_FAILED.close_code,
        ErrorCode.TOKEN_EXPIRED.close_code,
    }
)

EventCallback = Callable[[Any], object]
#: Returns a fresh token; may block cooperatively (e.g. ask an auth server).
TokenProvider = Callable[[], str]
F = TypeVar("F", bound=Callable[..., object])


@attrs.frozen
class SessionInfo:
    """What ``sys.connected`` said about a connection (SPEC §3)."""

    session_id: str
    resumed: bool
    last_seq: int
    heartbeat: float
    #: When the connection's token expires (server's epoch seconds); None: never.
    expires_at: float | None = None


@attrs.frozen
class ClientStats:
    """Cheap counters (``WsClient.stats()``); monotonic over the client's life."""

    connects: int
    resumes: int
    sessions_lost: int
    failed_attempts: int
    frames_sent: int
    frames_received: int
    duplicates_dropped: int
    gaps: int
    unacked_frames: int
    queued_events: int
    #: In-band token refreshes the server acknowledged.
    token_refreshes: int = 0
    #: Failed ``token_provider`` calls and refused/unanswered ``sys.auth`` (retried).
    token_refresh_failures: int = 0
    #: Replies/errors carrying a ``c`` no pending request waits for: the reply to a
    #: timed-out request, or a second reply to one request (a handler run twice).
    unmatched_replies: int = 0


class _LinkDead(Exception):
    """The runner gave up on a link (deadline passed); the message says which."""


class _TokenUnavailable(Exception):
    """The ``token_provider`` failed for a handshake; the attempt counts as failed."""


class _Terminal(Exception):
    """Stop for good: ``error`` is raised by connect()/pending requests."""

    def __init__(self, error: WsError | ConnectionClosed) -> None:
        self.error = error
        super().__init__(str(error))


class _Link:
    """One TCP connection's state; owned by the runner, shared with its writer."""

    def __init__(self, sock: Any, *, max_message_bytes: int, open_deadline: float) -> None:
        self.sock = sock
        self.decoder = frames.FrameDecoder(role="client", max_message_bytes=max_message_bytes)
        self.open_deadline = open_deadline
        self.ready = False  # sys.connected seen: numbered frames may be written
        self.info: SessionInfo | None = None
        self.written = 0  # highest s written on this link
        self.control: list[bytes] = []  # control frames, written before data
        self.close_frame: bytes | None = None  # written last; the writer then stops
        self.close_sent = False
        self.wake = gevent.event.Event()
        self.writer: gevent.Greenlet | None = None
        self.last_rx = 0.0
        self.probe_sent = False
        self.probe_after = 0.0
        self.dead_after = 0.0
        self.pre_error: WsError | None = None  # an unnumbered sys.error before sys.connected
        self.early_bytes = b""
        self.write_error: OSError | None = None
        self.expires_at: float | None = None  # the token's expiry (server's epoch seconds)
        self.refresh_at = 0.0  # wall clock; when the refresher acts next
        self.refresh_wake = gevent.event.Event()  # a new refresh_at (or expiry) is set
        self.refresher: gevent.Greenlet | None = None
        self.auth_cids: set[int] = set()  # sys.auth requests in flight on this link

    def shutdown(self) -> None:
        """Make a blocked recv return at once (used by the writer on a write error)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class WsClient:
    """A WebSocket client whose session survives disconnects (SPEC §2, §3).

    ::

        client = WsClient("ws://localhost:8080/ws", token="…")

        @client.on("chat.new_message")
        def show(payload): ...

        client.connect()                       # blocks until the first session is open
        client.send("chat.message", {"roomId": "r", "text": "hi"})
        reply = client.request("room.join", {"roomId": "r"}, timeout=5.0)
        client.close()

    Contracts:

    * **Delivery.** Every numbered server frame reaches the callbacks once and
      in order across any number of reconnects. Frames passed to
      :meth:`send`/:meth:`request` run on the server exactly once, in order,
      provided the session survives; they are buffered (bounded) while offline.
    * **Session loss.** When a resume is refused (1006) the client starts a new
      session: ``on_session_lost`` hooks run with the server's :class:`WsError`,
      frames not yet acknowledged are dropped (counted in the log) and pending
      requests raise ``WsError`` with code 1006 — one exception type for every
      way a request fails on the server side.
    * **Reconnect.** Automatic, exponential backoff with full jitter; never after
      :meth:`close`, nor after close codes 4000 (session taken over), 4003, 4004,
      4005 (unless a ``token_provider`` is given), 1009 (a frame over the
      server's limit would be re-sent forever), nor after an HTTP 4xx answer to
      the upgrade (408 and 429 excepted).
    * **Token refresh.** With a ``token_provider``, every connection attempt
      authenticates with a fresh token from it, and a token the server says
      expires (``sys.connected``'s ``expiresAt``) is refreshed in-band with
      ``sys.auth`` ``token_refresh_margin`` before expiry (at most halfway
      through its remaining life). A provider that raises is logged and
      retried with backoff; it never stops the client.
    * **Callbacks** run in the client's dispatcher greenlet, in arrival order;
      an exception in one is logged (``wscore.client``) and swallowed.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_provider: TokenProvider | None = None,
        config: WsClientConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """``rng`` draws the backoff jitter (seed it to replay a run); masks use ``os.urandom``.

        ``token_provider()`` returns a fresh token (a non-empty string without
        line breaks). It runs in the client's greenlets and may block
        cooperatively (bounded by ``open_timeout`` for a handshake and
        ``token_refresh_timeout`` for a refresh). It is called for every
        connection attempt and for every in-band refresh; given together with
        ``token``, ``token`` is used for the first attempt only. Its
        exceptions are logged and the call retried with backoff.

        Raises :class:`~wscore.errors.ConfigError` for an unusable URL, token
        or provider.
        """
        self._url = handshake.parse_ws_url(url)
        if token is not None and (not isinstance(token, str) or "\r" in token or "\n" in token):
            raise ConfigError("token must be a string without line breaks")
        if token_provider is not None and not callable(token_provider):
            raise ConfigError("token_provider must be a callable returning a token")
        self._token = token
        self._provider = token_provider
        self._static_token_used = False  # with a provider, `token` serves the first attempt only
        self._refresh_lock = gevent.lock.Semaphore()  # one sys.auth at a time
        self.config = config if config is not None else WsClientConfig()
        cfg = self.config
        self._state = ResumeState(
            max_unacked_frames=cfg.max_unacked_frames,
            max_unacked_bytes=cfg.max_unacked_bytes,
            ack_every_frames=cfg.ack_every_frames,
            ack_delay=cfg.ack_delay,
            client_tag=secrets.token_hex(8),
        )
        self._backoff = Backoff(
            base=cfg.backoff_base, cap=cfg.backoff_cap, rng=rng or random.Random()
        )
        self._listeners: dict[str, list[EventCallback]] = {}
        self._any_listeners: list[Callable[[str, Any], object]] = []
        self._hooks: dict[str, list[Callable[[Any], object]]] = {
            "connect": [], "disconnect": [], "resume": [], "session_lost": [],
        }
        self._pending: dict[int, gevent.event.AsyncResult] = {}
        self._cids = itertools.count(1)
        self._events: gevent.queue.Queue[Any] = gevent.queue.Queue(cfg.max_queued_events)
        self._runner: gevent.Greenlet | None = None
        self._dispatcher: gevent.Greenlet | None = None
        self._link: _Link | None = None
        self._up = gevent.event.Event()  # set while connected, and once closed (wakes waiters)
        self._closed_event = gevent.event.Event()
        self._wake_runner = gevent.event.Event()  # interrupts the backoff sleep on close()
        self._closing = False
        self._closed_error: WsError | ConnectionClosed | None = None
        self._failures = 0  # consecutive failed attempts since the last sys.connected
        self._last_failure = ""
        self._counters = dict.fromkeys(
            ("connects", "resumes", "sessions_lost", "failed_attempts", "frames_sent",
             "frames_received", "duplicates_dropped", "gaps", "unmatched_replies", "token_refreshes",
             "token_refresh_failures"), 0)

    # -- properties -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The URL given (without the resume parameters the client adds)."""
        return self._url.geturl()

    @property
    def session_id(self) -> str | None:
        """The current session's id (a secret: do not log or share it); None before the first."""
        return self._state.session_id

    @property
    def connected(self) -> bool:
        """True while a link is open and its ``sys.connected`` has arrived."""
        link = self._link
        return link is not None and link.ready and not self._closing

    @property
    def token_expires_at(self) -> float | None:
        """When the open connection's token expires (server's epoch seconds).

        From ``sys.connected`` or the latest refresh; None while offline or
        when the token never expires.
        """
        link = self._link
        return link.expires_at if link is not None and link.ready else None

    @property
    def closed(self) -> bool:
        """True once the client stopped for good (close(), terminal code, gave up)."""
        return self._closed_error is not None

    @property
    def closing(self) -> bool:
        """True from the moment :meth:`close` is called (hooks that run during the close
        can tell it from a network loss), and once the client stopped for good."""
        return self._closing or self.closed

    @property
    def close_reason(self) -> WsError | ConnectionClosed | None:
        """Why the client stopped (what its methods now raise); None while it runs."""
        return self._closed_error

    def wait_closed(self, timeout: float | None = None) -> bool:
        """Block until the client has stopped for good; False if ``timeout`` passed first."""
        if timeout is None:
            self._closed_event.wait()
            return True
        deadline = time.monotonic() + timeout
        while not self._closed_event.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._closed_event.wait(remaining)  # re-checked: gevent timers may fire early
        return True

    def stats(self) -> ClientStats:
        return ClientStats(
            **self._counters,
            unacked_frames=self._state.unacked_frames,
            queued_events=self._events.qsize(),
        )

    # -- registration -----------------------------------------------------------------------
    @overload
    def on(self, event: str) -> Callable[[F], F]: ...
    @overload
    def on(self, event: str, callback: F) -> F: ...

    def on(self, event: str, callback: F | None = None) -> F | Callable[[F], F]:
        """Call ``callback(payload)`` for every ``event`` the server sends.

        Usable as ``client.on("x", fn)`` or as the decorator ``@client.on("x")``.
        ``"sys.error"`` listeners receive the payload of errors that answer no
        request (e.g. a :meth:`send` the server refused).
        """
        if not isinstance(event, str) or not event:
            raise UsageError(f"event must be a non-empty string, got {event!r}")

        def register(fn: F) -> F:
            self._listeners.setdefault(event, []).append(fn)
            return fn

        return register if callback is None else register(callback)

    def off(self, event: str, callback: EventCallback | None = None) -> None:
        """Remove one callback of ``event`` (or all of them when ``callback`` is None)."""
        if callback is None:
            self._listeners.pop(event, None)
            return
        fns = self._listeners.get(event, [])
        if callback in fns:
            fns.remove(callback)

    def on_any(self, callback: F) -> F:
        """Call ``callback(event, payload)`` for every delivered event (after ``on`` listeners)."""
        self._any_listeners.append(callback)
        return callback

    def on_connect(self, hook: F) -> F:
        """``hook(info: SessionInfo)`` after every ``sys.connected`` (new or resumed)."""
        self._hooks["connect"].append(hook)
        return hook

    def on_disconnect(self, hook: F) -> F:
        """``hook(reason: ConnectionClosed)`` whenever an open link ends (``by_peer`` None: network)."""
        self._hooks["disconnect"].append(hook)
        return hook

    def on_resume(self, hook: F) -> F:
        """``hook(info: SessionInfo)`` when a reconnect resumed the session (after on_connect)."""
        self._hooks["resume"].append(hook)
        return hook

    def on_session_lost(self, hook: F) -> F:
        """``hook(error: WsError)`` when a resume was refused (1006); runs before on_connect."""
        self._hooks["session_lost"].append(hook)
        return hook

    # -- lifecycle --------------------------------------------------------------------------
    def connect(self, *, timeout: float | None = None) -> SessionInfo:
        """Start the client and block until its first session is open.

        Retries with backoff for up to ``timeout`` seconds (default
        ``config.connect_timeout``). Raises :class:`WsError` if the server
        refused the handshake (1003/1004; the client is then closed),
        :class:`ConnectionClosed` if it cannot connect for good, and
        ``TimeoutError`` on timeout — a ``connect()`` that started the client
        then stops it again, so ``connect()`` may simply be retried. On a
        started client it waits for the (re)connection in progress.
        """
        if self._closed_error is not None:
            raise self._closed_error
        started_here = self._runner is None
        if started_here:
            self._start()
        wait = self.config.connect_timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            link = self._link
            if link is not None and link.info is not None and self.connected:
                return link.info
            if self._closed_error is not None:
                raise self._closed_error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._up.is_set():
                gevent.sleep(0)  # the runner is between setting _up and finishing its step
            else:
                self._up.wait(remaining)  # re-checked: gevent timers may fire early
        if started_here and self._runner is not None:
            self._runner.kill()
            self._runner = None
        last = f" (last attempt: {self._last_failure})" if self._last_failure else ""
        raise TimeoutError(f"no session with {self._url.host_header} within {wait:g} s{last}")

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> None:
        """Close for good: no reconnect afterwards. Idempotent; safe from callbacks.

        An open link gets the RFC 6455 close handshake, bounded by
        ``config.close_timeout``; frames already handed to :meth:`send` are
        written before the close frame. Pending requests raise
        :class:`ConnectionClosed`; buffered frames of an offline client are dropped.
        Callbacks for events already received run before ``close()`` returns
        (also bounded by ``close_timeout``) unless it is called from a callback.
        """
        if self._closed_error is not None:
            return
        self._closing = True
        self._wake_runner.set()
        error = ConnectionClosed(code, reason, by_peer=False)
        runner = self._runner
        link = self._link
        current = gevent.getcurrent()
        if runner is not None and runner is not current:
            if link is not None and link.ready:
                link.close_frame = frames.encode_close(code, reason, mask_key=os.urandom(4))
                link.wake.set()
                runner.join(timeout=self.config.close_timeout)
            if not runner.dead:
                runner.kill(block=True, timeout=self.config.close_timeout)
        self._finish(error)
        dispatcher = self._dispatcher
        if dispatcher is not None and dispatcher is not current:
            # Callbacks of events received before the close still run (bounded wait).
            dispatcher.join(timeout=self.config.close_timeout)

    # -- token refresh ------------------------------------------------------------------------
    def refresh_token(self, token: str | None = None, *, timeout: float | None = None) -> float | None:
        """Re-authenticate the open connection now with ``sys.auth``; return the new expiry.

        The token is ``token`` if given, else a fresh one from
        ``token_provider``, else the constructor's ``token``. Without a
        provider, a ``token`` accepted here also becomes the token of later
        reconnects. On success the automatic refresh (provider only) is
        re-armed from the returned expiry (server's epoch seconds; None:
        the token never expires). ``timeout`` (default
        ``config.token_refresh_timeout``) bounds the provider call and the
        server's answer together.

        Raises :class:`UsageError` when there is no token to send,
        :class:`ConnectionClosed` when no connection is open or it ends
        meanwhile (a reconnect authenticates anew anyway) and after
        :meth:`close`, :class:`WsError` 1004 when the server refused the token
        (the server then closes with 4004 and the client stops for good),
        ``TimeoutError``, and what ``token_provider`` raises (``ValueError`` for
        an unusable token it returned).
        """
        if self._closed_error is not None:
            raise self._closed_error
        if token is not None and not _usable_token(token):
            raise UsageError("token must be a non-empty string without line breaks")
        if token is None and self._provider is None and self._token is None:
            raise UsageError("refresh_token() needs a token: pass one or give the client "
                             "a token_provider")
        link = self._link
        if link is None or not link.ready or self._closing:
            raise ConnectionClosed(None, "not connected: the next connection authenticates anew",
                                   by_peer=None)
        wait = self.config.token_refresh_timeout if timeout is None else timeout
        expires_at = self._refresh(link, token, time.monotonic() + wait)
        if token is not None and self._provider is None:
            self._token = token
        return expires_at

    def _refresh(self, link: _Link, token: str | None, deadline: float) -> float | None:
        """Send ``sys.auth`` on ``link`` and wait for its ack; record and return the expiry."""
        if not self._refresh_lock.acquire(timeout=max(deadline - time.monotonic(), 0.0)):
            raise TimeoutError("another token refresh is still in flight")
        try:
            if token is None:
                token = (self._fetch_token(deadline - time.monotonic())
                         if self._provider is not None else self._token)
            assert token is not None  # refresh_token() checked there is a source
            if self._link is not link or not link.ready:
                raise ConnectionClosed(None, "connection ended during the token refresh",
                                       by_peer=None)
            cid = next(self._cids)
            result: gevent.event.AsyncResult = gevent.event.AsyncResult()
            self._pending[cid] = result
            link.auth_cids.add(cid)
            try:
                # Unnumbered: sys.* frames are outside the numbered stream (SPEC §3); the
                # server's ack is numbered and arrives through _deliver like any reply.
                self._send_control(link, SysEvent.AUTH.value, {"token": token}, cid)
                try:
                    reply = _wait_result(result, max(deadline - time.monotonic(), 0.0))
                except TimeoutError:
                    raise TimeoutError("no answer to sys.auth in time") from None
            finally:
                self._pending.pop(cid, None)
                link.auth_cids.discard(cid)
            expires_at = _expiry(reply.get("expiresAt") if isinstance(reply, dict) else None)
            if not isinstance(reply, dict) or "expiresAt" not in reply:
                log.warning("sys.auth ack without expiresAt: automatic refresh stops")
            self._set_expiry(link, expires_at)
            self._counters["token_refreshes"] += 1
            log.debug("token refreshed; %s", "no expiry" if expires_at is None else
                      f"expires in {expires_at - time.time():.1f} s")
            return expires_at
        finally:
            self._refresh_lock.release()

    def _set_expiry(self, link: _Link, expires_at: float | None) -> None:
        """Record ``link``'s token expiry and (re)arm its refresher."""
        link.expires_at = expires_at
        if expires_at is not None:
            link.refresh_at = token_refresh_at(
                expires_at, time.time(), self.config.token_refresh_margin)
        link.refresh_wake.set()

    def _fetch_token(self, timeout: float) -> str:
        """Call ``token_provider``, bounded by ``timeout``.

        Raises what the provider raised, ``TimeoutError``, or ``ValueError``
        for a return value that is no usable token.
        """
        provider = self._provider
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
        if not _usable_token(token):
            # Never echo the value: it may be (part of) a secret.
            raise ValueError("token_provider returned no usable token "
                             "(want a non-empty string without line breaks)")
        return token

    def _handshake_token(self, deadline: float) -> str | None:
        """The token for a connection attempt: the provider's, except a first-attempt ``token``."""
        if self._provider is None:
            return self._token
        if self._token is not None and not self._static_token_used:
            self._static_token_used = True
            return self._token
        try:
            return self._fetch_token(deadline - time.monotonic())
        except Exception as exc:
            self._counters["token_refresh_failures"] += 1
            log.warning("token_provider failed for a connection attempt: %s: %s",
                        type(exc).__name__, exc)
            raise _TokenUnavailable(f"token_provider failed: {type(exc).__name__}") from exc

    def _refresh_loop(self, link: _Link) -> None:
        """Keep ``link``'s token fresh until the link ends (``_end_link`` kills this greenlet).

        Never raises: a failure is logged and retried with the reconnect
        backoff; if retries run past the expiry, the server closes with 4005
        and the runner reconnects with a fresh token.
        """
        failures = 0
        while link.expires_at is not None:
            link.refresh_wake.clear()
            now = time.time()
            if now < link.refresh_at:
                # Re-checked after every wake-up: a gevent timer armed from an I/O-woken
                # greenlet may fire early, and refresh_token() moves refresh_at (and wakes us).
                link.refresh_wake.wait(link.refresh_at - now)
                continue
            try:
                self._refresh(link, None, time.monotonic() + self.config.token_refresh_timeout)
                failures = 0
            except ConnectionClosed:
                return  # the link is ending; the runner takes it from here
            except WsError as exc:
                if exc.code is ErrorCode.AUTH_FAILED:
                    return  # refused: the server closes with 4004, which is terminal
                failures = self._refresh_failed(link, failures, exc)
            except Exception as exc:
                failures = self._refresh_failed(link, failures, exc)

    def _refresh_failed(self, link: _Link, failures: int, exc: Exception) -> int:
        self._counters["token_refresh_failures"] += 1
        delay = self._backoff.delay(failures)
        log.warning("token refresh failed (%s: %s); retrying in %.2f s",
                    type(exc).__name__, exc, delay)
        link.refresh_at = time.time() + delay
        return failures + 1

    # -- sending ----------------------------------------------------------------------------
    def drop_connection(self) -> bool:
        """Cut the current link abruptly, as a network fault would (for tests and load tests).

        The socket is reset (TCP RST, no close frame); the client notices, reconnects
        and resumes exactly as after any network loss. Returns False when there was no
        open link to cut.
        """
        link = self._link
        if link is None or not self.connected:
            return False
        try:
            # SO_LINGER 0: close() sends RST instead of FIN (RFC 793 abort); the greenlets
            # blocked on this socket then fail, which the runner treats as link loss.
            link.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            link.sock.close()
        except OSError as exc:
            log.debug("drop_connection: %s", exc)
        return True

    def send(self, event: str, payload: Any = None) -> None:
        """Queue ``event`` for the server (exactly once while the session lives); never blocks.

        Raises :class:`~wscore.errors.SendBufferFull` when ``max_unacked_frames``
        or ``max_unacked_bytes`` would be exceeded, :class:`ConnectionClosed`
        after :meth:`close`, :class:`UsageError` for a reserved ``sys.*`` event,
        ``TypeError``/``ValueError`` for a payload JSON cannot encode.
        """
        self._enqueue(event, payload, None)

    def request(self, event: str, payload: Any = None, *, timeout: float | None = None) -> Any:
        """Send ``event`` with a correlation id and block until its reply; return its payload.

        Raises :class:`WsError` with the server's code when it answers
        ``sys.error`` (1006 if the session was lost meanwhile),
        ``TimeoutError`` after ``timeout`` seconds (default
        ``config.request_timeout``; the frame stays queued and may still run),
        :class:`ConnectionClosed` if the client closes meanwhile, and what
        :meth:`send` raises. A request made while offline completes after the
        reconnect.
        """
        cid = next(self._cids)
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._pending[cid] = result
        try:
            self._enqueue(event, payload, cid)
            wait = self.config.request_timeout if timeout is None else timeout
            try:
                return _wait_result(result, wait)
            except TimeoutError:
                raise TimeoutError(f"no reply to {event!r} within {wait:g} s") from None
        finally:
            self._pending.pop(cid, None)

    def _enqueue(self, event: str, payload: Any, cid: int | None) -> None:
        if self._closed_error is not None:
            raise self._closed_error
        if not isinstance(event, str) or not event:
            raise UsageError(f"event must be a non-empty string, got {event!r}")
        if event.startswith("sys."):
            raise UsageError(f"{event!r}: the sys.* namespace is reserved for the protocol")
        frame = encode_envelope(event, payload, now_ms=_now_ms(), correlation_id=cid)
        self._state.enqueue(frame)
        link = self._link
        if link is not None:
            link.wake.set()

    # -- the runner ---------------------------------------------------------------------------
    def _start(self) -> None:
        if self._dispatcher is None:
            self._dispatcher = gevent.spawn(self._dispatch_loop)
        self._failures = 0
        self._runner = gevent.spawn(self._run)

    def _run(self) -> None:
        try:
            self._run_links()
        except Exception as exc:
            # A bug must not leave connect()/request() waiting forever: stop loudly.
            log.exception("client runner failed")
            self._finish(ConnectionClosed(None, f"client failure: {type(exc).__name__}: {exc}"))
        finally:
            # Also reached when close() or a timed-out connect() kills the runner.
            if self._link is not None:
                self._end_link(self._link, ConnectionClosed(None, "client stopped", by_peer=False))

    def _run_links(self) -> None:
        first_attempt = True
        while not self._closing:
            if not first_attempt:
                delay = self._backoff.delay(self._failures)
                log.debug("reconnecting to %s in %.3f s", self._url.host_header, delay)
                _sleep_until(self._wake_runner, time.monotonic() + delay)
                if self._closing:
                    break
            first_attempt = False
            link: _Link | None = None
            reason: ConnectionClosed
            try:
                link = self._open_link()
                self._link = link
                self._serve(link)
            except _Terminal as stop:
                reason = _as_closed(stop.error)
                if link is not None:
                    self._fail_auth(link, stop.error)  # a refused sys.auth raises WsError(1004)
                self._end_link(link, reason)
                self._finish(stop.error)
                return
            except ConnectionClosed as exc:
                reason = exc
            except (OSError, PeerProtocolError, _LinkDead, _TokenUnavailable) as exc:
                # A failed write shuts the socket, so the read fails too: report the cause.
                cause: BaseException = exc
                if link is not None and link.write_error is not None:
                    cause = link.write_error
                reason = ConnectionClosed(
                    getattr(cause, "close_code", None), f"{type(cause).__name__}: {cause}",
                    by_peer=None,
                )
            self._end_link(link, reason)
            if self._closing:
                break
            if link is None or link.info is None:
                self._failures += 1
                self._last_failure = reason.reason
                self._counters["failed_attempts"] += 1
                log.info("connection to %s failed: %s", self._url.host_header, reason.reason)
                limit = self.config.max_reconnect_attempts
                if not self.config.reconnect or (limit is not None and self._failures >= limit):
                    self._finish(ConnectionClosed(
                        None, f"gave up after {self._failures} failed attempt(s): {reason.reason}"
                    ))
                    return
            else:
                log.info("link to %s lost: %s", self._url.host_header, reason)
                if not self.config.reconnect:
                    self._finish(reason)
                    return

    def _end_link(self, link: _Link | None, reason: ConnectionClosed) -> None:
        self._link = None
        if link is None:
            return
        if not self._closed_error:
            self._up.clear()
        refresher = link.refresher
        if refresher is not None and not refresher.dead:
            refresher.kill(block=False)
        self._fail_auth(link, reason)
        writer = link.writer
        if writer is not None and not writer.dead:
            if link.close_frame is not None and not link.close_sent:
                writer.join(timeout=min(1.0, self.config.close_timeout))
            writer.kill(block=False)
        link.close()
        if link.info is not None:
            self._emit_hook("disconnect", reason)

    def _fail_auth(self, link: _Link, error: BaseException) -> None:
        """Fail the ``sys.auth`` requests in flight on ``link`` (their link is gone)."""
        for cid in list(link.auth_cids):
            waiter = self._pending.pop(cid, None)
            if waiter is not None and not waiter.ready():
                waiter.set_exception(error)
        link.auth_cids.clear()

    def _open_link(self) -> _Link:
        """TCP connect and HTTP upgrade (RFC 6455 §4.1); sys.connected is read by _serve.

        The ``token_provider`` call, if any, is part of the attempt (``open_timeout``).
        """
        cfg = self.config
        deadline = time.monotonic() + cfg.open_timeout
        token = self._handshake_token(deadline)
        params = self._state.resume_params()
        headers = list(cfg.headers)
        if token is not None:
            if cfg.token_in_query:
                params = {"token": token, **params}
            else:
                headers.append(("Authorization", f"Bearer {token}"))
        url = self._url
        if params:
            url = url.with_resource(handshake.replace_query(url.resource, params))
        sock = gevent.socket.create_connection(
            (url.host, url.port), timeout=max(deadline - time.monotonic(), 0.001))
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if url.secure:
                ctx = cfg.ssl_context or gevent.ssl.create_default_context()
                sock = ctx.wrap_socket(sock, server_hostname=url.host)
            key = handshake.make_key(os.urandom(16))
            sock.sendall(handshake.build_upgrade_request(url, key=key, headers=headers))
            buf = b""
            while True:
                data = _recv_by(sock, deadline, "HTTP upgrade")
                if not data:
                    raise ConnectionClosed(None, "connection closed during the HTTP upgrade")
                buf += data
                response = handshake.parse_upgrade_response(buf)
                if response is not None:
                    break
            if response.status != 101:
                refusal = ConnectionClosed(
                    None, f"upgrade refused: HTTP {response.status} {response.reason}",
                    by_peer=True,
                )
                # A 4xx (wrong path, forbidden origin…) will not fix itself; 408/429/5xx may.
                if 400 <= response.status < 500 and response.status not in (408, 429):
                    raise _Terminal(refusal)
                raise refusal
            handshake.check_upgrade_response(response, key)
            # From here on the runner bounds reads with gevent.Timeout: the socket's own
            # timeout would also apply to the writer's sendall on the same socket.
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        link = _Link(sock, max_message_bytes=cfg.max_message_bytes, open_deadline=deadline)
        link.last_rx = time.monotonic()
        link.early_bytes = response.rest  # frames that arrived with the 101; _serve reads them
        return link

    def _serve(self, link: _Link) -> NoReturn:
        """Read ``link`` until it ends (always by raising); keep every deadline."""
        state = self._state
        sock = link.sock
        if link.early_bytes:
            self._feed(link, link.early_bytes)
            link.early_bytes = b""
        while True:
            now = time.monotonic()
            if not link.ready:
                if now >= link.open_deadline:
                    raise _LinkDead("no sys.connected within open_timeout")
                wake_at = link.open_deadline
            else:
                silent = now - link.last_rx
                if silent >= link.dead_after:
                    raise _LinkDead(f"no frame from the server for {silent:.2f} s")
                if not link.probe_sent and silent >= link.probe_after:
                    link.probe_sent = True
                    self._send_control(link, SysEvent.PING.value, None)
                if state.ack_due(now):
                    self._send_control(link, SysEvent.ACK.value, {"s": state.take_ack()})
                wake_at = link.last_rx + link.dead_after
                if not link.probe_sent:
                    wake_at = min(wake_at, link.last_rx + link.probe_after)
                ack_at = state.ack_deadline()
                if ack_at is not None:
                    wake_at = min(wake_at, ack_at)
            # A gevent timer may fire early; the loop re-checks the clock and re-arms.
            timer = gevent.Timeout(max(wake_at - now, 0.001))
            timer.start()
            try:
                data = sock.recv(_READ_CHUNK)
            except gevent.Timeout as exc:
                if exc is not timer:
                    raise
                continue
            finally:
                timer.close()
            if not data:
                raise ConnectionClosed(None, "connection lost (EOF)", by_peer=None)
            link.last_rx = time.monotonic()
            link.probe_sent = False
            self._feed(link, data)

    def _feed(self, link: _Link, data: bytes) -> None:
        for event in link.decoder.feed(data):
            if isinstance(event, frames.TextMessage):
                self._on_text(link, event.text)
            elif isinstance(event, frames.PingReceived):
                # RFC 6455 §5.5.2: answer with a pong carrying the same data.
                link.control.append(frames.encode_frame(
                    frames.OP_PONG, event.payload, mask_key=os.urandom(4)))
                link.wake.set()
            elif isinstance(event, frames.CloseReceived):
                self._on_close_frame(link, event)
            elif isinstance(event, frames.BinaryMessage):
                log.warning("ignoring a binary message (%d bytes): wscore speaks JSON text",
                            len(event.data))
            # PongReceived: last_rx was refreshed already, nothing else to do.

    def _on_close_frame(self, link: _Link, event: frames.CloseReceived) -> None:
        by_peer = link.close_frame is None  # else this is the echo of our own close
        if link.close_frame is None:
            # RFC 6455 §5.5.1: echo the status code, then the server closes TCP.
            link.close_frame = frames.encode_close(event.code, mask_key=os.urandom(4))
            link.wake.set()
            if link.writer is None:
                link.writer = gevent.spawn(self._write_loop, link)
        closed = ConnectionClosed(event.code, event.reason, by_peer=by_peer)
        terminal = event.code in TERMINAL_CLOSE_CODES
        if event.code == ErrorCode.TOKEN_EXPIRED.close_code and self._provider is not None:
            # The server keeps the session of an expired connection (SPEC §3): reconnect
            # with a fresh token from the provider and resume it.
            log.info("token expired before a refresh; reconnecting with a fresh token")
            terminal = False
        if terminal and not self._closing:
            raise _Terminal(link.pre_error or closed)
        raise closed

    def _on_text(self, link: _Link, text: str) -> None:
        try:
            env = decode_envelope(text)
        except WsError as exc:
            log.warning("ignoring an invalid frame from the server: %s", exc.message)
            return
        self._counters["frames_received"] += 1
        if env.seq is None:
            self._on_unnumbered(link, env)
            return
        if not link.ready:
            raise PeerProtocolError("numbered frame before sys.connected")
        verdict = self._state.on_server_frame(env.seq, time.monotonic())
        if verdict is Delivery.DUPLICATE:
            self._counters["duplicates_dropped"] += 1
            return
        if verdict is Delivery.GAP:
            self._counters["gaps"] += 1
            log.error("server stream skipped to s=%d: frames were lost by the server", env.seq)
        self._deliver(env)

    def _deliver(self, env: Envelope) -> None:
        event = env.event
        cid = env.correlation_id
        if event == REPLY_EVENT and cid is not None:
            waiter = self._pending.get(cid)  # type: ignore[arg-type]
            if waiter is not None:
                waiter.set(env.payload)
            else:
                self._counters["unmatched_replies"] += 1
                log.debug("reply to an abandoned request c=%r dropped", cid)
            return
        if event == SysEvent.ERROR.value:
            error = WsError.from_payload(env.payload)
            waiter = self._pending.get(cid) if cid is not None else None  # type: ignore[arg-type]
            if waiter is not None:
                waiter.set_exception(error)
                return
            if cid is not None:
                self._counters["unmatched_replies"] += 1
                log.debug("error for an abandoned request c=%r dropped: %s", cid, error)
                return
            if not self._listeners.get(event) and not self._any_listeners:
                log.warning("server error: %s", error)
        self._events.put(("event", event, env.payload))

    def _on_unnumbered(self, link: _Link, env: Envelope) -> None:
        event = env.event
        payload = env.payload
        if event == SysEvent.CONNECTED.value:
            self._on_connected(link, payload)
        elif event == SysEvent.ACK.value:
            s = payload.get("s") if isinstance(payload, dict) else None
            if isinstance(s, int) and not isinstance(s, bool):
                self._state.on_server_ack(s)
        elif event == SysEvent.PONG.value:
            pass  # liveness only: last_rx was refreshed by the read
        elif event == SysEvent.ERROR.value:
            error = WsError.from_payload(payload)
            if not link.ready:
                # 1003/1004 precede the terminal close; 1006 precedes a fresh sys.connected.
                link.pre_error = error
                return
            if error.code in (ErrorCode.TOKEN_EXPIRED, ErrorCode.AUTH_FAILED):
                # The close 4005/4004 follows; a terminal one raises this error (a refused
                # sys.auth: 1004 + 4004).
                link.pre_error = error
            self._deliver(env)
        else:
            log.warning("unexpected unnumbered %r frame from the server", event)
            if link.ready:
                self._events.put(("event", event, payload))

    def _on_connected(self, link: _Link, payload: Any) -> None:
        if link.ready:
            raise PeerProtocolError("second sys.connected on one connection")
        p = payload if isinstance(payload, dict) else {}
        session_id = p.get("sessionId")
        last_seq = p.get("lastSeq", 0)
        heartbeat = p.get("heartbeat", self.config.default_heartbeat)
        if (not isinstance(session_id, str) or not session_id
                or not isinstance(last_seq, int) or isinstance(last_seq, bool)
                or not isinstance(heartbeat, (int, float)) or not heartbeat > 0):
            raise PeerProtocolError("malformed sys.connected payload")
        result = self._state.on_connected(
            session_id, resumed=p.get("resumed") is True, last_seq=last_seq)
        raw_expiry = p.get("expiresAt")
        expires_at = _expiry(raw_expiry)
        if expires_at is None and raw_expiry is not None:
            log.warning("ignoring a malformed expiresAt in sys.connected")
        info = SessionInfo(
            session_id=session_id,
            resumed=result.outcome is ConnectOutcome.RESUMED,
            last_seq=last_seq,
            heartbeat=float(heartbeat),
            expires_at=expires_at,
        )
        cfg = self.config
        link.dead_after = cfg.dead_link_timeout or max(2.0 * heartbeat, heartbeat + 1.0)
        link.probe_after = min(cfg.probe_after or heartbeat, link.dead_after * 0.75)
        link.written = result.resend_after
        link.info = info
        link.ready = True
        self._failures = 0
        self._counters["connects"] += 1
        if result.outcome is ConnectOutcome.LOST:
            self._counters["sessions_lost"] += 1
            error = link.pre_error
            if error is None or error.code is not ErrorCode.SESSION_NOT_FOUND:
                error = WsError(ErrorCode.SESSION_NOT_FOUND, "the server did not resume the session")
            log.warning("session lost (%s); %d unacknowledged frame(s) and %d pending "
                        "request(s) dropped", error.message, result.dropped_frames,
                        len(self._pending))
            self._fail_pending(error)
            self._emit_hook("session_lost", error)
        elif result.outcome is ConnectOutcome.RESUMED:
            self._counters["resumes"] += 1
            if result.server_behind:
                log.error("server resumed at lastSeq=%d below the %d frames already delivered",
                          last_seq, self._state.delivered)
        self._emit_hook("connect", info)
        if info.resumed:
            self._emit_hook("resume", info)
        link.writer = gevent.spawn(self._write_loop, link)
        link.wake.set()
        self._set_expiry(link, expires_at)
        if expires_at is not None and self._provider is not None:
            link.refresher = gevent.spawn(self._refresh_loop, link)
        self._up.set()

    def _send_control(self, link: _Link, event: str, payload: Any, cid: int | None = None) -> None:
        text = encode_envelope(event, payload, now_ms=_now_ms(), correlation_id=cid).unnumbered()
        link.control.append(
            frames.encode_frame(frames.OP_TEXT, text.encode("utf-8"), mask_key=os.urandom(4)))
        link.wake.set()

    # -- the writer ---------------------------------------------------------------------------
    def _write_loop(self, link: _Link) -> None:
        state = self._state
        sock = link.sock
        try:
            while True:
                link.wake.wait()
                link.wake.clear()
                chunks = link.control
                link.control = []
                if link.ready:
                    batch = state.unsent_after(link.written)
                    if batch:
                        # One urandom call per batch: masks must be unpredictable (RFC 6455 §10.3).
                        masks = os.urandom(4 * len(batch))
                        for i, (_, wire) in enumerate(batch):
                            chunks.append(frames.encode_frame(
                                frames.OP_TEXT, wire.encode("utf-8"),
                                mask_key=masks[4 * i : 4 * i + 4]))
                        link.written = batch[-1][0]
                        self._counters["frames_sent"] += len(batch)
                closing = link.close_frame is not None
                if closing:
                    chunks.append(link.close_frame)  # type: ignore[arg-type]
                if chunks:
                    # No timeout here: the runner's dead-link deadline ends a stuck write.
                    sock.sendall(b"".join(chunks))
                if closing:
                    link.close_sent = True
                    return
        except OSError as exc:
            log.debug("write failed: %s", exc)
            link.write_error = exc
            link.shutdown()

    # -- callbacks ----------------------------------------------------------------------------
    def _emit_hook(self, name: str, arg: Any) -> None:
        if self._hooks[name]:
            self._events.put(("hook", name, arg))

    def _dispatch_loop(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            kind, name, arg = item
            if kind == "hook":
                fns: list[Callable[..., object]] = list(self._hooks[name])
                for fn in fns:
                    self._call(fn, arg)
                continue
            for fn in list(self._listeners.get(name, ())):
                self._call(fn, arg)
            for any_fn in list(self._any_listeners):
                self._call(any_fn, name, arg)

    @staticmethod
    def _call(fn: Callable[..., object], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            log.exception("callback %r raised; the client carries on", fn)
        except gevent.Timeout as exc:
            log.error("callback %r let a gevent.Timeout escape: %s", fn, exc)

    # -- ending -------------------------------------------------------------------------------
    def _fail_pending(self, error: BaseException) -> None:
        pending = list(self._pending.values())
        self._pending.clear()
        for waiter in pending:
            if not waiter.ready():
                waiter.set_exception(error)

    def _finish(self, error: WsError | ConnectionClosed) -> None:
        if self._closed_error is not None:
            return
        self._closing = True
        self._closed_error = error
        self._wake_runner.set()
        self._up.set()
        self._closed_event.set()
        self._fail_pending(error)
        if self._state.unacked_frames:
            log.info("client closed with %d unacknowledged frame(s)", self._state.unacked_frames)
        if self._dispatcher is not None:
            # After queued callbacks; put_nowait would drop the sentinel when full.
            gevent.spawn(self._events.put, None)


def _usable_token(token: object) -> bool:
    """A token fits an HTTP header and a query value: a non-empty str without line breaks."""
    return isinstance(token, str) and bool(token) and "\r" not in token and "\n" not in token


def _expiry(value: object) -> float | None:
    """``expiresAt`` as sent by the server: epoch seconds, or None (also for junk)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _now_ms() -> int:
    return int(time.time() * 1000)


def _as_closed(error: WsError | ConnectionClosed) -> ConnectionClosed:
    if isinstance(error, ConnectionClosed):
        return error
    return ConnectionClosed(error.code.close_code, error.message, by_peer=True)


def _recv_by(sock: Any, deadline: float, what: str) -> bytes:
    """``recv`` that gives up at ``deadline`` (re-checked: gevent timers may fire early)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _LinkDead(f"{what} not finished within open_timeout")
        sock.settimeout(remaining)
        try:
            data: bytes = sock.recv(_READ_CHUNK)
            return data
        except TimeoutError:
            continue


def _wait_result(result: gevent.event.AsyncResult, timeout: float) -> Any:
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


def _sleep_until(event: gevent.event.Event, deadline: float) -> None:
    """Sleep until ``deadline`` unless ``event`` is set first (re-checks the clock)."""
    while not event.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        event.wait(remaining)
