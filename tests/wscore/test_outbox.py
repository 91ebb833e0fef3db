"""The outbox over a real socket pair with a small send buffer (transport layer, no actors).

The writer here is the simplest thing satisfying :class:`wscore.outbox.Writer`:
each request runs in a greenlet of its own, one at a time. The peer is the
other end of ``socket.socketpair()`` decoding with the pure frame codec.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.lock
import pytest
from wshelpers import wait_for

import wscore.outbox as outbox_module
from wscore.outbox import Outbox
from wscore.protocol import frames
from wscore.transport import WsTransport

SMALL = 4096


class _NoBufferedBytes:
    def read1(self, n: int) -> bytes:
        return b""


class GreenletWriter:
    """Runs the outbox's blocking work in a greenlet, one request at a time."""

    def __init__(self) -> None:
        self.outbox: Outbox | None = None
        self.lock = gevent.lock.Semaphore()
        self.flushes = 0
        self.alive = True

    def _run(self, fn: Any, *args: Any) -> None:
        with self.lock:
            fn(*args)

    def request_flush(self) -> bool:
        assert self.outbox is not None
        self.flushes += 1
        gevent.spawn(self._run, self.outbox.flush_blocking)
        return self.alive

    def request_close(self, code: int, reason: str) -> bool:
        assert self.outbox is not None
        gevent.spawn(self._run, self.outbox.close_blocking, code, reason)
        return self.alive


@pytest.fixture
def pair() -> Iterator[tuple[Outbox, socket.socket, GreenletWriter]]:
    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL)
    transport = WsTransport(ours, _NoBufferedBytes(), {"REMOTE_ADDR": "127.0.0.1"},
                            max_message_bytes=1 << 20)
    box = Outbox(1, transport, limit=20)
    writer = GreenletWriter()
    writer.outbox = box
    box.writer = writer
    yield box, peer, writer
    transport.abort()
    ours.close()
    peer.close()


def read_texts(peer: socket.socket, count: int) -> list[str]:
    decoder = frames.FrameDecoder(role="client", max_message_bytes=1 << 24)
    texts: list[str] = []
    while len(texts) < count:
        data = peer.recv(65536)
        assert data, f"the connection ended after {len(texts)} of {count} frames"
        texts += [e.text for e in decoder.feed(data) if isinstance(e, frames.TextMessage)]
    return texts


def test_frames_queued_in_one_loop_turn_go_out_together_and_in_order(pair: Any) -> None:
    box, peer, writer = pair
    for i in range(15):
        assert box.send(f"m{i}")
    assert len(box) == 15  # nothing written yet: the hub flushes at the end of the turn
    assert read_texts(peer, 15) == [f"m{i}" for i in range(15)]
    assert writer.flushes == 0  # small enough to go out without waiting


def test_a_partial_write_is_finished_by_the_writer(pair: Any) -> None:
    box, peer, writer = pair
    big = "x" * 300_000  # far more than the socket buffers take at once
    box.send(big)
    box.send("after")
    gevent.sleep(0)  # let the hub run its end-of-turn flush
    assert box.transport.has_tail or writer.flushes > 0
    assert read_texts(peer, 2) == [big, "after"]
    assert writer.flushes >= 1


def test_a_long_queue_the_hub_has_not_flushed_yet_is_not_a_slow_consumer(pair: Any) -> None:
    box, peer, _ = pair
    results = [box.send(f"m{i}") for i in range(60)]  # 3x the limit, in one loop turn
    assert all(results) and not box.closed
    assert read_texts(peer, 60) == [f"m{i}" for i in range(60)]


def test_a_peer_that_stops_reading_is_cut_when_the_queue_fills(pair: Any) -> None:
    box, peer, _ = pair
    pad = "y" * 2000
    sent = 0
    for _ in range(2000):
        if not box.send(pad):
            break
        sent += 1
        gevent.sleep(0)  # let writes happen: the socket fills, a tail remains
    assert box.closed and box.transport.closed
    assert sent < 2000
    peer.settimeout(5)
    received = b""
    while True:  # what was written before the cut, then the end of the stream
        try:
            chunk = peer.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    assert len(received) < sent * len(pad)


def test_a_close_that_cannot_flush_is_dropped_after_the_grace(pair: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    box, _peer, _ = pair
    monkeypatch.setattr(outbox_module, "_CLOSE_GRACE_SECONDS", 0.2)
    box.send("z" * 500_000)
    gevent.sleep(0)
    box.close(1001, "going away")
    assert not box.send("more")  # nothing is queued after close
    wait_for(lambda: box.transport.closed, what="the socket to be dropped after the grace")


def test_close_sends_the_queued_frames_then_the_close_code(pair: Any) -> None:
    box, peer, _ = pair
    box.send("last words")
    box.close(4000, "replaced")
    decoder = frames.FrameDecoder(role="client", max_message_bytes=1 << 20)
    events: list[Any] = []
    while not any(isinstance(e, frames.CloseReceived) for e in events):
        data = peer.recv(65536)
        assert data
        events += decoder.feed(data)
    assert isinstance(events[0], frames.TextMessage) and events[0].text == "last words"
    assert events[-1].code == 4000


def test_wait_for_room_returns_when_drained_or_closed(pair: Any) -> None:
    box, peer, _ = pair
    for i in range(10):
        box.send(f"m{i}")
    waiter = gevent.spawn(box.wait_for_room, 5, recheck=5.0)
    waiter.join(timeout=5)  # the end-of-turn flush drains the queue and wakes it
    assert waiter.ready() and len(box) == 0
    read_texts(peer, 10)
    # A reader held back by a queue that will not drain is released by the close.
    box.transport._tail = b"stuck"  # the socket "cannot" take more: frames stay queued
    for i in range(10):
        box.send(f"n{i}")
    waiter = gevent.spawn(box.wait_for_room, 5, recheck=5.0)
    gevent.sleep(0)
    assert not waiter.ready()
    box.abort()
    waiter.join(timeout=5)
    assert waiter.ready()
