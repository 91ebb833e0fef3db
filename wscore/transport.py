"""The I/O adapter: the only module that imports gevent-websocket.

wscore reads and checks the upgrade request itself (a deadline for the whole
head, bounded sizes, a 4xx with a JSON body for every refusal, quiet logs:
see :class:`TransportServer`); gevent-websocket, on gevent's pywsgi, then
writes the 101 (RFC 6455 §4.2). After the 101, wscore reads and writes the
raw socket itself through the pure codec in :mod:`wscore.protocol.frames`.
That carries three fixes over stock gevent-websocket 0.10.1:

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

import base64
import binascii
import io
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import gevent
import gevent.lock
from gevent import pywsgi
from geventwebsocket.handler import WebSocketHandler

from wscore.errors import ConnectionClosed
from wscore.http_reader import (
    BodyStalled,
    BodyTooLarge,
    ConnectionReader,
    HeadAbandoned,
    HeadTimedOut,
    HeadTooLarge,
)
from wscore.protocol import frames
from wscore.protocol.codes import ErrorCode
from wscore.protocol.session import TokenBucket

__all__ = ["Gate", "HttpApp", "TransportServer", "UpgradeRefusal", "WsTransport", "is_upgrade",
           "switching_protocols", "upgrade_refusal"]

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
HttpApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WsTransport:
    """One upgraded WebSocket connection (server side).

    ``read_messages()`` yields text (``str``) and binary (``bytes``) messages
    and answers pings itself; it ends by raising :class:`ConnectionClosed`
    (peer closed, we closed, or the network broke) or
    :class:`PeerProtocolError` (after closing with its code).
    ``send_text`` may be called from any greenlet.

    RFC 6455 pings and pongs from the peer are bounded by a token bucket of
    ``control_rate`` per second (``control_burst`` saved): a ping over the
    rate is not answered (§5.5.3 lets an endpoint answer only the latest of
    several), and ``control_abuse_close_after`` refused in a row close the
    connection with 4010 (rate limit exceeded). Fragments of a fragmented
    message under ``frames.SMALL_FRAGMENT_BYTES`` spend tokens from the same
    bucket (they are still decoded; a sustained stream of them meets the
    same 4010). Without a rate, nothing is limited here.
    """

    def __init__(
        self, sock: socket.socket, rfile: Any, environ: Mapping[str, Any], *, max_message_bytes: int,
        control_rate: float | None = None, control_burst: float = 1.0,
        control_abuse_close_after: int = 0,
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
            self._leftover: bytes = rfile.read1(-1) or b""
        except OSError:
            self._leftover = b""
        finally:
            sock.settimeout(None)
        self._decoder = frames.FrameDecoder(role="server", max_message_bytes=max_message_bytes)
        self._control_bucket = (None if control_rate is None else
                                TokenBucket(rate=control_rate, burst=control_burst, now=time.monotonic()))
        self._control_close_after = control_abuse_close_after
        self._control_refused = 0  # pings/pongs refused in a row
        self._abuse_closed = False
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
                now = self.last_received = time.monotonic()
                # Frames the peer sent before a violation are still answered (RFC
                # 6455 §7.1.7 fails the connection at the bad frame, not earlier).
                events, error = decoder.feed_until_error(data)
                if decoder.small_fragments:
                    self._count_small_fragments(now)
                for event in events:
                    if isinstance(event, frames.TextMessage):
                        if not self._close_sent:
                            yield event.text
                    elif isinstance(event, frames.BinaryMessage):
                        if not self._close_sent:
                            yield event.data
                    elif isinstance(event, (frames.PingReceived, frames.PongReceived)):
                        if not self._close_sent and self._control_allowed(now) and isinstance(
                                event, frames.PingReceived):
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
                if self._abuse_closed:
                    # Stop reading: TCP backpressure stops the flood, and decoding it
                    # while the close handshake times out would cost the CPU we guard.
                    gevent.sleep(_CLOSE_HANDSHAKE_TIMEOUT)
                    raise ConnectionClosed(self.close_code, "closed for abuse", by_peer=False)
        finally:
            self.abort()

    _closed_by_us = False

    def _count_small_fragments(self, now: float) -> None:
        """Tiny fragments spend tokens like pings: a stream of them is closed with 4010.

        They cannot be refused one by one (that would corrupt the message), so
        over the rate they are still decoded; only the abuse close applies.
        """
        n, self._decoder.small_fragments = self._decoder.small_fragments, 0
        if self._control_bucket is None:
            return
        for _ in range(n):
            self._control_allowed(now)
            if self._abuse_closed:
                return

    def _control_allowed(self, now: float) -> bool:
        """Spend a token for a ping or pong; close with 4010 after too many refused in a row."""
        bucket = self._control_bucket
        if bucket is None or bucket.take(now):
            self._control_refused = 0
            return True
        self._control_refused += 1
        if self._control_close_after and self._control_refused >= self._control_close_after:
            code = ErrorCode.RATE_LIMIT_EXCEEDED
            log.info("closing a connection flooding pings/pongs (%d refused in a row)",
                     self._control_refused)
            self.close(code.close_code, code.wire_name)
            self._abuse_closed = True
        return False

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


#: Request headers an application can see after the handshake, by contract
#: (:class:`wscore.ConnectionInfo` and ``WsTransport.headers``), in the order they
#: are kept within :data:`KEPT_HEADER_BYTES`. Every other header is dropped once
#: the upgrade is done: a session must not hold an attacker's kilobytes for its TTL.
KEPT_HEADERS = (
    "Authorization", "Origin", "Host", "User-Agent", "X-Forwarded-For", "X-Forwarded-Proto",
    "X-Forwarded-Host", "X-Real-Ip", "Forwarded", "Sec-Websocket-Protocol", "Accept-Language",
    "Cookie",
)
#: Budget for the kept headers' names and values together; a header that would
#: overflow it is dropped whole (a truncated credential is worse than none).
KEPT_HEADER_BYTES = 16 * 1024
#: Largest request head section (header lines, not the request line) accepted: HTTP 431 above.
MAX_HEADER_BYTES = 64 * 1024
#: Largest request line (method, target, version): HTTP 414 above.
MAX_REQUEST_LINE = 8 * 1024
#: Most header fields in one request: HTTP 431 above.
MAX_HEADER_FIELDS = 100
#: Bytes asked of one recv while the request head arrives (bounds what is read past it).
#: After a refusal: how long, and how many bytes, we read and drop before closing.
_LINGER_SECONDS = 1.0
#: Seconds one write of an HTTP response may wait (a chunk a mounted app yields):
#: a client that reads nothing for that long is dropped.
_WRITE_TIMEOUT = 60.0
_LINGER_BYTES = 1 << 20

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_REQUEST_LINE = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")


def _headers(environ: Mapping[str, Any]) -> dict[str, str]:
    """The :data:`KEPT_HEADERS` of a request, within :data:`KEPT_HEADER_BYTES`."""
    out: dict[str, str] = {}
    budget = KEPT_HEADER_BYTES
    for name in KEPT_HEADERS:
        value = environ.get("HTTP_" + name.upper().replace("-", "_"))
        if value is None:
            continue
        value = str(value)
        cost = len(name) + len(value)
        if cost <= budget:
            out[name] = value
            budget -= cost
    return out


class _Refusal(Exception):
    """A request refused before the application saw it: the HTTP response to send."""

    def __init__(self, status: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _response(status: str, message: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete ``Connection: close`` HTTP response with a short JSON body."""
    body = json.dumps({"error": message}).encode()
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close",
             *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _send_nowait(sock: socket.socket, data: bytes) -> None:
    """Best effort, never waiting: for refusals written to a socket about to be closed."""
    raw: Any = getattr(sock, "_sock", sock)
    try:
        raw.send(data)
    except OSError:
        pass


