"""A session's life and its two numbered streams, sans I/O (SPEC §3 "Resume").

Rules kept here (and tested in ``tests/wscore/protocol/test_session_state.py``):

1. A session is ATTACHED (one live connection), DETACHED (no connection; it
   waits ``session_ttl`` for its client) or CLOSED (terminal).
2. Attaching while attached is a *takeover*: the old connection is closed
   with 4000 and the new one carries on the same stream.
3. Expiry only closes a DETACHED session.
4. Nothing leaves CLOSED.

:data:`TRANSITIONS` lists the legal pairs only; :func:`next_state` raises
:class:`IllegalTransition` for any other. Inputs that no longer apply — a
detach reported by a replaced connection, a TTL timer armed before a
re-attach, anything after CLOSED — are filtered out by their caller
(:class:`wscore.protocol.server_session.ServerSession`) before the table.

The outgoing stream numbers every session frame 1, 2, 3 … and keeps the
unacknowledged ones (at most ``max_buffered`` frames and ``max_bytes``
characters; the newest frame is always kept) for replay. When it must drop
an unacknowledged frame to stay bounded it remembers the highest seq it
dropped: a resume from before that point is impossible (1006), never a gap.

The inbound tracker remembers the highest client ``s`` processed so a frame
re-sent after a reconnect runs exactly once.
"""

from __future__ import annotations

import enum
from collections import deque

__all__ = [
    "ILLEGAL",
    "TRANSITIONS",
    "IllegalTransition",
    "InboundTracker",
    "OutgoingStream",
    "ResumeImpossible",
    "SessionInput",
    "SessionState",
    "TokenBucket",
    "next_state",
]


class SessionState(enum.Enum):
    ATTACHED = "attached"
    DETACHED = "detached"
    CLOSED = "closed"


class SessionInput(enum.Enum):
    ATTACH = "attach"  # a connection (new, resumed or taking over) is bound
    DETACH = "detach"  # the bound connection went away
    EXPIRE = "expire"  # the session_ttl timer fired
    CLOSE = "close"  # server shutdown or explicit end


_S, _I = SessionState, SessionInput
#: The whole state machine: the legal (state, input) pairs and where each leads.
TRANSITIONS: dict[tuple[SessionState, SessionInput], SessionState] = {
    (_S.ATTACHED, _I.ATTACH): _S.ATTACHED,  # takeover (rule 2)
    (_S.ATTACHED, _I.DETACH): _S.DETACHED,
    (_S.ATTACHED, _I.CLOSE): _S.CLOSED,
    (_S.DETACHED, _I.ATTACH): _S.ATTACHED,  # resume
    (_S.DETACHED, _I.EXPIRE): _S.CLOSED,  # rule 3
    (_S.DETACHED, _I.CLOSE): _S.CLOSED,
}
#: Every other pair, and why it cannot happen to a caller that filters stale inputs.
ILLEGAL: dict[tuple[SessionState, SessionInput], str] = {
    (_S.ATTACHED, _I.EXPIRE): "a TTL timer of an earlier generation (rule 3)",
    (_S.DETACHED, _I.DETACH): "a detach reported by a replaced connection",
    **{(_S.CLOSED, i): "nothing leaves CLOSED (rule 4)" for i in SessionInput},
}


class IllegalTransition(ValueError):
    """A (state, input) pair outside :data:`TRANSITIONS`: a bug in the caller."""


def next_state(state: SessionState, event: SessionInput) -> SessionState:
    """Look the transition up in :data:`TRANSITIONS`; raises :class:`IllegalTransition`."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"{event.value} in state {state.value}: "
                                f"{ILLEGAL.get((state, event), 'not in the table')}") from None


class ResumeImpossible(Exception):
    """The stream cannot replay what follows the client's ``last_seq`` (answer 1006)."""


