"""wscore/wsgi.py and the embedded mode: the shared upgrade checks, and a host that keeps its socket.

gunicorn's gevent worker itself is exercised for real in tests/examples/test_wsgi_gunicorn.py;
here the WSGI entry runs under gevent's own pywsgi server, a real host that parses the
request itself and does not hand its socket over.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from gevent import pywsgi

from wscore import UsageError, WsServer, WsServerConfig
from wscore.transport import upgrade_refusal

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
