"""The proxy's I/O: one connection's sockets, its two pumps, and the fault timers (gevent).

Per connection::

    client ──recv──▶ [up reader] ──segments──▶ [up writer] ──send──▶ server
    client ◀──send── [down writer] ◀──segments── [down reader] ◀──recv── server

Each direction has one reader greenlet and one writer greenlet joined by a
queue bounded in bytes (backpressure reaches the sender through TCP). The
reader ``recv``s into large buffers and hands each chunk to the direction's
:class:`~sandbox.stream_plan.StreamPlan`, which says where the chunk must be
cut and what happens there; the writer forwards bytes up to a cut, then
performs the action, and applies the continuous faults (latency, bandwidth,
slicer). Time-triggered faults run on :func:`spawn_timer`, the one timer
helper of the proxy (per connection here, proxy-wide in
:mod:`sandbox.fault_proxy`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import socket
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event

from wscore.sandbox.faults import Blackhole, Direction, Fault, ResetPeer, Trigger
from wscore.sandbox.stream_plan import Action, Mode, Record, StreamPlan, TimedFault, Window

if TYPE_CHECKING:
    from wscore.sandbox.fault_proxy import FaultProxy

__all__ = ["LINGER_RESET", "Connection", "Pump", "spawn_timer"]

log = logging.getLogger("wscore.sandbox.proxy")

_RECV_BYTES = 256 * 1024
_QUEUE_BYTES = 1024 * 1024  # per direction per connection
#: SO_LINGER on, 0 s: close() sends RST instead of FIN.
LINGER_RESET = struct.pack("ii", 1, 0)


def spawn_timer(schedule: Iterator[Window],
                fire: Callable[[Window], None]) -> gevent.Greenlet[Any, Any]:
    """Run a time-triggered fault: for each window, wait ``after``, ``fire`` it, then (unless
    it was the last) wait out its ``duration`` before the next ``after`` starts counting."""

    def run() -> None:
        for window in schedule:
            gevent.sleep(window.after)
            fire(window)
            if window.last:
                return
            gevent.sleep(window.duration or 0.0)

    return gevent.spawn(run)


class _Segment:
    __slots__ = ("actions", "data", "due", "eof")

    def __init__(self, data: bytes, due: float, actions: tuple[Action, ...],
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


class Pump:
    """One direction of one connection: a reader and a writer greenlet around a StreamPlan."""

    def __init__(self, conn: Connection, direction: Direction, src: socket.socket,
                 dst: socket.socket) -> None:
        self.conn = conn
        self.direction = direction
        self.name = direction.value
        self.src = src
        self.dst = dst
        self.plan = StreamPlan(direction)
        self.queue = _SegmentQueue(_QUEUE_BYTES)
        self.eof_forwarded = False
        self.last_due = 0.0
        self.bw_next = 0.0

    @property
    def frame(self) -> int:
        return self.plan.frame

    def install(self, faults: Sequence[Fault], generation: int) -> None:
        """(Re)plan this direction's faults; counts start from now."""
        conn = self.conn
        installed = self.plan.install(
            faults, lambda index: conn.proxy.rng(conn.index, self.name, index, generation))
        self.last_due = self.bw_next = 0.0
        for record in installed.records:
            conn.record(self, record)
        for timed in installed.timers:
            conn.timers.append(spawn_timer(timed.schedule(), self._timer_fired(timed)))

    def _timer_fired(self, timed: TimedFault) -> Callable[[Window], None]:
        fault, conn = timed.fault, self.conn

        def fire(window: Window) -> None:
            params: dict[str, Any] = {"after_seconds": round(window.after, 6)}
            if isinstance(fault, ResetPeer):
                conn.record(self, Record(fault.name, self.frame, Trigger.TIME, params))
                conn.abort(reset=True, reason="reset_peer (time)")
                return
            assert isinstance(fault, Blackhole) and window.duration is not None
            params["duration_seconds"] = round(window.duration, 6)
            conn.record(self, Record(fault.name, self.frame, Trigger.TIME, params))
            conn.hold(window.duration)

        return fire

    # -- reader ----------------------------------------------------------------------------------

    def read_loop(self) -> None:
        conn, recv, plan = self.conn, self.src.recv, self.plan
        frames = conn.proxy.frames
        while True:
            try:
                data = recv(_RECV_BYTES)
            except OSError as exc:
                conn.abort(reset=True, reason=f"{self.name} read error: {exc}")
                return
            if not data:
                self.queue.put(_Segment(b"", 0.0, (), eof=True))
                return
            was_handshake = plan.mode is Mode.HANDSHAKE
            fed = plan.feed(data)
            if was_handshake and plan.mode is Mode.RAW:
                log.debug("conn %d %s: not a WebSocket upgrade; raw mode", conn.index, self.name)
            frames[self.name] += fed.frames
            due = 0.0
            if fed.delay is not None:
                due = max(time.monotonic() + fed.delay, self.last_due)
                self.last_due = due
            for segment, actions in fed.segments:
                self.queue.put(_Segment(segment, due, actions))

    # -- writer ----------------------------------------------------------------------------------

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
                    if self.plan.rate is None and self.plan.slicer is None:
                        self.dst.sendall(data)
                    else:
                        self._write_shaped(data)
                except OSError as exc:
                    conn.abort(reset=True, reason=f"{name} write error: {exc}")
                    return
                stats[name] += len(data)
            for action in seg.actions:
                if not conn.perform(self, action):
                    return

    def _write_shaped(self, data: bytes) -> None:
        view = memoryview(data)
        pos, n = 0, len(data)
        rate, slicer = self.plan.rate, self.plan.slicer
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
        for record, delay in self.plan.fin_delays():
            self.conn.record(self, record)
            gevent.sleep(delay)
        with contextlib.suppress(OSError):
            self.dst.shutdown(socket.SHUT_WR)
        self.eof_forwarded = True
        self.conn.on_eof_forwarded()


