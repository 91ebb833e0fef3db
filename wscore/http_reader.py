"""The bytes of one plain-HTTP connection, read on demand under wscore's time limits.

:class:`ConnectionReader` owns what a connection has received but nobody has
consumed yet. The listener's handler (:mod:`wscore.transport`) reads each
request head from it with :meth:`~ConnectionReader.read_head` and hands it to
gevent's ``pywsgi.Input`` as the *rfile* a request body is read from
(:meth:`~ConnectionReader.read`, :meth:`~ConnectionReader.readline`): what a
body read takes past its end (the next request of a keep-alive connection,
frames sent before a 101) stays buffered for the next reader.

Time limits (slowloris guards; docs/spec.md "HTTP on the same port"):

* a request head must be complete by a *deadline* (the listener passes the
  accept time, or the end of the previous response, plus ``handshake_timeout``),
  however slowly it trickles in;
* a body must keep up an average of at least :data:`MIN_BODY_RATE` bytes per
  second after ``grace`` seconds, counted in the time reads spend *waiting for
  the peer* (what the app does between reads, and data already waiting on the
  socket, cost the peer nothing): reads may have waited ``grace + n /
  MIN_BODY_RATE`` seconds in all by the n-th byte. A client that falls behind
  gets :class:`BodyStalled` (a ``TimeoutError``); one dripping a byte every few
  seconds is cut after about ``grace`` seconds, while a 10 MiB upload needs
  only 64 KiB/s to finish;
* :meth:`ConnectionReader.limit_consumed` caps the bytes reads may take (a
  chunked body's framing and trailers included): past it,
  :class:`BodyTooLarge`.

Every wait re-reads the clock after it (gevent timers can fire early). One
recv asks for at most 64 KiB; nothing is buffered that no one asked for.
"""

from __future__ import annotations

import re
import socket
import time

__all__ = ["MIN_BODY_RATE", "BodyStalled", "BodyTooLarge", "ConnectionReader", "HeadAbandoned",
           "HeadTimedOut", "HeadTooLarge"]

#: Bytes per second a request body must average (after its grace) to keep its connection.
MIN_BODY_RATE = 64 * 1024
_RECV = 65536
_DEFAULT_GRACE = 10.0
_HEAD_END = re.compile(rb"\r?\n\r?\n")


class HeadAbandoned(Exception):
    """The peer left, or sent nothing, before its request head was complete: close silently."""


class HeadTimedOut(Exception):
    """Part of a request head arrived, but not all of it by the deadline (408)."""


