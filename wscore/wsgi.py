"""wscore inside another WSGI server: gunicorn's gevent worker (docs/wsgi.md).

``application = server.wsgi_app()`` is a plain WSGI application. Under
``gunicorn -k gevent`` it serves, on gunicorn's port:

* a WebSocket upgrade on the WebSocket path (``config.path``): checked with the
  very checks wscore's own listener makes (:func:`wscore.transport.upgrade_refusal`
  and the server's gate: origin, ``max_connections``, shutting down), answered
  101 on the socket gunicorn hands over (``environ['gunicorn.socket']``), then
  run as a connection of the server until it ends;
* ``/healthz``, ``/wscore.js``, a refused upgrade and a plain request to the
  WebSocket path: answered by wscore, as on its own listener;
* every other request: the app given to :meth:`WsServer.mount`, its response
  passed through as it is (streamed, never collected); 404 without one.

After a WebSocket ends the callable raises ``StopIteration``: gunicorn's async
workers take that as "close this connection" (one DEBUG line) and write
nothing more to it — no response after the 101's stream, no error logged.

Limits. A host that does not hand over its socket cannot carry a WebSocket: a
request without ``gunicorn.socket``, with a socket that is not gevent's, or from
a host serving one request at a time (``wsgi.multithread`` not true: gunicorn's
``sync`` worker, whom a WebSocket would block) is refused 501 with a message
naming ``-k gevent``. gunicorn parses the request, so its own limits apply
(``--limit-request-line``, ``--limit-request-fields``, ``--limit-request-field_size``)
instead of wscore's handshake limits; each WebSocket holds one of the worker's
``--worker-connections``. Sessions live in the worker process: with more than
one worker, a resume may reach another worker, which does not know the session
(1006) — more than one worker needs shared sessions (Redis; SPEC §6, not wired into the server yet).
"""

from __future__ import annotations

import io
import logging
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import gevent.socket

from wscore import static
from wscore.transport import WsTransport, is_upgrade, switching_protocols, upgrade_refusal

if TYPE_CHECKING:
    from wscore.server import WsServer

__all__ = ["WsgiEntry"]

log = logging.getLogger("wscore.wsgi")


class WsgiEntry:
    """The WSGI application of :meth:`WsServer.wsgi_app` (see the module docstring)."""

    def __init__(self, server: WsServer) -> None:
        self.server = server

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        server = self.server
        if server._state == "new":
            # In the worker, on its first request: never in a parent that forks later.
            server.start_embedded()
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
                    and environ.get("wsgi.multithread") is True):
                self._serve_websocket(environ, sock)
                # gunicorn's async worker: close the connection, write nothing more.
                raise StopIteration("the WebSocket ended")
            if refusal is None:
                refusal = ("501 Not Implemented",
                           "this WSGI server cannot carry a WebSocket: run gunicorn -k gevent", ())
            log.debug("refused a WebSocket upgrade from %s: %s %s",
                      environ.get("REMOTE_ADDR", "-"), refusal[0], refusal[1])
            environ["wscore.refusal"] = refusal[:2]
            environ["wscore.refusal_headers"] = list(refusal[2])
            return server._http(environ, start_response)
        mounted = server._mounted
        if mounted is None or path in own_paths:
            return server._http(environ, start_response)
        return mounted(environ, start_response)

    def _serve_websocket(self, environ: dict[str, Any], sock: socket.socket) -> None:
        server = self.server
        cfg = server.config
        sock.settimeout(None)
        try:
            # Real-time traffic is many small frames: never let Nagle hold one back.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        sock.sendall(switching_protocols(environ))
        transport = WsTransport(
            sock, io.BytesIO(_read_ahead(environ)), environ, max_message_bytes=cfg.max_message_bytes,
            control_rate=cfg.rate_limit, control_burst=cfg.rate_burst,
            control_abuse_close_after=cfg.rate_abuse_close_after)
        # The transport kept its bounded set of headers: do not hold the rest for the
        # connection's lifetime (the host keeps this environ until we return).
        for key in [k for k in environ if k.startswith("HTTP_")]:
            del environ[key]
        try:
            server._serve_connection(transport)
        finally:
            transport.abort()


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
