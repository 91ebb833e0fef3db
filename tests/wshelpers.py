"""Shared test helpers: a protocol-unaware WebSocket peer and condition waits.

Importable from any test as ``wshelpers`` (``tests/`` is on the path via the root conftest).
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import gevent
import websocket

__all__ = ["RawClient", "close_code", "wait_for"]


class RawClient:
    """A protocol-unaware peer built on websocket-client (not wscore's own client)."""

    def __init__(self, url: str, *, timeout: float = 5.0, **kwargs: Any) -> None:
        self.ws = websocket.create_connection(url, timeout=timeout, **kwargs)
        self.url = url

    def send(self, frame: dict[str, Any]) -> None:
        self.ws.send(json.dumps({"v": "1.0", **frame}))

    def send_raw(self, text: str) -> None:
        self.ws.send(text)

    def recv(self) -> dict[str, Any]:
        while True:
            opcode, data = self.ws.recv_data(control_frame=False)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                frame: dict[str, Any] = json.loads(data)
                return frame
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                raise ConnectionAbortedError(f"closed: {close_code(data)}")

    def recv_until(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """Frames are read in order; those before the match are returned in ``skipped``."""
        self.skipped: list[dict[str, Any]] = []
        while True:
            frame = self.recv()
            if pred(frame):
                return frame
            self.skipped.append(frame)

    def request(self, event: str, payload: Any = None, c: str = "r", **extra: Any) -> dict[str, Any]:
        self.send({"e": event, "p": payload, "c": c, **extra})
        return self.recv_until(lambda f: f.get("c") == c and f["e"] in ("ack", "sys.error"))

    def recv_close(self) -> int | None:
        """Read until the server's close frame; return its status code."""
        while True:
            opcode, data = self.ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return close_code(data)

    def cut(self) -> None:
        """Drop the TCP connection abruptly: RST, no close frame."""
        sock = self.ws.sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:
            pass


def close_code(data: bytes) -> int | None:
    return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        gevent.sleep(0.01)
