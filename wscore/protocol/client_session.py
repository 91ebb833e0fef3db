"""One client session's protocol state, sans I/O (SPEC §3 "Resume", §6 1012, §7 close).

:class:`ClientSession` is every protocol decision of the bundled client; the
I/O shell (:class:`wscore.client.WsClient`) only moves bytes and carries out
the *actions* it returns. It reads no clock (``now`` is passed in, monotonic
seconds; the envelope's wall-clock ``t`` comes from an injected ``wall_ms``)
and draws no randomness of its own (the backoff jitter comes from an injected
``random`` callable returning floats in [0, 1)). The same scenarios run against
it and against the browser client: ``tests/conformance/client_session.json``.

Rules it keeps:

1. **Outgoing numbering.** Every application frame gets ``s`` = 1, 2, 3 … per
   session when :meth:`~ClientSession.send`/:meth:`~ClientSession.request` is
   called (online or not) and stays in a bounded buffer until the server's
   cumulative ``sys.ack`` covers it. A full buffer refuses the frame
   (:class:`~wscore.errors.SendBufferFull`); nothing is numbered then.
2. **Re-sending.** When a ``sys.connected`` arrives every buffered frame the
   server has not acknowledged is written (again), in order; the server drops
   the ones it already ran and answers them through its replay.
3. **Incoming de-duplication and gaps.** A server frame whose ``s`` is ≤ the
   highest delivered is a duplicate and dropped. A frame that skips numbers is
   a *gap*: it is not delivered, the link is aborted and the reconnect asks
   for everything after the last frame delivered — a gap is never skipped.
4. **Batched acknowledgement.** :meth:`~ClientSession.tick` acknowledges the
   highest delivered ``s`` once ``ack_every_frames`` new frames arrived or
   ``ack_delay`` seconds after the first unacknowledged one, whichever is
   first — never per message. A resume's ``last_seq`` acknowledges implicitly.
5. **Session loss.** A ``sys.connected`` that does not resume the session we
   asked for (the server said 1006) starts clean: pending requests fail with
   :class:`~wscore.errors.SessionLost`, the old session's frames are dropped,
   never replayed into a session that did not see their predecessors, and
   numbering restarts at 1.
6. **Closing codes.** 4000 (taken over), 1009 (too big: the frame would be
   re-sent forever), 4003, 4004 and 4005 without a token provider are
   terminal, as is an HTTP 4xx upgrade refusal other than 408/429; 1012
   (service restart) reconnects at once with a little jitter; anything else
   reconnects with exponential backoff and full jitter.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from wscore.errors import (
    ConnectionClosed,
    SendBufferFull,
    SessionLost,
    UsageError,
    WsError,
    WsException,
)
from wscore.protocol.codes import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_REPLACED,
    REPLY_EVENT,
    ErrorCode,
    SysEvent,
)
from wscore.protocol.envelope import Envelope, encode_envelope

__all__ = [
    "CLOSE_SERVICE_RESTART",
    "TERMINAL_CLOSE_CODES",
    "Abort",
    "Action",
    "ClientSession",
    "ClientSessionOptions",
    "ConnectOutcome",
    "Deliver",
    "Disconnected",
    "LoseSession",
    "OpenConnection",
    "Opened",
    "Phase",
    "Reconnect",
    "RejectRequest",
    "ResolveRequest",
    "SendClose",
    "SendFrame",
    "SessionInfo",
    "Terminal",
    "expiry",
    "token_refresh_at",
]

log = logging.getLogger("wscore.client")

#: RFC 6455 §7.4.1 "service restart": the server restarts and keeps the session (SPEC §6).
CLOSE_SERVICE_RESTART = 1012
#: Longest jitter window of the reconnect after 1012, seconds.
RESTART_JITTER_CAP = 1.0

#: Close codes after which reconnecting cannot help (SPEC §3): a takeover by another
#: connection (two clients would fight forever), refused or expired credentials, and
#: "message too big" (the offending frame would be re-sent after every reconnect).
#: 4005 (token expired) is terminal only for a client without a token provider.
TERMINAL_CLOSE_CODES = frozenset(
    {
        CLOSE_REPLACED,
        CLOSE_MESSAGE_TOO_BIG,
        ErrorCode.AUTH_REQUIRED.close_code,
        ErrorCode.AUTH_FAILED.close_code,
        ErrorCode.TOKEN_EXPIRED.close_code,
    }
)

_SELF_HEALING_HTTP = frozenset({408, 429})
# Plain strings: comparing with an enum's .value costs a descriptor call per frame.
_EV_CONNECTED = SysEvent.CONNECTED.value
_EV_ERROR = SysEvent.ERROR.value
_EV_ACK = SysEvent.ACK.value
_EV_PONG = SysEvent.PONG.value


class Phase(enum.Enum):
    """Where the session's current connection stands."""

    IDLE = "idle"  # never connected
    CONNECTING = "connecting"  # an attempt is under way, no sys.connected yet
    OPEN = "open"  # sys.connected seen on the current link
    WAITING = "waiting"  # between attempts (a Reconnect was returned)
    CLOSING = "closing"  # close() sent a close frame on the open link
    CLOSED = "closed"  # terminal


