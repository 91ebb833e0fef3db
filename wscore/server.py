"""WsServer: the public server object (SPEC §2) and its connection lifecycle.

The server wires the pieces together and owns nothing that an actor owns:

* :mod:`wscore.transport` accepts sockets and upgrades them;
* each upgraded socket gets a *reader* (the socket's own greenlet, running
  :class:`wscore.connections.ConnectionHandler`) and a
  :class:`~actors.ConnectionActor` writer; the reader authenticates, asks the
  router for a session (new or resumed), attaches, then decodes frames and
  tells them to the session;
* ``server.rooms`` is :class:`wscore.rooms.Rooms`;
* when the socket ends the reader tells the session ``Detach`` — the session
  lives on for ``session_ttl``.

Shutdown (:meth:`stop`, SIGTERM in :meth:`serve_forever`): stop accepting,
end every session (connections get close 1001 "going away" after the frames
already queued), wait up to ``shutdown_timeout`` for sockets to finish, then
stop every actor. A stopped server cannot be started again.

With ``redis_url`` (SPEC §6, docs/scaling.md) the server composes a
:class:`wscore.cluster.node.ClusterNode` (imported only then: the embedded
default needs no redis-py) and hands its store to every session: frames are
stored before they are sent, a resume of a session this node does not hold
claims it in Redis and hydrates it here, rooms and pushes span nodes, and
shutdown closes connections with 1012 and keeps the sessions in Redis.
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, overload

import gevent
import gevent.event
import gevent.lock
import pykka

from wscore import static
from wscore._console_log import install_default_handler, remove_default_handler
from wscore.actors.handler import HandlerActor
from wscore.actors.messages import (
    DropAll,
    Handover,
    InboxArrived,
    RoomGapped,
    RoomPublished,
    SendToSessions,
    Stats,
    StopAll,
)
from wscore.actors.router import RouterActor
from wscore.actors.session import SessionEnv
from wscore.actors.store import ClusterLinks, room_wire
from wscore.auth import WsAuthenticator
from wscore.behaviours import WsActorController, WsController
from wscore.config import WsServerConfig, redacted_url
from wscore.connections import ConnectionHandler, LiveConnection
from wscore.errors import ConfigError, UsageError, WsError
from wscore.handlers import Handler, HandlerSpec, Schema
from wscore.protocol.codes import (
    CLOSE_GOING_AWAY,
    CLOSE_SERVICE_RESTART,
    ErrorCode,
)
from wscore.protocol.envelope import EncodedFrame, encode_envelope
from wscore.rooms import Rooms
from wscore.transport import TransportServer, WsTransport

if TYPE_CHECKING:
    from wscore.wsgi import WsgiEntry

__all__ = ["Rooms", "WsServer"]  # Rooms: re-exported from wscore.rooms

log = logging.getLogger("wscore.server")

_ASK_TIMEOUT = 10.0
#: Third-generation GC threshold under ``gc_tuning`` (CPython's default is 10).
_GC_FULL_COLLECTION_THRESHOLD = 1000
#: Seconds a concurrent start_embedded() (or stop()) waits for the start under way: longer
#: than a start against a slow Redis (its connect, generation and subscription bounds).
_START_WAIT = 20.0


def _now_ms() -> int:
    return int(time.time() * 1000)


class WsServer:
    """A wscore server. Register handlers with :meth:`on`, then :meth:`start`."""

    def __init__(
        self, *, config: WsServerConfig | None = None, authenticator: WsAuthenticator | None = None
    ) -> None:
        self.config = config if config is not None else WsServerConfig.dev()
        self.authenticator = authenticator
        self.rooms = Rooms(self)
        self._connections = ConnectionHandler(self)
        self._handlers: dict[str, HandlerSpec] = {}
        self._handler_actors: list[Any] = []
        self._router: Any = None
        self._transport: TransportServer | None = None
        self._conns: dict[int, LiveConnection] = {}
        self._conn_ids = itertools.count(1)
        self._all_closed = gevent.event.Event()
        self._all_closed.set()
        self._stopped = gevent.event.Event()
        self._heartbeat: gevent.Greenlet | None = None
        self._state = "new"
        #: While start_embedded() runs ("starting"): its outcome, which other callers wait for.
        self._starting: gevent.event.AsyncResult | None = None
        self._mounted: static.WsgiApp | None = None
        #: With redis_url: the node's Redis parts (wscore.cluster.node.ClusterNode).
        self._cluster: Any = None
        #: This node's id (with Redis): config.node_id, or made at start().
        self.node_id: str | None = self.config.node_id

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
        """Push ``event`` onto the session's numbered stream; an unknown session: nothing.

        With Redis the push is stored in the session's inbox first, whichever node
        holds it (or none: it waits for the resume), and enters its stream exactly
        once, in the order pushed (docs/scaling.md "Pushes across nodes"). If Redis
        is known to be down it raises :class:`~wscore.WsError` 1011 (nothing was
        sent; raised in a handler, the request that made the push gets it).
        """
        self._require_running()
        frame = encode_envelope(event, payload, now_ms=_now_ms())
        if self._cluster is not None:
            self._cluster.push(session_id, frame.body)
            return
        self._router.tell(SendToSessions(frame, session_id=session_id))

    def send_to_user(self, user_id: str, event: str, payload: Any = None) -> None:
        """:meth:`send_to_session` to every session of ``user_id`` (with Redis: on every node)."""
        self._require_running()
        frame = encode_envelope(event, payload, now_ms=_now_ms())
        if self._cluster is not None:
            self._cluster.push_user(str(user_id), frame.body)
            return
        self._router.tell(SendToSessions(frame, user_id=str(user_id)))

    def broadcast(self, event: str, payload: Any = None) -> None:
        """Send ``event`` to every session (encoded once).

        With Redis it is a message to the everyone room, which every session joins
        when it is created: stored once in Redis, delivered in one order on every
        node, and replayed to a session that no node held meanwhile when it resumes
        (within the room history; past it the resume gets 1006, never a gap;
        docs/scaling.md "Broadcasts"). If Redis is known to be down it raises
        :class:`~wscore.WsError` 1011 (nothing was sent).
        """
        self._require_running()
        frame = encode_envelope(event, payload, now_ms=_now_ms())
        if self._cluster is not None:
            self._cluster.broadcast(room_wire(None, frame.body))
            return
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

    def start(self, *, listener: socket.socket | None = None) -> None:
        """Bind and serve in the background; returns once the port is bound.

        ``listener``: serve this already bound, listening socket instead of
        binding ``config.host``/``config.port`` (how ``wscore run --workers N``
        runs N processes on one port; the server owns and closes it).
        """
        if self._state != "new":
            raise UsageError(f"start() on a server that is {self._state}")
        if self.config.require_auth and self.authenticator is None:
            raise ConfigError("require_auth=True needs an authenticator: WsServer(authenticator=…)")
        cfg = self.config
        links = None
        if cfg.redis_url is not None:
            self._start_cluster()
            links = self._cluster_links()
        self._router = RouterActor.start(make_env=self._make_env,
                                         behaviour_for=self.rooms._behaviour_for, links=links)
        self._transport = TransportServer(
            host=cfg.host, port=cfg.port, path=cfg.path, http_app=self._http,
            on_websocket=self._serve_connection, gate=self._gate,
            handshake_timeout=cfg.handshake_timeout, max_message_bytes=cfg.max_message_bytes,
            max_connections=cfg.max_connections, control_rate=cfg.rate_limit,
            control_burst=cfg.rate_burst, control_abuse_close_after=cfg.rate_abuse_close_after,
            listener=listener,
            max_body_bytes=cfg.max_http_body_bytes if self._mounted is not None else 0,
        )
        try:
            self._transport.start()
        except OSError as exc:
            self._router.stop()
            if self._cluster is not None:
                self._cluster.stop()
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
        usual (it has no listener to close). Idempotent while running, and safe
        to call from concurrent greenlets (a host's first requests): exactly one
        call starts the server; a call made while that start is under way waits
        for its outcome (at most ``_START_WAIT`` seconds, then
        :class:`ConfigError`) and returns, or raises :class:`ConfigError`, as it
        does. A start that fails (Redis unusable: :class:`ConfigError`) stops
        what it had started and leaves the server new: the next call tries again.
        """
        if self._state == "running" and self._transport is None:
            return
        if self._state == "starting" and self._starting is not None:
            self._await_start(self._starting)
            return
        if self._state != "new":
            raise UsageError(f"start_embedded() on a server that is {self._state}")
        if self.config.require_auth and self.authenticator is None:
            raise ConfigError("require_auth=True needs an authenticator: WsServer(authenticator=…)")
        # No yield between the check above and this: under gevent, one caller gets here.
        self._state = "starting"
        outcome = self._starting = gevent.event.AsyncResult()
        try:
            links = None
            try:
                if self.config.redis_url is not None:
                    self._start_cluster()  # yields (Redis round trips): other callers wait
                    links = self._cluster_links()
                self._router = RouterActor.start(make_env=self._make_env,
                                                 behaviour_for=self.rooms._behaviour_for, links=links)
            except BaseException:
                self._stop_started()
                raise
            if self._state != "starting":  # stop() gave up waiting for this start
                self._stop_started()
                raise UsageError(f"the server was stopped while starting ({self._state})")
        except BaseException as exc:
            if self._state == "starting":
                self._state = "new"  # nothing runs: a later call starts afresh
            outcome.set_exception(exc)
            raise
        finally:
            self._starting = None
        self._begin_running()
        outcome.set(None)
        log.info("wscore serving %s inside the host WSGI server", self.config.path)

    @staticmethod
    def _await_start(outcome: gevent.event.AsyncResult) -> None:
        """Wait (bounded) for another greenlet's :meth:`start_embedded`; raise ConfigError if it failed."""
        outcome.wait(timeout=_START_WAIT)  # returns the value (None): ready() tells
        if not outcome.ready():
            raise ConfigError(f"wscore is still starting after {_START_WAIT:g}s")
        exc = outcome.exception
        if exc is not None:
            raise ConfigError(str(exc) if isinstance(exc, ConfigError)
                              else f"the start failed: {exc!r}") from None

    def _stop_started(self) -> None:
        """Stop what a start that did not complete had started (the router, the Redis parts)."""
        if self._router is not None:
            self._router.stop()
            self._router = None
        if self._cluster is not None:
            self._cluster.stop()
            self._cluster = None

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

    # -- Redis (SPEC §6) -----------------------------------------------------------------------
    def _start_cluster(self) -> None:
        from wscore.cluster.errors import ClusterError
        from wscore.cluster.node import ClusterNode, make_node_id
        from wscore.cluster.session_log import LogLimits

        cfg = self.config
        assert cfg.redis_url is not None
        self.node_id = cfg.node_id or make_node_id()
        node = ClusterNode(
            cfg.redis_url, self.node_id,
            limits=LogLimits(max_buffered_messages=cfg.max_buffered_messages,
                             max_buffered_bytes=cfg.max_buffered_bytes, session_ttl=cfg.session_ttl),
            on_room_message=self._on_room_message, on_room_gap=self._on_room_gap,
            on_bus=self._on_bus, on_data_lost=self._on_data_lost,
        )
        try:
            node.start()
        except ClusterError as exc:
            raise ConfigError(f"Redis at {redacted_url(cfg.redis_url)} is unusable: {exc}") from None
        self._cluster = node
        log.info("node %s uses Redis at %s", self.node_id, redacted_url(cfg.redis_url))

    def _cluster_links(self) -> ClusterLinks:
        node = self._cluster
        return ClusterLinks(
            publish=lambda room_id, exclude, body: node.store.publish(room_id, room_wire(exclude, body)),
            subscribe=lambda room_id, cursor: node.subscriber.subscribe(room_id, after_seq=cursor),
            unsubscribe=node.subscriber.unsubscribe,
        )

    def _on_room_message(self, room_id: str, seq: int, wire: str) -> None:
        router = self._router
        if router is not None:
            try:
                router.tell(RoomPublished(room_id, seq, wire))
            except pykka.ActorDeadError:
                pass

    def _on_room_gap(self, gap: Any) -> None:
        router = self._router
        if router is not None:
            try:
                router.tell(RoomGapped(gap.room_id, gap.last_missing))
            except pykka.ActorDeadError:
                pass

    def _on_data_lost(self) -> None:
        router = self._router
        if router is not None:
            try:
                router.tell(DropAll(CLOSE_SERVICE_RESTART, "Redis lost the session; state lost"))
            except pykka.ActorDeadError:
                pass

    def _on_bus(self, message: dict[str, Any]) -> None:
        router = self._router
        if router is None:
            return
        kind = message.get("k")
        try:
            if kind == "handover" and isinstance(message.get("sid"), str):
                router.tell(Handover(message["sid"]))
            elif kind == "inbox" and isinstance(message.get("sid"), str):
                pos, body = message.get("pos"), message.get("b")
                if isinstance(pos, int) and isinstance(body, str):
                    router.tell(InboxArrived(message["sid"], pos, EncodedFrame(body)))
                elif message.get("lost"):
                    router.tell(InboxArrived(message["sid"], 0, None, lost=True))
        except pykka.ActorDeadError:
            pass

    def _room_cursor(self, room_id: str) -> int | None:
        """With Redis: the room's seq now (a joiner gets what is published after it)."""
        cluster = self._cluster
        if cluster is None:
            return None
        try:
            current: int = cluster.publisher.current(room_id)
        except Exception as exc:
            raise WsError(ErrorCode.INTERNAL_ERROR, "rooms are unavailable (Redis)") from exc
        return current

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
        """Close every connection with 1001 (going away), end every session, stop every actor.

        During an embedded start it first waits (bounded) for that start's outcome.
        """
        starting = self._starting
        if self._state == "starting" and starting is not None:
            starting.wait(timeout=_START_WAIT)
        if self._state != "running":
            self._state = "stopped"
            self._stopped.set()
            return
        self._state = "stopping"
        transport = self._transport  # None when embedded: the host owns the listener
        if self._heartbeat is not None:
            self._heartbeat.kill(block=False)
        if transport is not None:
            transport.stop_accepting()  # live connections carry on; idle keep-alive ones close
        cluster = self._cluster
        # With Redis the sessions stay (in Redis): 1012 says "reconnect now, anywhere".
        code = CLOSE_GOING_AWAY if cluster is None else CLOSE_SERVICE_RESTART
        try:
            self._router.tell(StopAll(code, "server shutting down", keep=cluster is not None))
        except pykka.ActorDeadError:
            pass
        for conn in list(self._conns.values()):
            conn.outbox.close(code, "server shutting down")
        self._all_closed.wait(timeout=self.config.shutdown_timeout)
        if transport is not None:
            transport.stop(timeout=1.0)
        if cluster is not None:
            # What the sessions queued (their last appends, the releases) goes first.
            cluster.flush(timeout=max(self.config.shutdown_timeout, 1.0))
            cluster.stop()
        for ref in self._handler_actors:
            ref.stop(block=False)
        self._state = "stopped"
        self._stopped.set()
        log.info("wscore stopped")

    def stats(self) -> dict[str, Any]:
        """Cheap counters: connections, sessions, rooms (asks the router)."""
        counts: dict[str, Any] = {"connections": len(self._conns)}
        if self._cluster is not None:
            counts["node"] = self.node_id
            counts["redis"] = "ok" if self._cluster.up else "down"
            writer_stats = self._cluster.writer.stats()
            counts["redis_commands"] = writer_stats["commands"]
            counts["redis_batches"] = writer_stats["batches"]
        if self._router is not None and self._router.is_alive():
            try:
                counts.update(self._router.ask(Stats(), timeout=_ASK_TIMEOUT))
            except (pykka.ActorDeadError, pykka.Timeout):
                pass
        return counts

    def _make_env(self, router: Any) -> SessionEnv:
        return SessionEnv(config=self.config, handlers=self._handlers, router=router,
                          authenticate=(self._connections.run_authenticator if self.authenticator
                                        else None),
                          store=self._cluster.store if self._cluster is not None else None,
                          room_has_behaviour=self.rooms._has_behaviour)

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
        if self._cluster is not None and not self._cluster.up:
            # Nothing could be stored: refuse now rather than accept and drop (SPEC §6).
            return ("503 Service Unavailable", "session store (Redis) unavailable")
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
        Mounting again replaces it. On wscore's own listener the app's requests may
        carry bodies (up to ``max_http_body_bytes``) and share keep-alive
        connections, and its response is streamed as it yields it."""
        if not callable(app):
            raise UsageError("mount() expects a WSGI application")
        self._mounted = app
        if self._transport is not None:
            self._transport.max_body_bytes = self.config.max_http_body_bytes

    def _http(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = list(self.config.cors_headers)
        refusal = environ.get("wscore.refusal")
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if refusal is None and path == static.CLIENT_PATH:
            return static.serve_client(environ, start_response, headers)
        if refusal is None and self._mounted is not None and path not in (self.config.path, "/healthz"):
            # Passed through as it is: the host streams it and calls its close() (PEP 3333).
            return self._mounted(environ, start_response)
        if refusal is not None:
            status, message = refusal
            body: Any = {"error": message}
            headers += environ.get("wscore.refusal_headers", ())
        elif method == "OPTIONS":
            start_response("204 No Content", headers)
            return []
        elif path == "/healthz" and method in ("GET", "HEAD"):
            body = {"status": "ok" if self._state == "running" else self._state, **self.stats()}
            status = "503 Service Unavailable" if body.get("redis") == "down" else "200 OK"
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
        """Serve one upgraded connection until it ends (see :mod:`wscore.connections`)."""
        self._connections.serve(transport)
