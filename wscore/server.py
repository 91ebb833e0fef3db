"""WsServer: the public server object (SPEC §2) and its connection lifecycle.

The server wires the pieces together and owns nothing that an actor owns:

* :mod:`wscore.transport` accepts sockets and upgrades them;
* each upgraded socket gets a *reader* (the socket's own greenlet, running
  :meth:`WsServer._serve_connection`) and a :class:`~actors.ConnectionActor`
  writer; the reader authenticates, asks the router for a session (new or
  resumed), attaches, then decodes frames and tells them to the session;
* when the socket ends the reader tells the session ``Detach`` — the session
  lives on for ``session_ttl``.

Shutdown (:meth:`stop`, SIGTERM in :meth:`serve_forever`): stop accepting,
end every session (connections get close 1001 "going away" after the frames
already queued), wait up to ``shutdown_timeout`` for sockets to finish, then
stop every actor. A stopped server cannot be started again.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

import gevent
import gevent.event
import gevent.lock
import pykka

from actors.connection import ActorWriter, ConnectionActor
from actors.handler import HandlerActor
from actors.messages import (
    Attach,
    AttachResult,
    ClaimSession,
    ClientFrame,
    Detach,
    EndSession,
    JoinRoom,
    LeaveRoom,
    OpenSession,
    RoomBroadcast,
    RoomMembers,
    SendToSessions,
    Stats,
    StopAll,
    Unparseable,
)
from actors.router import FindRoom, RouterActor
from actors.session import SessionEnv
from wscore import static
from wscore._console_log import install_default_handler, remove_default_handler
from wscore.auth import AuthResult, ConnectionInfo, WsAuthenticator, token_from
from wscore.behaviours import WsActorController, WsController
from wscore.config import WsServerConfig
from wscore.context import WsSession
from wscore.errors import ConfigError, ConnectionClosed, PeerProtocolError, UsageError, WsError
from wscore.handlers import Handler, HandlerSpec, Schema
from wscore.outbox import Outbox
from wscore.protocol.codes import CLOSE_GOING_AWAY, CLOSE_NORMAL, CLOSE_REPLACED, ErrorCode
from wscore.protocol.envelope import decode_envelope, encode_envelope, encode_error
from wscore.transport import TransportServer, WsTransport

if TYPE_CHECKING:
    from wscore.wsgi import WsgiEntry

__all__ = ["Rooms", "WsServer"]

log = logging.getLogger("wscore.server")

_ASK_TIMEOUT = 10.0
#: Client frames one connection may have handed to its session and not yet seen
#: handled. Past it the reader stops reading, so TCP slows a client that pipelines
#: faster than its session runs, instead of its replies piling up (SPEC §4).
_INBOUND_WINDOW = 64
#: How often a reader held back by backpressure re-checks that its connection lives
#: (a periodic re-check of a condition it also waits on, not a synchronisation).
_BACKPRESSURE_RECHECK_SECONDS = 1.0
#: Third-generation GC threshold under ``gc_tuning`` (CPython's default is 10).
_GC_FULL_COLLECTION_THRESHOLD = 1000


class Rooms:
    """``server.rooms``: join, leave, list and broadcast to rooms (SPEC §2)."""

    def __init__(self, server: WsServer) -> None:
        self._server = server
        self._behaviours: list[tuple[str, Callable[[str], Any]]] = []

    def join(self, room_id: str, session: WsSession | str) -> None:
        """Add ``session`` (a :class:`WsSession` or a session id) to ``room_id``.

        Raises :class:`WsError` 1010 when the session is already in
        ``max_rooms_per_session`` rooms (raised in a handler, it answers the
        request that asked). A join by session id is checked by the session
        itself, which leaves a room over its cap.
        """
        room_id = _room_id(room_id)
        if isinstance(session, WsSession):
            cap = self._server.config.max_rooms_per_session
            if room_id not in session._rooms and len(session._rooms) >= cap:
                raise WsError(ErrorCode.RATE_LIMIT_EXCEEDED,
                              f"a session may be in at most {cap} rooms",
                              {"limit": "max_rooms_per_session", "max": cap})
            # Visible at once to the handler that asked; the room confirms it again.
            session._rooms.add(room_id)
            self._server._router.tell(JoinRoom(room_id, session.id))
        else:
            self._server._router.tell(JoinRoom(room_id, str(session)))

    def leave(self, room_id: str, session: WsSession | str) -> None:
        room_id = _room_id(room_id)
        if isinstance(session, WsSession):
            session._rooms.discard(room_id)
            session_id = session.id
        else:
            session_id = str(session)
        self._server._router.tell(LeaveRoom(room_id, session_id))

    def members(self, room_id: str) -> list[str]:
        """Session ids in the room (server-side data: never send them to other clients)."""
        ref = self._server._router.ask(FindRoom(_room_id(room_id)), timeout=_ASK_TIMEOUT)
        if ref is None:
            return []
        try:
            members: list[str] = ref.ask(RoomMembers(), timeout=_ASK_TIMEOUT)
        except pykka.ActorDeadError:
            return []
        return members

    def broadcast(self, room_id: str, event: str, payload: Any = None) -> None:
        """Send ``event`` to every member of the room (encoded once for all)."""
        frame = encode_envelope(event, payload, now_ms=_now_ms())
        self._server._router.tell(RoomBroadcast(_room_id(room_id), frame, event, payload))

    def set_behaviour(self, factory: Callable[[str], Any], *, prefix: str = "") -> None:
        """Rooms whose id starts with ``prefix`` get ``factory(room_id)`` as their behaviour.

        Applies to rooms created afterwards; the longest matching prefix wins.
        """
        self._behaviours.append((prefix, factory))
        self._behaviours.sort(key=lambda item: len(item[0]), reverse=True)

    def _behaviour_for(self, room_id: str) -> Any:
        for prefix, factory in self._behaviours:
            if room_id.startswith(prefix):
                return factory(room_id)
        return None


def _room_id(room_id: Any) -> str:
    if not isinstance(room_id, str) or not room_id:
        raise UsageError(f"room id must be a non-empty string, got {room_id!r}")
    return room_id


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Conn:
    """The server's record of one live connection (for heartbeat, /healthz, shutdown)."""

    __slots__ = ("last_ping", "outbox", "transport")

    def __init__(self, transport: WsTransport, outbox: Outbox) -> None:
        self.transport = transport
        self.outbox = outbox
        self.last_ping = time.monotonic()