#: What :func:`upgrade_refusal` answers: ``(status_line, message, extra_headers)``.
UpgradeRefusal = tuple[str, str, tuple[tuple[str, str], ...]]


def is_upgrade(environ: Mapping[str, Any]) -> bool:
    """The request asks for a WebSocket (``Upgrade: websocket``); it may still be refused."""
    upgrade = {t.strip().lower() for t in str(environ.get("HTTP_UPGRADE", "")).split(",")}
    return "websocket" in upgrade


def upgrade_refusal(environ: Mapping[str, Any]) -> UpgradeRefusal | None:
    """The RFC 6455 §4.2.1 checks of a WebSocket upgrade request, from its WSGI environ.

    ``None`` when the handshake is valid; otherwise the HTTP answer to send. Used
    by wscore's own listener and by :mod:`wscore.wsgi` (an upgrade that another
    WSGI server, e.g. gunicorn, parsed), so both accept and refuse alike.
    """
    version_header = (("Sec-WebSocket-Version", "13"),)
    if environ.get("REQUEST_METHOD") != "GET":
        return ("405 Method Not Allowed", "a WebSocket upgrade must be a GET", (("Allow", "GET"),))
    if environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        return ("400 Bad Request", "a WebSocket upgrade needs HTTP/1.1", ())
    if environ.get("HTTP_TRANSFER_ENCODING") or str(environ.get("CONTENT_LENGTH") or "0").strip() != "0":
        return ("413 Content Too Large", "request bodies are not accepted", ())
    connection = {t.strip().lower() for t in str(environ.get("HTTP_CONNECTION", "")).split(",")}
    if "upgrade" not in connection:
        return ("400 Bad Request", "a WebSocket upgrade needs 'Connection: Upgrade'", ())
    version = str(environ.get("HTTP_SEC_WEBSOCKET_VERSION", "")).strip()
    if not version:
        return ("426 Upgrade Required", "Sec-WebSocket-Version is missing", version_header)
    if version not in _Handler.SUPPORTED_VERSIONS:
        return ("426 Upgrade Required", "unsupported Sec-WebSocket-Version", version_header)
    key = str(environ.get("HTTP_SEC_WEBSOCKET_KEY", "")).strip()
    try:
        key_ok = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        key_ok = False
    if not key_ok:
        return ("400 Bad Request", "Sec-WebSocket-Key must be 16 bytes, base64-encoded", ())
    return None