#: Phases in which frames of the current link are read.
_READING = frozenset({Phase.CONNECTING, Phase.OPEN, Phase.CLOSING})


class ConnectOutcome(enum.Enum):
    NEW = "new"  # the first session of this client
    RESUMED = "resumed"  # the session we asked for, with its replay
    LOST = "lost"  # we asked to resume, the server made a new session (1006)


@attrs.frozen
class SessionInfo:
    """What ``sys.connected`` said about a connection (SPEC §3)."""

    session_id: str
    resumed: bool
    last_seq: int
    heartbeat: float
    #: When the connection's token expires (server's epoch seconds); None: never.
    expires_at: float | None = None


# -- actions ------------------------------------------------------------------------------------
@attrs.frozen
class OpenConnection:
    """Open a connection whose URL carries exactly these query parameters."""

    query: dict[str, str]


@attrs.frozen
class SendFrame:
    """Write this text frame (``seq``: its ``s``, None for unnumbered control frames)."""

    text: str
    seq: int | None = None


@attrs.frozen
class SendClose:
    """Write an RFC 6455 close frame; the connection then ends (``on_closed`` follows)."""

    code: int
    reason: str = ""


@attrs.frozen
class Deliver:
    """Run the callbacks of ``event`` with ``payload``."""

    event: str
    payload: Any


@attrs.frozen
class ResolveRequest:
    cid: int
    payload: Any


@attrs.frozen
class RejectRequest:
    """Request ``cid`` fails with ``error`` (WsError, SessionLost or ConnectionClosed)."""

    cid: int
    error: WsException


@attrs.frozen
class Opened:
    """A ``sys.connected`` was accepted: run the connect (and resume) hooks."""

    info: SessionInfo
    outcome: ConnectOutcome
    #: Frames of a lost session thrown away (rule 5).
    dropped_frames: int = 0
    #: The server's ``lastSeq`` is below what was delivered: it forgot frames it sent.
    server_behind: bool = False


@attrs.frozen
class LoseSession:
    """The session we asked to resume is gone: run the session-lost hooks (before Opened)."""

    error: SessionLost


@attrs.frozen
class Disconnected:
    """An open link ended: run the disconnect hooks."""

    reason: ConnectionClosed


@attrs.frozen
class Reconnect:
    """Wait ``delay`` seconds, then call :meth:`ClientSession.connect` again."""

    delay: float


@attrs.frozen
class Abort:
    """The server broke the protocol on this link: drop it now, then report ``on_closed``.

    ``reason``: ``gap``, ``numberedBeforeConnected``, ``secondConnected``, ``badConnected``.
    """

    reason: str
    detail: str = ""


@attrs.frozen
class Terminal:
    """The client stops for good; ``error`` is what its methods raise from now on."""

    error: WsError | ConnectionClosed


Action = (
    OpenConnection | SendFrame | SendClose | Deliver | ResolveRequest | RejectRequest | Opened
    | LoseSession | Disconnected | Reconnect | Abort | Terminal
)


