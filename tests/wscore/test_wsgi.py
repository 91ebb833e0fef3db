"""wscore/wsgi.py and the embedded mode: the shared upgrade checks, and a host that keeps its socket.

gunicorn's gevent worker itself is exercised for real in tests/examples/test_wsgi_gunicorn.py;
here the WSGI entry runs under gevent's own pywsgi server, a real host that parses the
request itself and does not hand its socket over.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.socket
import pytest
import redis
import websocket
from cluster.redisproc import RedisServer
from gevent import pywsgi

from wscore import UsageError, WsServer, WsServerConfig
from wscore.transport import upgrade_refusal
from wscore.wsgi import WsgiEntry, _WebSocketResponse

GOOD = {
    "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_UPGRADE": "websocket",
    "HTTP_CONNECTION": "keep-alive, Upgrade", "HTTP_SEC_WEBSOCKET_VERSION": "13",
    "HTTP_SEC_WEBSOCKET_KEY": "dGhlIHNhbXBsZSBub25jZQ==", "CONTENT_LENGTH": "",
}


@pytest.mark.parametrize(("change", "status", "message"), [
    ({"REQUEST_METHOD": "POST"}, "405 Method Not Allowed", "a WebSocket upgrade must be a GET"),
    ({"SERVER_PROTOCOL": "HTTP/1.0"}, "400 Bad Request", "a WebSocket upgrade needs HTTP/1.1"),
    ({"CONTENT_LENGTH": "5"}, "413 Content Too Large", "request bodies are not accepted"),
    ({"HTTP_TRANSFER_ENCODING": "chunked"}, "413 Content Too Large", "request bodies are not accepted"),
    ({"HTTP_CONNECTION": "keep-alive"}, "400 Bad Request",
     "a WebSocket upgrade needs 'Connection: Upgrade'"),
    ({"HTTP_SEC_WEBSOCKET_VERSION": ""}, "426 Upgrade Required", "Sec-WebSocket-Version is missing"),
    ({"HTTP_SEC_WEBSOCKET_VERSION": "8"}, "426 Upgrade Required", "unsupported Sec-WebSocket-Version"),
    ({"HTTP_SEC_WEBSOCKET_KEY": "c2hvcnQ="}, "400 Bad Request",
     "Sec-WebSocket-Key must be 16 bytes, base64-encoded"),
    ({"HTTP_SEC_WEBSOCKET_KEY": "not base64!"}, "400 Bad Request",
     "Sec-WebSocket-Key must be 16 bytes, base64-encoded"),
])
def test_upgrade_refusal_answers_each_bad_handshake(change: dict[str, str], status: str, message: str
                                                    ) -> None:
    assert upgrade_refusal(GOOD) is None
    refusal = upgrade_refusal({**GOOD, **change})
    assert refusal is not None and refusal[:2] == (status, message)


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = f"app saw {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def hosted() -> Iterator[tuple[WsServer, int]]:
    server = WsServer(config=WsServerConfig.dev(host="127.0.0.1", port=0))
    server.mount(hello_app)
    host = pywsgi.WSGIServer(("127.0.0.1", 0), server.wsgi_app(), log=None)
    host.start()
    yield server, int(host.address[1])
    host.stop(timeout=1)
    server.stop()


def fetch(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_a_host_that_keeps_its_socket_serves_http_and_refuses_the_upgrade_501(
        hosted: tuple[WsServer, int]) -> None:
    server, port = hosted
    assert server._state == "new"  # started by the first request, in the serving process
    assert fetch(port, "/anything") == (200, b"app saw /anything")
    assert server._state == "running" and server._transport is None
    status, body = fetch(port, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert fetch(port, "/ws")[0] == 426  # a plain GET of the WebSocket path: wscore's answer
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=10)
    assert refused.value.status_code == 501
    assert json.loads(refused.value.resp_body) == {
        "error": "this WSGI server cannot carry a WebSocket: run gunicorn -k gevent"}


def test_embedded_lifecycle() -> None:
    server = WsServer(config=WsServerConfig.dev(host="127.0.0.1", port=0))
    server.start_embedded()
    server.start_embedded()  # idempotent while running embedded
    with pytest.raises(UsageError):
        server.start()
    server.broadcast("x", None)  # the router runs: pushes are accepted
    server.stop()  # no listener to close
    assert server._state == "stopped"
    with pytest.raises(UsageError):
        server.start_embedded()


def _call(entry: WsgiEntry, path: str) -> tuple[str, bytes]:
    """One request straight into the WSGI entry (no host): its status and body."""
    seen: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_PROTOCOL": "HTTP/1.1",
               "SERVER_SOFTWARE": "test-host", "wsgi.input": io.BytesIO()}
    body = b"".join(entry(environ, lambda status, headers, exc_info=None: seen.append(status)))
    return seen[0], body


def _wscore_clients(url: str) -> list[str]:
    """The names of wscore's Redis connections, one entry per connection (the writer's name
    carries its node's id; the bus and room subscriber connections are wscore-bus, -rooms)."""
    admin = redis.Redis.from_url(url)
    try:
        return sorted(c["name"] for c in admin.client_list() if c["name"].startswith("wscore-"))
    finally:
        admin.close()


