"""The client's half of SPEC §3 "Resume", sans I/O.

:class:`ResumeState` is the whole bookkeeping the I/O layer consults; it reads
no clock (``now`` is passed in) and draws no randomness (:class:`Backoff`
takes the caller's RNG). Rules it keeps:

1. **Outgoing numbering.** Every application frame gets ``s`` = 1, 2, 3 … per
   session, before it is written anywhere, and stays in a bounded buffer until
   the server's cumulative ``sys.ack`` covers it. A full buffer refuses the
   frame (:class:`~wscore.errors.SendBufferFull`); nothing is numbered then.
2. **Re-sending.** After a resume every frame still unacknowledged is written
   again, in order; the server drops the ones it already ran (SPEC §3) and
   answers them through its replay.
3. **Incoming de-duplication.** A server frame whose ``s`` is ≤ the highest
   delivered is a duplicate and is dropped; a frame that skips numbers is a
   gap (the server broke its contract): it is reported, then delivered.
4. **Batched acknowledgement.** The client acknowledges the highest delivered
   ``s`` after ``ack_every_frames`` new frames or ``ack_delay`` seconds after
   the first unacknowledged one, whichever is first — never per message. The
   reconnect URL's ``last_seq`` acknowledges implicitly.
5. **Session loss.** A ``sys.connected`` that does not resume the session we
   asked for (the server said 1006) starts clean: the new session's numbering
   begins at 1 and every frame of the old one is dropped, counted, never
   replayed into a session that did not see its predecessors.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Protocol

import attrs

from wscore.errors import SendBufferFull
from wscore.protocol.envelope import EncodedFrame

__all__ = [
    "Backoff",
    "ConnectOutcome",
    "Connected",
    "Delivery",
    "ResumeState",
    "UniformRng",
    "token_refresh_at",
]


class Delivery(enum.Enum):
    """What to do with a numbered server frame (rule 3)."""

    DELIVER = "deliver"
    DUPLICATE = "duplicate"
    GAP = "gap"  # deliver, but the server skipped numbers: log an error


class ConnectOutcome(enum.Enum):
    NEW = "new"  # the first session of this client
    RESUMED = "resumed"  # the session we asked for, with its replay
    LOST = "lost"  # we asked to resume, the server made a new session (1006)


@attrs.frozen
class Connected:
    """The result of :meth:`ResumeState.on_connected`.

    ``resend_after``: write every buffered frame with ``s`` above it.
    ``dropped_frames``: frames of a lost session thrown away (rule 5).
    ``server_behind``: the server's ``lastSeq`` is below what we already
    delivered — it forgot frames it sent; the caller logs an error.
    """

    outcome: ConnectOutcome
    session_id: str
    resend_after: int
    dropped_frames: int = 0
    server_behind: bool = False


class ResumeState:
    """Numbering, unacknowledged buffer, de-duplication and ack batching of one client."""

    def __init__(
        self,
        *,
        max_unacked_frames: int,
        max_unacked_bytes: int,
        ack_every_frames: int,
        ack_delay: float,
        client_tag: str | None = None,
    ) -> None:
        """``client_tag`` names this client instance to the server (random, chosen by the
        caller): with the attempt counter it lets the server refuse a stale attempt."""
        self.client_tag = client_tag
        self.attempts = 0  # connection attempts made (numbered 1, 2, 3 … in the URL)
        self._max_frames = max_unacked_frames
        self._max_bytes = max_unacked_bytes
        self._ack_every = ack_every_frames
        self._ack_delay = ack_delay
        self.session_id: str | None = None
        # outgoing stream (rules 1-2)
        self.last_out_seq = 0  # highest s assigned
        self.server_acked = 0  # highest s the server acknowledged
        self._unacked: deque[tuple[int, str]] = deque()
        self._unacked_bytes = 0
        # incoming stream (rules 3-4)
        self.delivered = 0  # highest server s delivered to the application
        self.acked_to_server = 0  # highest s we told the server about
        self._ack_timer_start: float | None = None

    # -- outgoing --------------------------------------------------------------------------
    @property
    def unacked_frames(self) -> int:
        return len(self._unacked)

    @property
    def unacked_bytes(self) -> int:
        return self._unacked_bytes

    def enqueue(self, frame: EncodedFrame) -> tuple[int, str]:
        """Number ``frame`` and keep it until acknowledged; returns ``(s, wire_text)``.

        Raises :class:`SendBufferFull` (and numbers nothing) when either bound
        would be exceeded.
        """
        seq = self.last_out_seq + 1
        wire = frame.numbered(seq)
        size = len(wire)
        if len(self._unacked) >= self._max_frames:
            raise SendBufferFull(
                f"{len(self._unacked)} frames await the server's acknowledgement "
                f"(max_unacked_frames={self._max_frames})"
            )
        if self._unacked_bytes + size > self._max_bytes:
            raise SendBufferFull(
                f"{self._unacked_bytes} + {size} bytes exceed max_unacked_bytes={self._max_bytes}"
            )
        self.last_out_seq = seq
        self._unacked.append((seq, wire))
        self._unacked_bytes += size
        return seq, wire

    def unsent_after(self, written: int) -> list[tuple[int, str]]:
        """Buffered frames with ``s`` > ``written``, in order (the writer's next batch)."""
        buf = self._unacked
        if not buf or buf[-1][0] <= written:
            return []
        # The buffer holds a contiguous run of numbers, so the start index is arithmetic.
        start = max(0, written + 1 - buf[0][0])
        return [buf[i] for i in range(start, len(buf))]

    def on_server_ack(self, seq: int) -> int:
        """Apply the server's cumulative ``sys.ack``; returns how many frames it released.

        Values beyond what we sent are capped (a confused server cannot make
        us forget frames it never saw numbered).
        """
        seq = min(seq, self.last_out_seq)
        if seq <= self.server_acked:
            return 0
        self.server_acked = seq
        released = 0
        buf = self._unacked
        while buf and buf[0][0] <= seq:
            _, wire = buf.popleft()
            self._unacked_bytes -= len(wire)
            released += 1
        return released

    # -- incoming --------------------------------------------------------------------------
    def on_server_frame(self, seq: int, now: float) -> Delivery:
        """Classify a numbered server frame and, unless a duplicate, mark it delivered."""
        if seq <= self.delivered:
            return Delivery.DUPLICATE
        verdict = Delivery.DELIVER if seq == self.delivered + 1 else Delivery.GAP
        self.delivered = seq
        if self._ack_timer_start is None:
            self._ack_timer_start = now
        return verdict

    def ack_due(self, now: float) -> bool:
        """True when an acknowledgement should be sent now (rule 4)."""
        if self.delivered <= self.acked_to_server:
            return False
        if self.delivered - self.acked_to_server >= self._ack_every:
            return True
        start = self._ack_timer_start
        return start is not None and now >= start + self._ack_delay

    def ack_deadline(self) -> float | None:
        """When the pending acknowledgement falls due by delay (None: nothing pending)."""
        if self.delivered <= self.acked_to_server or self._ack_timer_start is None:
            return None
        return self._ack_timer_start + self._ack_delay

    def take_ack(self) -> int:
        """Record that ``sys.ack`` with the returned ``s`` is being sent."""
        self.acked_to_server = self.delivered
        self._ack_timer_start = None
        return self.delivered

    # -- connections -------------------------------------------------------------------------
    def resume_params(self) -> dict[str, str]:
        """Query parameters for the next connection attempt (each call is a new attempt).

        ``client`` + ``attempt`` number the attempts of this client instance, so the
        server can refuse an abandoned attempt that arrives after a newer one (a
        partition may hold a request and deliver it once the network heals) instead
        of letting it take the session over from the live connection.
        """
        self.attempts += 1
        params: dict[str, str] = {}
        if self.client_tag is not None:
            params = {"client": self.client_tag, "attempt": str(self.attempts)}
        if self.session_id is None:
            return params
        return {"session": self.session_id, "last_seq": str(self.delivered), **params}

    def on_connected(self, session_id: str, *, resumed: bool, last_seq: int) -> Connected:
        """Apply ``sys.connected``; tells the caller what happened and what to re-send."""
        asked = self.session_id
        if asked is None:
            self.session_id = session_id
            return Connected(ConnectOutcome.NEW, session_id, resend_after=0)
        if resumed and session_id == asked:
            # last_seq in the URL acknowledged everything delivered so far.
            self.acked_to_server = self.delivered
            self._ack_timer_start = None
            return Connected(
                ConnectOutcome.RESUMED,
                session_id,
                resend_after=self.server_acked,
                server_behind=last_seq < self.delivered,
            )
        dropped = len(self._unacked)
        self.session_id = session_id
        self.last_out_seq = 0
        self.server_acked = 0
        self._unacked.clear()
        self._unacked_bytes = 0
        self.delivered = 0
        self.acked_to_server = 0
        self._ack_timer_start = None
        return Connected(ConnectOutcome.LOST, session_id, resend_after=0, dropped_frames=dropped)


class UniformRng(Protocol):
    """What :class:`Backoff` needs of an RNG (``random.Random`` qualifies)."""

    def uniform(self, a: float, b: float) -> float: ...


class Backoff:
    """Exponential backoff with full jitter (delay of attempt n ~ U[0, min(cap, base·2ⁿ)]).

    Full jitter spreads a reconnect storm evenly over the window instead of
    synchronising clients that lost the server at the same instant.
    """

    def __init__(self, *, base: float, cap: float, rng: UniformRng) -> None:
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._rng = rng

    def ceiling(self, attempt: int) -> float:
        """The upper bound of attempt ``attempt``'s delay (0-based)."""
        # Cap the exponent: 2**attempt overflows floats after ~1000 attempts.
        return min(self.cap, self.base * 2.0 ** min(attempt, 64))

    def delay(self, attempt: int) -> float:
        """A random delay for attempt ``attempt`` (0-based), in seconds."""
        return self._rng.uniform(0.0, self.ceiling(attempt))


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