class OutgoingStream:
    """Numbers a session's frames and keeps the unacknowledged ones for replay.

    The buffer holds a contiguous run of frames, ``first_buffered`` …
    ``last_seq``, as bare strings: no per-frame tuple, so a thousand sessions
    with full buffers add nothing for the cyclic garbage collector to scan (it
    showed up as 100+ ms fan-out latency tails). ``ack(n)`` is cumulative (SPEC §3).
    """

    def __init__(self, *, max_buffered: int, max_bytes: int | None = None) -> None:
        if max_buffered < 1:
            raise ValueError("max_buffered must be at least 1")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self._max = max_buffered
        self._max_bytes = max_bytes
        self._buffer: deque[str] = deque()
        #: Characters held in the buffer (UTF-8 text: ≈ bytes; counted as ``len``).
        self.buffered_bytes = 0
        self.last_seq = 0  # highest seq assigned
        self.acked = 0  # highest seq the client acknowledged
        self.dropped_through = 0  # highest unacknowledged seq dropped for space

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    @property
    def first_buffered(self) -> int:
        """Sequence number of the oldest frame still held (``last_seq + 1`` when empty)."""
        return self.last_seq - len(self._buffer) + 1

    @property
    def resumable(self) -> bool:
        """False once an unacknowledged frame was dropped after the last ack."""
        return self.dropped_through <= self.acked

    def recorded(self, seq: int) -> str | None:
        """The wire text of frame ``seq`` if it is still held (None: acknowledged or dropped)."""
        index = seq - self.first_buffered
        if 0 <= index < len(self._buffer):
            return self._buffer[index]
        return None

    def next_seq(self) -> int:
        """Assign the next sequence number (the caller then calls :meth:`record`)."""
        self.last_seq += 1
        return self.last_seq

    def record(self, seq: int, wire: str) -> None:
        """Keep ``wire`` (frame ``seq``, which must be the one just assigned) until acknowledged."""
        buf = self._buffer
        buf.append(wire)
        self.buffered_bytes += len(wire)
        max_bytes = self._max_bytes
        if len(buf) > self._max or (max_bytes is not None and self.buffered_bytes > max_bytes):
            self._drop_oldest_to_fit(max_bytes)

    def _drop_oldest_to_fit(self, max_bytes: int | None) -> None:
        buf = self._buffer
        while len(buf) > 1 and (len(buf) > self._max
                                or (max_bytes is not None and self.buffered_bytes > max_bytes)):
            dropped_seq = self.first_buffered
            self.buffered_bytes -= len(buf.popleft())
            if dropped_seq > self.acked:
                self.dropped_through = dropped_seq

    def ack(self, seq: int) -> None:
        """Cumulative acknowledgement of everything ≤ ``seq`` (values beyond ``last_seq`` are capped)."""
        seq = min(seq, self.last_seq)
        if seq <= self.acked:
            return
        self.acked = seq
        buf = self._buffer
        for _ in range(min(seq - self.first_buffered + 1, len(buf))):
            self.buffered_bytes -= len(buf.popleft())

    def replay_after(self, last_seq: int) -> list[str]:
        """Frames the client has not seen, in order; raises :class:`ResumeImpossible`.

        ``last_seq`` also acknowledges everything up to it.
        """
        if last_seq > self.last_seq or last_seq < 0:
            raise ResumeImpossible(
                f"client claims seq {last_seq} but the stream is at {self.last_seq}"
            )
        if last_seq < self.dropped_through:
            raise ResumeImpossible(
                f"frames up to {self.dropped_through} were dropped from a full buffer"
            )
        if last_seq + 1 < self.first_buffered:
            # The client acknowledged more than it now claims to have: what lies
            # between is gone, and a replay would skip it.
            raise ResumeImpossible(f"frames after {last_seq} were acknowledged and released")
        self.ack(last_seq)
        return list(self._buffer)


class InboundTracker:
    """De-duplicates the client's numbered frames (SPEC §3: run exactly once)."""

    def __init__(self) -> None:
        self.highest = 0

    def accept(self, seq: int | None) -> bool:
        """True if the frame must run; False for a duplicate. Unnumbered frames always run."""
        if seq is None:
            return True
        if seq <= self.highest:
            return False
        self.highest = seq
        return True


class TokenBucket:
    """A token bucket: ``rate`` tokens per second, at most ``burst`` saved (time passed in)."""

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._tokens = self.burst
        self._stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means "over the limit"."""
        tokens = self._tokens + (now - self._stamp) * self.rate
        self._stamp = now
        if tokens > self.burst:
            tokens = self.burst
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return True
        self._tokens = tokens
        return False