def test_concurrent_first_requests_start_one_embedded_server(redis_server: RedisServer) -> None:
    # The first requests of a worker come together; the start yields (Redis round trips):
    # one request starts the server, the others wait for it and are then served by it.
    server = WsServer(config=WsServerConfig.dev(host="127.0.0.1", port=0, redis_url=redis_server.url))
    try:
        entry = server.wsgi_app()
        seen: list[tuple[str, Any, Any]] = []

        def request() -> None:
            status, _ = _call(entry, "/healthz")
            seen.append((status, server._router, server._cluster))

        requests = [gevent.spawn(request) for _ in range(4)]
        gevent.joinall(requests, timeout=20, raise_error=True)
        assert [s for s, _, _ in seen] == ["200 OK"] * 4
        assert len({id(r) for _, r, _ in seen}) == 1 and len({id(c) for _, _, c in seen}) == 1
        assert server._state == "running"
        # One node, so one node's connections in Redis: no start left another one behind.
        names = _wscore_clients(redis_server.url)
        assert [n for n in names if n not in ("wscore-bus", "wscore-rooms")] == [f"wscore-{server.node_id}"]
        assert names.count("wscore-bus") == 1
    finally:
        server.stop()


def test_a_failed_embedded_start_answers_every_waiting_request_503_and_can_be_retried(
        tmp_path: Path) -> None:
    redis_server = RedisServer(tmp_path)
    redis_server.start()
    redis_server.stop()  # its port is known, nothing listens there: Redis is unreachable
    server = WsServer(config=WsServerConfig.dev(host="127.0.0.1", port=0, redis_url=redis_server.url))
    try:
        entry = server.wsgi_app()
        requests = [gevent.spawn(_call, entry, "/healthz") for _ in range(3)]
        gevent.joinall(requests, timeout=30, raise_error=True)
        for g in requests:
            status, body = g.value
            assert (status, json.loads(body)) == ("503 Service Unavailable",
                                                   {"error": "wscore is not available"})
        assert server._state == "new" and server._cluster is None and server._router is None
        redis_server.start()  # the same port: the next request starts the server
        assert _call(entry, "/healthz")[0] == "200 OK"
        assert server._state == "running"
        assert f"wscore-{server.node_id}" in _wscore_clients(redis_server.url)
    finally:
        server.stop()
        redis_server.stop()


@pytest.mark.parametrize(("software", "accepted"), [
    ("gunicorn/26.0.0", False), ("gunicorn/23.0.0", False), ("gunicorn/26.1.0", True),
    ("gunicorn/27.0.1", True)])
def test_an_upgrade_under_a_gunicorn_older_than_26_1_is_refused_501(software: str, accepted: bool
                                                                    ) -> None:
    # Older gunicorn frames a 101 as chunked: the WebSocket would be corrupted.
    server = WsServer(config=WsServerConfig.dev(host="127.0.0.1", port=0))
    ours, theirs = gevent.socket.socketpair()
    try:
        entry = server.wsgi_app()
        seen: list[str] = []
        environ = {**GOOD, "PATH_INFO": "/ws", "SERVER_SOFTWARE": software, "wsgi.multithread": True,
                   "gunicorn.socket": ours, "wsgi.input": io.BytesIO(), "REMOTE_ADDR": "127.0.0.1"}
        response = entry(environ, lambda status, headers, exc_info=None: seen.append(status))
        if accepted:
            assert seen == ["101 Switching Protocols"]
            assert isinstance(response, _WebSocketResponse)
            with pytest.raises(StopIteration):
                response.close()  # as gunicorn does: the transport is aborted
        else:
            assert seen == ["501 Not Implemented"]
            assert json.loads(b"".join(response)) == {
                "error": "wscore needs gunicorn 26.1 or newer for WebSockets"}
    finally:
        ours.close()
        theirs.close()
        server.stop()
