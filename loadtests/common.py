"""What every wscore locust scenario shares: a User owning one WsClient, counters, options.

:class:`WsUser` is an abstract ``locust.User`` that owns one
:class:`~wscore.client.WsClient`: it connects in ``on_start`` and closes in
``on_stop``, and :meth:`WsUser.request` reports every request to locust's
event system. What it puts in locust's statistics table (``Type`` column):

========= ================ ==================================================
type      name             one entry per …
========= ================ ==================================================
CONNECT   ``connect``      first session opened by a user (failure: refused,
                           unreachable or timed out)
WS        the event        :meth:`WsUser.request`: time to the ``ack``; a
                           ``sys.error`` (``WsError`` with its code), a
                           timeout or a wrong reply is a failure
RECONNECT ``resume``       link lost → session resumed: the outage as the
                           client saw it; a failure (1006) if the session
                           was lost instead
BROADCAST the event        room broadcast received (:class:`BroadcastProbe`):
                           send → delivery latency; a failure if it skipped
                           or repeated a sender's message
STORM     ``proxy cut``    a sandbox proxy control cut (reconnect_storm.py)
========= ================ ==================================================

Custom counters (:class:`WsCounters`, one set per locust ``Environment``,
summed over workers in distributed runs) are logged when a test stops
(logger ``wscore.loadtests``) and served as JSON at ``/ws-counters`` by the
web UI. When one of :data:`GUARANTEE_COUNTERS` is non-zero at exit the
process exit code is 1: a delivery guarantee broke (SPEC §3 resume).

Options (``--rooms`` …) are all declared here, once, so any set of scenario
files can be loaded together (``locust -f a.py,b.py``) without argparse
conflicts; each is also read from an environment variable ``LOCUST_<NAME>``
and, in library use without parsed options, falls back to that variable and
then to its default.

Everything runs in locust's gevent hub (WsClient is gevent-based): no threads,
so counters need no locks.
"""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import logging
import os
import random
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar, cast

import attrs
import gevent
from locust import User, events
from locust.env import Environment
from locust.event import EventHook
from locust.exception import LocustError, RescheduleTask, StopUser
from locust.runners import WorkerRunner

from wscore import ErrorCode
from wscore.client import (
    ConnectionClosed,
    SendBufferFull,
    SessionInfo,
    WsClient,
    WsClientConfig,
    WsError,
)

__all__ = [
    "COUNTER_NAMES",
    "DROP_INTERVAL",
    "ECHO_BYTES",
    "GUARANTEE_COUNTERS",
    "MESSAGE_INTERVAL",
    "OPTIONS",
    "PROXY_CONTROL",
    "REQUEST_TIMEOUT",
    "ROOMS",
    "RPC_RATE",
    "STORM_INTERVAL",
    "BroadcastOrderError",
    "BroadcastProbe",
    "Option",
    "Pacer",
    "ReplyMismatch",
    "RequestFailed",
    "WsCounters",
    "WsUser",
    "counters_of",
    "fire_request",
    "listen",
    "loopback_http_url",
    "send_chat_message",
    "set_and_read_session_counter",
]

log = logging.getLogger("wscore.loadtests")

T = TypeVar("T")

# -- options ------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text!r}")
    return value


def loopback_http_url(text: str) -> str:
    """``text`` without a trailing slash if it is ``http://`` on a loopback host; "" stays "".

    Raises ``argparse.ArgumentTypeError`` (a ``ValueError``… for argparse) otherwise: the
    sandbox proxy's control API has no authentication, so it is only ever used locally.
    """
    if not text:
        return ""
    parts = urllib.parse.urlsplit(text)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise argparse.ArgumentTypeError(f"must be http://<loopback host>:<port>, got {text!r}")
    return text.rstrip("/")


def listen(hook: EventHook, handler: Callable[..., None]) -> None:
    """``hook.add_listener(handler)``, typed (locust's ``EventHook`` is not annotated)."""
    cast(Any, hook).add_listener(handler)


