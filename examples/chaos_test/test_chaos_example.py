"""An example chaos test: your app behind the sandbox proxy, under pytest.

Run: ``pytest examples/chaos_test``.  The app here is a plain WebSocket echo
server so the example stands alone; swap ``echo_server`` for your own app
(e.g. ``examples.chat.app``) and the raw ``websocket-client`` calls for
``wscore.WsClient`` to test reconnect-and-resume.
"""

from gevent import monkey

monkey.patch_all()

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

import sandbox
from sandbox import Direction, Latency, ProfileParams, ResetPeer


def _echo_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    ws = environ["wsgi.websocket"]
    while (msg := ws.receive()) is not None:
        ws.send(msg)
    return []


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    server = WSGIServer(("127.0.0.1", 0), _echo_app, handler_class=WebSocketHandler, log=None)
    server.start()
    yield ("127.0.0.1", server.server_port)
    server.stop()


def _send_with_retry(net: sandbox.ProxyHandle, messages: list[str]) -> list[str]:
    """A naive client: reconnect and resend on any connection error."""
    received: list[str] = []
    pending = list(messages)
    for _attempt in range(20):
        try:
            ws = websocket.create_connection(net.url("/ws"), timeout=5)
            while pending:
                ws.send(pending[0])
                received.append(str(ws.recv()))
                pending.pop(0)
            ws.close()
            return received
        except (OSError, websocket.WebSocketException):
            continue
    raise AssertionError(f"gave up with {len(pending)} messages pending")


def test_client_survives_resets(echo_server: tuple[str, int]) -> None:
    # Every connection is reset somewhere in its first 2-5 replies, half of
    # the time in the middle of a frame; the seed makes a failure replay.
    faults: list[sandbox.Fault] = [
        Latency(latency_seconds=0.005, jitter_seconds=0.005),
        ResetPeer(direction=Direction.DOWN, after_frames=(2, 5), mid_frame_probability=0.5),
    ]
    with sandbox.proxy(echo_server, seed=1234, faults=faults) as net:
        messages = [f"msg-{i}" for i in range(20)]
        assert _send_with_retry(net, messages) == messages
        assert net.stats()["faults_injected"]["reset_peer"] >= 3


def test_client_waits_out_a_blackhole(echo_server: tuple[str, int]) -> None:
    with sandbox.proxy(echo_server) as net:
        ws = websocket.create_connection(net.url("/ws"), timeout=5)
        with net.blackhole():  # a partition until the block exits
            ws.send("during the partition")
            ws.settimeout(0.1)
            with pytest.raises(websocket.WebSocketTimeoutException):
                ws.recv()
        ws.settimeout(5)
        assert ws.recv() == "during the partition"


def test_named_profile(echo_server: tuple[str, int]) -> None:
    params = ProfileParams(heartbeat_seconds=1, session_ttl_seconds=10)
    with sandbox.proxy(echo_server, seed=7, profile="flaky-mobile",
                       profile_params=params) as net:
        messages = [f"m{i}" for i in range(5)]
        assert _send_with_retry(net, messages) == messages