class Connection:
    """One accepted client connection, its upstream socket, pumps and timers."""

    def __init__(self, proxy: FaultProxy, index: int, client: socket.socket) -> None:
        self.proxy = proxy
        self.index = index
        self.client = client
        self.server: socket.socket | None = None
        self.pumps: list[Pump] = []
        self.greenlets: list[gevent.Greenlet[Any, Any]] = []
        self.timers: list[gevent.Greenlet[Any, Any]] = []
        self.hold_until = 0.0
        self.closed = False

    def record(self, pump: Pump | None, record: Record) -> None:
        self.proxy.record(self.index, pump.name if pump else "both", record.fault, record.frame,
                          record.trigger, record.params)

    def run(self) -> None:
        proxy = self.proxy
        proxy.wait_refuse_hold()
        try:
            server = proxy.connect_upstream(self.index)
        except OSError as exc:
            log.warning("conn %d: upstream %s unreachable: %s", self.index,
                        proxy.upstream_text, exc)
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
        self.pumps = [Pump(self, Direction.UP, self.client, server),
                      Pump(self, Direction.DOWN, server, self.client)]
        self.install(proxy.current_faults, proxy.generation)
        for pump in self.pumps:
            self.greenlets.append(gevent.spawn(pump.read_loop))
            self.greenlets.append(gevent.spawn(pump.write_loop))

    def install(self, faults: Sequence[Fault], generation: int) -> None:
        gevent.killall(self.timers, block=False)
        self.timers = []
        for pump in self.pumps:
            pump.install(faults, generation)

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

    def perform(self, pump: Pump, action: Action) -> bool:
        """Run a planned action; False when the connection is gone."""
        self.record(pump, Record(action.fault, action.frame, action.trigger, action.params))
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
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                else:
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.proxy.on_closed(self)