def fire_request(environment: Environment, request_type: str, name: str, response_time_ms: float,
                 response_length: int = 0, exception: BaseException | None = None) -> None:
    """Add one entry to ``environment``'s statistics (a failure when ``exception`` is given)."""
    cast(Any, environment.events.request).fire(
        request_type=request_type, name=name, response_time=response_time_ms,
        response_length=response_length, exception=exception, context={})


@attrs.frozen
class Option(Generic[T]):
    """A custom locust command-line option, its ``LOCUST_*`` variable and its default."""

    flag: str
    parse: Callable[[str], T]
    default: T
    help: str

    @property
    def dest(self) -> str:
        """The attribute name in locust's parsed options (``--echo-bytes`` → ``echo_bytes``)."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env_var(self) -> str:
        return "LOCUST_" + self.dest.upper()

    def get(self, environment: Environment) -> T:
        """The value for this run: parsed options, else ``$LOCUST_<NAME>``, else the default.

        Raises ``ValueError`` (``argparse.ArgumentTypeError``) for an invalid variable.
        """
        parsed = environment.parsed_options
        value = getattr(parsed, self.dest, None) if parsed is not None else None
        if value is not None:
            # The web UI hands custom options back as strings: parse them again.
            return self.parse(value) if isinstance(value, str) else cast(T, value)
        raw = os.environ.get(self.env_var)
        return self.parse(raw) if raw else self.default


ROOMS = Option("--rooms", _positive_int, 4,
               "chat, reconnect_storm: rooms the users are spread over (round robin)")
MESSAGE_INTERVAL = Option("--message-interval", _positive_float, 1.0,
                          "chat, reconnect_storm: seconds between one user's tasks (constant pacing)")
ECHO_BYTES = Option("--echo-bytes", _non_negative_int, 64, "rpc: filler bytes in each echo payload")
RPC_RATE = Option("--rpc-rate", _non_negative_float, 500.0,
                  "rpc: most tasks per second per user, to stay under the server's per-session "
                  "rate_limit (dev: 1000 messages/s); 0: no cap")
DROP_INTERVAL = Option("--drop-interval", _non_negative_float, 5.0,
                       "reconnect_storm: mean seconds between one user's own abrupt drops (0: never)")
PROXY_CONTROL = Option("--proxy-control", loopback_http_url, "",
                       "reconnect_storm: control API URL of a sandbox proxy (loopback, e.g. "
                       "http://127.0.0.1:9001): cut every connection at once every --storm-interval")
STORM_INTERVAL = Option("--storm-interval", _positive_float, 10.0,
                        "reconnect_storm: seconds between proxy-wide cuts (with --proxy-control)")
REQUEST_TIMEOUT = Option("--ws-request-timeout", _positive_float, 10.0,
                         "all: seconds a request waits for its reply before it is a failure")

OPTIONS: tuple[Option[Any], ...] = (
    ROOMS, MESSAGE_INTERVAL, ECHO_BYTES, RPC_RATE, DROP_INTERVAL, PROXY_CONTROL, STORM_INTERVAL,
    REQUEST_TIMEOUT,
)


def _add_options(parser: Any, **_: Any) -> None:
    group = parser.add_argument_group("wscore scenarios (loadtests/)")
    for opt in OPTIONS:
        group.add_argument(opt.flag, type=opt.parse, default=opt.default, env_var=opt.env_var,
                           help=f"{opt.help} (default {opt.default!r}; env {opt.env_var})")


listen(events.init_command_line_parser, _add_options)


# -- counters -----------------------------------------------------------------------------------

#: Every custom counter, in the order the summary lists them.
COUNTER_NAMES = (
    "connects",              # sessions opened or resumed (ClientStats.connects)
    "reconnects",            # connects after a user's first one
    "resumes",               # reconnects that resumed the session
    "sessions_lost",         # reconnects refused with 1006: a new session, state gone
    "failed_attempts",       # connection attempts that never reached sys.connected
    "duplicates_dropped",    # server frames the client dropped as already delivered
    "gaps",                  # server frames that skipped sequence numbers
    "unmatched_replies",     # replies no request waited for: a timed-out request's late reply,
                             # one to a request abandoned when locust killed its user at the
                             # end (no --stop-timeout), or a second reply (a handler ran twice)
    "broadcasts_received",   # BroadcastProbe messages received from other users
    "broadcast_gaps",        # … that skipped a sender's message
    "broadcast_duplicates",  # … that repeated or reordered a sender's message
    "drops",                 # links users cut themselves (reconnect_storm.py)
    "storms",                # proxy-wide cuts (reconnect_storm.py --proxy-control)
    "storm_links_cut",       # connections those cuts reset
)

#: Counters that must stay 0: any other value means a delivery guarantee broke.
#: (unmatched_replies is not one: timed-out and abandoned requests get their replies late,
#: legitimately; in a run without either, a non-zero value means a handler ran twice.)
GUARANTEE_COUNTERS = ("duplicates_dropped", "gaps", "broadcast_gaps", "broadcast_duplicates")

#: ClientStats fields folded into the counters as they grow.
_CLIENT_FIELDS = ("connects", "resumes", "sessions_lost", "failed_attempts", "duplicates_dropped", "gaps",
                  "unmatched_replies")


class WsCounters:
    """Monotonic custom counters of one locust ``Environment``.

    On a worker, :meth:`take_unreported` hands what grew since the last
    report to the master, which :meth:`merge` s it; locally both are unused.
    """

    def __init__(self) -> None:
        self._values = dict.fromkeys(COUNTER_NAMES, 0)
        self._unreported = dict.fromkeys(COUNTER_NAMES, 0)

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (one of :data:`COUNTER_NAMES`; KeyError otherwise)."""
        self._values[name] += n
        self._unreported[name] += n

    def __getitem__(self, name: str) -> int:
        return self._values[name]

    def snapshot(self) -> dict[str, int]:
        return dict(self._values)

    def take_unreported(self) -> dict[str, int]:
        """What grew since the previous call (non-zero entries only), and forget it."""
        delta = {k: v for k, v in self._unreported.items() if v}
        self._unreported = dict.fromkeys(COUNTER_NAMES, 0)
        return delta

    def merge(self, delta: Mapping[str, object]) -> None:
        """Add a worker's report; unknown names and non-integers are ignored (version skew)."""
        for name, value in delta.items():
            if name in self._values and isinstance(value, int) and not isinstance(value, bool):
                self._values[name] += value

    def reset(self) -> None:
        self._values = dict.fromkeys(COUNTER_NAMES, 0)
        self._unreported = dict.fromkeys(COUNTER_NAMES, 0)

    def broken_guarantees(self) -> dict[str, int]:
        """The non-zero :data:`GUARANTEE_COUNTERS` (empty when every guarantee held)."""
        return {name: self._values[name] for name in GUARANTEE_COUNTERS if self._values[name]}

    def summary(self) -> str:
        return " ".join(f"{name}={self._values[name]}" for name in COUNTER_NAMES)


