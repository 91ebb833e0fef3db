"""One direction of a proxied connection, read from bytes: what it carries and where faults cut it.

Pure: bytes in, decisions out. No sockets, no gevent, no clock; every random
draw comes from an :class:`Rng` handed in (the proxy derives one per
connection, direction and fault from its seed), so the same bytes and the same
RNGs always give the same plan — that is what makes the fault log replay.

:class:`StreamPlan` follows one direction's byte stream:

* first the HTTP upgrade head (RFC 6455 §4), up to ``\\r\\n\\r\\n``: upstream a
  request with ``Upgrade: websocket``, downstream a ``101`` response switch
  the stream to *frames*; anything else (or no head within
  :data:`MAX_HANDSHAKE_BYTES`) to *raw*, passed through untouched;
* then frame headers (RFC 6455 §5.2: 2..14 bytes, split anywhere across
  chunks; client frames are masked and never unmasked here), so it knows
  every frame's first and last byte offset and counts frames from 1.

Every discrete fault becomes a :class:`Cut`: an absolute byte offset of the
stream plus an :class:`Action` (reset, close, blackhole, delay). Frame faults
become cuts when the frame's header is read ("reset strictly inside frame k" =
an offset drawn inside it); ``limit_data`` by bytes is a cut from the start.
:meth:`StreamPlan.feed` splits each chunk at the cuts it reaches, so a writer
that forwards a segment and then performs its actions lands the fault exactly
where the plan says, however TCP chunked the data. Time-triggered faults are
not cut here: :meth:`StreamPlan.install` hands them back as
:class:`TimedFault` values, and :func:`windows` draws their schedule.
"""

from __future__ import annotations

import bisect
import enum
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import attrs

from wscore.sandbox.faults import (
    Bandwidth,
    Blackhole,
    Direction,
    Fault,
    Latency,
    LimitData,
    Refuse,
    ResetPeer,
    Slicer,
    SlowClose,
    Trigger,
)

__all__ = [
    "MAX_HANDSHAKE_BYTES",
    "Action",
    "Cut",
    "Fed",
    "Installed",
    "Mode",
    "Record",
    "Rng",
    "StreamPlan",
    "TimedFault",
    "Window",
    "draw",
    "draw_int",
    "frame_header_length",
    "frame_payload_length",
    "is_upgrade_head",
    "windows",
]

#: Bytes of HTTP head looked at before a stream is declared raw.
MAX_HANDSHAKE_BYTES = 64 * 1024


class Rng(Protocol):
    """The part of ``random.Random`` a plan draws from."""

    def random(self) -> float: ...

    def uniform(self, a: float, b: float) -> float: ...

    def randint(self, a: int, b: int) -> int: ...

    def randrange(self, start: int, /) -> int: ...


def draw(rng: Rng, bounds: tuple[float, float]) -> float:
    """A value from the closed range ``bounds`` (no draw when it is a single value)."""
    low, high = bounds
    return low if low == high else rng.uniform(low, high)


def draw_int(rng: Rng, bounds: tuple[int, int]) -> int:
    return rng.randint(bounds[0], bounds[1])


@attrs.frozen
class Window:
    """One firing of a time-triggered fault: ``after`` seconds, then ``duration`` (None: none)."""

    after: float
    duration: float | None
    last: bool


def windows(rng: Rng, after: tuple[float, float], duration: tuple[float, float] | None,
            repeat: bool) -> Iterator[Window]:
    """The schedule of a time-triggered fault, drawn lazily in a fixed order (after, duration …).

    One firing unless ``repeat``; then the next ``after`` counts from the end of
    the previous ``duration``.
    """
    while True:
        wait = draw(rng, after)
        length = draw(rng, duration) if duration is not None else None
        yield Window(wait, length, not repeat)
        if not repeat:
            return


class Mode(enum.Enum):
    HANDSHAKE = "handshake"
    FRAMES = "frames"
    RAW = "raw"


@attrs.define
class Action:
    """What a writer does on reaching a cut: ``reset`` | ``close`` | ``blackhole`` | ``delay``."""

    kind: str
    fault: str
    trigger: Trigger
    frame: int  # -1: not known yet (a byte cut); set when a frame or the cut's chunk is read
    params: dict[str, Any]
    seconds: float = 0.0


@attrs.define
class Cut:
    offset: int  # forward bytes [0, offset) of the stream, then act
    seq: int  # ties at one offset act in the order they were planned
    action: Action

    def __lt__(self, other: Cut) -> bool:
        return (self.offset, self.seq) < (other.offset, other.seq)


