"""The I/O adapter: the only module that imports gevent-websocket.

gevent-websocket does the HTTP upgrade (RFC 6455 §4.2) on gevent's pywsgi;
after the 101, wscore reads and writes the raw socket itself through the pure
codec in :mod:`wscore.protocol.frames`. That carries three fixes over stock
gevent-websocket 0.10.1:

* unmasking and UTF-8 validation run at C speed (stock does both byte by
  byte in Python, which halves throughput);
* ``max_message_bytes`` is enforced from the frame header, before a payload is
  buffered (stock reads any length a peer announces);
* close frames carry their status code (stock ``close(code)`` sends none).

Swapping gevent-websocket for another upgrade implementation touches this
module only. Rules it keeps: one reader (the pywsgi handler's greenlet) per
connection; writes from any greenlet are serialised by a lock, so frames never
interleave on the wire; reads are bounded (64 KiB per recv, at most one
message of ``max_message_bytes`` buffered).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs

import gevent
import gevent.lock
from gevent import pywsgi
from geventwebsocket.handler import WebSocketHandler

from wscore.errors import ConnectionClosed
from wscore.protocol import frames

__all__ = ["Gate", "HttpApp", "TransportServer", "WsTransport"]

log = logging.getLogger("wscore.transport")

#: Bytes asked of one recv. gevent waits for readability *before* calling recv,
#: so an idle connection holds no read buffer at all (reading through pywsgi's
#: buffered rfile instead kept an 8 KiB buffer per idle connection).
_READ_CHUNK = 65536
#: Seconds we wait for the peer's close frame after sending ours (RFC 6455 §7.1.1).
_CLOSE_HANDSHAKE_TIMEOUT = 2.0

#: Decides, before the upgrade, whether a WebSocket request may proceed:
#: ``None`` lets it through, ``(status_line, message)`` refuses it with that HTTP status.
Gate = Callable[[Mapping[str, Any]], "tuple[str, str] | None"]
HttpApp = Callable[[dict[str, Any], Callable[..., Any]], list[bytes]]


class WsTransport:
    """One upgraded WebSocket connection (server side).

    ``read_messages()`` yields text (``str``) and binary (``bytes``) messages
    and answers pings itself; it ends by raising :class:`ConnectionClosed`
    (peer closed, we closed, or the network broke) or
    :class:`PeerProtocolError` (after closing with its code).
    ``send_text`` may be called from any greenlet.
    """

    def __init__(
        self, sock: socket.socket, rfile: Any, environ: Mapping[str, Any], *, max_message_bytes: int
    ) -> None:
        self._sock = sock
        #: gevent's socket wraps a non-blocking OS socket; writing to it directly is
        #: how write_nowait can run in the hub.
        self._raw_sock: Any = getattr(sock, "_sock", sock)
        # Bytes pywsgi's buffered reader already took off the socket after the
        # upgrade request (a client that did not wait for the 101): read them
        # first, without waiting, then read the socket directly.
        sock.settimeout(0.0)
        try:
            self._leftover: bytes = rfile.read1(_READ_CHUNK) or b""
        except OSError:
            self._leftover = b""
        finally:
            sock.settimeout(None)
        self._decoder = frames.FrameDecoder(role="server", max_message_bytes=max_message_bytes)
        self._write_lock = gevent.lock.Semaphore()
        #: Bytes of a frame the socket took only in part on a non-waiting write;
        #: they must go out before anything else (see write_nowait).
        self._tail = b""
        self._close_sent = False
        self._closed = False
        self.close_code: int | None = None
        self.remote_address: tuple[str, int] = _peer(environ)
        self.headers: dict[str, str] = _headers(environ)
        self.query: dict[str, str] = {
            k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()
        }
        self.path: str = environ.get("PATH_INFO", "/")
        #: ``time.monotonic()`` of the last bytes received (liveness).
        self.last_received = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._closed or self._close_sent

    # -- reading (the connection's own greenlet only) ----------------------------
    def read_messages(self) -> Iterator[str | bytes]:
        decoder = self._decoder
        try:
            while True:
                try:
                    data = self._leftover or self._sock.recv(_READ_CHUNK)
                    self._leftover = b""
                except OSError as exc:
                    raise ConnectionClosed(None, f"network error: {exc}", by_peer=None) from None
                if not data:
                    raise ConnectionClosed(self.close_code, "connection lost", by_peer=None)
                self.last_received = time.monotonic()
                # Frames the peer sent before a violation are still answered (RFC
                # 6455 §7.1.7 fails the connection at the bad frame, not earlier).
                events, error = decoder.feed_until_error(data)
                for event in events:
                    if isinstance(event, frames.TextMessage):
                        if not self._close_sent:
                            yield event.text
                    elif isinstance(event, frames.BinaryMessage):
                        if not self._close_sent:
                            yield event.data
                    elif isinstance(event, frames.PingReceived):
                        if not self._close_sent:
                            self._write(frames.encode_frame(frames.OP_PONG, event.payload))
                    elif isinstance(event, frames.CloseReceived):
                        if not self._close_sent:
                            # RFC 6455 §5.5.1: echo the status code back.
                            self._send_close(event.code if event.code is not None else None, "")
                        self.close_code = self.close_code or event.code
                        raise ConnectionClosed(event.code, event.reason, by_peer=not self._closed_by_us)
                if error is not None:
                    self.close(error.close_code, error.reason)
                    raise error
        finally:
            self.abort()

    _closed_by_us = False

    # -- writing (any greenlet) ----------------------------------------------------
    def send_text(self, text: str) -> None:
        """Write one text message; raises :class:`ConnectionClosed` once the connection is over."""
        if self._close_sent or self._closed:
            raise ConnectionClosed(self.close_code, "already closed", by_peer=None)
        self._write(frames.encode_frame(frames.OP_TEXT, text.encode("utf-8")))

    def send_binary(self, data: bytes) -> None:
        """Write one binary message; raises :class:`ConnectionClosed` once the connection is over.

        The wscore protocol itself is JSON text (SPEC §3); this exists for raw
        WebSocket apps served by :class:`TransportServer` (e.g. the Autobahn echo).
        """
        if self._close_sent or self._closed:
            raise ConnectionClosed(self.close_code, "already closed", by_peer=None)
        self._write(frames.encode_frame(frames.OP_BINARY, bytes(data)))

    @staticmethod
    def encode_texts(texts: list[str]) -> bytes:
        """The wire bytes of several text messages, one frame each (RFC 6455 §5.6)."""
        enc, op = frames.encode_frame, frames.OP_TEXT
        return b"".join([enc(op, t.encode("utf-8")) for t in texts])

    @staticmethod
    def encode_text(text: str) -> bytes:
        """The wire bytes of one text message."""
        return frames.encode_frame(frames.OP_TEXT, text.encode("utf-8"))

    PING_FRAME = frames.encode_frame(frames.OP_PING, b"")

    @property
    def busy(self) -> bool:
        """A write is in progress or a partly written frame waits: writes must queue."""
        return bool(self._tail) or self._write_lock.locked()

    def write_nowait(self, data: bytes) -> bool:
        """Write ``data`` *without ever waiting* (safe from the gevent hub).

        True: the bytes are the socket's — wholly sent, or the unsent tail kept
        (:attr:`has_tail`; someone must then call :meth:`flush_tail`). False:
        nothing was written because the connection is over or :attr:`busy`.
        """
        if self._close_sent or self._closed or self.busy:
            return False
        try:
            # The OS socket under gevent's wrapper is non-blocking: this never waits.
            sent = self._raw_sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.abort()
            return False
        if sent < len(data):
            self._tail = data[sent:]
        return True

    def write(self, data: bytes) -> None:
        """Write ``data``, waiting for the socket as long as needed (not from the hub)."""
        if self._close_sent or self._closed:
            raise ConnectionClosed(self.close_code, "already closed", by_peer=None)
        self._write(data)

    @property
    def has_tail(self) -> bool:
        return bool(self._tail)

    def flush_tail(self) -> None:
        """Finish writing what :meth:`write_nowait` left over (may wait)."""
        if self._tail:
            tail, self._tail = self._tail, b""
            self._write(tail)

    def close(self, code: int, reason: str = "") -> None:
        """Start the closing handshake with ``code`` on the wire (idempotent).

        The reader keeps running until the peer answers (or
        ``_CLOSE_HANDSHAKE_TIMEOUT`` passes), then the socket is closed.
        """
        if self._close_sent or self._closed:
            return
        self._closed_by_us = True
        self.close_code = code
        self._send_close(code, reason)
        gevent.spawn_later(_CLOSE_HANDSHAKE_TIMEOUT, self.abort)

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake."""
        if self._closed:
            return
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _send_close(self, code: int | None, reason: str) -> None:
        self._close_sent = True
        try:
            self._write(frames.encode_close(code, reason))
        except ConnectionClosed:
            self.abort()

    def _write(self, data: bytes) -> None:
        try:
            with self._write_lock:
                self._sock.sendall(data)
        except OSError as exc:
            self.abort()
            raise ConnectionClosed(None, f"network error: {exc}", by_peer=None) from None


