"""Hostile handshakes (issue 8, SPEC §4): raw sockets against a real server on port 0.

A deadline for the whole upgrade request, sockets before the upgrade counted,
bounded headers, a 4xx with a body for every refusal, logs without a traceback
or a secret, and RFC 6455 pings bounded.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
from typing import Any

import gevent
import pytest
from wshelpers import RawClient, wait_for

from wscore import AuthResult, ConnectionInfo, WsAuthenticator
from wscore.protocol import frames

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
SECRET = "s3cr3t-t0ken-4711"
SID = "sid-0123456789abcdef"


def upgrade(target: str = "/ws", *, method: str = "GET", version: str = "HTTP/1.1",
            headers: dict[str, str] | None = None, extra: bytes = b"") -> bytes:
    fields = {"Host": "test", "Upgrade": "websocket", "Connection": "Upgrade",
              "Sec-WebSocket-Key": KEY, "Sec-WebSocket-Version": "13", **(headers or {})}
    lines = [f"{method} {target} {version}"] + [f"{k}: {v}" for k, v in fields.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n").encode("latin-1") + extra + b"\r\n"


class Response:
    def __init__(self, data: bytes) -> None:
        head, _, self.body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}

    def json(self) -> Any:
        assert int(self.headers["content-length"]) == len(self.body) > 0
        return json.loads(self.body)


def exchange(port: int, request: bytes) -> Response:
    """Send ``request`` (the server may refuse before it is all sent) and read the response."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(10)
    data = b""
    try:
        try:
            sock.sendall(request)
        except OSError:
            pass  # refused part-way: the answer is already there to read
        while True:
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and (b" 101 " in head.split(b"\r\n")[0] or len(body) >= _content_length(head)):
                break
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    finally:
        sock.close()
    assert data, "no response at all"
    return Response(data)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def assert_quiet(caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    """No traceback and nothing above INFO anywhere; no token or session id in any log line."""
    out, err = capfd.readouterr()
    text = caplog.text + out + err
    assert "Traceback" not in text
    assert SECRET not in text and SID not in text
    loud = [r for r in caplog.records if r.levelno > logging.INFO or r.exc_info]
    assert not loud, [r.getMessage() for r in loud]


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)  # every logger, every level: nothing may hide
    return caplog


# -- the deadline --------------------------------------------------------------------------------


def test_a_dripped_request_is_cut_at_the_handshake_deadline(
        make_server: Any, logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    server = make_server(handshake_timeout=0.5)
    request = upgrade(f"/ws?token={SECRET}")
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(0.1)  # the drip's pace: one byte, then wait up to 0.1 s for the server
    sent, answer = 0, b""
    try:
        while sent < len(request):
            sock.send(request[sent : sent + 1])
            sent += 1
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            answer += chunk
            if not chunk or answer.endswith(b"}"):
                break
    except OSError:
        pass
    sock.close()
    # An idle timeout reset by every byte would have let all of it through (~20 s of drip).
    assert sent < len(request) // 2, f"only cut after {sent} of {len(request)} bytes"
    response = Response(answer)
    assert response.status == 408 and response.json()["error"]
    assert_quiet(logs, capfd)


def test_many_drips_are_all_cut_and_release_their_slots(make_server: Any) -> None:
    server = make_server(handshake_timeout=0.5, max_connections=30)
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]

    def drip(sock: socket.socket) -> bool:
        sock.settimeout(0.1)
        for byte in upgrade():
            try:
                sock.send(bytes([byte]))
                if sock.recv(4096) is not None:
                    return True  # answered (408) or closed: cut
            except TimeoutError:
                continue
            except OSError:
                return True
        return False

    cut = [g.get() for g in [gevent.spawn(drip, s) for s in socks]]
    for s in socks:
        s.close()
    assert all(cut)
    wait_for(lambda: server._transport.pending_connections == 0, what="pending slots released")
    RawClient(server.url).close()


# -- sockets before the upgrade count -------------------------------------------------------------


def test_sockets_before_the_upgrade_count_against_max_connections(make_server: Any) -> None:
    server = make_server(max_connections=2, handshake_timeout=30)
    upgraded = RawClient(server.url)
    upgraded.recv()
    half = socket.create_connection(("127.0.0.1", server.port))
    request = upgrade()
    half.sendall(request[:20])  # pending: its request is not complete
    wait_for(lambda: server._transport.pending_connections == 1, what="the half-open request")
    # Two sockets open (one upgraded, one pending): a third is refused at once, with a body.
    refused = exchange(server.port, upgrade())
    assert refused.status == 503 and refused.json() == {"error": "too many connections"}
    # The pending one may still finish its upgrade: it holds a slot already.
    half.sendall(request[20:])
    assert half.recv(4096).startswith(b"HTTP/1.1 101 ")
    half.close()
    wait_for(lambda: server.stats()["connections"] == 1, what="the slot to free up")
    RawClient(server.url).close()