class WsServer:
    """A wscore server. Register handlers with :meth:`on`, then :meth:`start`."""

    def __init__(
        self, *, config: WsServerConfig | None = None, authenticator: WsAuthenticator | None = None
    ) -> None:
        self.config = config if config is not None else WsServerConfig.dev()
        self.authenticator = authenticator
        self.rooms = Rooms(self)
        self._handlers: dict[str, HandlerSpec] = {}
        self._handler_actors: list[Any] = []
        self._router: Any = None
        self._transport: TransportServer | None = None
        self._conns: dict[int, _Conn] = {}
        self._conn_ids = itertools.count(1)
        self._all_closed = gevent.event.Event()
        self._all_closed.set()
        self._stopped = gevent.event.Event()
        self._heartbeat: gevent.Greenlet | None = None
        self._state = "new"
        self._mounted: static.WsgiApp | None = None

    # -- handlers ------------------------------------------------------------------------------
    @overload
    def on(self, event: str, handler: None = None, *, schema: Schema | None = None
           ) -> Callable[[Handler], Handler]: ...
    @overload
    def on(self, event: str, handler: Handler, *, schema: Schema | None = None) -> Handler: ...

    def on(self, event: str, handler: Handler | None = None, *, schema: Schema | None = None
           ) -> Any:
        """Register ``handler`` for ``event``; without ``handler``, return a decorator.

        ``schema`` maps payload fields to predicates (see :mod:`wscore.handlers`).
        Registering an event twice replaces the first handler.
        """
        if not isinstance(event, str) or not event:
            raise UsageError("event must be a non-empty string")
        if event.startswith("sys."):
            raise UsageError(f"{event!r}: the sys.* namespace is reserved for the protocol")
        if schema is not None and not all(callable(p) for p in schema.values()):
            raise UsageError("schema values must be callables (predicates)")

        def register(fn: Handler) -> Handler:
            if not callable(fn):
                raise UsageError(f"handler for {event!r} is not callable")
            self._handlers[event] = HandlerSpec(event, fn, dict(schema) if schema else None,
                                                self._actor_for(fn))
            return fn

        return register if handler is None else register(handler)

    def _actor_for(self, fn: Handler) -> Any:
        owner = getattr(fn, "__self__", None)
        if isinstance(owner, WsActorController):
            ref = getattr(owner, "_wscore_actor_ref", None)
            if ref is None or not ref.is_alive():
                ref = HandlerActor.start(owner)
                owner._wscore_actor_ref = ref  # type: ignore[attr-defined]
                self._handler_actors.append(ref)
            return ref
        return None

    def register_controller(self, controller: WsController) -> None:
        """Call ``controller.register(self)``; an actor controller's methods run in its actor."""
        if not isinstance(controller, WsController):
            raise UsageError("register_controller() expects a WsController instance")
        controller.register(self)

    # -- pushes from server code ---------------------------------------------------------------------
    def send_to_session(self, session_id: str, event: str, payload: Any = None) -> None:
        self._require_running()
        frame = encode_envelope(event, payload, now_ms=_now_ms())
        self._router.tell(SendToSessions(frame, session_id=session_id))

    def send_to_user(self, user_id: str, event: str, payload: Any = None) -> None:
        self._require_running()
        frame = encode_envelope(event, payload, now_ms=_now_ms())
        self._router.tell(SendToSessions(frame, user_id=str(user_id)))

    def broadcast(self, event: str, payload: Any = None) -> None:
        """Send ``event`` to every session (encoded once)."""
        self._require_running()
        frame = encode_envelope(event, payload, now_ms=_now_ms())
        self._router.tell(SendToSessions(frame))

    def _require_running(self) -> None:
        if self._router is None or not self._router.is_alive():
            raise UsageError("the server is not running")

    # -- lifecycle ------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._transport is None:
            return self.config.port
        return self._transport.address[1]

    @property
    def url(self) -> str:
        host = self.config.host
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1"
        return f"ws://{host}:{self.port}{self.config.path}"

    def start(self) -> None:
        """Bind and serve in the background; returns once the port is bound."""
        if self._state != "new":
            raise UsageError(f"start() on a server that is {self._state}")
        if self.config.require_auth and self.authenticator is None:
            raise ConfigError("require_auth=True needs an authenticator: WsServer(authenticator=…)")
        cfg = self.config
        self._router = RouterActor.start(make_env=self._make_env,
                                         behaviour_for=self.rooms._behaviour_for)
        self._transport = TransportServer(
            host=cfg.host, port=cfg.port, path=cfg.path, http_app=self._http,
            on_websocket=self._serve_connection, gate=self._gate,
            handshake_timeout=cfg.handshake_timeout, max_message_bytes=cfg.max_message_bytes,
            max_connections=cfg.max_connections, control_rate=cfg.rate_limit,
            control_burst=cfg.rate_burst, control_abuse_close_after=cfg.rate_abuse_close_after,
        )
        try:
            self._transport.start()
        except OSError as exc:
            self._router.stop()
            self._state = "stopped"
            raise ConfigError(f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror or exc}"
                              ) from None
        self._begin_running()
        log.info("wscore listening on %s", self.url)

    def _begin_running(self) -> None:
        self._state = "running"
        if self.config.gc_tuning:
            t0, t1, t2 = gc.get_threshold()
            gc.set_threshold(t0, t1, max(t2, _GC_FULL_COLLECTION_THRESHOLD))
        self._heartbeat = gevent.spawn(self._heartbeat_loop)

    # -- embedded in another WSGI server (gunicorn's gevent worker: docs/wsgi.md) -----------------
    def start_embedded(self) -> None:
        """Start the actors and the heartbeat, binding nothing: another server owns the port.

        Connections then come through :meth:`wsgi_app`; :meth:`stop` works as
        usual (it has no listener to close). Idempotent while running.
        """
        if self._state == "running" and self._transport is None:
            return
        if self._state != "new":
            raise UsageError(f"start_embedded() on a server that is {self._state}")
        if self.config.require_auth and self.authenticator is None:
            raise ConfigError("require_auth=True needs an authenticator: WsServer(authenticator=…)")
        self._router = RouterActor.start(make_env=self._make_env,
                                         behaviour_for=self.rooms._behaviour_for)
        self._begin_running()
        log.info("wscore serving %s inside the host WSGI server", self.config.path)

    def wsgi_app(self) -> WsgiEntry:
        """A WSGI application serving this server inside gunicorn's gevent worker.

        WebSocket upgrades on the WebSocket path run as connections of this
        server; ``/healthz`` and ``/wscore.js`` are answered by wscore; every
        other request goes to the :meth:`mount`-ed app. The server starts
        embedded (:meth:`start_embedded`) on the first request, in the worker
        process. See :class:`wscore.wsgi.WsgiEntry`.
        """
        from wscore.wsgi import WsgiEntry  # the composition root's own adapter

        return WsgiEntry(self)

    def serve_forever(self) -> None:
        """Start if needed, then block until :meth:`stop` or SIGTERM/SIGINT.

        Made for a plain script (``python app.py``): when neither the app nor
        anything else configured logging (no handler on the ``wscore`` logger
        or above it), a stderr handler is attached to the ``wscore`` logger
        alone, at INFO, for the duration of the call, so the script says
        where it listens and that it stopped. If it has to start the server
        and cannot (the port is in use, a bad config), it logs that one line
        at ERROR and raises ``SystemExit(2)`` instead of a traceback; call
        :meth:`start` first to handle :class:`ConfigError` yourself.
        """
        default_handler = install_default_handler()
        # The handlers come first: a signal just after "listening on" must stop us cleanly.
        handlers = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                handlers.append(gevent.signal_handler(sig, self._on_signal, sig))
            except (ValueError, OSError):  # not in the main thread
                pass
        try:
            if self._state == "new":
                try:
                    self.start()
                except ConfigError as exc:
                    log.error("%s", exc)
                    raise SystemExit(2) from None
            self._stopped.wait()
        finally:
            for h in handlers:
                h.cancel()
            if default_handler is not None:
                remove_default_handler(default_handler)

    def _on_signal(self, sig: int) -> None:
        log.info("received %s, shutting down", signal.Signals(sig).name)
        gevent.spawn(self.stop)

    def stop(self) -> None:
        """Close every connection with 1001 (going away), end every session, stop every actor."""
        if self._state != "running":
            self._state = "stopped"
            self._stopped.set()
            return
        self._state = "stopping"
        transport = self._transport  # None when embedded: the host owns the listener
        if self._heartbeat is not None:
            self._heartbeat.kill(block=False)
        if transport is not None:
            transport._server.close()  # stop accepting; live connections carry on
        try:
            self._router.tell(StopAll(CLOSE_GOING_AWAY, "server shutting down"))
        except pykka.ActorDeadError:
            pass
        for conn in list(self._conns.values()):
            conn.outbox.close(CLOSE_GOING_AWAY, "server shutting down")
        self._all_closed.wait(timeout=self.config.shutdown_timeout)
        if transport is not None:
            transport.stop(timeout=1.0)
        for ref in self._handler_actors:
            ref.stop(block=False)
        self._state = "stopped"
        self._stopped.set()
        log.info("wscore stopped")

    def stats(self) -> dict[str, Any]:
        """Cheap counters: connections, sessions, rooms (asks the router)."""
        counts: dict[str, Any] = {"connections": len(self._conns)}
        if self._router is not None and self._router.is_alive():
            try:
                counts.update(self._router.ask(Stats(), timeout=_ASK_TIMEOUT))
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
        return counts

    def _make_env(self, router: Any) -> SessionEnv:
        return SessionEnv(config=self.config, handlers=self._handlers, router=router,
                          authenticate=self._run_authenticator if self.authenticator else None)

    # -- heartbeat ------------------------------------------------------------------------------
    def _heartbeat_loop(self) -> None:
        cfg = self.config
        tick = min(max(cfg.ping_interval / 4, 0.05), 1.0)
        while True:
            # A periodic tick, not a synchronisation: every check below re-reads the clock.
            gevent.sleep(tick)
            now = time.monotonic()
            for conn in list(self._conns.values()):
                if now - conn.transport.last_received > cfg.ping_timeout:
                    log.info("dropping a connection silent for %.1fs", now - conn.transport.last_received)
                    conn.outbox.abort()
                elif now - conn.last_ping >= cfg.ping_interval:
                    conn.last_ping = now
                    conn.outbox.ping()

    # -- HTTP ---------------------------------------------------------------------------------------------
    def _gate(self, environ: Any) -> tuple[str, str] | None:
        cfg = self.config
        if environ.get("PATH_INFO") != cfg.path:
            return ("404 Not Found", f"no WebSocket endpoint at {environ.get('PATH_INFO')}")
        if self._state != "running":
            return ("503 Service Unavailable", "server is shutting down")
        if cfg.allowed_origins is not None:
            origin = environ.get("HTTP_ORIGIN")
            if origin not in cfg.allowed_origins:
                # The peer chooses the value: truncated, so one line stays one short line.
                log.info("refused a WebSocket from origin %r", None if origin is None else origin[:200])
                return ("403 Forbidden", "origin not allowed")
        # Sockets still in their handshake count too (this one among them).
        pending = self._transport.pending_connections if self._transport is not None else 1
        if len(self._conns) + pending - 1 >= cfg.max_connections:
            return ("503 Service Unavailable", "too many connections")
        return None

    def mount(self, app: static.WsgiApp) -> None:
        """Serve ``app`` (plain WSGI) on every HTTP path except the WebSocket path,
        ``/healthz`` and ``/wscore.js`` — e.g. the pages that use the browser client.
        Mounting again replaces it."""
        if not callable(app):
            raise UsageError("mount() expects a WSGI application")
        self._mounted = app

    def _http(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        headers = list(self.config.cors_headers)
        refusal = environ.get("wscore.refusal")
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if refusal is None and path == static.CLIENT_PATH:
            return static.serve_client(environ, start_response, headers)
        if refusal is None and self._mounted is not None and path not in (self.config.path, "/healthz"):
            return static.call_wsgi(self._mounted, environ, start_response)
        if refusal is not None:
            status, message = refusal
            body: Any = {"error": message}
            headers += environ.get("wscore.refusal_headers", ())
        elif method == "OPTIONS":
            start_response("204 No Content", headers)
            return []
        elif path == "/healthz" and method in ("GET", "HEAD"):
            status = "200 OK"
            body = {"status": "ok" if self._state == "running" else self._state, **self.stats()}
        elif path == self.config.path:
            status, body = "426 Upgrade Required", {"error": "this endpoint speaks WebSocket"}
            headers.append(("Upgrade", "websocket"))
        else:
            status, body = "404 Not Found", {"error": f"not found: {path}"}
        data = json.dumps(body).encode()
        headers += [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
        start_response(status, headers)
        return [data] if method != "HEAD" else []

    # -- one connection, in its own greenlet -------------------------------------------------------------
    def _serve_connection(self, transport: WsTransport) -> None:
        cfg = self.config
        conn_id = next(self._conn_ids)
        outbox = Outbox(conn_id, transport, limit=cfg.max_queued_frames)
        writer = ActorWriter(ConnectionActor.start(outbox))
        outbox.writer = writer
        self._conns[conn_id] = _Conn(transport, outbox)
        self._all_closed.clear()
        session_ref: Any = None
        #: The client closed with 1000: it ends its session on purpose (SPEC §7).
        ended_by_client = False
        try:
            auth = self._authenticate(transport)
            if auth is None:
                return
            session_ref = self._attach(conn_id, outbox, transport, auth)
            if session_ref is None:
                return
            self._read_loop(conn_id, outbox, transport, session_ref)
        except (ConnectionClosed, PeerProtocolError) as exc:
            log.debug("connection %d ended: %s", conn_id, exc)
            ended_by_client = (isinstance(exc, ConnectionClosed) and exc.by_peer is True
                               and exc.code == CLOSE_NORMAL)
        except pykka.ActorDeadError:
            log.debug("connection %d ended: its session ended", conn_id)
        except Exception:
            log.exception("connection %d: unexpected error", conn_id)
        finally:
            if session_ref is not None:
                # A 1000 close ends the session at once; any other end of the
                # connection only detaches it for session_ttl (SPEC §7).
                message = (EndSession(None, "closed by the client", conn_id) if ended_by_client
                           else Detach(conn_id))
                try:
                    session_ref.tell(message)
                except pykka.ActorDeadError:
                    pass
            outbox.closed = True
            writer.stop()
            transport.abort()
            del self._conns[conn_id]
            if not self._conns:
                self._all_closed.set()

    def _authenticate(self, transport: WsTransport) -> AuthResult | None:
        """The handshake's verdict; None when refused (the refusal was already sent)."""
        token = token_from(transport.query, transport.headers)
        if token is None:
            if self.config.require_auth:
                self._refuse(transport, WsError(ErrorCode.AUTH_REQUIRED, "a token is required"))
                return None
            return AuthResult(ok=True)
        if self.authenticator is None:
            return AuthResult(ok=True)  # no authenticator: tokens carry no identity
        result = self._run_authenticator(_conn_info(transport), token)
        if not result.ok:
            self._refuse(transport, WsError(ErrorCode.AUTH_FAILED, result.error or "token refused"))
            return None
        return result

    def _run_authenticator(self, conn: ConnectionInfo, token: str) -> AuthResult:
        """The authenticator's verdict; never raises (a raising authenticator refuses)."""
        assert self.authenticator is not None
        try:
            result = self.authenticator.authenticate(conn, token)
        except Exception:
            log.exception("authenticator raised; refusing the token")
            return AuthResult.failure("token refused")
        if not isinstance(result, AuthResult):
            log.error("authenticator returned %r, not an AuthResult; refusing", type(result))
            return AuthResult.failure("token refused")
        if result.ok and result.expires_at is not None and result.expires_at <= time.time():
            return AuthResult.failure("token expired")
        return result

    def _refuse(self, transport: WsTransport, error: WsError) -> None:
        # A refused handshake gets only sys.error and the close (SPEC §3).
        try:
            transport.send_text(encode_error(error, now_ms=_now_ms()).unnumbered())
            transport.close(error.code.close_code, error.code.wire_name)
            for _ in transport.read_messages():
                pass  # drain until the peer answers our close (or the timeout aborts)
        except (ConnectionClosed, PeerProtocolError):
            pass

    def _attach(self, conn_id: int, outbox: Outbox, transport: WsTransport, auth: AuthResult
                ) -> Any:
        router = self._router
        resume_id = transport.query.get("session")
        client_tag = transport.query.get("client") or None
        attempt = _int_or_zero(transport.query.get("attempt")) or None
        if resume_id:
            last_seq = _int_or_zero(transport.query.get("last_seq"))
            claim = router.ask(ClaimSession(resume_id, auth.user_id), timeout=_ASK_TIMEOUT)
            if claim.refusal == "wrong_user":
                log.info("refused a resume by another user (%r)", auth.user_id)
                self._refuse(transport, WsError(ErrorCode.AUTH_FAILED,
                                                "this session belongs to another user"))
                return None
            if claim.session_ref is not None:
                try:
                    result: AttachResult = claim.session_ref.ask(
                        Attach(conn_id, outbox, last_seq, auth.user_id, auth.expires_at,
                               _conn_info(transport), client_tag, attempt), timeout=_ASK_TIMEOUT)
                except pykka.ActorDeadError:
                    result = AttachResult(False, "session ended")
                if result.ok:
                    return claim.session_ref
                if result.stale:
                    # Nobody waits on this connection any more: close it, touch nothing.
                    transport.close(CLOSE_REPLACED, "superseded by a newer attempt")
                    return None
            outbox.send(encode_error(WsError(
                ErrorCode.SESSION_NOT_FOUND,
                "the session expired or cannot be resumed; its state was lost",
            ), now_ms=_now_ms()).unnumbered())
        opened = router.ask(OpenSession(auth.user_id), timeout=_ASK_TIMEOUT)
        result = opened.session_ref.ask(
            Attach(conn_id, outbox, None, auth.user_id, auth.expires_at, _conn_info(transport),
                   client_tag, attempt), timeout=_ASK_TIMEOUT)
        return opened.session_ref if result.ok else None

    def _read_loop(self, conn_id: int, outbox: Outbox, transport: WsTransport, session_ref: Any
                   ) -> None:
        """Decode frames and hand every one to the session (which rate-limits them all).

        Backpressure: at most ``_INBOUND_WINDOW`` frames are in flight to the
        session, and reading pauses while the outbox holds half of
        ``max_queued_frames``; a client that pipelines but reads is slowed by
        TCP, never cut as a slow consumer (SPEC §4).
        """
        tell = session_ref.tell
        high_water = max(self.config.max_queued_frames // 2, 1)
        window = gevent.lock.Semaphore(min(_INBOUND_WINDOW, high_water))
        release = window.release
        for message in transport.read_messages():
            if len(outbox) >= high_water:
                outbox.wait_for_room(high_water, recheck=_BACKPRESSURE_RECHECK_SECONDS)
            while not window.acquire(timeout=_BACKPRESSURE_RECHECK_SECONDS):
                if outbox.closed or transport.closed:
                    raise ConnectionClosed(None, "closed while waiting for the session",
                                           by_peer=None)
            if isinstance(message, bytes):
                tell(Unparseable(conn_id, WsError(
                    ErrorCode.INVALID_PROTOCOL, "binary frames are not supported; send JSON text"),
                    release=release))
                continue
            try:
                envelope = decode_envelope(message)
            except WsError as err:
                tell(Unparseable(conn_id, err, getattr(err, "correlation_id", None), release))
                continue
            tell(ClientFrame(conn_id, envelope, release))


def _conn_info(transport: WsTransport) -> ConnectionInfo:
    return ConnectionInfo(transport.remote_address, dict(transport.headers), dict(transport.query),
                          transport.path)


def _int_or_zero(value: str | None) -> int:
    try:
        return max(int(value or 0), 0)
    except ValueError:
        return 0
