"""wscore inside another WSGI server: gunicorn's gevent worker (docs/wsgi.md).

``application = server.wsgi_app()`` is a plain WSGI application. Under
``gunicorn -k gevent`` it serves, on gunicorn's port:

* a WebSocket upgrade on the WebSocket path (``config.path``): checked with the
  very checks wscore's own listener makes (:func:`wscore.transport.upgrade_refusal`
  and the server's gate: origin, ``max_connections``, shutting down), answered
  101 by gunicorn's own response (status and headers through ``start_response``,
  sent when the response's first, empty, item is written), then run on the
  socket gunicorn hands over (``environ['gunicorn.socket']``) as a connection of
  the server until it ends;
* ``/healthz``, ``/wscore.js``, a refused upgrade and a plain request to the
  WebSocket path: answered by wscore, as on its own listener;
* every other request: the app given to :meth:`WsServer.mount`, its response
  passed through as it is (streamed, never collected); 404 without one.

Access log. A WebSocket's response iterable ends when the WebSocket ends, so
gunicorn writes its access-log line for it then, in its own format and files:
status 101, the duration of the whole WebSocket. The log never shows the query
of a request to the WebSocket path (it carries tokens and session ids):
``RAW_URI`` and ``QUERY_STRING`` are stripped of it once the connection has
read it. The iterable's ``close()`` (gunicorn calls it after that line) raises
``StopIteration``: gunicorn's async workers take that as "close this
connection" (one DEBUG line) and write nothing more to it.

Shutdown. On the worker's first request (``SERVER_SOFTWARE`` ``gunicorn/…``)
the entry finds gunicorn's gevent worker through its SIGTERM handler (any
other worker class is left alone) and wraps its SIGTERM, SIGQUIT and SIGINT
handlers: gunicorn's handler runs first, as it would alone, then the entry
starts the server's drain (:meth:`WsServer.stop`: upgrades refused 503, every
WebSocket closed with 1001, or 1012 with Redis keeping the sessions, the Redis
writer flushed) in a greenlet. On SIGTERM (graceful: the master's on its own
SIGTERM and to the old workers of a reload, or ``kill``) the drain first waits
until gunicorn closed the worker's listening sockets (at most
``_LISTENERS_WAIT`` seconds), so that a client told to reconnect reaches
another worker; on SIGQUIT and SIGINT (quick) it starts at once. A worker that
stops itself (``--max-requests``) sets ``worker.alive`` false before the
request that reached the limit calls the application, which then starts the
same drain. The WebSocket greenlets return as their connections close, so
gunicorn's graceful wait ends at its next check. An ``atexit`` hook in the
worker waits for a drain still going (and starts one if the worker exits with
the server running: its master died) before the process ends, bounded by
:meth:`WsgiEntry._drain_bound`; gunicorn's master still kills a worker after
its own ``--graceful-timeout``.

Limits. A host that does not hand over its socket cannot carry a WebSocket: a
request without ``gunicorn.socket``, with a socket that is not gevent's, or from
a host serving one request at a time (``wsgi.multithread`` not true: gunicorn's
``sync`` worker, whom a WebSocket would block) is refused 501 with a message
naming ``-k gevent``. A gunicorn older than 26.1 (``SERVER_SOFTWARE``) is
refused 501 too: it would frame the 101 as chunked (``Transfer-Encoding`` on the
head, a last chunk written onto the WebSocket). gunicorn parses the request, so its own limits apply
(``--limit-request-line``, ``--limit-request-fields``, ``--limit-request-field_size``)
instead of wscore's handshake limits; each WebSocket holds one of the worker's
``--worker-connections``. Sessions live in the worker process unless Redis is
configured (``redis_url``, docs/scaling.md): with more than one worker and no
Redis, a resume may reach another worker, which does not know the session.
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

import gevent
import gevent.event
import gevent.socket

from wscore import static
from wscore.errors import ConfigError
from wscore.protocol import frames
from wscore.transport import WsTransport, is_upgrade, upgrade_refusal

if TYPE_CHECKING:
    from wscore.server import WsServer

__all__ = ["WsgiEntry"]

log = logging.getLogger("wscore.wsgi")

#: gunicorn's worker signals that end the worker: SIGTERM graceful, the others quick.
_SHUTDOWN_SIGNALS = (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT)
#: Request headers kept in the environ of a WebSocket once its transport read them:
#: gunicorn's access log reads the user agent from there when the WebSocket ends.
_KEPT_HEADERS = ("HTTP_USER_AGENT",)
#: Seconds a graceful drain waits for gunicorn to close its listeners (its loop ticks each second).
_LISTENERS_WAIT = 2.0

#: The first gunicorn whose response sends a 1xx head without chunked framing (our 101).
_MIN_GUNICORN = (26, 1)
_MIN_GUNICORN_TEXT = "26.1"

_SignalHandler = Callable[[int, "FrameType | None"], Any]


class WsgiEntry:
    """The WSGI application of :meth:`WsServer.wsgi_app` (see the module docstring)."""

    def __init__(self, server: WsServer) -> None:
        self.server = server
        #: gunicorn's worker object, once its shutdown signals are wrapped (first request).
        self._worker: Any = None
        #: True once the first request under gunicorn looked for its worker (see _hook_gunicorn).
        self._hooked = False
        #: The greenlet running ``server.stop()`` once a shutdown began.
        self._drain: gevent.Greenlet | None = None
        #: Set by a quick stop: the drain stops waiting for gunicorn's listeners to close.
        self._hurry = gevent.event.Event()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        server = self.server
        if server._state in ("new", "starting"):
            # In the worker, on its first request: never in a parent that forks later. The
            # first requests may come together: one starts the server, the others wait for it.
            try:
                server.start_embedded()
            except ConfigError as exc:
                # e.g. Redis unreachable: one line (the host's error log would print the
                # request with its query); the next request tries again.
                log.error("wscore could not start in this worker: %s", exc)
                body = json.dumps({"error": "wscore is not available"}).encode()
                start_response("503 Service Unavailable", [
                    ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    ("Retry-After", "1")])
                return [body]
            if not self._hooked and str(environ.get("SERVER_SOFTWARE", "")).startswith("gunicorn"):
                self._hooked = True  # once, whichever of the first requests gets here first
                self._hook_gunicorn()
        worker = self._worker
        if worker is not None and self._drain is None and not getattr(worker, "alive", True):
            # No signal says so: gunicorn ends this worker after this request (--max-requests).
            self._start_drain("--max-requests", after_listeners=True)
        path = environ.get("PATH_INFO", "")
        own_paths = (server.config.path, "/healthz", static.CLIENT_PATH)
        if path == server.config.path and is_upgrade(environ):
            refusal = upgrade_refusal(environ)
            if refusal is None:
                gated = server._gate(environ)
                if gated is not None:
                    refusal = (*gated, ())
            sock = environ.get("gunicorn.socket")
            # A host that serves one request at a time (gunicorn's sync worker says so
            # with wsgi.multithread False) would be blocked by the WebSocket: refuse.
            if (refusal is None and isinstance(sock, gevent.socket.socket)
                    and environ.get("wsgi.multithread") is True and not _old_gunicorn(environ)):
                return self._accept(environ, sock, start_response)
            if refusal is None and _old_gunicorn(environ):
                # Before 26.1 gunicorn frames a 101 as chunked (Transfer-Encoding on the head,
                # a last chunk written onto the WebSocket): refuse rather than break it.
                refusal = ("501 Not Implemented",
                           f"wscore needs gunicorn {_MIN_GUNICORN_TEXT} or newer for WebSockets", ())
            elif refusal is None:
                refusal = ("501 Not Implemented",
                           "this WSGI server cannot carry a WebSocket: run gunicorn -k gevent", ())
            log.debug("refused a WebSocket upgrade from %s: %s %s",
                      environ.get("REMOTE_ADDR", "-"), refusal[0], refusal[1])
            environ["wscore.refusal"] = refusal[:2]
            environ["wscore.refusal_headers"] = list(refusal[2])
            _hide_query(environ)
            return server._http(environ, start_response)
        if path == server.config.path:
            _hide_query(environ)  # a token meant for the WebSocket: not for the access log either
        mounted = server._mounted
        if mounted is None or path in own_paths:
            return server._http(environ, start_response)
        return mounted(environ, start_response)

    # -- one WebSocket ------------------------------------------------------------------------
    def _accept(self, environ: dict[str, Any], sock: socket.socket,
                start_response: Callable[..., Any]) -> _WebSocketResponse:
        cfg = self.server.config
        sock.settimeout(None)
        try:
            # Real-time traffic is many small frames: never let Nagle hold one back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        accept = frames.accept_key(str(environ["HTTP_SEC_WEBSOCKET_KEY"]).strip())
        # gunicorn writes this head itself (with its Server and Date): its response then
        # has a status, so its access log has a line for the WebSocket.
        start_response("101 Switching Protocols", [
            ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept)])
        transport = WsTransport(
            sock, io.BytesIO(_read_ahead(environ)), environ, max_message_bytes=cfg.max_message_bytes,
            control_rate=cfg.rate_limit, control_burst=cfg.rate_burst,
            control_abuse_close_after=cfg.rate_abuse_close_after)
        # The transport kept the query and its bounded set of headers: the access log must
        # never see the query, and the host keeps this environ until the WebSocket ends.
        _hide_query(environ)
        for key in [k for k in environ if k.startswith("HTTP_") and k not in _KEPT_HEADERS]:
            del environ[key]
        return _WebSocketResponse(self.server, transport)

    # -- gunicorn's shutdown -------------------------------------------------------------------
    def _hook_gunicorn(self) -> None:
        """Wrap the gunicorn worker's shutdown signal handlers (see the module docstring)."""
        try:
            worker = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
        except ValueError:
            worker = None
        if worker is None or not any(c.__module__ == "gunicorn.workers.ggevent"
                                     for c in type(worker).__mro__):
            # Not gunicorn's gevent worker (the sync worker carries no WebSocket, and its
            # signal handlers must not wait for a greenlet): its handlers stay as they are.
            log.debug("no gunicorn gevent worker behind SIGTERM: its signal handlers stay")
            return
        try:
            for sig in _SHUTDOWN_SIGNALS:
                previous = signal.getsignal(sig)
                if callable(previous):
                    signal.signal(sig, functools.partial(self._on_signal, previous))
            # signal.signal() made SIGTERM interrupt system calls again: gunicorn had said not to.
            signal.siginterrupt(signal.SIGTERM, False)
        except ValueError:  # not the main thread: a host we do not know
            log.warning("cannot wrap gunicorn's signal handlers outside the main thread")
            return
        self._worker = worker
        atexit.register(self._at_exit)
        log.debug("wrapped the shutdown signals of gunicorn worker %s", getattr(worker, "pid", "?"))

    def _on_signal(self, previous: _SignalHandler, sig: int, frame: FrameType | None) -> None:
        # gunicorn's handler first, as it would have run alone (it does not block: the gevent
        # worker defers its quick exit to a greenlet); the drain blocks, so it gets its own.
        previous(sig, frame)
        self._start_drain(signal.Signals(sig).name, after_listeners=sig == signal.SIGTERM)

    def _start_drain(self, why: str, *, after_listeners: bool) -> gevent.Greenlet:
        """Start (once) the greenlet running ``server.stop()``; ``after_listeners``: first wait
        until gunicorn stopped accepting (bounded), so that no client told to reconnect
        reconnects to this worker."""
        if self._drain is None:
            self._drain = gevent.spawn(self._run_drain, why, after_listeners)
        elif not after_listeners:
            self._hurry.set()  # a quick stop (SIGQUIT, exit) after a graceful one: no more waiting
        return self._drain

    def _run_drain(self, why: str, after_listeners: bool) -> None:
        # Logged here, not in the signal handler: that may run in the hub, where a logging
        # lock held by another greenlet could not be waited for.
        log.info("the gunicorn worker is stopping (%s): closing the WebSockets", why)
        if after_listeners:
            # gunicorn's run loop closes its listeners within a second of alive turning false.
            deadline = time.monotonic() + _LISTENERS_WAIT
            while not self._listeners_closed() and time.monotonic() < deadline:
                if self._hurry.wait(timeout=0.05):
                    break
        self.server.stop()

    def _listeners_closed(self) -> bool:
        # The gevent worker's listening sockets: its StreamServers close these very objects.
        for listener in getattr(self._worker, "sockets", None) or ():
            try:
                if listener.fileno() != -1:
                    return False
            except (OSError, ValueError):
                pass
        return True

    def _drain_bound(self) -> float:
        # The listeners, then stop(): shutdown_timeout for the sockets, as long for Redis.
        return _LISTENERS_WAIT + 2 * max(self.server.config.shutdown_timeout, 1.0) + 1.0

    def _at_exit(self) -> None:
        if self._drain is None and self.server._state != "running":
            return
        self._start_drain("process exit", after_listeners=False).join(timeout=self._drain_bound())


