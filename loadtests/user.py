"""The locust user of every wscore scenario: one WsClient, its statistics and its counters.

:class:`WsUser` is an abstract ``locust.User`` that owns one
:class:`~wscore.client.WsClient`: it connects in ``on_start`` and closes in
``on_stop``, and :meth:`WsUser.request` reports every request to locust's
event system. What it puts in locust's statistics table (``Type`` column):

========= ================ ==================================================
type      name             one entry per …
========= ================ ==================================================
CONNECT   ``connect``      first session opened by a user (failure: refused,
                           unreachable, timed out, or still not connected
                           when the run ended — :class:`NotConnected`)
WS        the event        :meth:`WsUser.request`: time to the ``ack``; a
                           ``sys.error`` (``WsError`` with its code), a
                           timeout or a wrong reply is a failure
RECONNECT ``resume``       link lost → session resumed: the outage as the
                           client saw it; a failure (1006) if the session
                           was lost instead
BROADCAST the event        room broadcast received
                           (:class:`loadtests.broadcast.BroadcastProbe`):
                           send → delivery latency; a failure if it skipped,
                           repeated or reordered a sender's message
STORM     ``proxy cut``    a sandbox proxy control cut (reconnect_storm.py)
========= ================ ==================================================

What a user does in the app is its :attr:`WsUser.workload` (a
:class:`sandbox.workload.Workload`, the chat one by default: the same
description ``wscore sandbox run`` drives), built per user from ``--rooms``.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any, ClassVar

from locust import User
from locust.env import Environment
from locust.exception import LocustError, RescheduleTask, StopUser

from wscore.client import (
    ConnectionClosed,
    SendBufferFull,
    SessionInfo,
    WsClient,
    WsClientConfig,
    WsError,
)
from wscore.loadtests.counters import counters_of
from wscore.loadtests.hooks import fire_request
from wscore.loadtests.options import REQUEST_TIMEOUT, ROOMS
from wscore.sandbox.chat_workload import ChatWorkload
from wscore.sandbox.guarantees import ReplyAccount
from wscore.sandbox.workload import Request, Workload

__all__ = ["NotConnected", "ReplyMismatch", "RequestFailed", "WsUser"]

#: ClientStats fields folded into the counters as they grow.
_CLIENT_FIELDS = ("connects", "resumes", "sessions_lost", "failed_attempts", "duplicates_dropped",
                  "gaps", "unmatched_replies")


class ReplyMismatch(Exception):
    """The server acknowledged a request with a reply the scenario did not expect."""


class NotConnected(Exception):
    """The run ended (or the user was stopped) before the user's first session opened."""


class RequestFailed(RescheduleTask):
    """:meth:`WsUser.request` failed (already reported to locust); ``cause`` says why.

    A ``RescheduleTask``: raised out of a task, locust just moves on to the
    next one (the failure is in the statistics, not in the error log).
    """

    def __init__(self, event: str, cause: BaseException) -> None:
        super().__init__(f"{event}: {type(cause).__name__}: {cause}")
        self.event = event
        self.cause = cause


_user_indices = itertools.count()

#: What a request may fail with, besides a wrong reply: the server's error, the bounded send
#: buffer full (backpressure; never sent) …
_REQUEST_ERRORS = (WsError, SendBufferFull)
#: … or giving up waiting: no reply in time, the client closed for good.
_GIVE_UP_ERRORS = (TimeoutError, ConnectionClosed)


