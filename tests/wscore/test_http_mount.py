"""A mounted WSGI app on wscore's own listener: request bodies, keep-alive, streamed responses.

Real server, real sockets; the client side is a hand-written HTTP/1.1 reader so
that framing (keep-alive, pipelining, chunked) is what is tested, not a library's.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
import gevent.event
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wshelpers import RawClient, wait_for

from wscore import WsServer


class HttpConn:
    """One client connection that reads responses one at a time (keep-alive aware)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise AssertionError("connection closed mid-body")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError("connection closed mid-line")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError(f"connection closed before a response head: {self.buf!r}")
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(lines[0].split()[1]), headers

    def response(self) -> tuple[int, dict[str, str], bytes]:
        status, headers = self.head()
        if status == 100:
            status, headers = self.head()
        if "content-length" in headers:
            return status, headers, self._take(int(headers["content-length"]))
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while size := int(self._line(), 16):
                body += self._take(size)
                assert self._take(2) == b"\r\n"
            assert self._line() == b""
            return status, headers, body
        while self._fill():
            pass
        body, self.buf = self.buf, b""
        return status, headers, body

    def closed_by_peer(self) -> bool:
        """True once the server closed the connection (nothing more to read)."""
        try:
            return self.buf == b"" and not self._fill()
        except OSError:
            return True

    def close(self) -> None:
        self.sock.close()