def _peer(environ: Mapping[str, Any]) -> tuple[str, int]:
    try:
        return (str(environ.get("REMOTE_ADDR", "")), int(environ.get("REMOTE_PORT", 0)))
    except (TypeError, ValueError):
        return (str(environ.get("REMOTE_ADDR", "")), 0)


def _headers(environ: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            out[key[5:].replace("_", "-").title()] = str(value)
    return out


class _Handler(WebSocketHandler):  # type: ignore[misc]
    """gevent-websocket's handler with wscore's gate run before the upgrade."""

    def run_application(self) -> Any:
        environ = self.environ
        if environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            refusal = self.server.wscore_gate(environ)
            if refusal is not None:
                environ["wscore.refusal"] = refusal
                return pywsgi.WSGIHandler.run_application(self)
        return super().run_application()

    def log_request(self) -> None:
        # Never log the query: it carries tokens and session ids (secrets, SPEC §3).
        path = str(self.environ.get("PATH_INFO", "")) if self.environ else ""
        log.debug("%s %s %s -> %s", self.client_address[0] if self.client_address else "-",
                  self.command, path, self.status)


class _Server(pywsgi.WSGIServer):  # type: ignore[misc]
    handler_class = _Handler
    wscore_gate: Gate
    wscore_handshake_timeout: float

    def handle(self, sock: socket.socket, address: Any) -> None:
        # Slowloris guard: the HTTP request must arrive within the timeout;
        # the WebSocket side clears it after the upgrade.
        sock.settimeout(self.wscore_handshake_timeout)
        super().handle(sock, address)


class TransportServer:
    """A gevent HTTP server that upgrades ``path`` to WebSockets.

    ``on_websocket(transport)`` runs in the connection's own greenlet and owns
    it until it returns. Other requests go to ``http_app`` (plain WSGI);
    upgrade requests refused by ``gate`` reach ``http_app`` too, with
    ``environ['wscore.refusal'] = (status, message)`` set.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        path: str,
        http_app: HttpApp,
        on_websocket: Callable[[WsTransport], None],
        gate: Gate,
        handshake_timeout: float,
        max_message_bytes: int,
    ) -> None:
        self._path = path
        self._http_app = http_app
        self._on_websocket = on_websocket
        self._max_message_bytes = max_message_bytes
        # pywsgi reports malformed or timed-out requests on error_log: the peer's
        # fault, so WARNING rather than ERROR.
        self._server = _Server((host, port), self._wsgi, log=None,
                               error_log=pywsgi.LoggingLogAdapter(log, logging.WARNING))
        self._server.wscore_gate = gate
        self._server.wscore_handshake_timeout = handshake_timeout

    @property
    def address(self) -> tuple[str, int]:
        addr = self._server.address
        return (str(addr[0]), int(addr[1]))

    def start(self) -> None:
        self._server.start()

    def stop(self, timeout: float | None = None) -> None:
        self._server.stop(timeout=timeout)

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        ws = environ.get("wsgi.websocket")
        if ws is None or environ.get("PATH_INFO") != self._path:
            if ws is not None:
                # Upgraded on a path we do not serve: refuse at the WebSocket level.
                ws.closed = True
                ws.handler.socket.sendall(frames.encode_close(1008, "unknown path"))
                return []
            return self._http_app(environ, start_response)
        handler = ws.handler
        sock: socket.socket = handler.socket
        sock.settimeout(None)
        try:
            # Real-time traffic is many small frames: never let Nagle hold one back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        # gevent-websocket must not touch the socket again: we own the framing.
        ws.closed = True
        transport = WsTransport(sock, handler.rfile, environ, max_message_bytes=self._max_message_bytes)
        try:
            self._on_websocket(transport)
        finally:
            transport.abort()
        return []