_counters: weakref.WeakKeyDictionary[Environment, WsCounters] = weakref.WeakKeyDictionary()


def counters_of(environment: Environment) -> WsCounters:
    """The counters of ``environment`` (created on first use)."""
    counters = _counters.get(environment)
    if counters is None:
        counters = _counters[environment] = WsCounters()
    return counters


def _is_worker(environment: Environment) -> bool:
    return isinstance(environment.runner, WorkerRunner)


def _on_init(environment: Environment, **_: Any) -> None:
    web_ui = environment.web_ui
    if web_ui is not None and web_ui.app is not None:
        def ws_counters() -> dict[str, int]:
            return counters_of(environment).snapshot()

        web_ui.app.add_url_rule("/ws-counters", "ws_counters", ws_counters)


listen(events.init, _on_init)


def _on_test_start(environment: Environment, **_: Any) -> None:
    # Like locust's own statistics, every (web UI) run starts from zero.
    counters_of(environment).reset()


listen(events.test_start, _on_test_start)


def _on_report_to_master(client_id: str, data: dict[str, Any], **_: Any) -> None:
    # report_to_master carries no environment: a worker process runs exactly one.
    for environment, counters in list(_counters.items()):
        if _is_worker(environment):
            data["ws_counters"] = counters.take_unreported()