def test_pending_sockets_alone_are_bounded(make_server: Any) -> None:
    server = make_server(max_connections=5, handshake_timeout=30)
    pending = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(5)]
    wait_for(lambda: server._transport.pending_connections == 5, what="five pending sockets")
    refused = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert refused.status == 503
    for s in pending:
        s.close()
    wait_for(lambda: server._transport.pending_connections == 0, what="pending slots released")
    healthz = exchange(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert healthz.status == 200


# -- sizes ---------------------------------------------------------------------------------------


def test_headers_over_64_kib_are_refused_with_431(
        make_server: Any, logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    server = make_server()
    pad = {f"X-Pad-{i}": "a" * 5000 for i in range(20)}  # 100 KB, every line under any per-line cap
    response = exchange(server.port, upgrade(f"/ws?token={SECRET}", headers=pad))
    assert response.status == 431 and "too large" in response.json()["error"]
    many = {f"X-F-{i}": "1" for i in range(150)}  # small, but too many fields
    assert exchange(server.port, upgrade(headers=many)).status == 431
    long_line = exchange(server.port, upgrade("/ws?x=" + "y" * 10_000))
    assert long_line.status == 414 and long_line.json()["error"]
    assert_quiet(logs, capfd)


class Recorder(WsAuthenticator):
    def __init__(self) -> None:
        self.seen: list[ConnectionInfo] = []

    def authenticate(self, conn: ConnectionInfo, token: str) -> AuthResult:
        self.seen.append(conn)
        return AuthResult.success("u1")


def test_only_the_contract_headers_are_kept_after_the_handshake(make_server: Any) -> None:
    recorder = Recorder()
    server = make_server(authenticator=recorder)
    pad = {f"X-Pad-{i}": "a" * 5000 for i in range(12)}  # 60 KB: under the cap, accepted
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(upgrade(f"/ws?token={SECRET}",
                         headers={**pad, "Origin": "http://o.example", "User-Agent": "ua/1"}))
    assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
    wait_for(lambda: bool(recorder.seen), what="the authenticator to run")
    headers = dict(recorder.seen[0].headers)
    assert headers["Origin"] == "http://o.example" and headers["User-Agent"] == "ua/1"
    assert not any(name.startswith("X-Pad") for name in headers)
    assert sum(len(k) + len(v) for k, v in headers.items()) <= 16 * 1024
    sock.close()


# -- every refusal is a 4xx with a body, quietly ---------------------------------------------------

REFUSALS = [
    ("bad base64 key", upgrade(headers={"Sec-WebSocket-Key": "!!not*base64!!"}), 400),
    ("short key", upgrade(headers={"Sec-WebSocket-Key": "c2hvcnQ="}), 400),
    ("no key", upgrade(headers={"Sec-WebSocket-Key": None}), 400),  # type: ignore[dict-item]
    ("no version", upgrade(headers={"Sec-WebSocket-Version": None}), 426),  # type: ignore[dict-item]
    ("unsupported version", upgrade(headers={"Sec-WebSocket-Version": "99"}), 426),
    ("HTTP/1.0", upgrade(version="HTTP/1.0"), 400),
    ("HTTP/9.9", upgrade(version="HTTP/9.9"), 400),
    ("POST upgrade", upgrade(method="POST"), 405),
    ("no Connection: Upgrade", upgrade(headers={"Connection": "keep-alive"}), 400),
    ("malformed request line", b"GET /ws?token=" + SECRET.encode() + b"\r\n\r\n", 400),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400),
    ("header without colon", upgrade(extra=b"NoColonHere\r\n"), 400),
    ("folded header", upgrade(extra=b"X-A: 1\r\n  folded\r\n"), 400),
    ("request body", upgrade(headers={"Content-Length": "5"}) + b"hello", 413),
    ("unknown path", upgrade("/nope"), 404),
]


@pytest.mark.parametrize(("case", "request_bytes", "status"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_every_refusal_is_a_4xx_with_a_body_and_no_traceback(
        make_server: Any, logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
        case: str, request_bytes: bytes, status: int) -> None:
    server = make_server()
    response = exchange(server.port, request_bytes.replace(b"/ws ", f"/ws?token={SECRET}&session={SID} "
                                                           .encode()))
    assert response.status == status, case
    assert response.json()["error"]
    if status == 426:
        assert response.headers["sec-websocket-version"] == "13"
    assert_quiet(logs, capfd)
    RawClient(server.url).close()  # and the server carries on


def test_no_log_line_carries_a_query_on_any_path(
        make_server: Any, logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    server = make_server(allowed_origins=["http://ok.example"])
    query = f"?token={SECRET}&session={SID}&last_seq=1"
    for request in (
        f"GET /ws{query} HTTP/1.1 extra\r\n\r\n".encode(),   # malformed request line
        f"BREW /ws{query} HTCPCP/1.0\r\n\r\n".encode(),
        f"GET /ws{query}\r\n\r\n".encode(),                  # HTTP/0.9 style
        upgrade(f"/ws{query}", headers={"Origin": "http://evil.example"}),  # 403
        f"GET /healthz{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        f"GET /other{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    ):
        assert 200 <= exchange(server.port, request).status < 500
    # Accepted, resumed (unknown session) and refused-resume paths too.
    client = RawClient(server.url + query, origin="http://ok.example")
    assert client.recv()["p"]["code"] == 1006
    client.close()
    assert_quiet(logs, capfd)


def test_an_absolute_form_target_is_accepted(make_server: Any) -> None:
    server = make_server()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(upgrade(f"http://127.0.0.1:{server.port}/ws?client=abs"))
    assert sock.recv(4096).startswith(b"HTTP/1.1 101 ")
    sock.close()


# -- RFC 6455 pings ----------------------------------------------------------------------------


def test_a_ping_flood_gets_bounded_pongs_then_4010(make_server: Any) -> None:
    server = make_server(rate_limit=10, rate_burst=20, rate_abuse_close_after=50)
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.settimeout(10)
    sock.sendall(upgrade())
    ping = frames.encode_frame(frames.OP_PING, b"p", mask_key=os.urandom(4))
    decoder = frames.FrameDecoder(role="client", max_message_bytes=1 << 20)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    events = decoder.feed(data.partition(b"\r\n\r\n")[2])
    sock.sendall(ping * 1000)
    while not any(isinstance(e, frames.CloseReceived) for e in events):
        chunk = sock.recv(65536)
        assert chunk, "closed without a close frame"
        events += decoder.feed(chunk)
    pongs = sum(isinstance(e, frames.PongReceived) for e in events)
    close = next(e for e in events if isinstance(e, frames.CloseReceived))
    assert close.code == 4010
    # The burst is answered; refilling at 10/s, 120 would take 10 s: the flood was not.
    assert 20 <= pongs <= 120, pongs
    sock.close()


def test_pings_within_the_rate_are_all_answered(make_server: Any) -> None:
    server = make_server(rate_limit=10, rate_burst=20, rate_abuse_close_after=50)
    client = RawClient(server.url)
    client.recv()
    for i in range(15):
        client.ws.ping(f"p{i}")
        opcode, data = client.ws.recv_data(control_frame=True)
        assert (opcode, data) == (frames.OP_PONG, f"p{i}".encode())
    client.close()


def _fragments(text: str, size: int = 2) -> bytes:
    data = text.encode()
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(frames.encode_frame(frames.OP_TEXT if i == 0 else frames.OP_CONTINUATION, p,
                                        fin=i == len(pieces) - 1, mask_key=os.urandom(4))
                    for i, p in enumerate(pieces))


def _echo(server: Any) -> None:
    server.on("echo", lambda ctx: ctx.payload)


def test_a_stream_of_tiny_fragments_is_closed_with_4010(make_server: Any) -> None:
    server = make_server(setup=_echo, rate_limit=10, rate_burst=20, rate_abuse_close_after=50)
    client = RawClient(server.url)
    client.recv()
    # A few fragments are fine: the message arrives whole.
    client.ws.sock.sendall(_fragments('{"v":"1.0","e":"echo","p":"ok","c":"f"}', size=4))
    assert client.recv_until(lambda f: f.get("c") == "f")["p"] == "ok"
    # Thousands of 2-byte fragments (one long message): each costs a decode, not a message.
    flood = _fragments(json.dumps({"v": "1.0", "e": "echo", "p": "x" * 20_000}))
    try:
        client.ws.sock.sendall(flood)
    except OSError:
        pass
    assert client.recv_close() == 4010


def _close_code(data: bytes) -> int:
    return int(struct.unpack("!H", data[:2])[0])