@attrs.frozen
class Record:
    """A fault-log record the plan asks for (the proxy adds time, connection, direction)."""

    fault: str
    frame: int
    trigger: Trigger
    params: dict[str, Any]


@attrs.frozen
class TimedFault:
    """A fault this direction runs on a timer (``reset_peer`` / ``blackhole`` by seconds)."""

    fault: ResetPeer | Blackhole
    rng: Rng

    def schedule(self) -> Iterator[Window]:
        fault = self.fault
        assert fault.after_seconds is not None
        if isinstance(fault, ResetPeer):
            return windows(self.rng, fault.after_seconds, None, False)
        return windows(self.rng, fault.after_seconds, fault.duration_seconds, fault.repeat)


@attrs.frozen
class Installed:
    records: tuple[Record, ...]
    timers: tuple[TimedFault, ...]


@attrs.frozen
class Fed:
    """What one chunk became: ``segments`` to forward in order, each followed by its actions."""

    segments: tuple[tuple[bytes, tuple[Action, ...]], ...]
    #: Latency to add to the chunk (seconds), None when no latency fault is installed.
    delay: float | None
    #: Frame headers read in this chunk.
    frames: int


@attrs.define
class _FrameTrigger:
    kind: str  # "reset" | "blackhole" | "limit"
    fault: ResetPeer | Blackhole | LimitData
    rng: Rng
    params: dict[str, Any]


def frame_header_length(first_two: bytes | bytearray) -> int:
    """The length of a frame header (2..14 bytes) from its first two bytes (RFC 6455 §5.2)."""
    b1 = first_two[1]
    length7 = b1 & 0x7F
    size = 2 + (2 if length7 == 126 else 8 if length7 == 127 else 0)
    return size + 4 if b1 & 0x80 else size


def frame_payload_length(header: bytes) -> int:
    """The payload length a complete frame header announces."""
    length7 = header[1] & 0x7F
    if length7 == 126:
        return int.from_bytes(header[2:4], "big")
    if length7 == 127:
        return int.from_bytes(header[2:10], "big")
    return length7


def is_upgrade_head(head: bytes, direction: Direction) -> bool:
    """Whether a complete HTTP head (lower-cased) upgrades to WebSocket in ``direction``."""
    if direction is Direction.UP:
        return b"upgrade: websocket" in head or b"upgrade:websocket" in head
    first_line = head.split(b"\r\n", 1)[0]
    return first_line.split(b" ", 2)[1:2] == [b"101"]


