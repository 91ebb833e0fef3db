"""The client against a scripted WebSocket server that misbehaves or restarts on purpose.

WsServer never skips a number or closes with 1012 on its own (1012 is the Redis
deployment's restart), so these cases are played by a small real server on
127.0.0.1:0: it speaks RFC 6455 over real sockets and answers each connection
attempt with the frames the test scripts for it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import gevent
import gevent.server
import pytest
from wshelpers import wait_for

from wscore.client import WsClient
from wscore.errors import ConnectionClosed
from wscore.protocol import frames

#: One connection's script: frames to send (dicts) or a close code (int) that ends it.
Script = list[dict[str, Any] | int]


class ScriptedServer:
    """Accepts connections; the n-th one gets ``scripts[n]`` and is then held open."""

    def __init__(self, scripts: list[Script]) -> None:
        self.scripts = scripts
        self.queries: list[dict[str, str]] = []  # of each upgrade request, in order
        self.received: list[list[dict[str, Any]]] = []  # text frames each connection got
        self._server = gevent.server.StreamServer(("127.0.0.1", 0), self._handle)
        self._server.start()
        self.url = f"ws://127.0.0.1:{self._server.server_port}/ws"

    def stop(self) -> None:
        self._server.stop(timeout=1)

    def _handle(self, sock: Any, _addr: Any) -> None:
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                return
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        target = lines[0].split(" ")[1]
        headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        index = len(self.queries)
        self.queries.append({k: v[0] for k, v in parse_qs(urlsplit(target).query).items()})
        got: list[dict[str, Any]] = []
        self.received.append(got)
        sock.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: "
            + frames.accept_key(headers["sec-websocket-key"]).encode() + b"\r\n\r\n")
        script = self.scripts[index] if index < len(self.scripts) else []
        for item in script:
            if isinstance(item, int):
                sock.sendall(frames.encode_close(item))
                break
            frame = {"v": "1.0", "t": 0, **item}
            sock.sendall(frames.encode_frame(frames.OP_TEXT, json.dumps(frame).encode()))
        decoder = frames.FrameDecoder(role="server", max_message_bytes=1 << 20)
        try:
            while True:
                data = rest or sock.recv(65536)
                rest = b""
                if not data:
                    return
                for event in decoder.feed(data):
                    if isinstance(event, frames.TextMessage):
                        got.append(json.loads(event.text))
                    elif isinstance(event, frames.CloseReceived):
                        return
        except OSError:
            return
        finally:
            sock.close()


def connected(sid: str, resumed: bool = False, last_seq: int = 0) -> dict[str, Any]:
    return {"e": "sys.connected",
            "p": {"sessionId": sid, "resumed": resumed, "lastSeq": last_seq, "heartbeat": 20}}


def ev(s: int, payload: Any) -> dict[str, Any]:
    return {"e": "ev", "p": payload, "s": s}


@pytest.fixture
def scripted() -> Iterator[Callable[[list[Script]], ScriptedServer]]:
    made: list[ScriptedServer] = []

    def make(scripts: list[Script]) -> ScriptedServer:
        server = ScriptedServer(scripts)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def test_a_gap_is_never_skipped_the_client_resumes_for_the_missing_frames(
    scripted: Callable[[list[Script]], ScriptedServer], make_client: Callable[..., WsClient]
) -> None:
    server = scripted([
        [connected("S1"), ev(1, "a"), ev(3, "c")],  # s=2 is missing
        [connected("S1", resumed=True, last_seq=3), ev(2, "b"), ev(3, "c")],
    ])
    client = make_client(server.url)
    got: list[Any] = []
    client.on("ev", got.append)
    client.connect()
    wait_for(lambda: got == ["a", "b", "c"], what="the frames in order, the gap filled")
    assert [q.get("last_seq") for q in server.queries] == [None, "1"]
    assert server.queries[1]["session"] == "S1"
    stats = client.stats()
    assert stats.gaps == 1 and stats.resumes == 1 and stats.connects == 2


def test_service_restart_1012_reconnects_and_resumes(
    scripted: Callable[[list[Script]], ScriptedServer], make_client: Callable[..., WsClient]
) -> None:
    server = scripted([
        [connected("S1"), ev(1, "a"), 1012],
        [connected("S1", resumed=True, last_seq=1), ev(2, "b")],
    ])
    client = make_client(server.url)
    got: list[Any] = []
    reasons: list[ConnectionClosed] = []
    client.on("ev", got.append)
    client.on_disconnect(reasons.append)
    client.connect()
    wait_for(lambda: got == ["a", "b"], what="the resume after the restart")
    assert [r.code for r in reasons] == [1012] and not client.closed
    assert server.queries[1]["last_seq"] == "1"


def test_takeover_4000_stops_the_client_for_good(
    scripted: Callable[[list[Script]], ScriptedServer], make_client: Callable[..., WsClient]
) -> None:
    server = scripted([[connected("S1"), 4000]])
    client = make_client(server.url)
    with contextlib.suppress(ConnectionClosed):  # the close may come before connect() wakes
        client.connect()
    assert client.wait_closed(timeout=10.0)
    reason = client.close_reason
    assert isinstance(reason, ConnectionClosed) and reason.code == 4000
    gevent.sleep(0)  # let a (wrong) reconnect attempt start, if any were scheduled
    assert len(server.queries) == 1
    with pytest.raises(ConnectionClosed):
        client.send("x")


def test_resent_frames_after_resume_carry_their_original_numbers(
    scripted: Callable[[list[Script]], ScriptedServer], make_client: Callable[..., WsClient]
) -> None:
    server = scripted([
        [connected("S1"), {"e": "sys.ack", "p": {"s": 1}}, 1001],
        [connected("S1", resumed=True)],
    ])
    client = make_client(server.url)
    client.send("m", 1)  # queued before the first session
    client.send("m", 2)
    client.connect()
    wait_for(lambda: len(server.received) == 2 and len(server.received[1]) >= 1,
             what="the re-send on the second connection")
    first = [f["s"] for f in server.received[0] if f["e"] == "m"]
    again = [f for f in server.received[1] if f["e"] == "m"]
    assert first in ([], [1], [1, 2])  # the close may overtake the writer
    assert [(f["s"], f["p"]) for f in again] == [(2, 2)]  # s=1 was acknowledged: not re-sent