class _WebSocketResponse(Iterator[bytes]):
    """The response of an accepted upgrade: one empty item (gunicorn sends the 101 head),
    then the WebSocket runs until it ends, then the iteration ends (gunicorn logs the
    request) and ``close()`` raises ``StopIteration`` (gunicorn closes the connection)."""

    def __init__(self, server: WsServer, transport: WsTransport) -> None:
        self._server = server
        self._transport = transport
        self._step = 0

    def __next__(self) -> bytes:
        step, self._step = self._step, self._step + 1
        if step == 0:
            return b""
        if step == 1:
            try:
                self._server._serve_connection(self._transport)
            finally:
                self._transport.abort()
        raise StopIteration

    def close(self) -> None:
        self._transport.abort()  # gunicorn never iterated (e.g. the 101 could not be written)
        # After the access-log line: the socket carried a WebSocket, no request can follow.
        raise StopIteration("the WebSocket ended")


def _old_gunicorn(environ: dict[str, Any]) -> bool:
    """True if ``SERVER_SOFTWARE`` names a gunicorn older than ``_MIN_GUNICORN``."""
    software = str(environ.get("SERVER_SOFTWARE", ""))
    if not software.startswith("gunicorn/"):
        return False
    parts = []
    for part in software[len("gunicorn/"):].split(".")[:2]:
        if not part.isdigit():
            return False  # a version we cannot read: assume a recent one
        parts.append(int(part))
    return tuple(parts) < _MIN_GUNICORN


def _hide_query(environ: dict[str, Any]) -> None:
    """Strip the query from what an access log reads (``RAW_URI``, ``QUERY_STRING``)."""
    raw = environ.get("RAW_URI")
    if isinstance(raw, str):
        environ["RAW_URI"] = raw.split("?", 1)[0]
    if "QUERY_STRING" in environ:
        environ["QUERY_STRING"] = ""


def _read_ahead(environ: dict[str, Any]) -> bytes:
    """Bytes the host's parser read past the request head (frames sent before the 101).

    gunicorn keeps them in its request parser's buffer, reachable from the body
    reader; a host that keeps none (or hides them) gives ``b""``.
    """
    body = environ.get("wsgi.input")
    unreader = getattr(getattr(body, "reader", None), "unreader", None)
    take = getattr(unreader, "take_buffered", None)
    if take is not None:  # recent gunicorn
        data = take()
    elif isinstance(getattr(unreader, "buf", None), io.BytesIO):  # older: the buffer holds only unread bytes
        data, unreader.buf = unreader.buf.getvalue(), io.BytesIO()  # type: ignore[union-attr]
    else:
        return b""
    return data if isinstance(data, bytes) else b""