def switching_protocols(environ: Mapping[str, Any]) -> bytes:
    """The complete 101 response to a request :func:`upgrade_refusal` accepted (RFC 6455 §4.2.2)."""
    accept = frames.accept_key(str(environ["HTTP_SEC_WEBSOCKET_KEY"]).strip())
    return ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode("latin-1")


class _Handler(WebSocketHandler):  # type: ignore[misc]
    """gevent-websocket's handler with wscore's own request reading and refusals.

    Reading and parsing the request head is done here, not by pywsgi, so that
    ``handshake_timeout`` is a deadline for the whole head however slowly it
    trickles in, its size is bounded (414 / 431), and every malformed or
    refused request gets a 4xx with a JSON body and one log line at DEBUG —
    never a traceback, never the request line or query (they carry tokens and
    session ids). Plain requests keep the connection alive (HTTP/1.1 unless
    ``Connection: close``) and may carry a body when an app is mounted
    (:class:`wscore.http_reader.ConnectionReader` bounds its time, ``_body_framing``
    its framing and size); an upgrade or a refusal ends the connection.
    """

    SUPPORTED_VERSIONS = ("13",)
    rfile: Any
    #: ``time.monotonic()`` by which the request head must have arrived (set by _Server).
    wscore_deadline = 0.0
    #: The connection is counted in ``_Server.pending`` (accepted, not upgraded).
    wscore_pending = False
    #: The connection is counted in ``_Server.upgraded``.
    wscore_upgraded = False
    #: The connection's bytes (heads and bodies are read through it), made on the first request.
    wscore_reader: ConnectionReader | None = None
    #: Requests read on this connection so far (keep-alive).
    wscore_requests = 0
    #: The current request's body is ``Transfer-Encoding: chunked``.
    wscore_chunked = False

    # -- reading the request -------------------------------------------------------------
    def handle_one_request(self) -> Any:
        """Read, check and answer one request; ``True`` when the connection carries another.

        pywsgi's ``handle()`` loops on it (keep-alive). The first head is due
        ``handshake_timeout`` after the accept, each later one as long after the
        previous response; an upgrade, a refusal or ``Connection: close`` ends
        the connection.
        """
        server = self.server
        reader = self.wscore_reader
        if reader is None:
            # pywsgi's buffered makefile is never read: every byte goes through the reader.
            self.rfile.close()
            reader = self.wscore_reader = ConnectionReader(self.socket, write_timeout=_WRITE_TIMEOUT)
        if self.wscore_requests and server.wscore_stopping:
            return None
        idle = self.wscore_requests > 0
        if idle:
            server.idle.add(self)  # an idle keep-alive connection: stop() closes it
        try:
            head = reader.read_head(deadline=self.wscore_deadline, max_line=MAX_REQUEST_LINE,
                                    max_header_bytes=MAX_HEADER_BYTES)
            if idle:
                server.idle.discard(self)
                idle = False
            self._parse_head(head)
            # This frame lives as long as the connection: keep nothing big in it.
            del head
        except HeadTooLarge as exc:
            self._refuse(_Refusal(exc.status, exc.message))
            return None
        except HeadTimedOut:
            self._refuse(_Refusal("408 Request Timeout", "the request did not arrive in time"))
            return None
        except _Refusal as refusal:
            self._refuse(refusal)
            return None
        except HeadAbandoned:
            return None
        finally:
            if idle:
                server.idle.discard(self)
        self.wscore_requests += 1
        upgrade = is_upgrade({"HTTP_UPGRADE": self.headers.get("Upgrade", "")})
        if upgrade:
            # What arrived after the head (frames a client sent before the 101) stays
            # readable for the WebSocket side; the request has no body (refused above).
            # The connection is the WebSocket's from here: hold nothing of HTTP's.
            self.rfile = io.BytesIO(reader.take_buffered())
            self.close_connection = True
            self.wscore_reader = None
            self.socket.settimeout(_WRITE_TIMEOUT)
            self.environ = self.get_environ()
            self.application = server.application
            del reader
            self.handle_one_response()
            return None
        self.rfile = reader
        self.socket.settimeout(_WRITE_TIMEOUT)
        self.environ = self.get_environ()
        if self.wscore_chunked and not self._read_chunked_body():
            return None
        reader.start_body(grace=server.wscore_handshake_timeout)
        self.application = server.application
        try:
            self.handle_one_response()
        finally:
            reader.end_body()
        if self.close_connection or reader.closed or self.socket is None or server.wscore_stopping:
            return None
        self.wscore_deadline = time.monotonic() + server.wscore_handshake_timeout
        return True

    def _read_chunked_body(self) -> bool:
        """Read a chunked body whole, at most ``max_http_body_bytes``, before the app runs.

        The app then sees a plain body with a ``CONTENT_LENGTH`` (so a body over
        the bound is refused 413 before any of the app's code runs, which a
        streamed chunked body could not be). False: refused (answered, closing).
        """
        limit = self.server.wscore_max_body
        reader = self.wscore_reader
        assert reader is not None
        reader.start_body(grace=self.server.wscore_handshake_timeout)
        # The framing (size lines, extensions, trailers) counts too, or a client could
        # feed trailer lines for ever: allow twice the body and 64 KiB of it on the wire.
        reader.limit_consumed(2 * limit + 65536)
        parts: list[bytes] = []
        size = 0
        try:
            body_input: Any = self.environ["wsgi.input"]
            while chunk := body_input.read(65536):
                size += len(chunk)
                if size > limit:
                    self._refuse(_Refusal("413 Content Too Large", "request body too large"))
                    return False
                parts.append(chunk)
        except BodyStalled:
            self._refuse(_Refusal("408 Request Timeout", "the request body did not arrive in time"))
            return False
        except BodyTooLarge:
            self._refuse(_Refusal("413 Content Too Large", "request body too large"))
            return False
        except (ValueError, OSError):  # pywsgi's _InvalidClientInput is an IOError
            self._refuse(_Refusal("400 Bad Request", "malformed chunked body"))
            return False
        finally:
            reader.end_body()
        body = b"".join(parts)
        del parts
        environ = self.environ
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ["CONTENT_LENGTH"] = str(size)
        self.content_length = size
        self.wsgi_input = environ["wsgi.input"] = pywsgi.Input(io.BytesIO(body), size)
        return True

    def _refuse(self, refusal: _Refusal) -> None:
        """Answer ``refusal`` and end the connection gracefully."""
        log.debug("refused a request from %s: %s %s", self._peer_host(), refusal.status,
                  refusal.message)
        self.status = refusal.status
        sock = self.socket
        try:
            sock.settimeout(_LINGER_SECONDS)
            sock.sendall(_response(refusal.status, refusal.message, refusal.headers))
            sock.shutdown(socket.SHUT_WR)
            # Lingering close: drop what the peer is still sending, briefly, so that
            # closing with unread input does not reset the connection (RST) before
            # the peer has read our answer.
            deadline = time.monotonic() + _LINGER_SECONDS
            drained = 0
            while drained < _LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                drained += len(chunk)
        except OSError:
            pass

    def _parse_head(self, head: bytes) -> None:
        """Set the request attributes pywsgi's get_environ reads; raise :class:`_Refusal` if malformed."""
        lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
        match = _REQUEST_LINE.fullmatch(lines[0])
        if match is None:
            raise _Refusal("400 Bad Request", "malformed request line")
        method, target, major, minor = match.groups()
        if (major, minor) not in (("1", "0"), ("1", "1")):
            raise _Refusal("400 Bad Request", "unsupported HTTP version (HTTP/1.1 expected)")
        if target[:8].lower().startswith(("http://", "https://")):
            # Absolute form (RFC 9112 §3.2.2: a server must accept it): keep path and query.
            parts = urlsplit(target)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if not (target.startswith("/") or (target == "*" and method == "OPTIONS")):
            raise _Refusal("400 Bad Request", "malformed request target")
        if len(lines) - 1 > MAX_HEADER_FIELDS:
            raise _Refusal("431 Request Header Fields Too Large", "too many request header fields")
        headers = pywsgi.OldMessage()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not _TOKEN.fullmatch(name):
                # Also refuses obsolete line folding (RFC 9112 §5.2) and a space before the colon.
                raise _Refusal("400 Bad Request", "malformed header line")
            headers[name] = value.strip(" \t")
        length, chunked = self._body_framing(headers)
        self.command = method
        self.path = target
        self.request_version = f"HTTP/{major}.{minor}"
        # Only what the log may show: never the query (SPEC §3, secrets).
        self.requestline = f"{method} {target.split('?', 1)[0]} {self.request_version}"
        self.headers = headers
        self.content_length = length
        self.wscore_chunked = chunked
        tokens = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
        # RFC 9112 §9.3: HTTP/1.1 persists unless "close"; HTTP/1.0 only with "keep-alive".
        persistent = "close" not in tokens if minor == "1" else "keep-alive" in tokens
        self.close_connection = not persistent

    def _body_framing(self, headers: Any) -> tuple[int, bool]:
        """(Content-Length, chunked) of a request, refused when unusable or not allowed.

        A body is allowed only on a plain request (never an upgrade) to a server
        that mounted an app (``wscore_max_body`` > 0), up to that many bytes.
        Both framings at once, several lengths, or a coding other than
        ``chunked`` are refused (request smuggling guard, RFC 9112 §6.3).
        """
        codings = headers.get_all("Transfer-Encoding") or []
        lengths = {v.strip() for v in headers.get_all("Content-Length") or []}
        chunked = False
        length = 0
        if codings:
            if lengths:
                raise _Refusal("400 Bad Request", "both Content-Length and Transfer-Encoding")
            if [c.strip().lower() for c in ",".join(codings).split(",")] != ["chunked"]:
                raise _Refusal("501 Not Implemented", "only Transfer-Encoding: chunked is supported")
            chunked = True
        elif lengths:
            value = lengths.pop()
            if lengths or not (value.isascii() and value.isdigit()) or len(value) > 18:
                raise _Refusal("400 Bad Request", "malformed Content-Length")
            length = int(value)
        if not chunked and length == 0:
            return 0, False
        upgrade = "websocket" in {t.strip().lower() for t in headers.get("Upgrade", "").split(",")}
        limit = self.server.wscore_max_body
        if upgrade or limit <= 0:
            raise _Refusal("413 Content Too Large", "request bodies are not accepted")
        if length > limit:
            raise _Refusal("413 Content Too Large", "request body too large")
        return length, chunked

    def start_response(self, status: Any, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if self.request_version == "HTTP/1.0" and not any(k.lower() == "content-length" for k, _ in headers):
            # HTTP/1.0 has no chunked framing: a body without a length ends with the
            # connection, so this one cannot carry another response.
            self.close_connection = True
        # A connection that ends after this response says so, so that a keep-alive
        # client does not take the close that follows for an error.
        if (self.close_connection or self.server.wscore_stopping) and not str(status).startswith("101") \
                and not any(k.lower() == "connection" for k, _ in headers):
            headers = [*headers, ("Connection", "close")]
        return super().start_response(status, headers, exc_info)

    # -- the upgrade -------------------------------------------------------------------------
    def run_application(self) -> Any:
        environ = self.environ
        if not is_upgrade(environ):
            return pywsgi.WSGIHandler.run_application(self)  # plain HTTP
        refusal = self._check_upgrade(environ)
        if refusal is None:
            gated = self.server.wscore_gate(environ)
            if gated is not None:
                refusal = _Refusal(*gated)
        if refusal is not None:
            log.debug("refused a WebSocket upgrade from %s: %s %s", self._peer_host(),
                      refusal.status, refusal.message)
            environ["wscore.refusal"] = (refusal.status, refusal.message)
            environ["wscore.refusal_headers"] = list(refusal.headers)
            self.close_connection = True
            return pywsgi.WSGIHandler.run_application(self)
        # Every check gevent-websocket makes now passes: it writes the 101.
        return super().run_application()

    def _check_upgrade(self, environ: Mapping[str, Any]) -> _Refusal | None:
        refusal = upgrade_refusal(environ)
        return None if refusal is None else _Refusal(*refusal)

    # -- logging: one line, never the query, never a traceback for the peer's faults -------------
    def _peer_host(self) -> str:
        addr = self.client_address
        return str(addr[0]) if isinstance(addr, tuple) and addr else "-"

    def log_request(self) -> None:
        path = str(self.environ.get("PATH_INFO", "")) if self.environ else ""
        log.debug("%s %s %s -> %s", self._peer_host(), self.command or "-", path, self.status)

    def format_request(self) -> str:
        return f"{self._peer_host()} {self.requestline or '-'} {self.status or '-'}"

    def log_error(self, msg: str, *args: Any) -> None:
        # pywsgi's messages quote the raw request: log only that something happened.
        log.debug("HTTP error on a request from %s", self._peer_host())

    def handle_error(self, t: Any, v: Any, tb: Any) -> None:
        if not isinstance(v, BodyStalled):
            super().handle_error(t, v, tb)
            return
        # The client's fault: no traceback, and 408 if nothing was answered yet.
        log.debug("request body from %s fell behind the minimum rate", self._peer_host())
        self.close_connection = True
        if not self.response_length and not self.headers_sent:
            body = json.dumps({"error": "the request body did not arrive in time"}).encode()
            try:
                self.start_response("408 Request Timeout", [
                    ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    ("Connection", "close")])
                self.write(body)
            except OSError:
                pass

    def _handle_client_error(self, ex: BaseException) -> Any:
        log.debug("invalid request from %s: %s", self._peer_host(), type(ex).__name__)
        return ("400", _response("400 Bad Request", "invalid request"))

    def _log_error(self, t: Any, v: Any, tb: Any) -> None:
        reader = self.wscore_reader
        if (reader is not None and reader.closed) or (issubclass(t, TimeoutError) and self.headers_sent):
            # The peer's doing (it left mid-body, or stopped reading our response for
            # the write timeout): one DEBUG line. The app's own errors keep their traceback.
            log.debug("request from %s ended by the client: %s", self._peer_host(), t.__name__)
            return
        # Our own bug (the WSGI app raised): a traceback, but not the environ, whose
        # QUERY_STRING carries tokens and session ids (the hub's handler would print it).
        if not issubclass(t, gevent.GreenletExit):
            path = str(self.environ.get("PATH_INFO", "")) if self.environ else ""
            log.error("HTTP request %s %s failed", self.command or "-", path, exc_info=(t, v, tb))


class _Server(pywsgi.WSGIServer):  # type: ignore[misc]
    handler_class = _Handler
    wscore_gate: Gate
    wscore_handshake_timeout: float
    wscore_max_connections: int
    #: Accepted connections whose request is being read or answered (not upgraded).
    pending = 0
    #: Connections upgraded to WebSockets and not yet ended.
    upgraded = 0
    #: Largest request body accepted (0: none, e.g. no app mounted).
    wscore_max_body = 0
    #: stop_accepting() was called: answer what is being read, then close.
    wscore_stopping = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Keep-alive connections waiting for their next request head.
        self.idle: set[_Handler] = set()

    def handle(self, sock: socket.socket, address: Any) -> None:
        # Sockets before the upgrade count against max_connections too: a flood of
        # connections that never finish their request must not exhaust file descriptors.
        if self.pending + self.upgraded >= self.wscore_max_connections:
            log.debug("refused a connection from %s: too many connections",
                      address[0] if isinstance(address, tuple) and address else "-")
            _send_nowait(sock, _response("503 Service Unavailable", "too many connections"))
            sock.close()
            return
        handler = self.handler_class(sock, address, self)
        # Slowloris guard: the whole request head must arrive by this deadline.
        handler.wscore_deadline = time.monotonic() + self.wscore_handshake_timeout
        handler.wscore_pending = True
        self.pending += 1
        try:
            handler.handle()
        except OSError as exc:
            # The peer reset the connection while we answered: its fault, not worth a traceback.
            log.debug("connection from %s ended: %s", handler._peer_host(), exc.strerror or exc)
        finally:
            _release(handler)


def _release(handler: _Handler) -> None:
    """Stop counting ``handler``'s connection as pending or upgraded (idempotent)."""
    server = handler.server
    if handler.wscore_pending:
        handler.wscore_pending = False
        server.pending -= 1
    if handler.wscore_upgraded:
        handler.wscore_upgraded = False
        server.upgraded -= 1


class TransportServer:
    """A gevent HTTP server that upgrades ``path`` to WebSockets.

    ``on_websocket(transport)`` runs in the connection's own greenlet and owns
    it until it returns. Other requests go to ``http_app`` (plain WSGI);
    upgrade requests refused by ``gate`` reach ``http_app`` too, with
    ``environ['wscore.refusal'] = (status, message)`` set (and
    ``environ['wscore.refusal_headers']``, a list of extra response headers).

    Hostile-input guards (SPEC §4, docs/spec.md "Handshake limits"): the
    request head must be complete ``handshake_timeout`` seconds after the
    accept, or after the previous response on a keep-alive connection (a
    deadline: 408), is at most :data:`MAX_REQUEST_LINE` (414) plus
    :data:`MAX_HEADER_BYTES` (431); an upgrade has no body (413), a plain
    request at most ``max_body_bytes`` (413; 0 refuses every body, the default:
    set it when ``http_app`` serves an app that reads bodies) arriving at
    :data:`wscore.http_reader.MIN_BODY_RATE` (408); a connection accepted
    while ``max_connections`` sockets (upgraded, in a request or idle between
    keep-alive requests) are open gets 503 at once.
    ``control_rate``/``control_burst``/``control_abuse_close_after`` bound RFC
    6455 pings and pongs per connection (see :class:`WsTransport`).

    ``listener``, when given, is an already bound and listening socket served
    instead of binding ``(host, port)`` (several processes accepting on one
    port, see :mod:`wscore.workers`); :meth:`stop` closes it.

    :meth:`stop_accepting` closes the listener and the keep-alive connections
    waiting for a request; a request being answered finishes, then its
    connection closes.
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
        max_connections: int = 1 << 30,
        control_rate: float | None = None,
        control_burst: float = 1.0,
        control_abuse_close_after: int = 0,
        listener: socket.socket | None = None,
        max_body_bytes: int = 0,
    ) -> None:
        self._path = path
        self._http_app = http_app
        self._on_websocket = on_websocket
        self._max_message_bytes = max_message_bytes
        self._control_rate = control_rate
        self._control_burst = control_burst
        self._control_abuse_close_after = control_abuse_close_after
        # _Handler logs the peer's faults itself (one DEBUG line, no request text);
        # whatever pywsgi still writes to error_log is kept at DEBUG for the same reason.
        # A pre-bound listening socket (wscore.workers: N processes share one port)
        # replaces binding (host, port) here.
        self._server = _Server(listener if listener is not None else (host, port), self._wsgi, log=None,
                               error_log=pywsgi.LoggingLogAdapter(log, logging.DEBUG))
        self._server.wscore_gate = gate
        self._server.wscore_handshake_timeout = handshake_timeout
        self._server.wscore_max_connections = max_connections
        self._server.wscore_max_body = max_body_bytes

    @property
    def address(self) -> tuple[str, int]:
        addr = self._server.address
        return (str(addr[0]), int(addr[1]))

    @property
    def pending_connections(self) -> int:
        """Accepted connections not (or not yet) upgraded: their request is read or answered."""
        return int(self._server.pending)

    @property
    def max_body_bytes(self) -> int:
        """The largest plain request body accepted (0: none); may be changed while serving."""
        return int(self._server.wscore_max_body)

    @max_body_bytes.setter
    def max_body_bytes(self, value: int) -> None:
        self._server.wscore_max_body = value

    def start(self) -> None:
        self._server.start()

    def stop_accepting(self) -> None:
        """Close the listener and every idle keep-alive connection (see the class docstring)."""
        server = self._server
        server.wscore_stopping = True
        server.close()
        for handler in list(server.idle):
            sock = handler.socket
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)  # its pending read ends: the handler returns
                except OSError:
                    pass

    def stop(self, timeout: float | None = None) -> None:
        self._server.stop(timeout=timeout)

    def _wsgi(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
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
        transport = WsTransport(
            sock, handler.rfile, environ, max_message_bytes=self._max_message_bytes,
            control_rate=self._control_rate, control_burst=self._control_burst,
            control_abuse_close_after=self._control_abuse_close_after)
        handler.rfile.close()  # the transport took what was read past the request head
        # The request's other headers are not needed any more (the transport kept its
        # bounded set): do not hold them for the connection's lifetime.
        for key in [k for k in environ if k.startswith("HTTP_")]:
            del environ[key]
        handler.headers = pywsgi.OldMessage()
        server = self._server
        _release(handler)
        handler.wscore_upgraded = True
        server.upgraded += 1
        try:
            self._on_websocket(transport)
        finally:
            transport.abort()
            _release(handler)
        return []
