"""The fault-injecting WebSocket-aware TCP proxy (gevent).

Design (per connection)::

    client ──recv──▶ [up reader] ──segments──▶ [up writer] ──send──▶ server
    client ◀──send── [down writer] ◀──segments── [down reader] ◀──recv── server

Each direction has one reader greenlet and one writer greenlet joined by a
queue bounded in bytes (backpressure reaches the sender through TCP).  The
reader ``recv``s into large buffers and only parses frame *headers*
(RFC 6455 §5.2: 2..14 bytes; client frames are masked but we never unmask),
so it knows frame boundaries and counts frames without per-byte Python work.
Before frames, it finds the end of the HTTP upgrade request/response
(RFC 6455 §4); a connection that does not upgrade is passed through raw.

Every discrete fault is planned as a *cut*: an absolute byte offset of the
direction's stream plus an action (reset, close, blackhole, delay).  Frame
faults become cuts when the frame's header is parsed (e.g. "reset strictly
inside frame k" = an offset drawn inside it).  The writer forwards bytes up
to the cut, then performs the action, so a reset lands exactly where the
plan says regardless of how TCP chunked the data.  All draws come from
per-(connection, direction, fault) RNGs derived from the seed, so the same
seed and the same traffic yield the same fault log.

Continuous faults (latency, bandwidth, slicer) are applied by the writer;
they are logged once per connection and direction when installed.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import itertools
import json
import logging
import math
import random
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any

import attrs
import gevent
import gevent.event

from sandbox.faults import (
    Bandwidth,
    Blackhole,
    Direction,
    Fault,
    FaultRecord,
    Latency,
    LimitData,
    Refuse,
    RefuseMode,
    ResetPeer,
    Slicer,
    SlowClose,
    Trigger,
)

__all__ = ["FaultProxy", "ProxyError", "format_address", "parse_address"]

log = logging.getLogger("wscore.sandbox.proxy")

_RECV_BYTES = 256 * 1024
_QUEUE_BYTES = 1024 * 1024  # per direction per connection
_MAX_HANDSHAKE_BYTES = 64 * 1024
_LINGER_RESET = struct.pack("ii", 1, 0)
_UP, _DOWN = Direction.UP, Direction.DOWN

_MODE_HANDSHAKE, _MODE_FRAMES, _MODE_RAW = 0, 1, 2


class ProxyError(Exception):
    """The proxy was misconfigured or misused (bad address, not started …)."""


def parse_address(text: str | tuple[str, int]) -> tuple[str, int]:
    """Parse ``HOST:PORT`` (``[v6]:PORT`` too) into ``(host, port)``.

    Raises :class:`ProxyError` with a one-line message on bad input.
    """
    if isinstance(text, tuple):
        host, port = text
        if not isinstance(host, str) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ProxyError(f"bad address {text!r}")
        return host, port
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ProxyError(f"bad address {text!r}: expected HOST:PORT")
    port = int(port_text)
    if port > 65535:
        raise ProxyError(f"bad address {text!r}: port out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _draw(rng: random.Random, bounds: tuple[float, float]) -> float:
    low, high = bounds
    return low if low == high else rng.uniform(low, high)


def _draw_int(rng: random.Random, bounds: tuple[int, int]) -> int:
    return rng.randint(bounds[0], bounds[1])


@attrs.define
class _Action:
    kind: str  # "reset" | "close" | "blackhole" | "delay"
    fault: str
    trigger: Trigger
    frame: int
    params: dict[str, Any]
    seconds: float = 0.0


@attrs.define
class _Cut:
    offset: int
    seq: int
    action: _Action

    def __lt__(self, other: _Cut) -> bool:
        return (self.offset, self.seq) < (other.offset, other.seq)


@attrs.define
class _FrameTrigger:
    kind: str  # "reset" | "blackhole" | "limit"
    fault: ResetPeer | Blackhole | LimitData
    rng: random.Random
    params: dict[str, Any]


class _Segment:
    __slots__ = ("actions", "data", "due", "eof")

    def __init__(self, data: bytes, due: float, actions: list[_Action] | None,
                 eof: bool = False) -> None:
        self.data = data
        self.due = due
        self.actions = actions
        self.eof = eof


class _SegmentQueue:
    """Single-producer single-consumer queue bounded in bytes (one item may
    exceed the bound so a big chunk never deadlocks)."""

    def __init__(self, max_bytes: int) -> None:
        self._items: collections.deque[_Segment] = collections.deque()
        self._bytes = 0
        self._max_bytes = max_bytes
        self._not_empty = gevent.event.Event()
        self._not_full = gevent.event.Event()
        self._not_full.set()

    def put(self, seg: _Segment) -> None:
        while self._bytes >= self._max_bytes and self._items:
            self._not_full.clear()
            self._not_full.wait()
        self._items.append(seg)
        self._bytes += len(seg.data)
        self._not_empty.set()

    def get(self) -> _Segment:
        while not self._items:
            self._not_empty.clear()
            self._not_empty.wait()
        seg = self._items.popleft()
        self._bytes -= len(seg.data)
        if self._bytes < self._max_bytes:
            self._not_full.set()
        return seg


class _Pump:
    """One direction of one connection: reader + writer greenlets."""

    def __init__(self, conn: _Connection, direction: Direction, src: socket.socket,
                 dst: socket.socket) -> None:
        self.conn = conn
        self.direction = direction
        self.name = direction.value
        self.src = src
        self.dst = dst
        self.queue = _SegmentQueue(_QUEUE_BYTES)
        self.offset = 0  # bytes read from src so far
        self.mode = _MODE_HANDSHAKE
        self.hs_buf = bytearray()
        self.hdr = bytearray()
        self.hdr_start = 0
        self.payload_left = 0
        self.frame = 0  # index of the last frame whose header was parsed
        self.cuts: list[_Cut] = []
        self.unresolved: list[_Cut] = []  # byte cuts whose frame index is not known yet
        self.seq = itertools.count()
        self.eof_forwarded = False
        self._reset_faults()

    def _reset_faults(self) -> None:
        self.latencies: list[tuple[Latency, random.Random]] = []
        self.cur_delay = 0.0
        self.last_due = 0.0
        self.rate: float | None = None
        self.bw_next = 0.0
        self.slicer: tuple[Slicer, random.Random] | None = None
        self.triggers: dict[int, list[_FrameTrigger]] = {}
        self.slow_close: list[tuple[SlowClose, random.Random]] = []
        self.cuts = [c for c in self.cuts if c.action.trigger is Trigger.MANUAL]
        self.unresolved = []

    # -- planning --------------------------------------------------------

    def install(self, faults: Sequence[Fault], generation: int) -> None:
        """(Re)plan this direction's faults; counts start from now."""
        self._reset_faults()
        conn = self.conn
        for index, fault in enumerate(faults):
            if isinstance(fault, Refuse) or not fault.direction.covers(self.direction):
                continue
            if isinstance(fault, Blackhole) and fault.all_connections:
                continue
            rng = conn.proxy.rng(conn.index, self.name, index, generation)
            if rng.random() >= fault.probability:
                continue
            self._install_one(fault, rng)

    def _install_one(self, fault: Fault, rng: random.Random) -> None:
        conn = self.conn
        if isinstance(fault, Latency):
            self.latencies.append((fault, rng))
            self.cur_delay = self._latency_draw()
            conn.record(self, fault.name, self.frame, Trigger.CONNECTION,
                        {"latency_seconds": fault.latency_seconds,
                         "jitter_seconds": fault.jitter_seconds})
        elif isinstance(fault, Bandwidth):
            rate = float(fault.rate_bytes_per_second)
            self.rate = rate if self.rate is None else min(self.rate, rate)
            conn.record(self, fault.name, self.frame, Trigger.CONNECTION,
                        {"rate_bytes_per_second": fault.rate_bytes_per_second})
        elif isinstance(fault, Slicer):
            self.slicer = (fault, rng)
            conn.record(self, fault.name, self.frame, Trigger.CONNECTION,
                        {"min_slice_bytes": fault.min_slice_bytes,
                         "max_slice_bytes": fault.max_slice_bytes})
        elif isinstance(fault, SlowClose):
            self.slow_close.append((fault, rng))
        elif isinstance(fault, ResetPeer):
            if fault.after_frames is not None:
                k = self.frame + _draw_int(rng, fault.after_frames)
                mid = rng.random() < fault.mid_frame_probability
                self._add_trigger(k, _FrameTrigger("reset", fault, rng, {"mid_frame": mid}))
            else:
                assert fault.after_seconds is not None
                conn.spawn_timer(self._reset_timer, fault, rng)
        elif isinstance(fault, Blackhole):
            if fault.after_frames is not None:
                k = self.frame + _draw_int(rng, fault.after_frames)
                self._add_trigger(k, _FrameTrigger("blackhole", fault, rng, {}))
            else:
                conn.spawn_timer(self._blackhole_timer, fault, rng)
        elif isinstance(fault, LimitData):
            if fault.max_frames is not None:
                k = self.frame + fault.max_frames
                self._add_trigger(k, _FrameTrigger("limit", fault, rng, {}))
            else:
                assert fault.max_bytes is not None
                action = _Action("reset" if fault.reset else "close", fault.name, Trigger.BYTES,
                                 -1, {"max_bytes": fault.max_bytes, "reset": fault.reset})
                cut = _Cut(self.offset + fault.max_bytes, next(self.seq), action)
                bisect.insort(self.cuts, cut)
                self.unresolved.append(cut)

    def _add_trigger(self, frame: int, trig: _FrameTrigger) -> None:
        self.triggers.setdefault(frame, []).append(trig)

    def _latency_draw(self) -> float:
        total = 0.0
        for fault, rng in self.latencies:
            jitter = fault.jitter_seconds
            delay = fault.latency_seconds
            if jitter:
                delay += rng.uniform(-jitter, jitter)
            total += max(0.0, delay)
        return total

    def _reset_timer(self, fault: ResetPeer, rng: random.Random) -> None:
        assert fault.after_seconds is not None
        after = _draw(rng, fault.after_seconds)
        gevent.sleep(after)
        self.conn.record(self, fault.name, self.frame, Trigger.TIME,
                         {"after_seconds": round(after, 6)})
        self.conn.abort(reset=True, reason="reset_peer (time)")

    def _blackhole_timer(self, fault: Blackhole, rng: random.Random) -> None:
        assert fault.after_seconds is not None
        while True:
            after = _draw(rng, fault.after_seconds)
            gevent.sleep(after)
            duration = _draw(rng, fault.duration_seconds)
            self.conn.record(self, fault.name, self.frame, Trigger.TIME,
                             {"after_seconds": round(after, 6),
                              "duration_seconds": round(duration, 6)})
            self.conn.hold(duration)
            if not fault.repeat:
                return
            gevent.sleep(duration)

    # -- reader ------------------------------------------------------------

    def read_loop(self) -> None:
        conn, recv = self.conn, self.src.recv
        while True:
            try:
                data = recv(_RECV_BYTES)
            except OSError as exc:
                conn.abort(reset=True, reason=f"{self.name} read error: {exc}")
                return
            if not data:
                self.queue.put(_Segment(b"", 0.0, None, eof=True))
                return
            base = self.offset
            self.offset = base + len(data)
            latency = bool(self.latencies)
            if latency:
                self._chunk_delay = self.cur_delay
            if self.mode == _MODE_FRAMES:
                self._scan_frames(data, 0, base)
            elif self.mode == _MODE_HANDSHAKE:
                pos = self._scan_handshake(data, base)
                if self.mode == _MODE_FRAMES and pos < len(data):
                    self._scan_frames(data, pos, base)
            due = 0.0
            if latency:
                due = max(time.monotonic() + self._chunk_delay, self.last_due)
                self.last_due = due
            self._emit(data, base, due)

    _chunk_delay = 0.0

    def _scan_handshake(self, data: bytes, base: int) -> int:
        """Consume HTTP head bytes; return the position in ``data`` where
        frames (or raw bytes) start, switching ``self.mode``."""
        buf = self.hs_buf
        before = len(buf)
        buf += data[: _MAX_HANDSHAKE_BYTES + 4]
        end = buf.find(b"\r\n\r\n", max(0, before - 3))
        if end < 0:
            if len(buf) > _MAX_HANDSHAKE_BYTES:
                log.debug("conn %d %s: no HTTP head within %d bytes; raw mode",
                          self.conn.index, self.name, _MAX_HANDSHAKE_BYTES)
                self.mode = _MODE_RAW
                self.hs_buf = bytearray()
            return len(data)
        head = bytes(buf[: end + 4]).lower()
        self.hs_buf = bytearray()
        if self.direction is _UP:
            upgrade = b"upgrade: websocket" in head or b"upgrade:websocket" in head
        else:
            first_line = head.split(b"\r\n", 1)[0]
            upgrade = first_line.split(b" ", 2)[1:2] == [b"101"]
        self.mode = _MODE_FRAMES if upgrade else _MODE_RAW
        return end + 4 - before

    def _scan_frames(self, data: bytes, pos: int, base: int) -> None:
        """Walk frame headers in ``data[pos:]`` (RFC 6455 §5.2)."""
        n = len(data)
        while pos < n:
            left = self.payload_left
            if left:
                take = n - pos
                if take > left:
                    take = left
                pos += take
                self.payload_left = left - take
                continue
            hdr = self.hdr
            if hdr:
                # Continue a header split across recv() calls.
                need = self._header_len(hdr) if len(hdr) >= 2 else 2
                while len(hdr) < need and pos < n:
                    hdr.append(data[pos])
                    pos += 1
                    if len(hdr) == 2:
                        need = self._header_len(hdr)
                if len(hdr) < need:
                    return
                self._frame_start(self.hdr_start, bytes(hdr), need)
                self.hdr = bytearray()
                continue
            if n - pos >= 2:
                need = self._header_len(data[pos: pos + 2])
                if n - pos >= need:
                    self._frame_start(base + pos, data[pos: pos + need], need)
                    pos += need
                    continue
            self.hdr_start = base + pos
            self.hdr = bytearray(data[pos:])
            return

    @staticmethod
    def _header_len(first_two: bytes | bytearray) -> int:
        b1 = first_two[1]
        length7 = b1 & 0x7F
        size = 2 + (2 if length7 == 126 else 8 if length7 == 127 else 0)
        return size + 4 if b1 & 0x80 else size

    def _frame_start(self, start: int, header: bytes, header_len: int) -> None:
        length7 = header[1] & 0x7F
        if length7 == 126:
            payload = int.from_bytes(header[2:4], "big")
        elif length7 == 127:
            payload = int.from_bytes(header[2:10], "big")
        else:
            payload = length7
        self.payload_left = payload
        k = self.frame = self.frame + 1
        self.conn.proxy.frames[self.name] += 1
        end = start + header_len + payload
        if self.latencies:
            self.cur_delay = self._latency_draw()
            if self.cur_delay > self._chunk_delay:
                self._chunk_delay = self.cur_delay
        if self.unresolved:
            for cut in list(self.unresolved):
                if start <= cut.offset - 1 < end:
                    cut.action.frame = k
                    self.unresolved.remove(cut)
        if self.slow_close and header[0] & 0x0F == 0x8:
            for fault, rng in self.slow_close:
                delay = _draw(rng, fault.delay_seconds)
                self._cut(start, _Action("delay", fault.name, Trigger.FRAMES, k,
                                         {"delay_seconds": round(delay, 6), "what": "close_frame"},
                                         seconds=delay))
        triggers = self.triggers.pop(k, None) if self.triggers else None
        if triggers:
            for trig in triggers:
                self._fire_frame_trigger(trig, k, start, end)

    def _fire_frame_trigger(self, trig: _FrameTrigger, k: int, start: int, end: int) -> None:
        fault, rng = trig.fault, trig.rng
        if isinstance(fault, ResetPeer):
            if trig.params["mid_frame"]:
                offset = start + 1 + rng.randrange(end - start - 1)
                params = {"mid_frame": True, "bytes_into_frame": offset - start,
                          "frame_bytes": end - start}
            else:
                offset, params = end, {"mid_frame": False}
            self._cut(offset, _Action("reset", fault.name, Trigger.FRAMES, k, params))
        elif isinstance(fault, Blackhole):
            duration = _draw(rng, fault.duration_seconds)
            self._cut(end, _Action("blackhole", fault.name, Trigger.FRAMES, k,
                                   {"duration_seconds": round(duration, 6)}, seconds=duration))
            if fault.repeat:
                assert fault.after_frames is not None
                self._add_trigger(k + _draw_int(rng, fault.after_frames), trig)
        else:
            self._cut(end, _Action("reset" if fault.reset else "close", fault.name,
                                   Trigger.FRAMES, k,
                                   {"max_frames": fault.max_frames, "reset": fault.reset}))

    def _cut(self, offset: int, action: _Action) -> None:
        bisect.insort(self.cuts, _Cut(offset, next(self.seq), action))

    def _emit(self, data: bytes, base: int, due: float) -> None:
        cuts = self.cuts
        end = base + len(data)
        if not cuts or cuts[0].offset > end:
            self.queue.put(_Segment(data, due, None))
            return
        cur = 0
        while cuts and cuts[0].offset <= end:
            offset = cuts[0].offset
            rel = min(max(offset - base, cur), len(data))
            actions: list[_Action] = []
            while cuts and cuts[0].offset == offset:
                action = cuts.pop(0).action
                if action.frame < 0:
                    action.frame = self.frame if self.mode == _MODE_FRAMES else 0
                actions.append(action)
            self.queue.put(_Segment(data[cur:rel], due, actions))
            cur = rel
        if cur < len(data):
            self.queue.put(_Segment(data[cur:], due, None))

    # -- writer ------------------------------------------------------------

    def write_loop(self) -> None:
        conn, get = self.conn, self.queue.get
        stats = conn.proxy.bytes_forwarded
        name = self.name
        while True:
            seg = get()
            if seg.due:
                delay = seg.due - time.monotonic()
                if delay > 0:
                    gevent.sleep(delay)
            conn.wait_flowing()
            if seg.eof:
                self._forward_eof()
                return
            data = seg.data
            if data:
                try:
                    if self.rate is None and self.slicer is None:
                        self.dst.sendall(data)
                    else:
                        self._write_shaped(data)
                except OSError as exc:
                    conn.abort(reset=True, reason=f"{name} write error: {exc}")
                    return
                stats[name] += len(data)
            if seg.actions:
                for action in seg.actions:
                    if not conn.perform(self, action):
                        return

    def _write_shaped(self, data: bytes) -> None:
        view = memoryview(data)
        pos, n = 0, len(data)
        rate, slicer = self.rate, self.slicer
        piece_cap = max(1, int(rate * 0.05)) if rate is not None else n
        while pos < n:
            size = min(n - pos, piece_cap)
            if slicer is not None:
                fault, rng = slicer
                size = min(size, rng.randint(fault.min_slice_bytes, fault.max_slice_bytes))
            if rate is not None:
                wait = self.bw_next - time.monotonic()
                if wait > 0:
                    gevent.sleep(wait)
            self.dst.sendall(view[pos: pos + size])
            pos += size
            if rate is not None:
                self.bw_next = max(time.monotonic(), self.bw_next) + size / rate
            if slicer is not None and slicer[0].slice_delay_seconds:
                gevent.sleep(slicer[0].slice_delay_seconds)

    def _forward_eof(self) -> None:
        for fault, rng in self.slow_close:
            delay = _draw(rng, fault.delay_seconds)
            self.conn.record(self, fault.name, self.frame, Trigger.FRAMES,
                             {"delay_seconds": round(delay, 6), "what": "fin"})
            gevent.sleep(delay)
        with contextlib.suppress(OSError):
            self.dst.shutdown(socket.SHUT_WR)
        self.eof_forwarded = True
        self.conn.on_eof_forwarded()


