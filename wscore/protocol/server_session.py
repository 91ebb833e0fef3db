"""One server-side session's protocol state, sans I/O (SPEC §3 "Resume", §4).

:class:`ServerSession` decides everything the wire protocol says about one
session, and nothing else: which connection is attached (attach, takeover,
stale attempts, resume verdicts), the numbered outgoing stream and its
replay buffer, de-duplication of the client's numbered frames, the rate
bucket (every client frame but ``sys.ack`` spends a token; sustained refusal
closes with 4010), ``sys.ping`` / ``sys.ack`` / ``sys.auth``, token expiry,
acknowledgement batching and the session TTL. It is fed decoded envelopes,
connection events and the time (``now``: monotonic seconds; ``wall``: epoch
seconds), and answers with *actions* — plain values the I/O shell carries
out (:class:`actors.session.SessionActor` is that shell; so is
:mod:`wscore.testing`). It reads no clock, touches no socket and never
blocks, so two peers can be run back to back in memory
(``tests/wscore/protocol/test_back_to_back.py``).

What it leaves to the shell: running the application's handlers (it says
:class:`Dispatch`), running the authenticator (:class:`Authenticate`),
rooms, timers (:class:`ArmTimer` then :meth:`ServerSession.timer_fired`),
and the connections themselves (identified by the shell's ``conn_id``).

Rules (each one a test in ``tests/wscore/protocol/test_back_to_back.py``):

1. Every state change goes through :data:`wscore.protocol.session.TRANSITIONS`;
   inputs that no longer apply (a detach from a replaced connection, a timer
   of an earlier generation) are filtered out *before* the table, and an
   illegal pair raises.
2. A frame is numbered and recorded before it is handed out for writing; a
   frame that could not be encoded never reaches :meth:`push` (the envelope
   encoder refuses it), so nothing unsendable is ever numbered.
3. A resume that cannot be honoured (1006) changes nothing: the session and
   its live connection stay as they were (SPEC §4).
4. A client attempt older than one already attached for the same client tag
   is refused as stale and changes nothing.
"""

from __future__ import annotations

from typing import Any

import attrs

from wscore.errors import WsError
from wscore.protocol.codes import CLOSE_REPLACED, PROTOCOL_VERSION, ErrorCode, SysEvent
from wscore.protocol.envelope import (
    EncodedFrame,
    Envelope,
    encode_envelope,
    encode_error,
    encode_reply,
)
from wscore.protocol.session import (
    IllegalTransition,
    InboundTracker,
    OutgoingStream,
    ResumeImpossible,
    SessionInput,
    SessionState,
    TokenBucket,
    next_state,
)

__all__ = [
    "ENDED",
    "Action",
    "ArmTimer",
    "AttachVerdict",
    "Authenticate",
    "Close",
    "Dispatch",
    "End",
    "RequestAckFlush",
    "Send",
    "SendBatch",
    "ServerSession",
    "SessionLimits",
    "TimerKind",
]

#: Client instance tags remembered for the stale-attempt guard (oldest forgotten first).
_MAX_CLIENT_TAGS = 16


@attrs.frozen(kw_only=True)
class SessionLimits:
    """The configuration one session's protocol needs (a slice of ``WsServerConfig``)."""

    session_ttl: float
    ping_interval: float
    max_buffered_messages: int
    max_buffered_bytes: int
    rate_limit: float
    rate_burst: float
    rate_abuse_close_after: int

    @classmethod
    def from_config(cls, config: Any) -> SessionLimits:
        """Take the fields by name from a ``WsServerConfig`` (or anything shaped like one)."""
        return cls(**{f.name: getattr(config, f.name) for f in attrs.fields(cls)})


# -- actions: what the shell must do, in the order given ---------------------------------------------
@attrs.frozen
class Send:
    """Write ``wire`` to connection ``conn_id`` (if the shell still has it)."""

    conn_id: int
    wire: str