@attrs.frozen(kw_only=True)
class ClientSessionOptions:
    """The protocol knobs of a client session (the shell maps ``WsClientConfig`` onto them)."""

    max_unacked_frames: int = 1000
    max_unacked_bytes: int = 16 * 1024 * 1024
    ack_every_frames: int = 64
    ack_delay: float = 0.2
    backoff_base: float = 0.25
    backoff_cap: float = 15.0
    reconnect: bool = True
    max_reconnect_attempts: int | None = None
    #: The client can fetch a fresh token: 4005 (token expired) then reconnects.
    token_provider: bool = False
    #: Put the token in the URL (``?token=``) rather than leaving it to a header.
    token_in_query: bool = False
    #: Names this client instance to the server (random, chosen by the caller); with the
    #: attempt counter it lets the server refuse a stale attempt.
    client_tag: str | None = None
    #: Used when ``sys.connected`` announces no heartbeat.
    default_heartbeat: float = 20.0

    def __attrs_post_init__(self) -> None:
        if not (self.backoff_base > 0 and self.backoff_cap >= self.backoff_base):
            raise ValueError("backoff needs 0 < backoff_base <= backoff_cap")


_NOT_CONNECTED = "not connected: the next connection authenticates anew"


class ClientSession:
    """One client's session across its connections: feed it events, carry out its actions.

    Inputs: :meth:`connect` (an attempt starts), :meth:`receive` (a decoded text
    frame), :meth:`on_closed` (the connection or attempt ended), :meth:`tick`
    (a timer fired, or a batch of frames was read), and the user calls
    :meth:`send`, :meth:`request`, :meth:`auth`, :meth:`abandon`, :meth:`close`.
    Each returns the list of actions to carry out, in order. Not thread-safe.
    """

    def __init__(
        self,
        options: ClientSessionOptions,
        *,
        random: Callable[[], float],
        wall_ms: Callable[[], int],
    ) -> None:
        """``random()`` returns a float in [0, 1) (the jitter); ``wall_ms()`` the epoch ms
        put in the ``t`` of outgoing frames (informational only)."""
        self.options = options
        self._random = random
        self._wall_ms = wall_ms
        self.phase = Phase.IDLE
        self.session_id: str | None = None
        self.attempts = 0  # connection attempts made (numbered 1, 2, 3 … in the URL)
        self.failures = 0  # consecutive failed attempts since the last sys.connected
        self.last_failure = ""
        self.info: SessionInfo | None = None  # of the open link
        self._aborted = False  # the current link broke the protocol: ignore the rest of it
        self._pre_error: WsError | None = None  # a connection-level sys.error on this link
        self._close_error: ConnectionClosed | None = None  # set by close() while CLOSING
        self.terminal_error: WsError | ConnectionClosed | None = None
        # outgoing stream (rules 1-2)
        self.last_out_seq = 0
        self.server_acked = 0
        self._unacked: deque[tuple[int, str, int]] = deque()  # (s, wire text, UTF-8 bytes)
        self._unacked_bytes = 0
        # incoming stream (rules 3-4)
        self.delivered = 0
        self.acked_to_server = 0
        self._ack_timer_start: float | None = None
        # requests: correlation id -> "request" | "auth"
        self._next_cid = 1
        self._pending: dict[int, str] = {}
        # counters (monotonic)
        self.connects = 0
        self.resumes = 0
        self.sessions_lost = 0
        self.failed_attempts = 0
        self.frames_received = 0
        self.duplicates_dropped = 0
        self.gaps = 0
        self.unmatched_replies = 0

    # -- read-only views -------------------------------------------------------------------
    @property
    def unacked_frames(self) -> int:
        return len(self._unacked)

    @property
    def unacked_bytes(self) -> int:
        return self._unacked_bytes

    @property
    def pending(self) -> list[int]:
        """Correlation ids awaiting an answer (requests and ``sys.auth``), ascending."""
        return sorted(self._pending)

    def backoff_ceiling(self, failures: int) -> float:
        """Upper bound of the delay after ``failures`` consecutive failures: min(cap, base·2ⁿ)."""
        # Cap the exponent: 2**n overflows floats after ~1000 attempts.
        opts = self.options
        return min(opts.backoff_cap, opts.backoff_base * 2.0 ** min(failures, 64))

    def backoff_delay(self, failures: int) -> float:
        """Full jitter: uniform in [0, ceiling) — spreads a reconnect storm over the window."""
        return self._random() * self.backoff_ceiling(failures)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has work next (the delayed ack); None: nothing pending."""
        if self.phase is not Phase.OPEN or self._ack_timer_start is None:
            return None
        if self.delivered <= self.acked_to_server:
            return None
        return self._ack_timer_start + self.options.ack_delay

    # -- connections -------------------------------------------------------------------------
    def connect(self, *, token: str | None = None) -> list[Action]:
        """A connection attempt starts; returns the :class:`OpenConnection` to carry out.

        ``client`` + ``attempt`` number the attempts of this client instance, so
        the server can refuse an abandoned attempt that arrives after a newer one.
        """
        if self.phase is Phase.CLOSED:
            raise UsageError("the client session is closed")
        self.attempts += 1
        self.phase = Phase.CONNECTING
        self.info = None
        self._aborted = False
        self._pre_error = None
        query: dict[str, str] = {}
        if token is not None and self.options.token_in_query:
            query["token"] = token
        if self.session_id is not None:
            query["session"] = self.session_id
            query["last_seq"] = str(self.delivered)
        if self.options.client_tag is not None:
            query["client"] = self.options.client_tag
            query["attempt"] = str(self.attempts)
        return [OpenConnection(query)]

    def on_closed(
        self, *, code: int | None = None, reason: str = "", http_status: int | None = None
    ) -> list[Action]:
        """The current connection (or attempt) ended.

        ``code``: from the server's close frame (None: no close frame — network
        loss, an aborted link, a failed attempt); ``http_status``: the upgrade
        was refused with it.
        """
        phase = self.phase
        if phase is Phase.CLOSED:
            return []
        was_open = phase in (Phase.OPEN, Phase.CLOSING)
        by_peer: bool | None = False if phase is Phase.CLOSING else (
            True if code is not None or http_status is not None else None)
        if http_status is not None and not reason:
            reason = f"upgrade refused: HTTP {http_status}"
        closed = ConnectionClosed(code, reason, by_peer=by_peer)
        actions: list[Action] = []
        if was_open:
            actions.append(Disconnected(closed))
        pre, self._pre_error = self._pre_error, None
        self.info = None
        if phase is Phase.CLOSING:
            assert self._close_error is not None
            return actions + self._terminate(self._close_error)
        if http_status is not None and 400 <= http_status < 500 \
                and http_status not in _SELF_HEALING_HTTP:
            return actions + self._terminate(closed)  # a wrong path, a forbidden origin …
        if code in TERMINAL_CLOSE_CODES and not (
                code == ErrorCode.TOKEN_EXPIRED.close_code and self.options.token_provider):
            return actions + self._terminate(pre or closed)
        if not was_open:
            self.failures += 1
            self.failed_attempts += 1
            self.last_failure = reason
            limit = self.options.max_reconnect_attempts
            if not self.options.reconnect or (limit is not None and self.failures >= limit):
                return actions + self._terminate(ConnectionClosed(
                    None, f"gave up after {self.failures} failed attempt(s): {reason}"))
        elif not self.options.reconnect:
            return actions + self._terminate(closed)
        # The session goes on: its requests wait for the resume, but a sys.auth belongs
        # to its link (the next connection authenticates anew).
        for cid in [c for c, kind in self._pending.items() if kind == "auth"]:
            del self._pending[cid]
            actions.append(RejectRequest(cid, closed))
        self.phase = Phase.WAITING
        if code == CLOSE_SERVICE_RESTART:
            # The server restarts and keeps the session (SPEC §6): come back at once, spread
            # over a short window so a whole fleet of clients does not arrive in one instant.
            self.failures = 0
            delay = self._random() * min(self.options.backoff_base, RESTART_JITTER_CAP)
        else:
            delay = self.backoff_delay(self.failures)
        return [*actions, Reconnect(delay)]

    # -- incoming ---------------------------------------------------------------------------
    def receive(self, env: Envelope, now: float) -> list[Action]:
        """A text frame from the server, decoded (:func:`~wscore.protocol.envelope.decode_envelope`)."""
        phase = self.phase
        if self._aborted or phase not in _READING:
            return []
        self.frames_received += 1
        seq = env.seq
        if seq is None:
            return self._unnumbered(env)
        if phase is Phase.CONNECTING:
            return self._abort("numberedBeforeConnected", f"s={seq} before sys.connected")
        if seq <= self.delivered:
            self.duplicates_dropped += 1
            return []
        if seq != self.delivered + 1:
            self.gaps += 1
            log.error("server stream skipped from s=%d to s=%d: resuming to get the missing "
                      "frames", self.delivered, seq)
            return self._abort("gap", f"expected s={self.delivered + 1}, got s={seq}")
        self.delivered = seq
        if self._ack_timer_start is None:
            self._ack_timer_start = now
        return self._answer(env)

    def _abort(self, reason: str, detail: str) -> list[Action]:
        self._aborted = True
        return [Abort(reason, detail)]

    def _answer(self, env: Envelope) -> list[Action]:
        """Route a frame of the session: a reply, an error, or an event for the callbacks."""
        event = env.event
        cid = env.correlation_id
        if event == REPLY_EVENT and cid is not None:
            if self._pending.pop(cid, None) is None:  # type: ignore[arg-type]
                self.unmatched_replies += 1  # the reply to a timed-out request, or a 2nd one
                return []
            return [ResolveRequest(cid, env.payload)]  # type: ignore[arg-type]
        if event == _EV_ERROR and cid is not None:
            if self._pending.pop(cid, None) is None:  # type: ignore[arg-type]
                self.unmatched_replies += 1
                return []
            return [RejectRequest(cid, WsError.from_payload(env.payload))]  # type: ignore[arg-type]
        return [Deliver(event, env.payload)]

    def _unnumbered(self, env: Envelope) -> list[Action]:
        event = env.event
        if event == _EV_CONNECTED:
            return self._on_connected(env.payload)
        if event == _EV_ACK:
            p = env.payload
            s = p.get("s") if isinstance(p, dict) else None
            if isinstance(s, int) and not isinstance(s, bool):
                self._on_server_ack(s)
            return []
        if event == _EV_PONG:
            return []  # liveness only; the shell saw bytes arrive
        if event == _EV_ERROR:
            error = WsError.from_payload(env.payload)
            if self.phase is Phase.CONNECTING:
                # 1003/1004 precede the terminal close; 1006 precedes a fresh sys.connected.
                self._pre_error = error
                return []
            if error.code in (ErrorCode.TOKEN_EXPIRED, ErrorCode.AUTH_FAILED):
                # The close 4005/4004 follows; a terminal one ends with this error.
                self._pre_error = error
            return self._answer(env)
        if self.phase is Phase.CONNECTING:
            return []
        log.warning("unexpected unnumbered %r frame from the server", event)
        return [Deliver(event, env.payload)]

    def _on_connected(self, payload: Any) -> list[Action]:
        if self.phase is not Phase.CONNECTING:
            return self._abort("secondConnected", "second sys.connected on one connection")
        p = payload if isinstance(payload, dict) else {}
        session_id = p.get("sessionId")
        last_seq = p.get("lastSeq", 0)
        heartbeat = p.get("heartbeat", self.options.default_heartbeat)
        if (not isinstance(session_id, str) or not session_id
                or not isinstance(last_seq, int) or isinstance(last_seq, bool)
                or isinstance(heartbeat, bool) or not isinstance(heartbeat, (int, float))
                or not heartbeat > 0):
            return self._abort("badConnected", "malformed sys.connected payload")
        raw_expiry = p.get("expiresAt")
        expires_at = expiry(raw_expiry)
        if expires_at is None and raw_expiry is not None:
            log.warning("ignoring a malformed expiresAt in sys.connected")
        actions: list[Action] = []
        asked = self.session_id
        resend_after = 0
        dropped = 0
        behind = False
        if asked is None:
            outcome = ConnectOutcome.NEW
            self.session_id = session_id
        elif p.get("resumed") is True and session_id == asked:
            outcome = ConnectOutcome.RESUMED
            # last_seq in the URL acknowledged everything delivered so far.
            self.acked_to_server = self.delivered
            self._ack_timer_start = None
            resend_after = self.server_acked
            behind = last_seq < self.delivered
            if behind:
                log.error("server resumed at lastSeq=%d below the %d frames already delivered",
                          last_seq, self.delivered)
            self.resumes += 1
        else:
            outcome = ConnectOutcome.LOST
            pre = self._pre_error
            message = (pre.message if pre is not None and pre.code is ErrorCode.SESSION_NOT_FOUND
                       else "the server did not resume the session")
            error = SessionLost(message)
            dropped = len(self._unacked)
            log.warning("session lost (%s); %d unacknowledged frame(s) and %d pending "
                        "request(s) dropped", message, dropped, len(self._pending))
            self.sessions_lost += 1
            self.session_id = session_id
            self._reset_streams()
            for cid in sorted(self._pending):
                actions.append(RejectRequest(cid, error))
            self._pending.clear()
            actions.append(LoseSession(error))
        self._pre_error = None
        self.phase = Phase.OPEN
        self.failures = 0
        self.connects += 1
        self.info = SessionInfo(session_id=session_id, resumed=outcome is ConnectOutcome.RESUMED,
                                last_seq=last_seq, heartbeat=float(heartbeat),
                                expires_at=expires_at)
        actions.append(Opened(self.info, outcome, dropped_frames=dropped, server_behind=behind))
        actions.extend(SendFrame(wire, s) for s, wire, _ in self._unacked if s > resend_after)
        return actions

    def _reset_streams(self) -> None:
        self.last_out_seq = 0
        self.server_acked = 0
        self._unacked.clear()
        self._unacked_bytes = 0
        self.delivered = 0
        self.acked_to_server = 0
        self._ack_timer_start = None

    def _on_server_ack(self, seq: int) -> None:
        """Cumulative: release every frame ≤ ``seq``; capped at what was numbered (a
        confused server cannot make us forget frames it never saw)."""
        seq = min(seq, self.last_out_seq)
        if seq <= self.server_acked:
            return
        self.server_acked = seq
        buf = self._unacked
        while buf and buf[0][0] <= seq:
            self._unacked_bytes -= buf.popleft()[2]

    def tick(self, now: float) -> list[Action]:
        """Send the acknowledgement if it is due (rule 4). Call after each batch of frames
        read and at :meth:`next_deadline`."""
        if self.phase is not Phase.OPEN or self.delivered <= self.acked_to_server:
            return []
        start = self._ack_timer_start
        due = (self.delivered - self.acked_to_server >= self.options.ack_every_frames
               or (start is not None and now >= start + self.options.ack_delay))
        if not due:
            return []
        self.acked_to_server = self.delivered
        self._ack_timer_start = None
        return [self._control(SysEvent.ACK.value, {"s": self.delivered})]

    def _control(self, event: str, payload: Any, cid: int | None = None) -> SendFrame:
        # Unnumbered: sys.* frames are outside the numbered stream (SPEC §3).
        frame = encode_envelope(event, payload, now_ms=self._wall_ms(), correlation_id=cid)
        return SendFrame(frame.unnumbered(), None)

    # -- user calls --------------------------------------------------------------------------
    def _check_usable(self) -> None:
        if self.terminal_error is not None:
            raise self.terminal_error
        if self._close_error is not None:
            raise self._close_error

    def send(self, event: str, payload: Any = None) -> list[Action]:
        """Number ``event`` and keep it until acknowledged; written now if the link is open.

        Raises :class:`SendBufferFull` when ``max_unacked_frames`` or
        ``max_unacked_bytes`` would be exceeded (nothing is numbered then), the
        terminal error once closed, :class:`UsageError` for a reserved ``sys.*``
        event, ``TypeError``/``ValueError`` for a payload JSON cannot encode.
        """
        return self._enqueue(event, payload, None)

    def request(self, event: str, payload: Any = None) -> tuple[int, list[Action]]:
        """:meth:`send` with a fresh correlation id, which is returned with the actions;
        the answer comes as :class:`ResolveRequest`/:class:`RejectRequest` with it."""
        self._check_usable()
        cid = self._take_cid()
        self._pending[cid] = "request"
        try:
            return cid, self._enqueue(event, payload, cid)
        except BaseException:
            del self._pending[cid]
            raise

    def auth(self, token: str) -> tuple[int, list[Action]]:
        """An in-band token refresh (``sys.auth`` with a correlation id) on the open link.

        Raises :class:`ConnectionClosed` when no link is open: a reconnect
        authenticates anew anyway. If the link ends first the request is
        rejected with the reason it ended.
        """
        self._check_usable()
        if self.phase is not Phase.OPEN:
            raise ConnectionClosed(None, _NOT_CONNECTED, by_peer=None)
        cid = self._take_cid()
        self._pending[cid] = "auth"
        return cid, [self._control(SysEvent.AUTH.value, {"token": token}, cid)]

    def abandon(self, cid: int) -> None:
        """The caller stopped waiting for ``cid``; a later answer counts as unmatched."""
        self._pending.pop(cid, None)

    def close(self, code: int = CLOSE_NORMAL, reason: str = "") -> list[Action]:
        """Close for good. An open link gets a close frame first (its end is then reported
        with :meth:`on_closed`); otherwise the session ends at once."""
        if self.phase is Phase.CLOSED or self.phase is Phase.CLOSING:
            return []
        error = ConnectionClosed(code, reason, by_peer=False)
        if self.phase is Phase.OPEN:
            self.phase = Phase.CLOSING
            self._close_error = error
            return [SendClose(code, reason)]
        return self._terminate(error)

    def _take_cid(self) -> int:
        cid = self._next_cid
        self._next_cid += 1
        return cid

    def _enqueue(self, event: str, payload: Any, cid: int | None) -> list[Action]:
        self._check_usable()
        if not isinstance(event, str) or not event:
            raise UsageError(f"event must be a non-empty string, got {event!r}")
        if event.startswith("sys."):
            raise UsageError(f"{event!r}: the sys.* namespace is reserved for the protocol")
        frame = encode_envelope(event, payload, now_ms=self._wall_ms(), correlation_id=cid)
        seq = self.last_out_seq + 1
        wire = frame.numbered(seq)
        size = len(wire.encode("utf-8"))
        opts = self.options
        if len(self._unacked) >= opts.max_unacked_frames:
            raise SendBufferFull(
                f"{len(self._unacked)} frames await the server's acknowledgement "
                f"(max_unacked_frames={opts.max_unacked_frames})")
        if self._unacked_bytes + size > opts.max_unacked_bytes:
            raise SendBufferFull(
                f"{self._unacked_bytes} + {size} bytes exceed "
                f"max_unacked_bytes={opts.max_unacked_bytes}")
        self.last_out_seq = seq
        self._unacked.append((seq, wire, size))
        self._unacked_bytes += size
        return [SendFrame(wire, seq)] if self.phase is Phase.OPEN else []

    def _terminate(self, error: WsError | ConnectionClosed) -> list[Action]:
        self.phase = Phase.CLOSED
        self.terminal_error = error
        self.info = None
        actions: list[Action] = [RejectRequest(cid, error) for cid in sorted(self._pending)]
        self._pending.clear()
        if self._unacked:
            log.info("client closed with %d unacknowledged frame(s)", len(self._unacked))
        actions.append(Terminal(error))
        return actions


def expiry(value: object) -> float | None:
    """``expiresAt`` as sent by the server: epoch seconds, or None (also for junk)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def token_refresh_at(expires_at: float, now: float, margin: float) -> float:
    """When to refresh a token that expires at ``expires_at`` (both wall-clock epoch seconds).

    ``margin`` seconds before the expiry, but never more than half of the
    lifetime left at ``now``: a token living less than ``2 * margin`` is
    refreshed halfway, which still leaves the other half for the provider and
    the round trip. A token already expired by our clock (skew, a slow
    provider) is due at ``now``. Compute it once per expiry, when it becomes
    known — re-deriving it later from a later ``now`` would keep halving the
    remainder and never come due.
    """
    remaining = expires_at - now
    if remaining <= 0:
        return now
    return expires_at - min(margin, remaining / 2.0)