class WsUser(User):
    """A locust user with one :class:`WsClient` to ``--host`` (e.g. ``ws://127.0.0.1:8080/ws``).

    Contract for subclasses: override :meth:`setup_client` to register
    listeners (it runs before the first connect), extend ``on_start``
    (call ``super().on_start()`` first) to join rooms etc., and use
    :meth:`request` (or :meth:`call`) in tasks. ``index`` numbers the users
    of this process 0, 1, 2 … (stable room assignment); ``workload`` is
    ``workload_class(index, --rooms)``.
    """

    abstract = True
    #: What each user does in the app (its room, its requests, its deliveries).
    workload_class: ClassVar[type[Workload]] = ChatWorkload

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if not self.host:
            raise LocustError("no host: pass --host ws://HOST:PORT/ws (or set the User's host)")
        self.index = next(_user_indices)
        self.workload: Workload = self.workload_class(self.index, ROOMS.get(environment))
        self.counters = counters_of(environment)
        self._replies = ReplyAccount()  # requests that gave up, for unmatched replies
        self._client: WsClient | None = None
        self._reported = dict.fromkeys(_CLIENT_FIELDS, 0)  # client stats already counted
        self._down_since: float | None = None  # perf_counter() when the current outage began
        self._lost: WsError | None = None  # why the session of the outage was lost
        self._connect_started: float | None = None  # perf_counter() of on_start's connect
        self._connect_reported = False  # its CONNECT entry is in the statistics

    @property
    def client(self) -> WsClient:
        """The user's client (set by ``on_start``)."""
        if self._client is None:
            raise LocustError("the user has no client before on_start")
        return self._client

    # -- overridable ---------------------------------------------------------------------------
    def client_config(self) -> WsClientConfig:
        """The client's configuration (default: ``--ws-request-timeout``, otherwise the defaults)."""
        return WsClientConfig(request_timeout=REQUEST_TIMEOUT.get(self.environment))

    def setup_client(self, client: WsClient) -> None:
        """Register listeners on ``client``; runs before its first connect (default: nothing)."""

    # -- lifecycle -----------------------------------------------------------------------------
    def on_start(self) -> None:
        """Connect (reported as ``CONNECT connect``); a failed connect stops this user."""
        assert self.host is not None  # checked by __init__
        client = WsClient(self.host, config=self.client_config())
        client.on_disconnect(self._on_disconnect)
        client.on_session_lost(self._on_session_lost)
        client.on_connect(self._on_connect)
        self.setup_client(client)
        self._client = client
        start = self._connect_started = time.perf_counter()
        try:
            client.connect()
        except (WsError, ConnectionClosed, TimeoutError) as exc:
            self._connect_reported = True
            self.record("CONNECT", "connect", _ms_since(start), exception=exc)
            raise StopUser() from exc
        self._connect_reported = True
        self.record("CONNECT", "connect", _ms_since(start))
        self.sync_stats()

    def on_stop(self) -> None:
        """Close the client (close handshake, bounded by ``close_timeout``) and fold its stats.

        A user stopped while its first connect was still retrying (the run ended
        first: ``-t`` shorter than the connect timeout) records that connect as a
        failure (:class:`NotConnected`), so a run against a dead server never
        reports "0 failures".
        """
        client = self._client
        if client is None:
            return
        if not self._connect_reported and self._connect_started is not None:
            self._connect_reported = True
            failed = client.stats().failed_attempts
            self.record("CONNECT", "connect", _ms_since(self._connect_started),
                        exception=NotConnected(f"no session by the end of the run ({failed} "
                                               f"failed connection attempts to {self.host})"))
        client.close()
        self.sync_stats()

    def join_room(self) -> None:
        """Join the workload's room (``WS room.join`` for chat); a user that cannot join stops."""
        try:
            self.call(self.workload.join())
        except RequestFailed as exc:
            raise StopUser() from exc  # a user outside its room would measure nothing

    # -- reporting -----------------------------------------------------------------------------
    def record(self, request_type: str, name: str, response_time_ms: float, response_length: int = 0,
               exception: BaseException | None = None) -> None:
        """Add one entry to locust's statistics (a failure when ``exception`` is given)."""
        fire_request(self.environment, request_type, name, response_time_ms, response_length, exception)

    def request(self, event: str, payload: Any = None, *, name: str | None = None,
                timeout: float | None = None, check: Callable[[Any], str | None] | None = None) -> Any:
        """``client.request`` reported as ``WS <name or event>``; return the reply payload.

        ``check(reply)`` returns None when the reply is right, else what is
        wrong (reported as a :class:`ReplyMismatch` failure). Raises
        :class:`RequestFailed` after reporting any failure.
        """
        start = time.perf_counter()
        error: BaseException | None = None
        reply: Any = None
        try:
            reply = self.client.request(event, payload, timeout=timeout)
        except _REQUEST_ERRORS as exc:
            error = exc
        except _GIVE_UP_ERRORS as exc:
            self._gave_up()
            error = exc
        except BaseException:
            self._gave_up()  # the user was stopped mid-request: its reply may come later
            raise
        if error is None and check is not None:
            problem = check(reply)
            if problem is not None:
                error = ReplyMismatch(f"{event}: {problem}")
        # The reply was decoded already; its size is estimated without re-encoding it.
        self.record("WS", name or event, _ms_since(start),
                    response_length=len(repr(reply)) if reply is not None else 0, exception=error)
        self.sync_stats()
        if error is not None:
            raise RequestFailed(event, error)
        return reply

    def call(self, request: Request, *, name: str | None = None,
             timeout: float | None = None) -> Any:
        """:meth:`request` for a workload :class:`~sandbox.workload.Request` (its check applied)."""
        return self.request(request.event, request.payload, name=name, timeout=timeout,
                            check=request.check)

    def _gave_up(self) -> None:
        self._replies.gave_up()
        self.counters.add("requests_given_up")

    def sync_stats(self) -> None:
        """Fold what the client's monotonic stats gained since the last call into the counters."""
        client = self._client
        if client is None:
            return
        stats = client.stats()
        before = self._reported
        # getattr with a default: fields newer than the installed client read as 0.
        now = {field: int(getattr(stats, field, 0)) for field in _CLIENT_FIELDS}
        for field in _CLIENT_FIELDS:
            delta = now[field] - before[field]
            if delta:
                self.counters.add(field, delta)
        reconnects = max(now["connects"] - 1, 0) - max(before["connects"] - 1, 0)
        if reconnects:
            self.counters.add("reconnects", reconnects)
        stray = self._replies.update(now["unmatched_replies"])
        if stray:
            self.counters.add("stray_replies", stray)
        self._reported = now

    # -- dropping the link (reconnect storms) --------------------------------------------------
    def drop_connection(self) -> bool:
        """Cut the current link abruptly (TCP RST, no close frame), as a network fault would.

        The client notices, reconnects and resumes as usual; the outage is
        measured from now (``RECONNECT resume``). Returns False when there was
        no open link to cut (offline already).
        """
        if not self.client.connected:
            return False
        self._down_since = time.perf_counter()
        self.counters.add("drops")
        return self.client.drop_connection()

    # -- client hooks (run in the client's dispatcher greenlet) ---------------------------------
    def _on_disconnect(self, reason: ConnectionClosed) -> None:
        if self._down_since is None:
            self._down_since = time.perf_counter()

    def _on_session_lost(self, error: WsError) -> None:
        self._lost = error

    def _on_connect(self, info: SessionInfo) -> None:
        down_since, lost = self._down_since, self._lost
        self._down_since = self._lost = None
        if down_since is not None:
            self.record("RECONNECT", "resume", _ms_since(down_since), exception=lost)
        self.sync_stats()


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