@attrs.frozen
class SendBatch:
    """Write a resume's replay to ``conn_id`` as one burst (it is not a slow consumer)."""

    conn_id: int
    wires: list[str]


@attrs.frozen
class Close:
    """Close connection ``conn_id`` with ``code`` after what was queued to it."""

    conn_id: int
    code: int
    reason: str = ""


@attrs.frozen
class Dispatch:
    """Run the application's handler for ``envelope`` (an admitted, new, non-``sys`` frame)."""

    envelope: Envelope


@attrs.frozen
class Authenticate:
    """Run the authenticator on ``token`` (``sys.auth``), then call :meth:`ServerSession.auth_result`."""

    token: str
    correlation_id: Any


class TimerKind:
    TTL = "ttl"
    TOKEN = "token"


@attrs.frozen
class ArmTimer:
    """Call :meth:`ServerSession.timer_fired` (``kind``, ``generation``) after ``delay`` seconds."""

    kind: str
    generation: int
    delay: float


@attrs.frozen
class RequestAckFlush:
    """Call :meth:`ServerSession.flush_ack` once the frames already queued were handled.

    (Acks are batched: one ``sys.ack`` covers every numbered frame processed in between.)
    """


@attrs.frozen
class End:
    """The session is over: leave its rooms, drop it from the directory, free it."""

    reason: str


Action = Send | SendBatch | Close | Dispatch | Authenticate | ArmTimer | RequestAckFlush | End

_REQUEST_ACK_FLUSH = RequestAckFlush()
#: What :meth:`ServerSession.push` returns when the frame made the session unresumable
#: while no connection is attached: the shell must end the session.
ENDED = End("replay buffer overflowed while detached")


@attrs.frozen
class AttachVerdict:
    """The answer to :meth:`ServerSession.attach`: ``ok``, or why not, plus the actions."""

    ok: bool
    actions: list[Action]
    reason: str = ""
    #: Refused as older than an attempt already attached (close the connection, touch nothing).
    stale: bool = False


