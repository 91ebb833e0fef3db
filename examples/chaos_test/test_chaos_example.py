"""An example chaos test: your app behind the sandbox proxy, under pytest.

Run: ``pytest examples/chaos_test``. It serves ``examples.chat.app``'s
handlers on a free port, puts ``sandbox.proxy`` between the app and two
bundled clients, and breaks the network while a room chats: every message
must still arrive, once, in order. Copy it and point ``chat_server`` at your
own app.
"""

from collections.abc import Iterator
from typing import Any

import gevent.event
import pytest

import wscore  # noqa: F401  (gevent-ready before anything else)
from examples.chat.app import build_chat_server
from wscore import WsServer, WsServerConfig, sandbox
from wscore.client import WsClient, WsClientConfig
from wscore.sandbox import Direction, Latency, ResetPeer

QUICK = WsClientConfig(backoff_base=0.05, backoff_cap=0.5, open_timeout=2.0)


@pytest.fixture
def chat_server() -> Iterator[WsServer]:
    """The example chat app on 127.0.0.1:0 with a short heartbeat (swap in your app)."""
    server = build_chat_server(WsServerConfig.dev(host="127.0.0.1", port=0, ping_interval=0.5,
                                                  ping_timeout=2.0))
    server.start()
    yield server
    server.stop()


class Listener:
    """Collects a room's messages; ``done`` fires when ``expected`` have arrived."""

    def __init__(self, expected: int) -> None:
        self.texts: list[str] = []
        self.expected = expected
        self.done = gevent.event.Event()

    def __call__(self, payload: Any) -> None:
        self.texts.append(payload["text"])
        if len(self.texts) >= self.expected:
            self.done.set()


def test_a_room_survives_resets_and_a_partition(chat_server: WsServer) -> None:
    # Every server→client connection is reset after 3-8 frames, half of the time in
    # the middle of a frame; the seed makes any failure replay exactly.
    faults: list[sandbox.Fault] = [
        Latency(latency_seconds=0.005, jitter_seconds=0.005),
        ResetPeer(direction=Direction.DOWN, after_frames=(3, 8), mid_frame_probability=0.5),
    ]
    upstream = ("127.0.0.1", chat_server.port)
    with sandbox.proxy(upstream, seed=1234, faults=faults) as net:
        listener = Listener(expected=60)
        bob = WsClient(net.url("/ws"), config=QUICK)
        bob.on("chat.new_message", listener)
        bob.connect()
        bob.request("room.join", {"roomId": "lobby"}, timeout=10)
        alice = WsClient(f"ws://127.0.0.1:{chat_server.port}/ws", config=QUICK)  # direct
        alice.connect()
        alice.request("room.join", {"roomId": "lobby"}, timeout=10)
        for i in range(30):
            alice.send("chat.message", {"roomId": "lobby", "text": f"m{i}"})
        with net.blackhole():  # a partition while the room keeps talking
            for i in range(30, 60):
                alice.send("chat.message", {"roomId": "lobby", "text": f"m{i}"})
        assert listener.done.wait(30), f"only {len(listener.texts)} of 60 arrived"
        assert listener.texts == [f"m{i}" for i in range(60)]  # all, once, in order
        assert bob.stats().resumes >= 1 and bob.stats().sessions_lost == 0
        assert net.stats()["faults_injected"]["reset_peer"] >= 1
        alice.close()
        bob.close()