class StreamPlan:
    """The scan state and the fault plan of one direction of one connection (module docstring)."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.offset = 0  # bytes fed so far
        self.mode = Mode.HANDSHAKE
        self.frame = 0  # index of the last frame whose header was read
        self.cuts: list[Cut] = []
        self._hs_buf = bytearray()
        self._hdr = bytearray()
        self._hdr_start = 0
        self._payload_left = 0
        self._seq = itertools.count()
        self._chunk_delay = 0.0
        self._reset_faults()

    def _reset_faults(self) -> None:
        self.latencies: list[tuple[Latency, Rng]] = []
        self.cur_delay = 0.0
        self.rate: float | None = None
        self.slicer: tuple[Slicer, Rng] | None = None
        self.slow_close: list[tuple[SlowClose, Rng]] = []
        self._triggers: dict[int, list[_FrameTrigger]] = {}
        self.cuts = [c for c in self.cuts if c.action.trigger is Trigger.MANUAL]
        self._unresolved: list[Cut] = []  # byte cuts whose frame index is not known yet

    # -- planning ------------------------------------------------------------------------------

    def install(self, faults: Sequence[Fault], rng_for: Callable[[int], Rng]) -> Installed:
        """(Re)plan this direction's faults, counts starting from now.

        ``rng_for(i)`` is the RNG of ``faults[i]``; each fault first draws
        whether it is active at all (its ``probability``). Proxy-wide faults
        (``refuse``, ``blackhole`` on all connections) are not this plan's.
        """
        self._reset_faults()
        records: list[Record] = []
        timers: list[TimedFault] = []
        for index, fault in enumerate(faults):
            if isinstance(fault, Refuse) or not fault.direction.covers(self.direction):
                continue
            if isinstance(fault, Blackhole) and fault.all_connections:
                continue
            rng = rng_for(index)
            if rng.random() >= fault.probability:
                continue
            self._install_one(fault, rng, records, timers)
        return Installed(tuple(records), tuple(timers))

    def _install_one(self, fault: Fault, rng: Rng, records: list[Record],
                     timers: list[TimedFault]) -> None:
        if isinstance(fault, Latency):
            self.latencies.append((fault, rng))
            self.cur_delay = self._latency_draw()
            records.append(Record(fault.name, self.frame, Trigger.CONNECTION,
                                  {"latency_seconds": fault.latency_seconds,
                                   "jitter_seconds": fault.jitter_seconds}))
        elif isinstance(fault, Bandwidth):
            rate = float(fault.rate_bytes_per_second)
            self.rate = rate if self.rate is None else min(self.rate, rate)
            records.append(Record(fault.name, self.frame, Trigger.CONNECTION,
                                  {"rate_bytes_per_second": fault.rate_bytes_per_second}))
        elif isinstance(fault, Slicer):
            self.slicer = (fault, rng)
            records.append(Record(fault.name, self.frame, Trigger.CONNECTION,
                                  {"min_slice_bytes": fault.min_slice_bytes,
                                   "max_slice_bytes": fault.max_slice_bytes}))
        elif isinstance(fault, SlowClose):
            self.slow_close.append((fault, rng))
        elif isinstance(fault, ResetPeer):
            if fault.after_frames is not None:
                k = self.frame + draw_int(rng, fault.after_frames)
                mid = rng.random() < fault.mid_frame_probability
                self._add_trigger(k, _FrameTrigger("reset", fault, rng, {"mid_frame": mid}))
            else:
                timers.append(TimedFault(fault, rng))
        elif isinstance(fault, Blackhole):
            if fault.after_frames is not None:
                k = self.frame + draw_int(rng, fault.after_frames)
                self._add_trigger(k, _FrameTrigger("blackhole", fault, rng, {}))
            else:
                timers.append(TimedFault(fault, rng))
        elif isinstance(fault, LimitData):
            if fault.max_frames is not None:
                self._add_trigger(self.frame + fault.max_frames,
                                  _FrameTrigger("limit", fault, rng, {}))
            else:
                assert fault.max_bytes is not None
                action = Action("reset" if fault.reset else "close", fault.name, Trigger.BYTES,
                                -1, {"max_bytes": fault.max_bytes, "reset": fault.reset})
                cut = Cut(self.offset + fault.max_bytes, next(self._seq), action)
                bisect.insort(self.cuts, cut)
                self._unresolved.append(cut)

    def _add_trigger(self, frame: int, trig: _FrameTrigger) -> None:
        self._triggers.setdefault(frame, []).append(trig)

    def _latency_draw(self) -> float:
        total = 0.0
        for fault, rng in self.latencies:
            jitter = fault.jitter_seconds
            delay = fault.latency_seconds
            if jitter:
                delay += rng.uniform(-jitter, jitter)
            total += max(0.0, delay)
        return total

    def fin_delays(self) -> list[tuple[Record, float]]:
        """The ``slow_close`` delays before forwarding this direction's FIN, with their records."""
        out = []
        for fault, rng in self.slow_close:
            delay = draw(rng, fault.delay_seconds)
            out.append((Record(fault.name, self.frame, Trigger.FRAMES,
                               {"delay_seconds": round(delay, 6), "what": "fin"}), delay))
        return out

    # -- scanning ------------------------------------------------------------------------------

    def feed(self, data: bytes) -> Fed:
        """Scan the next chunk of the stream and split it at the cuts it reaches."""
        base = self.offset
        self.offset = base + len(data)
        frames_before = self.frame
        latency = bool(self.latencies)
        if latency:
            self._chunk_delay = self.cur_delay
        if self.mode is Mode.FRAMES:
            self._scan_frames(data, 0, base)
        elif self.mode is Mode.HANDSHAKE:
            pos = self._scan_handshake(data)  # may switch self.mode
            if self._framed() and pos < len(data):
                self._scan_frames(data, pos, base)
        return Fed(self._split(data, base), self._chunk_delay if latency else None,
                   self.frame - frames_before)

    def _framed(self) -> bool:
        return self.mode is Mode.FRAMES

    def _scan_handshake(self, data: bytes) -> int:
        """Consume HTTP head bytes; the position in ``data`` where frames (or raw bytes) start."""
        buf = self._hs_buf
        before = len(buf)
        buf += data[: MAX_HANDSHAKE_BYTES + 4]
        end = buf.find(b"\r\n\r\n", max(0, before - 3))
        if end < 0:
            if len(buf) > MAX_HANDSHAKE_BYTES:
                self.mode = Mode.RAW
                self._hs_buf = bytearray()
            return len(data)
        head = bytes(buf[: end + 4]).lower()
        self._hs_buf = bytearray()
        self.mode = Mode.FRAMES if is_upgrade_head(head, self.direction) else Mode.RAW
        return end + 4 - before

    def _scan_frames(self, data: bytes, pos: int, base: int) -> None:
        """Walk frame headers in ``data[pos:]``; ``base`` is ``data``'s stream offset."""
        n = len(data)
        while pos < n:
            left = self._payload_left
            if left:
                take = min(n - pos, left)
                pos += take
                self._payload_left = left - take
                continue
            hdr = self._hdr
            if hdr:
                # Continue a header split across chunks.
                need = frame_header_length(hdr) if len(hdr) >= 2 else 2
                while len(hdr) < need and pos < n:
                    hdr.append(data[pos])
                    pos += 1
                    if len(hdr) == 2:
                        need = frame_header_length(hdr)
                if len(hdr) < need:
                    return
                self._frame_start(self._hdr_start, bytes(hdr), need)
                self._hdr = bytearray()
                continue
            if n - pos >= 2:
                need = frame_header_length(data[pos: pos + 2])
                if n - pos >= need:
                    self._frame_start(base + pos, data[pos: pos + need], need)
                    pos += need
                    continue
            self._hdr_start = base + pos
            self._hdr = bytearray(data[pos:])
            return

    def _frame_start(self, start: int, header: bytes, header_len: int) -> None:
        payload = frame_payload_length(header)
        self._payload_left = payload
        k = self.frame = self.frame + 1
        end = start + header_len + payload
        if self.latencies:
            self.cur_delay = self._latency_draw()
            if self.cur_delay > self._chunk_delay:
                self._chunk_delay = self.cur_delay
        for cut in list(self._unresolved):
            if start <= cut.offset - 1 < end:
                cut.action.frame = k
                self._unresolved.remove(cut)
        if self.slow_close and header[0] & 0x0F == 0x8:
            for fault, rng in self.slow_close:
                delay = draw(rng, fault.delay_seconds)
                self._cut(start, Action("delay", fault.name, Trigger.FRAMES, k,
                                        {"delay_seconds": round(delay, 6), "what": "close_frame"},
                                        seconds=delay))
        for trig in self._triggers.pop(k, ()):
            self._fire_frame_trigger(trig, k, start, end)

    def _fire_frame_trigger(self, trig: _FrameTrigger, k: int, start: int, end: int) -> None:
        fault, rng = trig.fault, trig.rng
        if isinstance(fault, ResetPeer):
            if trig.params["mid_frame"]:
                offset = start + 1 + rng.randrange(end - start - 1)
                params: dict[str, Any] = {"mid_frame": True, "bytes_into_frame": offset - start,
                                          "frame_bytes": end - start}
            else:
                offset, params = end, {"mid_frame": False}
            self._cut(offset, Action("reset", fault.name, Trigger.FRAMES, k, params))
        elif isinstance(fault, Blackhole):
            duration = draw(rng, fault.duration_seconds)
            self._cut(end, Action("blackhole", fault.name, Trigger.FRAMES, k,
                                  {"duration_seconds": round(duration, 6)}, seconds=duration))
            if fault.repeat:
                assert fault.after_frames is not None
                self._add_trigger(k + draw_int(rng, fault.after_frames), trig)
        else:
            self._cut(end, Action("reset" if fault.reset else "close", fault.name,
                                  Trigger.FRAMES, k,
                                  {"max_frames": fault.max_frames, "reset": fault.reset}))

    def _cut(self, offset: int, action: Action) -> None:
        bisect.insort(self.cuts, Cut(offset, next(self._seq), action))

    def _split(self, data: bytes, base: int) -> tuple[tuple[bytes, tuple[Action, ...]], ...]:
        cuts = self.cuts
        end = base + len(data)
        if not cuts or cuts[0].offset > end:
            return ((data, ()),)
        out: list[tuple[bytes, tuple[Action, ...]]] = []
        cur = 0
        while cuts and cuts[0].offset <= end:
            offset = cuts[0].offset
            rel = min(max(offset - base, cur), len(data))
            actions: list[Action] = []
            while cuts and cuts[0].offset == offset:
                action = cuts.pop(0).action
                if action.frame < 0:
                    action.frame = self.frame if self.mode is Mode.FRAMES else 0
                actions.append(action)
            out.append((data[cur:rel], tuple(actions)))
            cur = rel
        if cur < len(data):
            out.append((data[cur:], ()))
        return tuple(out)
