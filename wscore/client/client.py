"""The client facade, :class:`WsClient`, and its runner: a gevent shell around ClientSession.

Every protocol decision (numbering, the unacknowledged buffer, de-duplication,
gaps, ack batching, replies, close codes, backoff, the reconnect URL) is made
by the pure :class:`wscore.protocol.ClientSession`; this module feeds it what
happens and carries out the actions it returns (:meth:`WsClient._apply`). Socket
I/O is in :mod:`~wscore.client.link`, callbacks in :mod:`~wscore.client.dispatch`,
tokens in :mod:`~wscore.client.token`.

Greenlets of one client (who waits on whom)::

    runner      connects, then *is* the reader of the current link; keeps every
                deadline (open, dead link, probe, delayed ack); sleeps the backoff
    writer      one per link; writes control frames and the session's frames the
                link has queued; never waits on anything but the socket
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

import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, TypeVar, overload

import attrs
import gevent
import gevent.event

from wscore.client.config import WsClientConfig
from wscore.client.dispatch import Dispatcher, EventCallback
from wscore.client.link import Link, LinkDead, UpgradeRefused, open_link, recv_until
from wscore.client.token import TokenKeeper, TokenProvider, TokenUnavailable, usable_token, wait_result
from wscore.errors import ConfigError, ConnectionClosed, PeerProtocolError, UsageError, WsError
from wscore.protocol import frames, handshake
from wscore.protocol.client_session import (
    TERMINAL_CLOSE_CODES,
    Abort,
    Action,
    ClientSession,
    ClientSessionOptions,
    ConnectOutcome,
    Deliver,
    Disconnected,
    LoseSession,
    OpenConnection,
    Opened,
    Reconnect,
    RejectRequest,
    ResolveRequest,
    SendClose,
    SendFrame,
    SessionInfo,
    Terminal,
)
from wscore.protocol.codes import CLOSE_NORMAL, SysEvent
from wscore.protocol.envelope import decode_envelope, encode_envelope

__all__ = ["TERMINAL_CLOSE_CODES", "ClientStats", "SessionInfo", "TokenProvider", "WsClient"]

log = logging.getLogger("wscore.client")

F = TypeVar("F", bound=Callable[..., object])
_EV_ERROR = SysEvent.ERROR.value


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


class _LinkEnded(Exception):
    """The current link is over; ``code``/``reason`` are what the session is told."""

    def __init__(self, code: int | None, reason: str, http_status: int | None = None) -> None:
        self.code = code
        self.reason = reason
        self.http_status = http_status
        super().__init__(reason)


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
      in order across any number of reconnects (a server stream that skips
      numbers is never skipped over: the client resumes to get what is
      missing). Frames passed to :meth:`send`/:meth:`request` run on the
      server exactly once, in order, provided the session survives; they are
      buffered (bounded) while offline.
    * **Session loss.** When a resume is refused (1006) the client starts a new
      session: ``on_session_lost`` hooks run with a :class:`~wscore.errors.SessionLost`
      (a ``WsError`` with code 1006), frames not yet acknowledged are dropped
      (counted in the log) and pending requests raise that ``SessionLost`` —
      so ``except WsError`` and ``.code == 1006`` still catch it.
    * **Reconnect.** Automatic, exponential backoff with full jitter; at once
      (with a little jitter) after 1012 (service restart); never after
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
        self.config = config if config is not None else WsClientConfig()
        cfg = self.config
        self._tokens = TokenKeeper(self, token, token_provider)
        self._session = ClientSession(
            ClientSessionOptions(
                max_unacked_frames=cfg.max_unacked_frames,
                max_unacked_bytes=cfg.max_unacked_bytes,
                ack_every_frames=cfg.ack_every_frames,
                ack_delay=cfg.ack_delay,
                backoff_base=cfg.backoff_base,
                backoff_cap=cfg.backoff_cap,
                reconnect=cfg.reconnect,
                max_reconnect_attempts=cfg.max_reconnect_attempts,
                token_provider=token_provider is not None,
                token_in_query=cfg.token_in_query,
                client_tag=secrets.token_hex(8),
                default_heartbeat=cfg.default_heartbeat,
            ),
            random=(rng or random.Random()).random,
            wall_ms=_now_ms,
        )
        self._dispatch = Dispatcher(cfg.max_queued_events)
        self._pending: dict[int, gevent.event.AsyncResult] = {}
        self._runner: gevent.Greenlet | None = None
        self._link: Link | None = None
        self._up = gevent.event.Event()  # set while connected, and once closed (wakes waiters)
        self._closed_event = gevent.event.Event()
        self._wake_runner = gevent.event.Event()  # interrupts the backoff sleep on close()
        self._closing = False
        self._closed_error: WsError | ConnectionClosed | None = None
        self._frames_sent = 0  # of links already ended; the live link counts its own

    # -- properties -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The URL given (without the resume parameters the client adds)."""
        return self._url.geturl()

    @property
    def session_id(self) -> str | None:
        """The current session's id (a secret: do not log or share it); None before the first."""
        return self._session.session_id

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
        s = self._session
        link = self._link
        return ClientStats(
            connects=s.connects,
            resumes=s.resumes,
            sessions_lost=s.sessions_lost,
            failed_attempts=s.failed_attempts,
            frames_sent=self._frames_sent + (link.frames_sent if link is not None else 0),
            frames_received=s.frames_received,
            duplicates_dropped=s.duplicates_dropped,
            gaps=s.gaps,
            unacked_frames=s.unacked_frames,
            queued_events=self._dispatch.queued,
            token_refreshes=self._tokens.refreshes,
            token_refresh_failures=self._tokens.failures,
            unmatched_replies=s.unmatched_replies,
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
            self._dispatch.add_listener(event, fn)
            return fn

        return register if callback is None else register(callback)

    def off(self, event: str, callback: EventCallback | None = None) -> None:
        """Remove one callback of ``event`` (or all of them when ``callback`` is None)."""
        self._dispatch.remove_listener(event, callback)

    def on_any(self, callback: F) -> F:
        """Call ``callback(event, payload)`` for every delivered event (after ``on`` listeners)."""
        self._dispatch.add_any(callback)
        return callback

    def on_connect(self, hook: F) -> F:
        """``hook(info: SessionInfo)`` after every ``sys.connected`` (new or resumed)."""
        self._dispatch.add_hook("connect", hook)
        return hook

    def on_disconnect(self, hook: F) -> F:
        """``hook(reason: ConnectionClosed)`` whenever an open link ends (``by_peer`` None: network)."""
        self._dispatch.add_hook("disconnect", hook)
        return hook

    def on_resume(self, hook: F) -> F:
        """``hook(info: SessionInfo)`` when a reconnect resumed the session (after on_connect)."""
        self._dispatch.add_hook("resume", hook)
        return hook

    def on_session_lost(self, hook: F) -> F:
        """``hook(error: SessionLost)`` when a resume was refused (1006); runs before on_connect."""
        self._dispatch.add_hook("session_lost", hook)
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
            self._dispatch.start()
            self._runner = gevent.spawn(self._run)
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
        last = self._session.last_failure
        last = f" (last attempt: {last})" if last else ""
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
        runner = self._runner
        current = gevent.getcurrent()
        link = self._link
        self._apply(self._session.close(code, reason), link)
        if runner is not None and runner is not current:
            if link is not None and link.close_frame is not None:
                runner.join(timeout=self.config.close_timeout)  # the close handshake
            if not runner.dead:
                runner.kill(block=True, timeout=self.config.close_timeout)
        if self._closed_error is None:
            # The close handshake did not finish in time (or close() runs in the runner).
            if self._link is not None:
                self._end_link(self._link)
            self._apply(self._session.on_closed(code=None, reason="client stopped"))
        self._finish(ConnectionClosed(code, reason, by_peer=False))
        dispatcher = self._dispatch.greenlet
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
        tokens = self._tokens
        if token is not None and not usable_token(token):
            raise UsageError("token must be a non-empty string without line breaks")
        if token is None and tokens.provider is None and tokens.token is None:
            raise UsageError("refresh_token() needs a token: pass one or give the client "
                             "a token_provider")
        link = self._link
        if link is None or not link.ready or self._closing:
            raise ConnectionClosed(None, "not connected: the next connection authenticates anew",
                                   by_peer=None)
        wait = self.config.token_refresh_timeout if timeout is None else timeout
        expires_at = tokens.refresh(link, token, time.monotonic() + wait)
        if token is not None and tokens.provider is None:
            tokens.token = token
        return expires_at

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
        link.reset()
        return True

    def send(self, event: str, payload: Any = None) -> None:
        """Queue ``event`` for the server (exactly once while the session lives); never blocks.

        Raises :class:`~wscore.errors.SendBufferFull` when ``max_unacked_frames``
        or ``max_unacked_bytes`` would be exceeded, :class:`ConnectionClosed`
        after :meth:`close`, :class:`UsageError` for a reserved ``sys.*`` event,
        ``TypeError``/``ValueError`` for a payload JSON cannot encode.
        """
        if self._closed_error is not None:
            raise self._closed_error
        self._apply(self._session.send(event, payload))

    def request(self, event: str, payload: Any = None, *, timeout: float | None = None) -> Any:
        """Send ``event`` with a correlation id and block until its reply; return its payload.

        Raises :class:`WsError` with the server's code when it answers
        ``sys.error`` (:class:`~wscore.errors.SessionLost`, a ``WsError`` with
        code 1006, if the session was lost meanwhile), ``TimeoutError`` after
        ``timeout`` seconds (default ``config.request_timeout``; the frame
        stays queued and may still run), :class:`ConnectionClosed` if the
        client closes meanwhile, and what :meth:`send` raises. A request made
        while offline completes after the reconnect.
        """
        if self._closed_error is not None:
            raise self._closed_error
        cid, actions = self._session.request(event, payload)
        result: gevent.event.AsyncResult = gevent.event.AsyncResult()
        self._pending[cid] = result
        try:
            self._apply(actions)
            wait = self.config.request_timeout if timeout is None else timeout
            try:
                return wait_result(result, wait)
            except TimeoutError:
                raise TimeoutError(f"no reply to {event!r} within {wait:g} s") from None
        finally:
            self._pending.pop(cid, None)
            self._session.abandon(cid)

    # -- carrying out the session's actions -----------------------------------------------------
    def _apply(self, actions: Sequence[Action], link: Link | None = None) -> float | None:
        """Carry out ``actions`` in order; returns a :class:`Reconnect`'s delay, if any.

        :class:`Abort` raises :class:`PeerProtocolError` (the runner drops the link).
        """
        link = link if link is not None else self._link
        delay: float | None = None
        for action in actions:
            # The per-frame cases first: a delivery, then a frame to write.
            if isinstance(action, Deliver):
                if action.event == _EV_ERROR and not self._dispatch.has_listeners(action.event):
                    log.warning("server error: %s", WsError.from_payload(action.payload))
                self._dispatch.event(action.event, action.payload)
            elif isinstance(action, SendFrame):
                if link is not None:
                    link.queue_text(action.seq, action.text)
            elif isinstance(action, ResolveRequest):
                waiter = self._pending.get(action.cid)
                if waiter is not None and not waiter.ready():
                    waiter.set(action.payload)
            elif isinstance(action, RejectRequest):
                waiter = self._pending.get(action.cid)
                if waiter is not None and not waiter.ready():
                    waiter.set_exception(action.error)
            elif isinstance(action, Opened):
                assert link is not None
                self._opened(link, action)
            elif isinstance(action, LoseSession):
                self._dispatch.hook("session_lost", action.error)
            elif isinstance(action, Disconnected):
                self._dispatch.hook("disconnect", action.reason)
            elif isinstance(action, SendClose):
                if link is not None:
                    link.queue_close(action.code, action.reason)
            elif isinstance(action, Reconnect):
                delay = action.delay
            elif isinstance(action, Terminal):
                self._finish(action.error)
            elif isinstance(action, Abort):
                raise PeerProtocolError(f"{action.reason}: {action.detail}")
            else:
                assert isinstance(action, OpenConnection)  # handled by _open
        return delay

    def _opened(self, link: Link, action: Opened) -> None:
        info = action.info
        cfg = self.config
        heartbeat = info.heartbeat
        link.dead_after = cfg.dead_link_timeout or max(2.0 * heartbeat, heartbeat + 1.0)
        link.probe_after = min(cfg.probe_after or heartbeat, link.dead_after * 0.75)
        link.info = info
        link.ready = True
        self._dispatch.hook("connect", info)
        if action.outcome is ConnectOutcome.RESUMED:
            self._dispatch.hook("resume", info)
        link.start_writer()
        self._tokens.start(link, info.expires_at)
        self._up.set()

    # -- the runner ---------------------------------------------------------------------------
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
                self._end_link(self._link)

    def _run_links(self) -> None:
        session = self._session
        while self._closed_error is None:
            failure = ""
            try:
                link = self._open()
                self._link = link
                self._serve(link)
            except _LinkEnded as end:
                if self._link is not None:
                    self._end_link(self._link)
                actions = session.on_closed(
                    code=end.code, reason=end.reason, http_status=end.http_status)
                lost = any(isinstance(a, Disconnected) for a in actions)
                why = end.reason or (f"close {end.code}" if end.code is not None else "closed")
                failure = (f"link to {self._url.host_header} lost: {why}" if lost else
                           f"connection attempt {session.failures} to "
                           f"{self._url.host_header} failed: {why}")
            delay = self._apply(actions)
            if delay is None or self._closed_error is not None:
                if failure:
                    log.info("%s", failure)
                return
            # One INFO line per failed attempt or lost link (connect() included), with the wait.
            if failure:
                log.info("%s; retrying in %.2f s", failure, delay)
            _sleep_until(self._wake_runner, time.monotonic() + delay)

    def _open(self) -> Link:
        """One attempt: token, URL from the session, TCP + upgrade (``open_timeout`` for all)."""
        cfg = self.config
        deadline = time.monotonic() + cfg.open_timeout
        try:
            token = self._tokens.for_handshake(deadline)
        except TokenUnavailable as exc:
            self._session.connect(token=None)  # the attempt is numbered all the same
            raise _LinkEnded(None, str(exc)) from exc
        (open_action,) = self._session.connect(token=token)
        assert isinstance(open_action, OpenConnection)
        headers = list(cfg.headers)
        if token is not None and not cfg.token_in_query:
            headers.append(("Authorization", f"Bearer {token}"))
        try:
            return open_link(self._url, open_action.query, headers, cfg, deadline)
        except UpgradeRefused as exc:
            raise _LinkEnded(None, exc.reason, http_status=exc.status) from exc
        except ConnectionClosed as exc:
            raise _LinkEnded(exc.code, exc.reason) from exc
        except (OSError, PeerProtocolError, LinkDead) as exc:
            raise _LinkEnded(None, f"{type(exc).__name__}: {exc}") from exc

    def _serve(self, link: Link) -> NoReturn:
        """Read ``link`` until it ends (always by raising :class:`_LinkEnded`)."""
        try:
            if link.early_bytes:
                self._feed(link, link.early_bytes)
                link.early_bytes = b""
            while True:
                wake_at = self._keep_deadlines(link)
                data = recv_until(link, wake_at)
                if data is None:
                    continue  # a deadline: _keep_deadlines re-checks the clock
                if not data:
                    raise ConnectionClosed(None, "connection lost (EOF)", by_peer=None)
                link.last_rx = time.monotonic()
                link.probe_sent = False
                self._feed(link, data)  # due acks go out at the top of the loop
        except ConnectionClosed as exc:
            raise _LinkEnded(exc.code, exc.reason) from exc
        except (OSError, PeerProtocolError, LinkDead) as exc:
            # A failed write shuts the socket, so the read fails too: report the cause.
            cause: BaseException = link.write_error or exc
            raise _LinkEnded(None, f"{type(cause).__name__}: {cause}") from exc

    def _keep_deadlines(self, link: Link) -> float:
        """Act on the deadlines that passed; return when the next one falls due."""
        now = time.monotonic()
        if not link.ready:
            if now >= link.open_deadline:
                raise LinkDead("no sys.connected within open_timeout")
            return link.open_deadline
        silent = now - link.last_rx
        if silent >= link.dead_after:
            raise LinkDead(f"no frame from the server for {silent:.2f} s")
        if not link.probe_sent and silent >= link.probe_after:
            link.probe_sent = True
            text = encode_envelope(SysEvent.PING.value, None, now_ms=_now_ms()).unnumbered()
            link.queue_text(None, text)
        self._apply(self._session.tick(now), link)
        wake_at = link.last_rx + link.dead_after
        if not link.probe_sent:
            wake_at = min(wake_at, link.last_rx + link.probe_after)
        ack_at = self._session.next_deadline()
        if ack_at is not None:
            wake_at = min(wake_at, ack_at)
        return wake_at

    def _feed(self, link: Link, data: bytes) -> None:
        session = self._session
        for event in link.decoder.feed(data):
            if isinstance(event, frames.TextMessage):
                try:
                    env = decode_envelope(event.text)
                except WsError as exc:
                    log.warning("ignoring an invalid frame from the server: %s", exc.message)
                    continue
                self._apply(session.receive(env, time.monotonic()), link)
            elif isinstance(event, frames.PingReceived):
                # RFC 6455 §5.5.2: answer with a pong carrying the same data.
                link.control.append(frames.encode_frame(
                    frames.OP_PONG, event.payload, mask_key=os.urandom(4)))
                link.wake.set()
            elif isinstance(event, frames.CloseReceived):
                # RFC 6455 §5.5.1: echo the status code (unless this is the echo of
                # ours), then the server closes TCP.
                link.queue_close(event.code)
                raise ConnectionClosed(event.code, event.reason, by_peer=True)
            elif isinstance(event, frames.BinaryMessage):
                log.warning("ignoring a binary message (%d bytes): wscore speaks JSON text",
                            len(event.data))
            # PongReceived: last_rx was refreshed already, nothing else to do.

    def _end_link(self, link: Link) -> None:
        """Stop ``link``'s greenlets and close its socket (the session is told separately)."""
        if self._link is link:
            self._link = None
        if self._closed_error is None:
            self._up.clear()
        refresher = link.refresher
        if refresher is not None and not refresher.dead:
            refresher.kill(block=False)
        writer = link.writer
        if writer is not None and not writer.dead:
            if link.close_frame is not None and not link.close_sent:
                writer.join(timeout=min(1.0, self.config.close_timeout))
            writer.kill(block=False)
        self._frames_sent += link.frames_sent
        link.frames_sent = 0
        link.close()

    # -- ending -------------------------------------------------------------------------------
    def _finish(self, error: WsError | ConnectionClosed) -> None:
        if self._closed_error is not None:
            return
        self._closing = True
        self._closed_error = error
        self._wake_runner.set()
        self._up.set()
        self._closed_event.set()
        for waiter in list(self._pending.values()):
            if not waiter.ready():
                waiter.set_exception(error)
        self._dispatch.stop()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _sleep_until(event: gevent.event.Event, deadline: float) -> None:
    """Sleep until ``deadline`` unless ``event`` is set first (re-checks the clock)."""
    while not event.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        event.wait(remaining)
