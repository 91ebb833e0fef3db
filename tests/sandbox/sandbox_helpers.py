"""Test helpers for the sandbox tests (servers and a hand-rolled WS client)."""

import base64
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

import gevent
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler


class EchoWsServer:
    """A WebSocket echo server (gevent-websocket) that records what it got."""

    def __init__(self) -> None:
        self.received: list[str | bytes] = []
        self.server = WSGIServer(("127.0.0.1", 0), self._app, handler_class=WebSocketHandler,
                                 log=None)
        self.server.start()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.server.server_port)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        ws = environ.get("wsgi.websocket")
        if ws is None:
            start_response("200 OK", [("Content-Type", "text/plain"),
                                      ("Content-Length", "2")])
            return [b"ok"]
        try:
            while True:
                msg = ws.receive()
                if msg is None:
                    break
                self.received.append(msg)
                ws.send(msg, binary=isinstance(msg, (bytes, bytearray)))
        except Exception:
            pass
        return []

    def stop(self) -> None:
        self.server.stop(timeout=1)


class EchoTcpServer:
    """Raw TCP echo; closes its side once the client's side is closed."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.recv_sizes: list[int] = []
        self._loop = gevent.spawn(self._accept)
        self._handlers: list[gevent.Greenlet] = []

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            self._handlers.append(gevent.spawn(self._serve, conn))

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                self.recv_sizes.append(len(data))
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        gevent.killall([self._loop, *self._handlers])
        self.sock.close()


def ws_frame(payload: bytes, *, opcode: int = 0x1, masked: bool = True) -> bytes:
    """Encode one RFC 6455 frame (client frames are masked)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def raw_ws_connect(port: int, path: str = "/ws", timeout: float = 5.0) -> socket.socket:
    """Open a WebSocket by hand; returns the socket right after the 101 head."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during handshake")
        head += chunk
    assert head.split(b" ", 2)[1] == b"101", head
    return sock


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise EOFError(f"EOF after {len(out)} of {n} bytes")
        out += chunk
    return out


def recv_until_closed(sock: socket.socket) -> tuple[bytes, BaseException | None]:
    """Read until EOF or an error; returns (bytes, error or None for clean EOF)."""
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except OSError as exc:
            return out, exc
        if not chunk:
            return out, None
        out += chunk