class HeadTooLarge(Exception):
    """The request line or the header section is over its bound (414 / 431: ``status``)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class BodyStalled(TimeoutError):
    """A request body fell behind :data:`MIN_BODY_RATE` (after its grace)."""


class BodyTooLarge(ValueError):
    """Reads took more bytes than :meth:`ConnectionReader.limit_consumed` allows."""


class ConnectionReader:
    """Buffered reads from one connection's socket (see the module docstring).

    ``closed`` is true once the peer closed its side or a read failed: the
    connection carries no further request.
    """

    __slots__ = ("_body_blocked", "_body_got", "_body_grace", "_buf", "_consume_left", "_sock", "closed",
                 "write_timeout")

    def __init__(self, sock: socket.socket, *, write_timeout: float | None = None) -> None:
        self._sock = sock
        #: The socket's timeout between reads (what a response's writes wait at most):
        #: a read sets its own from its deadline and puts this one back.
        self.write_timeout = write_timeout
        self._buf = bytearray()
        self.closed = False
        #: The body clock: its grace, the seconds reads have waited and the bytes they got.
        self._body_grace = _DEFAULT_GRACE
        self._body_blocked = 0.0
        self._body_got = 0
        #: Bytes reads may still take (None: no cap).
        self._consume_left: int | None = None

    # -- request heads -------------------------------------------------------------------------------
    def read_head(self, *, deadline: float, max_line: int, max_header_bytes: int) -> bytes:
        """The next request head (up to, without, its blank line), consumed from the buffer.

        Raises :class:`HeadTooLarge` as soon as the request line exceeds
        ``max_line`` or the header section ``max_header_bytes``,
        :class:`HeadTimedOut` if a partial head is not complete at ``deadline``
        (``time.monotonic()``), :class:`HeadAbandoned` if nothing (or only blank
        lines) arrived by then or the peer closed or failed first.
        """
        buf = self._buf
        scanned = 0
        line_end = -1
        while True:
            # RFC 9112 §2.2: ignore blank lines before a request line (an old client's
            # extra CRLF after a body).
            while buf[:2] == b"\r\n" or buf[:1] == b"\n":
                del buf[: 2 if buf[:1] == b"\r" else 1]
            found = _HEAD_END.search(buf, max(scanned - 3, 0))
            if line_end < 0:
                line_end = buf.find(b"\n")
                if (line_end < 0 and len(buf) > max_line) or line_end > max_line:
                    raise HeadTooLarge("414 URI Too Long", "request line too long")
            if found is not None:
                if found.start() - line_end > max_header_bytes:
                    raise HeadTooLarge("431 Request Header Fields Too Large", "request headers too large")
                head = bytes(buf[: found.start()])
                del buf[: found.end()]
                return head
            if line_end >= 0 and len(buf) - line_end > max_header_bytes + 4:
                raise HeadTooLarge("431 Request Header Fields Too Large", "request headers too large")
            scanned = len(buf)
            try:
                got = self._recv(deadline)
            except TimeoutError:
                if buf.strip():
                    raise HeadTimedOut() from None
                raise HeadAbandoned("idle") from None
            except OSError:
                raise HeadAbandoned("network error") from None
            if not got:
                raise HeadAbandoned("peer closed")

    def close(self) -> None:
        """No further request is read (the socket is the handler's to close)."""
        self.closed = True
        self._buf.clear()

    def take_buffered(self) -> bytes:
        """Everything received and not consumed yet (e.g. frames sent before the 101), emptied."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    # -- request bodies (the rfile of gevent's pywsgi.Input) ------------------------------------------------
    def start_body(self, *, grace: float) -> None:
        """From now, reads wait on a fresh body clock (see the module docstring)."""
        self._body_grace = grace
        self._body_blocked = 0.0
        self._body_got = 0

    def end_body(self) -> None:
        self.start_body(grace=_DEFAULT_GRACE)
        self._consume_left = None

    def limit_consumed(self, limit: int | None) -> None:
        """Reads from now may take at most ``limit`` bytes in all (None: no cap)."""
        self._consume_left = limit

    def _consume(self, n: int) -> None:
        left = self._consume_left
        if left is not None:
            if n > left:
                self.closed = True
                raise BodyTooLarge("the request took more bytes than allowed")
            self._consume_left = left - n

    def read(self, size: int = -1) -> bytes:
        """``size`` bytes (fewer only at end of stream); ``-1``: until the peer closes."""
        buf = self._buf
        while size < 0 or len(buf) < size:
            if not self._recv_body():
                break
        n = len(buf) if size < 0 or size >= len(buf) else size
        self._consume(n)
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def readline(self, size: int = -1) -> bytes:
        """Up to and including the next ``\\n`` (at most ``size`` bytes; fewer at end of stream)."""
        buf = self._buf
        scanned = 0
        while True:
            end = buf.find(b"\n", scanned)
            if end >= 0:
                n = end + 1
                break
            if 0 <= size <= len(buf):
                n = size
                break
            scanned = len(buf)
            if not self._recv_body():
                n = len(buf)
                break
        if 0 <= size < n:
            n = size
        self._consume(n)
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def _recv_body(self) -> bool:
        # What the peer may still take to send the next byte: the grace plus its share
        # of the rate, less what reads have waited for it so far.
        budget = self._body_grace + (self._body_got + 1) / MIN_BODY_RATE - self._body_blocked
        before = len(self._buf)
        started = time.monotonic()
        try:
            got = self._recv(started + budget, try_first=True)
        except TimeoutError:
            self.closed = True
            raise BodyStalled("the request body fell behind the minimum rate") from None
        finally:
            self._body_blocked += time.monotonic() - started
        self._body_got += len(self._buf) - before
        return got

    # -- the socket ----------------------------------------------------------------------------
    def _recv(self, deadline: float, *, try_first: bool = False) -> bool:
        """One recv into the buffer: False at end of stream. ``TimeoutError`` past ``deadline``.

        ``try_first``: what is already waiting on the socket is taken even past the
        deadline (only waiting is bounded).
        """
        if self.closed:
            return False
        sock = self._sock
        if try_first:
            sock.settimeout(0.0)
            try:
                chunk = sock.recv(_RECV)
            except (BlockingIOError, TimeoutError):
                chunk = None
            except OSError:
                self.closed = True
                raise
            finally:
                sock.settimeout(self.write_timeout)
            if chunk is not None:
                if not chunk:
                    self.closed = True
                    return False
                self._buf += chunk
                return True
        while True:
            # A deadline, not an idle timeout: every wait is bounded by the time
            # left, and the clock is re-read after it.
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("deadline passed")
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(_RECV)
            except TimeoutError:
                continue  # re-read the clock
            except OSError:
                self.closed = True
                raise
            finally:
                sock.settimeout(self.write_timeout)
            if not chunk:
                self.closed = True
                return False
            self._buf += chunk
            return True
