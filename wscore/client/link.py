"""Socket I/O of one client connection: connect + HTTP upgrade, the writer, bounded reads.

A :class:`Link` is one TCP connection. The runner (:mod:`wscore.client.client`)
owns it and reads it; its writer greenlet (:func:`write_loop`) writes what the
runner and the user calls queued on it. Nothing here decides anything about
the protocol: that is :class:`wscore.protocol.ClientSession`'s job.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any

import gevent
import gevent.event
import gevent.socket
import gevent.ssl

from wscore.client.config import WsClientConfig
from wscore.errors import ConnectionClosed
from wscore.protocol import frames, handshake
from wscore.protocol.client_session import SessionInfo

__all__ = ["Link", "LinkDead", "UpgradeRefused", "open_link", "recv_by", "recv_until", "write_loop"]

log = logging.getLogger("wscore.client")

READ_CHUNK = 65536


class LinkDead(Exception):
    """The runner gave up on a link (a deadline passed); the message says which."""


class UpgradeRefused(ConnectionClosed):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        super().__init__(None, f"upgrade refused: HTTP {status} {reason}", by_peer=True)


class Link:
    """One TCP connection's state; owned by the runner, shared with its writer."""

    def __init__(self, sock: Any, *, max_message_bytes: int, open_deadline: float) -> None:
        self.sock = sock
        self.decoder = frames.FrameDecoder(role="client", max_message_bytes=max_message_bytes)
        self.open_deadline = open_deadline
        self.ready = False  # sys.connected seen: the session's frames may be written
        self.info: SessionInfo | None = None
        self.texts: list[tuple[int | None, str]] = []  # the session's frames, (s, text), in order
        self.control: list[bytes] = []  # RFC 6455 control frames (pongs), written first
        self.close_frame: bytes | None = None  # written last; the writer then stops
        self.close_sent = False
        self.wake = gevent.event.Event()
        self.writer: gevent.Greenlet | None = None
        self.last_rx = 0.0
        self.probe_sent = False
        self.probe_after = 0.0
        self.dead_after = 0.0
        self.early_bytes = b""
        self.write_error: OSError | None = None
        self.frames_sent = 0  # numbered frames written
        self.expires_at: float | None = None  # the token's expiry (server's epoch seconds)
        self.refresh_at = 0.0  # wall clock; when the refresher acts next
        self.refresh_wake = gevent.event.Event()  # a new refresh_at (or expiry) is set
        self.refresher: gevent.Greenlet | None = None

    def queue_text(self, seq: int | None, text: str) -> None:
        self.texts.append((seq, text))
        self.wake.set()

    def queue_close(self, code: int | None, reason: str = "") -> None:
        """Queue the close frame (written after everything queued before it)."""
        if self.close_frame is None:
            self.close_frame = frames.encode_close(code, reason, mask_key=os.urandom(4))
        self.wake.set()
        if self.writer is None:
            self.start_writer()

    def start_writer(self) -> None:
        if self.writer is None:
            self.writer = gevent.spawn(write_loop, self)
        self.wake.set()

    def shutdown(self) -> None:
        """Make a blocked recv return at once (used by the writer on a write error)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def reset(self) -> None:
        """Cut the connection abruptly, as a network fault would: TCP RST, no close frame."""
        try:
            # SO_LINGER 0: close() sends RST instead of FIN (RFC 793 abort); the greenlets
            # blocked on this socket then fail, which the runner treats as link loss.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
        except OSError as exc:
            log.debug("drop_connection: %s", exc)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def write_loop(link: Link) -> None:
    """Write what is queued on ``link`` until its close frame is written or a write fails.

    Control frames first, then the session's frames in order, then the close frame.
    Never waits on anything but the socket; a failed write shuts the socket so the
    runner's read fails too and reports the cause (``link.write_error``).
    """
    sock = link.sock
    try:
        while True:
            link.wake.wait()
            link.wake.clear()
            chunks = link.control
            link.control = []
            if link.ready and link.texts:
                batch = link.texts
                link.texts = []
                # One urandom call per batch: masks must be unpredictable (RFC 6455 §10.3).
                masks = os.urandom(4 * len(batch))
                for i, (seq, text) in enumerate(batch):
                    chunks.append(frames.encode_frame(
                        frames.OP_TEXT, text.encode("utf-8"), mask_key=masks[4 * i : 4 * i + 4]))
                    if seq is not None:
                        link.frames_sent += 1
            close_frame = link.close_frame
            if close_frame is not None:
                chunks.append(close_frame)
            if chunks:
                # No timeout here: the runner's dead-link deadline ends a stuck write.
                sock.sendall(b"".join(chunks))
            if close_frame is not None:
                link.close_sent = True
                return
    except OSError as exc:
        log.debug("write failed: %s", exc)
        link.write_error = exc
        link.shutdown()


def open_link(
    url: handshake.WsUrl,
    query: dict[str, str],
    headers: Sequence[tuple[str, str]],
    config: WsClientConfig,
    deadline: float,
) -> Link:
    """TCP connect and HTTP upgrade (RFC 6455 §4.1), all before ``deadline``.

    ``sys.connected`` is read afterwards by the runner (it may have come with the
    101: ``link.early_bytes``). Raises :class:`UpgradeRefused`, :class:`LinkDead`,
    :class:`ConnectionClosed` (EOF during the upgrade), ``OSError`` and
    :class:`~wscore.errors.PeerProtocolError` (a bad 101).
    """
    if query:
        url = url.with_resource(handshake.replace_query(url.resource, query))
    sock = gevent.socket.create_connection(
        (url.host, url.port), timeout=max(deadline - time.monotonic(), 0.001))
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if url.secure:
            ctx = config.ssl_context or gevent.ssl.create_default_context()
            sock = ctx.wrap_socket(sock, server_hostname=url.host)
        key = handshake.make_key(os.urandom(16))
        sock.sendall(handshake.build_upgrade_request(url, key=key, headers=list(headers)))
        buf = b""
        while True:
            data = recv_by(sock, deadline, "HTTP upgrade")
            if not data:
                raise ConnectionClosed(None, "connection closed during the HTTP upgrade")
            buf += data
            response = handshake.parse_upgrade_response(buf)
            if response is not None:
                break
        if response.status != 101:
            raise UpgradeRefused(response.status, response.reason)
        handshake.check_upgrade_response(response, key)
        # From here on the runner bounds reads with gevent.Timeout: the socket's own
        # timeout would also apply to the writer's sendall on the same socket.
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    link = Link(sock, max_message_bytes=config.max_message_bytes, open_deadline=deadline)
    link.last_rx = time.monotonic()
    link.early_bytes = response.rest  # frames that arrived with the 101
    return link


def recv_by(sock: Any, deadline: float, what: str) -> bytes:
    """``recv`` that gives up at ``deadline`` (re-checked: gevent timers may fire early)."""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LinkDead(f"{what} not finished within open_timeout")
        sock.settimeout(remaining)
        try:
            data: bytes = sock.recv(READ_CHUNK)
            return data
        except TimeoutError:
            continue


def recv_until(link: Link, wake_at: float) -> bytes | None:
    """Read ``link`` until data arrives (returned; b"" at EOF) or ``wake_at`` (None)."""
    # A gevent timer may fire early; the caller re-checks the clock and calls again.
    timer = gevent.Timeout(max(wake_at - time.monotonic(), 0.001))
    timer.start()
    try:
        data: bytes = link.sock.recv(READ_CHUNK)
        return data
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        return None
    finally:
        timer.close()
