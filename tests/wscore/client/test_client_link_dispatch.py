"""Direct tests of the client's I/O pieces: the link writer over a real socket pair, and
the callback dispatcher's greenlet."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import gevent
import gevent.socket
import pytest
from wshelpers import wait_for

from wscore.client.dispatch import Dispatcher
from wscore.client.link import Link
from wscore.protocol import frames


@pytest.fixture
def pair() -> Iterator[tuple[Link, Any]]:
    ours, theirs = gevent.socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    link = Link(ours, max_message_bytes=1 << 20, open_deadline=0.0)
    yield link, theirs
    link.close()
    theirs.close()


def read_frames(sock: Any, until_close: bool = True) -> list[Any]:
    """What the peer receives, decoded (as a server would: masked client frames)."""
    decoder = frames.FrameDecoder(role="server", max_message_bytes=1 << 20)
    got: list[Any] = []
    while True:
        data = sock.recv(65536)
        if not data:
            return got
        for event in decoder.feed(data):
            got.append(event)
            if isinstance(event, frames.CloseReceived) and until_close:
                return got


def test_the_writer_holds_session_frames_until_ready_and_ends_with_the_close(
    pair: tuple[Link, Any],
) -> None:
    link, peer = pair
    link.start_writer()
    link.queue_text(1, json.dumps({"e": "a", "s": 1}))
    link.control.append(frames.encode_frame(frames.OP_PONG, b"hb", mask_key=b"\x01\x02\x03\x04"))
    link.wake.set()
    decoder = frames.FrameDecoder(role="server", max_message_bytes=1 << 20)
    first = decoder.feed(peer.recv(65536))  # one sendall: the pong, and no session frame
    assert len(first) == 1 and isinstance(first[0], frames.PongReceived)
    assert first[0].payload == b"hb" and link.frames_sent == 0
    link.ready = True
    link.queue_text(None, json.dumps({"e": "sys.ack"}))
    link.queue_text(2, json.dumps({"e": "b", "s": 2}))
    link.queue_close(1000, "bye")
    got = read_frames(peer)
    texts = [json.loads(e.text)["e"] for e in got if isinstance(e, frames.TextMessage)]
    assert texts == ["a", "sys.ack", "b"]  # in the order queued
    assert isinstance(got[-1], frames.CloseReceived) and got[-1].code == 1000
    wait_for(lambda: link.close_sent, what="the writer to finish")
    assert link.frames_sent == 2  # numbered frames only


def test_a_failed_write_is_recorded_and_shuts_the_socket(pair: tuple[Link, Any]) -> None:
    link, peer = pair
    link.ready = True
    peer.close()
    link.start_writer()
    for i in range(1, 50):  # enough to hit the closed peer
        link.queue_text(i, "x" * 10_000)
        gevent.sleep(0)
    wait_for(lambda: link.write_error is not None, what="the write error")
    assert link.writer is not None
    link.writer.join(timeout=5)
    assert link.writer.dead


def test_dispatch_runs_callbacks_in_order_and_survives_their_exceptions() -> None:
    dispatch = Dispatcher(max_queued=10)
    seen: list[Any] = []

    def boom(payload: Any) -> None:
        raise RuntimeError("callback bug")

    dispatch.add_listener("e", seen.append)
    dispatch.add_listener("e", boom)
    dispatch.add_any(lambda event, payload: seen.append((event, payload)))
    dispatch.add_hook("connect", lambda info: seen.append(("hook", info)))
    dispatch.start()
    dispatch.event("e", 1)
    dispatch.hook("connect", "i")
    dispatch.hook("resume", "not registered: nothing queued")
    dispatch.event("other", 2)
    dispatch.stop()
    assert dispatch.greenlet is not None
    dispatch.greenlet.join(timeout=5)
    assert dispatch.greenlet.dead
    assert seen == [1, ("e", 1), ("hook", "i"), ("other", 2)]


def test_dispatch_listeners_can_be_removed() -> None:
    dispatch = Dispatcher(max_queued=10)
    seen: list[Any] = []
    dispatch.add_listener("e", seen.append)
    assert dispatch.has_listeners("e") and not dispatch.has_listeners("f")
    dispatch.remove_listener("e", seen.append)
    assert not dispatch.has_listeners("e")
    dispatch.add_listener("e", seen.append)
    dispatch.remove_listener("e", None)
    assert not dispatch.has_listeners("e")