class _Connection:
    def __init__(self, proxy: FaultProxy, index: int, client: socket.socket) -> None:
        self.proxy = proxy
        self.index = index
        self.client = client
        self.server: socket.socket | None = None
        self.pumps: list[_Pump] = []
        self.greenlets: list[gevent.Greenlet[Any, Any]] = []
        self.timers: list[gevent.Greenlet[Any, Any]] = []
        self.hold_until = 0.0
        self.closed = False

    def record(self, pump: _Pump | None, fault: str, frame: int, trigger: Trigger,
               params: dict[str, Any]) -> None:
        self.proxy.record(self.index, pump.name if pump else "both", fault, frame,
                          trigger, params)

    def run(self) -> None:
        proxy = self.proxy
        proxy.wait_refuse_hold()
        try:
            server = socket.create_connection(proxy.upstream, timeout=proxy.connect_timeout)
        except OSError as exc:
            log.warning("conn %d: upstream %s unreachable: %s", self.index,
                        format_address(proxy.upstream), exc)
            proxy.upstream_errors += 1
            self.abort(reset=True, reason="upstream unreachable")
            return
        if self.closed:  # cut while connecting
            server.close()
            return
        server.settimeout(None)
        self.server = server
        for sock in (self.client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pumps = [_Pump(self, _UP, self.client, server),
                      _Pump(self, _DOWN, server, self.client)]
        self.install(proxy.current_faults, proxy.generation)
        for pump in self.pumps:
            self.greenlets.append(gevent.spawn(pump.read_loop))
            self.greenlets.append(gevent.spawn(pump.write_loop))

    def install(self, faults: Sequence[Fault], generation: int) -> None:
        gevent.killall(self.timers, block=False)
        self.timers = []
        for pump in self.pumps:
            pump.install(faults, generation)

    def spawn_timer(self, fn: Callable[..., None], *args: Any) -> None:
        self.timers.append(gevent.spawn(fn, *args))

    def hold(self, seconds: float) -> None:
        self.hold_until = max(self.hold_until, time.monotonic() + seconds)

    def wait_flowing(self) -> None:
        proxy = self.proxy
        while True:
            until = max(self.hold_until, proxy.hold_until)
            if not until:
                return
            now = time.monotonic()
            if until <= now:
                return
            proxy.wake.wait(None if math.isinf(until) else until - now)

    def perform(self, pump: _Pump, action: _Action) -> bool:
        """Run a planned action; False when the connection is gone."""
        self.record(pump, action.fault, action.frame, action.trigger, action.params)
        if action.kind == "reset":
            self.abort(reset=True, reason=action.fault)
            return False
        if action.kind == "close":
            self.abort(reset=False, reason=action.fault)
            return False
        if action.kind == "blackhole":
            self.hold(action.seconds)
        elif action.kind == "delay":
            gevent.sleep(action.seconds)
        return True

    def on_eof_forwarded(self) -> None:
        if all(p.eof_forwarded for p in self.pumps):
            self.abort(reset=False, reason="both sides closed")

    def abort(self, *, reset: bool, reason: str) -> None:
        """Close both sockets (RST when ``reset``) and stop all greenlets; idempotent."""
        if self.closed:
            return
        self.closed = True
        log.debug("conn %d closed (%s, %s)", self.index, "RST" if reset else "FIN", reason)
        current = gevent.getcurrent()
        others = [g for g in self.greenlets + self.timers if g is not current]
        gevent.killall(others, block=False)
        for sock in (self.client, self.server):
            if sock is None:
                continue
            try:
                if reset:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.proxy.on_closed(self)


class FaultProxy:
    """A seeded fault-injecting proxy from ``listen`` to ``upstream``.

    Lifecycle: ``start()`` binds and serves in background greenlets;
    ``stop()`` closes the listener and resets every live connection.  All
    methods must be called from the gevent hub's thread.  Faults may be
    replaced at any time with :meth:`set_faults`; live connections re-plan
    with counts starting from that moment.
    """

    def __init__(self, *, upstream: str | tuple[str, int],
                 listen: str | tuple[str, int] = ("127.0.0.1", 0),
                 faults: Iterable[Fault] = (), seed: int = 0,
                 fault_log_path: str | None = None, connect_timeout: float = 5.0,
                 max_fault_log: int = 100_000) -> None:
        self.upstream = parse_address(upstream)
        self.listen_address = parse_address(listen)
        self.seed = seed
        self.connect_timeout = connect_timeout
        self.current_faults: tuple[Fault, ...] = tuple(faults)
        self.generation = 0
        self.hold_until = 0.0
        self.wake = gevent.event.Event()
        self.bytes_forwarded = {"up": 0, "down": 0}
        self.frames = {"up": 0, "down": 0}
        self.upstream_errors = 0
        self._fault_counts: collections.Counter[str] = collections.Counter()
        self._log: collections.deque[FaultRecord] = collections.deque(maxlen=max_fault_log)
        self._log_total = 0
        self._log_path = fault_log_path
        self._log_file: IO[str] | None = None
        self._refuse_until = 0.0
        self._refuse_mode = RefuseMode.RESET
        self._conns: dict[int, _Connection] = {}
        self._accepted = 0
        self._refused = 0
        self._listener: socket.socket | None = None
        self._greenlets: list[gevent.Greenlet[Any, Any]] = []
        self._proxy_timers: list[gevent.Greenlet[Any, Any]] = []
        self._changed = gevent.event.Event()
        self._t0 = time.monotonic()
        self.address: tuple[str, int] = self.listen_address

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Bind, listen and serve in the background.  Raises :class:`ProxyError`."""
        if self._listener is not None:
            raise ProxyError("proxy already started")
        host, port = self.listen_address
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(512)
        except OSError as exc:
            raise ProxyError(f"cannot listen on {format_address((host, port))}: {exc}") from None
        if self._log_path:
            try:
                self._log_file = open(self._log_path, "a", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                sock.close()
                raise ProxyError(f"cannot open fault log {self._log_path}: {exc}") from None
        self._listener = sock
        self.address = sock.getsockname()[:2]
        self._t0 = time.monotonic()
        self._greenlets.append(gevent.spawn(self._accept_loop))
        self._start_proxy_timers()
        log.info("proxy %s -> %s (seed %d, %d faults)", format_address(self.address),
                 format_address(self.upstream), self.seed, len(self.current_faults))

    def stop(self) -> None:
        """Stop accepting, reset all live connections, flush the fault log."""
        gevent.killall(self._greenlets + self._proxy_timers, block=True)
        self._greenlets, self._proxy_timers = [], []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for conn in list(self._conns.values()):
            conn.abort(reset=True, reason="proxy stopped")
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self._pulse()

    @property
    def port(self) -> int:
        return self.address[1]

    # -- randomness / logging -------------------------------------------

    def rng(self, *key: object) -> random.Random:
        """The RNG for one stream, derived from the seed and ``key``.

        ``random.Random(str)`` hashes the string with SHA-512, so it is
        stable across processes (unlike ``hash()``).
        """
        return random.Random("/".join(map(str, (self.seed, *key))))

    def record(self, connection: int, direction: str, fault: str, frame: int,
               trigger: Trigger, params: dict[str, Any]) -> None:
        rec = FaultRecord(time_seconds=time.monotonic() - self._t0, connection=connection,
                          direction=direction, fault=fault, frame=frame,
                          trigger=trigger.value, params=params)
        self._log.append(rec)
        self._log_total += 1
        self._fault_counts[fault] += 1
        log.info("fault %s conn=%d dir=%s frame=%d %s", fault, connection, direction, frame,
                 json.dumps(params, sort_keys=True))
        if self._log_file is not None:
            self._log_file.write(rec.to_json() + "\n")
            self._log_file.flush()
        self._pulse()

    @property
    def fault_log(self) -> list[FaultRecord]:
        """A copy of the in-memory fault log (the newest ``max_fault_log`` records)."""
        return list(self._log)

    def _pulse(self) -> None:
        changed, self._changed = self._changed, gevent.event.Event()
        changed.set()

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` is true (re-checked on every proxy event
        and at least every 50 ms); False on timeout."""
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.wait(min(left, 0.05))
        return True

    # -- faults ------------------------------------------------------------

    def set_faults(self, faults: Iterable[Fault]) -> None:
        """Replace the fault set; live connections re-plan immediately."""
        self.current_faults = tuple(faults)
        self.generation += 1
        gevent.killall(self._proxy_timers, block=False)
        self._proxy_timers = []
        if self._listener is not None:
            self._start_proxy_timers()
        for conn in list(self._conns.values()):
            if conn.pumps:
                conn.install(self.current_faults, self.generation)
        self._pulse()

    def _start_proxy_timers(self) -> None:
        for index, fault in enumerate(self.current_faults):
            if isinstance(fault, Refuse) and fault.after_seconds is not None:
                rng = self.rng("proxy", index, self.generation)
                self._proxy_timers.append(gevent.spawn(self._refuse_timer, fault, rng))
            elif isinstance(fault, Blackhole) and fault.all_connections:
                rng = self.rng("proxy", index, self.generation)
                self._proxy_timers.append(gevent.spawn(self._partition_timer, fault, rng))

    def _refuse_timer(self, fault: Refuse, rng: random.Random) -> None:
        assert fault.after_seconds is not None
        while True:
            after = _draw(rng, fault.after_seconds)
            gevent.sleep(after)
            duration = _draw(rng, fault.duration_seconds)
            self._start_refuse(duration, fault.mode, Trigger.TIME, {"after_seconds": round(
                after, 6)})
            gevent.sleep(duration)
            if not fault.repeat:
                return

    def _partition_timer(self, fault: Blackhole, rng: random.Random) -> None:
        assert fault.after_seconds is not None
        while True:
            after = _draw(rng, fault.after_seconds)
            gevent.sleep(after)
            duration = _draw(rng, fault.duration_seconds)
            self._start_blackhole(duration, Trigger.TIME, {"after_seconds": round(after, 6)})
            gevent.sleep(duration)
            if not fault.repeat:
                return

    # -- manual actions ------------------------------------------------------

    def cut_all(self) -> int:
        """Reset (RST) every live connection now; returns how many."""
        conns = list(self._conns.values())
        for conn in conns:
            frame = max((p.frame for p in conn.pumps), default=0)
            self.record(conn.index, "both", "reset_peer", frame, Trigger.MANUAL, {})
            conn.abort(reset=True, reason="cut_all")
        return len(conns)

    def blackhole(self, seconds: float | None) -> None:
        """Hold every live and new connection for ``seconds`` (None: until
        :meth:`end_blackhole`)."""
        if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError("seconds must be a finite number >= 0")
        self._start_blackhole(math.inf if seconds is None else seconds, Trigger.MANUAL, {})

    def _start_blackhole(self, seconds: float, trigger: Trigger, params: dict[str, Any]) -> None:
        params = {**params, "duration_seconds": None if math.isinf(seconds) else round(seconds, 6)}
        self.record(-1, "both", "blackhole", 0, trigger, params)
        self.hold_until = max(self.hold_until, time.monotonic() + seconds)

    def end_blackhole(self) -> None:
        """End a proxy-wide blackhole early (per-connection ones keep running)."""
        self.hold_until = 0.0
        self.wake.set()
        self.wake = gevent.event.Event()
        self._pulse()

    @property
    def blackholed(self) -> bool:
        return self.hold_until > time.monotonic()

    def refuse(self, seconds: float, mode: RefuseMode | str = RefuseMode.RESET) -> None:
        """Refuse new connections for ``seconds`` (see :class:`RefuseMode`)."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError("seconds must be a finite number >= 0")
        self._start_refuse(seconds, RefuseMode(mode), Trigger.MANUAL, {})

    def _start_refuse(self, seconds: float, mode: RefuseMode, trigger: Trigger,
                      params: dict[str, Any]) -> None:
        self.record(-1, "both", "refuse", 0, trigger,
                    {**params, "duration_seconds": round(seconds, 6), "mode": mode.value})
        self._refuse_until = max(self._refuse_until, time.monotonic() + seconds)
        self._refuse_mode = mode

    @property
    def refusing(self) -> bool:
        return self._refuse_until > time.monotonic()

    def wait_refuse_hold(self) -> None:
        while self._refuse_mode is RefuseMode.HOLD and self.refusing:
            gevent.sleep(self._refuse_until - time.monotonic())

    # -- accept ------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while True:
            try:
                client, _addr = listener.accept()
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                gevent.sleep(0.05)  # e.g. EMFILE: back off instead of spinning
                continue
            index = self._accepted
            self._accepted += 1
            if self._should_refuse(index):
                self._refused += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                client.close()
                self._pulse()
                continue
            conn = _Connection(self, index, client)
            self._conns[index] = conn
            self._pulse()
            conn.greenlets.append(gevent.spawn(conn.run))

    def _should_refuse(self, index: int) -> bool:
        if self.refusing and self._refuse_mode is RefuseMode.RESET:
            return True
        for fi, fault in enumerate(self.current_faults):
            if (isinstance(fault, Refuse) and fault.probability > 0
                    and self.rng(index, "refuse", fi, self.generation).random()
                    < fault.probability):
                self.record(index, "both", fault.name, 0, Trigger.CONNECTION,
                            {"probability": fault.probability})
                return True
        return False

    def on_closed(self, conn: _Connection) -> None:
        self._conns.pop(conn.index, None)
        self._pulse()

    # -- stats ---------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Cheap snapshot: connections, bytes/frames per direction, faults."""
        return {
            "seed": self.seed,
            "listen": format_address(self.address),
            "upstream": format_address(self.upstream),
            "uptime_seconds": round(time.monotonic() - self._t0, 3),
            "connections": {"accepted": self._accepted, "active": len(self._conns),
                            "refused": self._refused, "upstream_errors": self.upstream_errors},
            "bytes": dict(self.bytes_forwarded),
            "frames": dict(self.frames),
            "faults_injected": dict(self._fault_counts),
            "fault_log_records": self._log_total,
            "blackholed": self.blackholed,
            "refusing": self.refusing,
        }

    @property
    def accepted(self) -> int:
        return self._accepted

    @property
    def active(self) -> int:
        return len(self._conns)