class ServerSession:
    """One session's protocol, as a pure object. See the module docstring for its rules.

    Not thread-safe and not re-entrant: one caller at a time (an actor).
    """

    def __init__(self, *, session_id: str, user_id: str | None, limits: SessionLimits,
                 now: float) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.limits = limits
        self.state = SessionState.DETACHED
        self.stream = OutgoingStream(max_buffered=limits.max_buffered_messages,
                                     max_bytes=limits.max_buffered_bytes)
        self.inbound = InboundTracker()
        self.bucket = TokenBucket(rate=limits.rate_limit, burst=limits.rate_burst, now=now)
        #: The attached connection (the shell's id), None while detached.
        self.conn_id: int | None = None
        self.detached_at = now
        #: Bumped on every attach and detach: a TTL timer of an older generation is stale.
        self.generation = 0
        self.refused_in_a_row = 0
        self.frames_in = 0
        self.ack_pending = False
        #: Highest connection attempt attached per client instance tag (stale-attempt guard).
        self.attempts: dict[str, int] = {}
        self.expires_at: float | None = None
        self.token_generation = 0

    # -- what the shell may ask ------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self.state is SessionState.CLOSED

    def start(self) -> list[Action]:
        """The session was created detached: arm its TTL (its first connection attaches next)."""
        return [ArmTimer(TimerKind.TTL, self.generation, self.limits.session_ttl)]

    # -- connections -------------------------------------------------------------------------------
    def attach(self, conn_id: int, *, resume_from: int | None, expires_at: float | None,
               client_tag: str | None, attempt: int | None, now: float, wall: float) -> AttachVerdict:
        """Bind connection ``conn_id``; ``resume_from`` is the client's ``last_seq`` (None: new).

        On success the actions close a replaced connection (4000), send
        ``sys.connected``, the replay and, for a client that numbers its frames,
        a ``sys.ack`` saying which already ran. A refusal changes nothing.
        """
        if self.closed:
            return AttachVerdict(False, [], "session closed")
        # A client's abandoned attempt (e.g. held by a partition, delivered after
        # the network healed) must not take over the connection that replaced it.
        if client_tag is not None and attempt is not None and attempt <= self.attempts.get(client_tag, 0):
            return AttachVerdict(False, [], "stale connection attempt", stale=True)
        replay: list[str] = []
        if resume_from is not None:
            try:
                replay = self.stream.replay_after(resume_from)
            except ResumeImpossible as exc:
                return AttachVerdict(False, [], str(exc))  # rule 3: nothing changed
        if client_tag is not None and attempt is not None:
            if len(self.attempts) >= _MAX_CLIENT_TAGS and client_tag not in self.attempts:
                self.attempts.pop(next(iter(self.attempts)))
            self.attempts[client_tag] = attempt
        actions: list[Action] = []
        if self.conn_id is not None:
            actions.append(Close(self.conn_id, CLOSE_REPLACED, "session resumed on another connection"))
        self.state = next_state(self.state, SessionInput.ATTACH)
        self.generation += 1
        self.conn_id = conn_id
        actions += self._set_expiry(expires_at, wall)
        actions.append(Send(conn_id, encode_envelope(SysEvent.CONNECTED.value, {
            "sessionId": self.session_id,
            "resumed": resume_from is not None,
            "lastSeq": self.stream.last_seq,
            "heartbeat": self.limits.ping_interval,
            "v": PROTOCOL_VERSION,
            # wscore extension (unknown fields are ignored, SPEC §3): when the token
            # expires, so a client can refresh it with sys.auth in time.
            "expiresAt": self.expires_at,
        }, now_ms=_ms(wall)).unnumbered()))
        actions.append(SendBatch(conn_id, replay))
        if self.inbound.highest:
            # Tell a resuming client which of its frames already ran, so it re-sends only the rest.
            actions.append(self._ack_frame(conn_id, wall))
        return AttachVerdict(True, actions)

    def detach(self, conn_id: int, *, now: float) -> list[Action]:
        """Connection ``conn_id`` is gone; a report from a replaced connection is ignored."""
        if conn_id != self.conn_id or self.state is not SessionState.ATTACHED:
            return []
        self.state = next_state(self.state, SessionInput.DETACH)
        self.conn_id = None
        self.generation += 1
        self.detached_at = now
        if not self.stream.resumable:
            return self._end("detached with an overflowed replay buffer")
        return [ArmTimer(TimerKind.TTL, self.generation, self.limits.session_ttl)]

    def timer_fired(self, kind: str, generation: int, *, now: float, wall: float) -> list[Action]:
        """A timer armed by :class:`ArmTimer` fired (perhaps early: the clock is re-checked)."""
        if kind == TimerKind.TTL:
            if generation != self.generation or self.state is not SessionState.DETACHED:
                return []  # stale: re-attached (or detached again) since
            remaining = self.detached_at + self.limits.session_ttl - now
            if remaining > 0:
                return [ArmTimer(TimerKind.TTL, generation, remaining)]
            self.state = next_state(self.state, SessionInput.EXPIRE)
            return [_END_EXPIRED]
        if generation != self.token_generation or self.expires_at is None or self.conn_id is None:
            return []  # refreshed, or no connection to expire
        remaining = self.expires_at - wall
        if remaining > 0:
            return [ArmTimer(TimerKind.TOKEN, generation, remaining)]
        return self._close_connection(WsError(
            ErrorCode.TOKEN_EXPIRED, "the token expired; send sys.auth with a fresh token before expiry"),
            wall)

    def end(self, close_code: int | None, reason: str) -> list[Action]:
        """End the session now (server shutdown, a failure): close its connection with ``close_code``."""
        if self.closed:
            return []
        actions: list[Action] = []
        if self.conn_id is not None and close_code is not None:
            actions.append(Close(self.conn_id, close_code, reason))
        return actions + self._end(reason or "ended")

    # -- the outgoing stream -------------------------------------------------------------------------
    def push(self, frame: EncodedFrame) -> str | End | None:
        """Number and record one session frame (the fan-out hot path: no action list).

        Returns the numbered wire text to write to :attr:`conn_id` now; None when
        no connection is attached (it waits in the replay buffer); :data:`ENDED`
        when, detached, the buffer had to drop an unacknowledged frame: the
        session can never be resumed and must end. Raises
        :class:`~wscore.protocol.session.IllegalTransition` on a closed session.
        """
        if self.state is SessionState.CLOSED:
            raise IllegalTransition("push on a closed session")
        stream = self.stream
        seq = stream.next_seq()
        wire = frame.numbered(seq)
        stream.record(seq, wire)
        if self.conn_id is not None:
            return wire
        if not stream.resumable and self.state is SessionState.DETACHED:
            self.state = next_state(self.state, SessionInput.CLOSE)
            return ENDED
        return None

    def push_actions(self, frame: EncodedFrame) -> list[Action]:
        """:meth:`push`, as actions (for the paths that are not hot)."""
        out = self.push(frame)
        if out is None:
            return []
        if isinstance(out, End):
            return [out]
        assert self.conn_id is not None
        return [Send(self.conn_id, out)]

    def error(self, error: WsError, correlation_id: Any, *, wall: float) -> list[Action]:
        """A numbered ``sys.error`` for ``error``; one whose text cannot be sent becomes 1011."""
        try:
            frame = encode_error(error, now_ms=_ms(wall), correlation_id=correlation_id)
        except (TypeError, ValueError):
            frame = internal_error_frame(correlation_id, wall=wall)
        return self.push_actions(frame)

    # -- client frames -------------------------------------------------------------------------------
    def receive(self, envelope: Envelope, *, now: float, wall: float) -> list[Action]:
        """One decoded client frame from the attached connection (SPEC §3)."""
        self.frames_in += 1
        event = envelope.event
        c = envelope.correlation_id
        if event == SysEvent.ACK.value:
            p = envelope.payload
            s = p.get("s") if isinstance(p, dict) else None
            if isinstance(s, int) and not isinstance(s, bool):
                self.stream.ack(s)  # the one frame that costs no token (SPEC §3)
                return []
            return self._admit(c, now, wall) or self.error(WsError(
                ErrorCode.INVALID_PROTOCOL, "sys.ack needs p.s, an integer", {"field": "p.s"}),
                c, wall=wall)
        if event.startswith("sys."):
            refused = self._admit(c, now, wall)
            if refused:
                return refused
            return self._system_frame(envelope, wall)
        allowed = self.bucket.take(now)
        actions: list[Action] = []
        if envelope.seq is not None:
            new = self.inbound.accept(envelope.seq)
            actions += self._schedule_ack()
            if not new:
                return actions  # a duplicate: confirmed again, run nothing (it cost a token)
            # A frame refused below has used up its s (SPEC §3).
        refused = self._admit(c, now, wall, spent=allowed)
        if refused:
            return actions + refused
        actions.append(Dispatch(envelope))
        return actions

    def unparseable(self, error: WsError, correlation_id: Any, *, now: float, wall: float
                    ) -> list[Action]:
        """A frame that failed decoding (or a binary one): 1001, if the bucket allows."""
        self.frames_in += 1
        return self._admit(correlation_id, now, wall) or self.error(error, correlation_id, wall=wall)

    def auth_result(self, *, ok: bool, user_id: str | None, expires_at: float | None,
                    correlation_id: Any, wall: float) -> list[Action]:
        """The authenticator's verdict on a ``sys.auth`` token (see :class:`Authenticate`)."""
        if not ok or user_id != self.user_id:
            return self._close_connection(WsError(
                ErrorCode.AUTH_FAILED, "token refused" if not ok else "token is for another user"), wall)
        actions = self._set_expiry(expires_at, wall)
        if correlation_id is not None:
            actions += self.push_actions(encode_reply({"expiresAt": expires_at}, correlation_id,
                                                      now_ms=_ms(wall)))
        return actions

    def flush_ack(self, *, wall: float) -> list[Action]:
        """Send the batched ``sys.ack`` (see :class:`RequestAckFlush`)."""
        self.ack_pending = False
        if self.conn_id is None:
            return []
        return [self._ack_frame(self.conn_id, wall)]

    # -- internals --------------------------------------------------------------------------------
    def _admit(self, c: Any, now: float, wall: float, *, spent: bool | None = None) -> list[Action]:
        """Spend a token; ``[]`` if admitted, else the 1010 (and 4010 on sustained abuse)."""
        allowed = self.bucket.take(now) if spent is None else spent
        if allowed:
            self.refused_in_a_row = 0
            return []
        self.refused_in_a_row += 1
        actions = self.error(WsError(
            ErrorCode.RATE_LIMIT_EXCEEDED, f"over {self.limits.rate_limit:g} messages/s; message not run",
        ), c, wall=wall)
        if self.refused_in_a_row >= self.limits.rate_abuse_close_after and self.conn_id is not None:
            actions.append(Close(self.conn_id, ErrorCode.RATE_LIMIT_EXCEEDED.close_code,
                                 "rate limit abuse"))
        return actions

    def _system_frame(self, envelope: Envelope, wall: float) -> list[Action]:
        event = envelope.event
        c = envelope.correlation_id
        if event == SysEvent.PING.value:
            # Connection-level: unnumbered, never replayed (SPEC §3).
            if self.conn_id is None:
                return []
            return [Send(self.conn_id, encode_envelope(
                SysEvent.PONG.value, envelope.payload, now_ms=_ms(wall), correlation_id=c).unnumbered())]
        if event == SysEvent.AUTH.value:
            p = envelope.payload
            token = p.get("token") if isinstance(p, dict) else None
            if not isinstance(token, str) or not token:
                return self.error(WsError(ErrorCode.INVALID_PROTOCOL, "sys.auth needs p.token",
                                          {"field": "p.token"}), c, wall=wall)
            return [Authenticate(token, c)]
        return self.error(WsError(ErrorCode.INVALID_PROTOCOL, f"{event!r}: the sys.* namespace is reserved",
                                  {"event": event}), c, wall=wall)

    def _schedule_ack(self) -> list[Action]:
        if self.ack_pending:
            return []
        self.ack_pending = True
        return [_REQUEST_ACK_FLUSH]

    def _ack_frame(self, conn_id: int, wall: float) -> Send:
        return Send(conn_id, encode_envelope(SysEvent.ACK.value, {"s": self.inbound.highest},
                                             now_ms=_ms(wall)).unnumbered())

    def _set_expiry(self, expires_at: float | None, wall: float) -> list[Action]:
        self.expires_at = expires_at
        self.token_generation += 1
        if expires_at is None:
            return []
        return [ArmTimer(TimerKind.TOKEN, self.token_generation, max(expires_at - wall, 0.0))]

    def _close_connection(self, error: WsError, wall: float) -> list[Action]:
        """A connection-level error (unnumbered, SPEC §3), then the close with its code."""
        if self.conn_id is None:
            return []
        return [Send(self.conn_id, encode_error(error, now_ms=_ms(wall)).unnumbered()),
                Close(self.conn_id, error.code.close_code, error.code.wire_name)]

    def _end(self, reason: str) -> list[Action]:
        self.state = next_state(self.state, SessionInput.CLOSE)
        self.conn_id = None
        return [End(reason)]


_END_EXPIRED = End("session_ttl ran out")


def internal_error_frame(correlation_id: Any, *, wall: float) -> EncodedFrame:
    """The 1011 ``sys.error``: no detail leaks to the client (SPEC §3)."""
    return encode_error(WsError(ErrorCode.INTERNAL_ERROR, "internal server error"),
                        now_ms=_ms(wall), correlation_id=correlation_id)


def _ms(wall: float) -> int:
    return int(wall * 1000)