def request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
            version: str = "HTTP/1.1") -> bytes:
    lines = [f"{method} {path} {version}", "Host: test"]
    hdrs = dict(headers or {})
    if body and "Transfer-Encoding" not in hdrs:
        hdrs.setdefault("Content-Length", str(len(body)))
    lines += [f"{k}: {v}" for k, v in hdrs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


class EchoApp:
    """A WSGI app: echoes the body with what it saw; ``/stream`` yields, waits, yields."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = gevent.event.Event()
        self.busy = gevent.event.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        self.calls += 1
        if environ["PATH_INFO"] == "/stream":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return self._stream()
        if environ["PATH_INFO"] == "/busy-first":
            # The app's own work before it reads the body costs the client nothing.
            self.busy.wait(10)
        body = environ["wsgi.input"].read()
        data = json.dumps({"method": environ["REQUEST_METHOD"], "length": environ.get("CONTENT_LENGTH"),
                           "body": body.decode("latin-1")}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def _stream(self) -> Iterable[bytes]:
        yield b"first;"
        self.release.wait(10)
        yield b"second"


@pytest.fixture
def app() -> EchoApp:
    return EchoApp()


@pytest.fixture
def mounted(make_server: Callable[..., WsServer], app: EchoApp) -> Callable[..., WsServer]:
    def make(**overrides: Any) -> WsServer:
        return make_server(setup=lambda s: s.mount(app), **overrides)
    return make


def test_a_body_reaches_the_mounted_app(mounted: Callable[..., WsServer]) -> None:
    conn = HttpConn(mounted().port)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    conn.send(request("POST", "/echo", b"name=ada&x=1", form))
    status, _, body = conn.response()
    assert status == 200 and json.loads(body) == {"method": "POST", "length": "12", "body": "name=ada&x=1"}
    conn.close()


def test_a_chunked_body_reaches_the_app_as_a_plain_one(mounted: Callable[..., WsServer]) -> None:
    conn = HttpConn(mounted().port)
    conn.send(request("POST", "/echo", chunked(b"hello ", b"world"), {"Transfer-Encoding": "chunked"}))
    status, _, body = conn.response()
    assert status == 200 and json.loads(body) == {"method": "POST", "length": "11", "body": "hello world"}
    conn.close()


def test_keep_alive_and_pipelined_requests_are_answered_in_order(mounted: Callable[..., WsServer]) -> None:
    conn = HttpConn(mounted().port)
    conn.send(request("POST", "/a", b"one"))
    status, headers, body = conn.response()
    assert status == 200 and json.loads(body)["body"] == "one" and headers.get("connection") != "close"
    # Two more in one write (pipelined), the second with a chunked body: bytes a body
    # read takes past its end stay for the next request.
    conn.send(request("POST", "/b", b"two") + request("PUT", "/c", chunked(b"three"),
                                                        {"Transfer-Encoding": "chunked"}))
    assert json.loads(conn.response()[2])["body"] == "two"
    assert json.loads(conn.response()[2]) == {"method": "PUT", "length": "5", "body": "three"}
    # wscore's own paths share the connection too.
    conn.send(request("GET", "/healthz"))
    status, _, body = conn.response()
    assert status == 200 and json.loads(body)["status"] == "ok"
    conn.send(request("GET", "/last", headers={"Connection": "close"}))
    status, headers, _ = conn.response()
    assert status == 200 and headers["connection"] == "close"
    assert conn.closed_by_peer()
    conn.close()


def test_http_1_0_closes_unless_it_asks_for_keep_alive(mounted: Callable[..., WsServer]) -> None:
    port = mounted().port
    conn = HttpConn(port)
    conn.send(request("GET", "/x", version="HTTP/1.0"))
    assert conn.response()[0] == 200 and conn.closed_by_peer()
    conn.close()
    conn = HttpConn(port)
    conn.send(request("GET", "/x", headers={"Connection": "keep-alive"}, version="HTTP/1.0"))
    status, headers, _ = conn.response()
    assert status == 200 and headers["connection"].lower() == "keep-alive"
    conn.send(request("GET", "/y", version="HTTP/1.0"))
    assert conn.response()[0] == 200
    conn.close()


def test_a_response_is_streamed_as_the_app_yields_it(mounted: Callable[..., WsServer], app: EchoApp) -> None:
    conn = HttpConn(mounted().port)
    conn.send(request("GET", "/stream"))
    status, headers = conn.head()
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    # The first chunk arrives while the app is still waiting to yield the second.
    while b"first;" not in conn.buf:
        assert conn._fill()
    assert not app.release.is_set() and b"second" not in conn.buf
    app.release.set()
    while b"0\r\n\r\n" not in conn.buf:
        assert conn._fill()
    assert b"second" in conn.buf
    conn.close()


def test_expect_100_continue_is_answered(mounted: Callable[..., WsServer]) -> None:
    conn = HttpConn(mounted().port)
    conn.send(request("POST", "/echo", headers={"Content-Length": "4", "Expect": "100-continue"}))
    status, _ = conn.head()
    assert status == 100
    conn.send(b"body")
    status, _, body = conn.response()
    assert status == 200 and json.loads(body)["body"] == "body"
    conn.close()


@pytest.mark.parametrize(("raw", "status", "error"), [
    (request("POST", "/echo", b"x" * 2001), 413, "request body too large"),
    (request("POST", "/echo", chunked(b"x" * 1500, b"y" * 600), {"Transfer-Encoding": "chunked"}),
     413, "request body too large"),
    (request("POST", "/echo", b"abc", {"Transfer-Encoding": "chunked", "Content-Length": "3"}),
     400, "both Content-Length and Transfer-Encoding"),
    (request("POST", "/echo", b"abc", {"Transfer-Encoding": "gzip, chunked"}), 501,
     "only Transfer-Encoding: chunked is supported"),
    (request("POST", "/echo", headers={"Content-Length": "-1"}), 400, "malformed Content-Length"),
    (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400,
     "malformed Content-Length"),
    (request("POST", "/echo", b"zz\r\nab\r\n", {"Transfer-Encoding": "chunked"}), 400,
     "malformed chunked body"),
])
def test_bodies_the_server_will_not_read_are_refused_before_the_app_runs(
        mounted: Callable[..., WsServer], app: EchoApp, raw: bytes, status: int, error: str) -> None:
    conn = HttpConn(mounted(max_http_body_bytes=2000).port)
    conn.send(raw)
    got, headers, body = conn.response()
    assert (got, json.loads(body)) == (status, {"error": error})
    assert headers["connection"] == "close" and app.calls == 0
    conn.close()


def test_without_a_mounted_app_every_body_is_refused(make_server: Callable[..., WsServer]) -> None:
    conn = HttpConn(make_server().port)
    conn.send(request("POST", "/healthz", b"abc"))
    status, _, body = conn.response()
    assert (status, json.loads(body)) == (413, {"error": "request bodies are not accepted"})
    conn.close()


def test_a_body_that_trickles_in_is_cut(mounted: Callable[..., WsServer], app: EchoApp) -> None:
    # A body must average MIN_BODY_RATE after handshake_timeout's grace: a byte every
    # 0.1 s is far below it, so the server answers 408 soon after the grace.
    conn = HttpConn(mounted(handshake_timeout=0.5).port)
    conn.send(request("POST", "/echo", headers={"Content-Length": "1000"}))

    def drip() -> None:
        try:
            for _ in range(50):
                conn.send(b"x")
                gevent.sleep(0.1)  # the attacker's pace, not a synchronisation
        except OSError:
            pass

    dripper = gevent.spawn(drip)
    started = time.monotonic()
    status, headers, body = conn.response()
    elapsed = time.monotonic() - started
    dripper.kill()
    assert (status, json.loads(body)) == (408, {"error": "the request body did not arrive in time"})
    assert headers["connection"] == "close" and elapsed < 3.0
    assert app.calls == 1  # the app was reading the body when it stalled
    conn.close()


def test_an_idle_keep_alive_connection_is_closed_after_handshake_timeout(
        mounted: Callable[..., WsServer]) -> None:
    conn = HttpConn(mounted(handshake_timeout=0.3).port)
    conn.send(request("GET", "/x"))
    assert conn.response()[0] == 200
    started = time.monotonic()
    assert conn.closed_by_peer()  # blocks until the server closes it
    assert time.monotonic() - started < 3.0
    conn.close()


def test_stop_closes_idle_keep_alive_connections_at_once(mounted: Callable[..., WsServer]) -> None:
    server = mounted(handshake_timeout=30.0)
    conn = HttpConn(server.port)
    conn.send(request("GET", "/x"))
    assert conn.response()[0] == 200
    wait_for(lambda: len(server._transport._server.idle) == 1, what="the connection to idle")  # type: ignore[union-attr]
    started = time.monotonic()
    server.stop()
    assert conn.closed_by_peer() and time.monotonic() - started < 5.0
    conn.close()


def test_a_websocket_upgrade_after_a_plain_request_on_one_connection(
        mounted: Callable[..., WsServer]) -> None:
    server = mounted()
    conn = HttpConn(server.port)
    conn.send(request("GET", "/page"))
    assert conn.response()[0] == 200
    conn.send(request("GET", "/ws", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}))
    status, headers = conn.head()
    assert status == 101 and headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    wait_for(lambda: server.stats()["connections"] == 1, what="the WebSocket to be served")
    conn.close()
    # And a normal WebSocket client still works next to it.
    client = RawClient(f"ws://127.0.0.1:{server.port}/ws")
    assert client.recv()["e"] == "sys.connected"
    client.close()


# -- properties: any framing, any mix, one live server --------------------------------------------------
LIVE = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
bodies = st.binary(max_size=200)


@st.composite
def requests_on_one_connection(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    """(raw request, the body the app must see) × 1..4, each Content-Length or chunked (cut anywhere)."""
    out = []
    for i in range(draw(st.integers(1, 4))):
        body = draw(bodies)
        if draw(st.booleans()):
            raw = request("POST", f"/r{i}", body)
        else:
            cuts = sorted(set(draw(st.lists(st.integers(1, max(len(body) - 1, 1)), max_size=4))))
            parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if body[a:b]]
            raw = request("POST", f"/r{i}", chunked(*parts), {"Transfer-Encoding": "chunked"})
        out.append((raw, body))
    return out


@LIVE
@given(batch=requests_on_one_connection(), tail=st.binary(max_size=60))
def test_pipelined_bodies_of_any_framing_reach_the_app_in_order_then_garbage_is_refused(
        mounted: Callable[..., WsServer], batch: list[tuple[bytes, bytes]], tail: bytes,
        caplog: pytest.LogCaptureFixture) -> None:
    server = _shared(mounted)
    conn = HttpConn(server.port)
    conn.send(b"".join(raw for raw, _ in batch) + tail)
    for _raw, body in batch:
        status, _, answer = conn.response()
        assert status == 200 and json.loads(answer)["body"] == body.decode("latin-1")
    if tail.strip():
        # What follows is not a request: an answer (4xx/501, never 5xx otherwise) and a
        # close, or a silent close (no head at all by the deadline), never a crash.
        try:
            status = conn.response()[0]
        except (AssertionError, OSError):
            status = None
        assert status is None or (400 <= status < 500 or status == 501)
    conn.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


_SERVERS: dict[int, WsServer] = {}


def _shared(mounted: Callable[..., WsServer]) -> WsServer:
    """One server for every example of a property (the fixture is per test, the examples many)."""
    server = _SERVERS.get(id(mounted))
    if server is None or server._state != "running":
        server = _SERVERS[id(mounted)] = mounted(handshake_timeout=0.25)
    return server


def test_a_chunked_body_s_framing_counts_against_the_limit(mounted: Callable[..., WsServer],
                                                           app: EchoApp) -> None:
    # Trailer lines carry no body bytes: without a bound on the wire, a client could
    # feed them for ever (one core busy parsing them byte by byte).
    conn = HttpConn(mounted(max_http_body_bytes=1000).port)
    conn.send(request("POST", "/echo", headers={"Transfer-Encoding": "chunked"}) + b"1\r\nx\r\n0\r\n")
    try:
        for _ in range(200):
            conn.send(b"X-Trailer: " + b"y" * 1000 + b"\r\n")
    except OSError:
        pass  # refused part-way: the answer is already there
    status, _, body = conn.response()
    assert (status, json.loads(body)) == (413, {"error": "request body too large"}) and app.calls == 0
    conn.close()


def test_time_the_app_spends_before_reading_is_not_the_clients(mounted: Callable[..., WsServer],
                                                               app: EchoApp) -> None:
    conn = HttpConn(mounted(handshake_timeout=0.3).port)
    body = b"z" * 200_000  # sent at once: it waits in the socket while the app is busy
    conn.send(request("POST", "/busy-first", body))
    wait_for(lambda: app.calls == 1, what="the app to start")
    gevent.sleep(1.0)  # the app's work: well past the body's grace
    app.busy.set()
    status, _, answer = conn.response()
    assert status == 200 and len(json.loads(answer)["body"]) == len(body)
    conn.close()


def test_http_1_0_keep_alive_with_an_unframed_response_closes(mounted: Callable[..., WsServer],
                                                              app: EchoApp) -> None:
    # HTTP/1.0 has no chunked framing: a response without a length ends with the connection.
    app.release.set()
    conn = HttpConn(mounted().port)
    conn.send(request("GET", "/stream", headers={"Connection": "keep-alive"}, version="HTTP/1.0")
              + request("GET", "/x", headers={"Connection": "keep-alive"}, version="HTTP/1.0"))
    status, headers, body = conn.response()
    assert status == 200 and headers["connection"] == "close" and body == b"first;second"
    conn.close()


def test_a_client_that_leaves_mid_body_is_not_an_error(mounted: Callable[..., WsServer], app: EchoApp,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    server = mounted()
    conn = HttpConn(server.port)
    conn.send(request("POST", "/echo", headers={"Content-Length": "1000"}) + b"only part")
    wait_for(lambda: app.calls == 1, what="the app to read")
    conn.close()
    wait_for(lambda: server._transport.pending_connections == 0,  # type: ignore[union-attr]
             what="the connection to end")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_blank_line_before_a_keep_alive_request_is_ignored(mounted: Callable[..., WsServer]) -> None:
    conn = HttpConn(mounted().port)
    conn.send(request("POST", "/a", b"one") + b"\r\n" + request("GET", "/b"))
    assert conn.response()[0] == 200 and conn.response()[0] == 200
    conn.close()