listen(events.report_to_master, _on_report_to_master)


def _on_worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    delta = data.get("ws_counters")
    if not isinstance(delta, dict):
        return
    for environment, counters in list(_counters.items()):
        if not _is_worker(environment):
            counters.merge(delta)


listen(events.worker_report, _on_worker_report)


def _on_test_stop(environment: Environment, **_: Any) -> None:
    if not _is_worker(environment):
        log.info("wscore counters: %s", counters_of(environment).summary())


listen(events.test_stop, _on_test_stop)


def _on_quitting(environment: Environment, **_: Any) -> None:
    if _is_worker(environment):
        return
    broken = counters_of(environment).broken_guarantees()
    if broken:
        log.error("delivery guarantee broken: %s", " ".join(f"{k}={v}" for k, v in broken.items()))
        environment.process_exit_code = 1


listen(events.quitting, _on_quitting)


# -- the user -----------------------------------------------------------------------------------


class ReplyMismatch(Exception):
    """The server acknowledged a request with a reply the scenario did not expect."""


class BroadcastOrderError(Exception):
    """A received broadcast skipped or repeated one of its sender's messages."""


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

#: What a request may fail with, besides a wrong reply: the server's error, no reply in
#: time, the client closed for good, the bounded send buffer full (backpressure).
_REQUEST_ERRORS = (WsError, TimeoutError, ConnectionClosed, SendBufferFull)


class WsUser(User):
    """A locust user with one :class:`WsClient` to ``--host`` (e.g. ``ws://127.0.0.1:8080/ws``).

    Contract for subclasses: override :meth:`setup_client` to register
    listeners (it runs before the first connect), extend ``on_start``
    (call ``super().on_start()`` first) to join rooms etc., and use
    :meth:`request` in tasks. ``index`` numbers the users of this process
    0, 1, 2 … (stable room assignment).
    """

    abstract = True

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if not self.host:
            raise LocustError("no host: pass --host ws://HOST:PORT/ws (or set the User's host)")
        self.index = next(_user_indices)
        self.counters = counters_of(environment)
        self._client: WsClient | None = None
        self._reported = dict.fromkeys(_CLIENT_FIELDS, 0)  # client stats already counted
        self._down_since: float | None = None  # perf_counter() when the current outage began
        self._lost: WsError | None = None  # why the session of the outage was lost

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
        start = time.perf_counter()
        try:
            client.connect()
        except (WsError, ConnectionClosed, TimeoutError) as exc:
            self.record("CONNECT", "connect", _ms_since(start), exception=exc)
            raise StopUser() from exc
        self.record("CONNECT", "connect", _ms_since(start))
        self.sync_stats()

    def on_stop(self) -> None:
        """Close the client (close handshake, bounded by ``close_timeout``) and fold its stats."""
        client = self._client
        if client is not None:
            client.close()
            self.sync_stats()

    def join_room(self, room: str) -> None:
        """``room.join`` {roomId} (the chat example's event); a user that cannot join stops."""
        try:
            self.request("room.join", {"roomId": room},
                         check=lambda r: None if r == {"joined": room} else f"unexpected reply {r!r}")
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


# -- pacing -------------------------------------------------------------------------------------


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


# -- broadcast delivery -------------------------------------------------------------------------

_PROBE_TAG = "lt1"


class BroadcastProbe:
    """Numbers a user's messages and checks the broadcasts it receives from others.

    :meth:`next_text` makes ``"lt1 <sender> <n> <prev> <sent_ns>"``: a
    random sender id, the message's number 1, 2, 3 …, the number of the
    sender's previous message that was (or may have been) broadcast — a
    message the server refused (:meth:`refused`) is skipped, so a refusal is
    not mistaken for a lost broadcast — and the wall-clock send time (wall
    clock, not monotonic, because sender and receiver may be different locust
    worker processes — on the same host: loadtests are loopback only).

    :meth:`on_message` records a ``BROADCAST <event>`` entry per probe
    message received, its latency send → callback, and checks that each
    sender's messages arrive without gap or repeat once its first is seen
    (which one that is depends on when the receiver joined). Texts that are
    not probes (other chatters) are ignored.
    """

    def __init__(self, user: WsUser, event: str) -> None:
        self.user = user
        self.event = event
        self.sender = uuid.uuid4().hex[:12]
        self._sent = 0
        self._prev = 0  # the last number that was or may have been broadcast
        self._prev_before_last = 0
        self._last_seen: dict[str, int] = {}

    def next_text(self) -> str:
        """The text of the next message (assumed broadcast unless :meth:`refused` follows)."""
        self._sent += 1
        text = f"{_PROBE_TAG} {self.sender} {self._sent} {self._prev} {time.time_ns()}"
        self._prev_before_last, self._prev = self._prev, self._sent
        return text

    def refused(self) -> None:
        """The server refused the last message with ``sys.error``: it was not broadcast.

        Not for a timeout (the frame stays queued and still runs once) nor a
        lost session (unknown whether it ran: ``sessions_lost`` says so).
        """
        self._prev = self._prev_before_last

    def on_message(self, payload: Any) -> None:
        """The ``client.on(event, …)`` callback; the text is read from ``payload['text']``."""
        received_ns = time.time_ns()
        text = payload.get("text") if isinstance(payload, dict) else None
        if not isinstance(text, str):
            return
        parts = text.split(" ")
        if len(parts) != 5 or parts[0] != _PROBE_TAG or not all(p.isdigit() for p in parts[2:]):
            return
        sender, n, prev, sent_ns = parts[1], int(parts[2]), int(parts[3]), int(parts[4])
        counters = self.user.counters
        counters.add("broadcasts_received")
        error: BroadcastOrderError | None = None
        last = self._last_seen.get(sender)
        if last is not None and prev != last:
            if n <= last:
                counters.add("broadcast_duplicates")
                error = BroadcastOrderError(f"sender {sender}: got #{n} after #{last} (repeat/reorder)")
            else:
                counters.add("broadcast_gaps")
                error = BroadcastOrderError(
                    f"sender {sender}: got #{n} (after #{prev}) but last saw #{last} (gap)")
        if last is None or n > last:
            self._last_seen[sender] = n
        latency_ms = max(received_ns - sent_ns, 0) / 1e6
        self.user.record("BROADCAST", self.event, latency_ms, len(text), exception=error)


def send_chat_message(user: WsUser, room: str, probe: BroadcastProbe) -> None:
    """Send ``probe``'s next message to ``room`` as a request (``WS chat.message``, ack checked).

    For the chat example's ``chat.message`` {roomId, text} → ``{"status": "sent"}``.
    Raises :class:`RequestFailed` like :meth:`WsUser.request`.
    """
    try:
        user.request("chat.message", {"roomId": room, "text": probe.next_text()},
                     check=lambda r: None if r == {"status": "sent"} else f"unexpected reply {r!r}")
    except RequestFailed as exc:
        # Refused (rate limit, validation …): never broadcast, so receivers must not expect it.
        if isinstance(exc.cause, WsError) and exc.cause.code is not ErrorCode.SESSION_NOT_FOUND:
            probe.refused()
        raise


def set_and_read_session_counter(user: WsUser, value: int) -> None:
    """``session.set`` {key: "counter", value}, then ``session.get`` must read ``value`` back.

    The chat example's session variables: they live in the session, so they
    must survive every reconnect. Raises :class:`RequestFailed` like
    :meth:`WsUser.request`.
    """
    user.request("session.set", {"key": "counter", "value": value},
                 check=lambda r: None if r == {"ok": True} else f"unexpected reply {r!r}")

    def read_back(reply: Any) -> str | None:
        data = reply.get("data") if isinstance(reply, dict) else None
        got = data.get("counter") if isinstance(data, dict) else None
        return None if got == value else f"session counter is {got!r}, {value} was set"

    user.request("session.get", None, check=read_back)
