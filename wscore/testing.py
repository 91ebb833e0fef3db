"""Test your own handlers without sockets: in-process sessions on the real actors.

::

    from wscore.testing import HandlerTestServer

    with HandlerTestServer(server) as t:          # server: your WsServer, not started
        alice = t.session(user_id="alice")
        bob = t.session(user_id="bob")
        alice.request("room.join", {"roomId": "lobby"})   # → the reply payload
        bob.request("room.join", {"roomId": "lobby"})
        alice.request("chat.message", {"roomId": "lobby", "text": "hi"})
        assert bob.events("chat.new_message") == [{"text": "hi", "sender": "alice"}]

What runs is what the server runs: the server's router, session and room
actors, its handler table, schemas, room behaviours and actor controllers, its
config (rate limit, caps) and its authenticator. Only the sockets are missing:
each :class:`HandlerTestSession` is attached to a recording sink instead of a
connection, and its frames go through the same decoder the server's reader
uses (:func:`wscore.protocol.envelope.decode_envelope`).

Contract:

* :meth:`HandlerTestSession.request` sends one frame with a fresh ``c`` and
  returns the reply's payload, or raises the :class:`~wscore.WsError` the
  session answered with (its ``.code``, ``.message``, ``.details``). It raises
  :class:`~wscore.ConnectionClosed` when the session closed its connection
  first, :class:`TimeoutError` when no answer came within ``timeout``.
* :meth:`HandlerTestSession.send` sends a frame and does not wait.
* Client frames are numbered (``s`` 1, 2, 3 …) like the bundled client's, so
  the session's de-duplication and ``sys.ack`` are exercised too.
* :attr:`HandlerTestSession.frames` is every frame the session wrote (decoded
  JSON), in order; :attr:`HandlerTestSession.sent` is its numbered stream
  only, checked to be gap-free (``s`` 1, 2, 3 …); :meth:`~HandlerTestSession.events`
  the payloads of one event in that stream. Reading them first
  :meth:`~HandlerTestServer.settle`\\ s the actors, so a broadcast another
  session caused is there once that session's request has returned.
* :attr:`HandlerTestSession.data` and :attr:`~HandlerTestSession.rooms` are
  the session's own ``data`` dict and room set (read them between requests).
* Leaving the ``with`` block ends every session (close 1001, rooms left) and
  stops the router; handler actors of actor controllers stay with the server.
* The test sessions never acknowledge the server's frames (nothing in a test
  needs the replay buffer trimmed); :meth:`~HandlerTestSession.disconnect` and
  :meth:`~HandlerTestSession.reconnect` detach and resume, replaying what was
  pushed meanwhile.

The server must not be started; one :class:`HandlerTestServer` at a time per
server. Call it from a greenlet other than the actors' (a plain test function
is fine: importing wscore made the process gevent-ready).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import gevent
import gevent.event
import pykka

from wscore.actors.messages import (
    Attach,
    ClientFrame,
    Detach,
    OpenSession,
    Stats,
    StopAll,
    Unparseable,
)
from wscore.actors.router import FindRoom, RouterActor
from wscore.auth import AuthResult, ConnectionInfo
from wscore.errors import ConnectionClosed, UsageError, WsError
from wscore.protocol.codes import CLOSE_GOING_AWAY, PROTOCOL_VERSION, ErrorCode
from wscore.protocol.envelope import decode_envelope
from wscore.server import WsServer

__all__ = ["HandlerTestServer", "HandlerTestSession", "session"]

#: Seconds any single wait on an actor may take before it is reported as a failure.
DEFAULT_TIMEOUT = 5.0

_conn_ids = itertools.count(1_000_000_001)  # far from the server's own connection ids


class _Sink:
    """Stands in for a connection's outbox: records what the session writes (no socket)."""

    def __init__(self, conn_id: int, on_frame: Callable[[dict[str, Any]], None]) -> None:
        self.conn_id = conn_id
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self._on_frame = on_frame

    def send(self, wire: str) -> bool:
        if self.closed:
            return False
        self._on_frame(json.loads(wire))
        return True

    def send_batch(self, wires: list[str]) -> bool:
        return all([self.send(wire) for wire in wires])

    def close(self, code: int, reason: str = "") -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
            self.close_reason = reason
            self._on_frame({})  # wakes waiters; not recorded

    def __len__(self) -> int:
        return 0


class HandlerTestSession:
    """One session of a :class:`HandlerTestServer`, attached to a recording sink."""

    def __init__(self, harness: HandlerTestServer, session_id: str, ref: Any,
                 user_id: str | None, expires_at: float | None, conn_info: ConnectionInfo) -> None:
        self._harness = harness
        self.id = session_id
        self.user_id = user_id
        self._ref = ref
        self._expires_at = expires_at
        self._conn_info = conn_info
        self._frames: list[dict[str, Any]] = []
        self._changed = gevent.event.Event()
        self._next_s = itertools.count(1)
        self._next_c = itertools.count(1)
        self._sink: _Sink | None = None
        self._broken: str | None = None
        self._view_cache: Any = None

    # -- connection ----------------------------------------------------------------------------
    def _attach(self, resume_from: int | None) -> None:
        sink = _Sink(next(_conn_ids), self._record)
        result = self._ref.ask(Attach(sink.conn_id, sink, resume_from, self.user_id,  # type: ignore[arg-type]
                                      self._expires_at, self._conn_info),
                               timeout=self._harness.timeout)
        if not result.ok:
            raise WsError(ErrorCode.SESSION_NOT_FOUND, f"the session refused the attach: {result.reason}")
        self._sink = sink

    def disconnect(self) -> None:
        """Detach, as a dropped connection does: the session waits ``session_ttl`` for a resume."""
        sink = self._require_sink()
        sink.closed = True
        self._sink = None
        self._ref.tell(Detach(sink.conn_id))

    def reconnect(self) -> None:
        """Resume with ``last_seq`` = the last numbered frame received; what was pushed
        meanwhile is replayed into :attr:`frames`. Raises WsError 1006 if it cannot resume."""
        if self._sink is not None:
            raise UsageError("reconnect() on an attached session: disconnect() first")
        self._attach(self.last_seq)

    @property
    def connected(self) -> bool:
        """True while attached and not closed by the session."""
        return self._sink is not None and not self._sink.closed

    @property
    def close_code(self) -> int | None:
        """The close code the session closed the current connection with (None: open)."""
        return self._sink.close_code if self._sink is not None else None

    def _require_sink(self) -> _Sink:
        if self._sink is None:
            raise UsageError("the test session is disconnected: reconnect() first")
        if self._sink.closed:
            raise ConnectionClosed(self._sink.close_code, self._sink.close_reason, by_peer=True)
        return self._sink

    def _record(self, frame: dict[str, Any]) -> None:
        if frame:
            seq = frame.get("s")
            if seq is not None and seq != self.last_seq + 1 and self._broken is None:
                # Runs in the session's greenlet: report it to the test, not to the actor.
                self._broken = f"numbered stream broken: s={seq} after s={self.last_seq}"
            self._frames.append(frame)
        self._changed.set()

    # -- sending -----------------------------------------------------------------------------------
    def send(self, event: str, payload: Any = None, *, correlation_id: str | int | None = None) -> None:
        """Send one numbered frame ``event`` / ``payload`` (optionally with ``c``); do not wait."""
        envelope: dict[str, Any] = {"v": PROTOCOL_VERSION, "e": event, "p": payload,
                                    "s": next(self._next_s)}
        if correlation_id is not None:
            envelope["c"] = correlation_id
        self.send_raw(json.dumps(envelope))

    def send_raw(self, text: str) -> None:
        """Send one text frame as is (not numbered): what the server's reader would decode.

        A frame that does not decode reaches the session as the reader would hand it
        over (the session answers ``sys.error`` 1001).
        """
        sink = self._require_sink()
        try:
            envelope = decode_envelope(text)
        except WsError as err:
            self._ref.tell(Unparseable(sink.conn_id, err, getattr(err, "correlation_id", None)))
            return
        self._ref.tell(ClientFrame(sink.conn_id, envelope))

    def request(self, event: str, payload: Any = None, *, timeout: float | None = None) -> Any:
        """Send ``event`` with a fresh ``c`` and return the reply's payload.

        Raises the session's :class:`WsError` (``sys.error`` with this ``c``),
        :class:`ConnectionClosed` if the connection was closed first, or
        :class:`TimeoutError`.
        """
        c = f"test-{next(self._next_c)}"
        start = len(self._frames)
        self.send(event, payload, correlation_id=c)
        reply = self._wait(lambda f: f.get("c") == c and f.get("e") in ("ack", "sys.error"),
                           start, timeout, f"a reply to {event!r}")
        if reply["e"] == "sys.error":
            p = reply.get("p") or {}
            raise WsError(p.get("code", ErrorCode.INTERNAL_ERROR), p.get("message", ""),
                          p.get("details"))
        return reply.get("p")

    def wait_for(self, event: str, count: int = 1, *, timeout: float | None = None) -> list[Any]:
        """Wait until the numbered stream holds ``count`` frames of ``event``; their payloads."""
        self._wait(lambda f: len(self._payloads(event)) >= count, 0, timeout,
                   f"{count} {event!r} frame(s)")
        return self._payloads(event)

    def _wait(self, match: Callable[[dict[str, Any]], bool], start: int, timeout: float | None,
              what: str) -> dict[str, Any]:
        deadline = gevent.get_hub().loop.now() + (self._harness.timeout if timeout is None else timeout)
        while True:
            self._check()
            for frame in self._frames[start:]:
                if match(frame):
                    return frame
            start = len(self._frames)
            sink = self._sink
            if sink is None or sink.closed:
                raise ConnectionClosed(None if sink is None else sink.close_code,
                                       "" if sink is None else sink.close_reason, by_peer=True)
            remaining = deadline - gevent.get_hub().loop.now()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within the timeout")
            self._changed.clear()
            self._changed.wait(remaining)

    # -- what the session wrote ---------------------------------------------------------------------
    @property
    def frames(self) -> list[dict[str, Any]]:
        """Every frame written to this session's connections, in order (settles first)."""
        self._harness.settle()
        self._check()
        return list(self._frames)

    @property
    def sent(self) -> list[dict[str, Any]]:
        """The numbered stream only (``s`` 1, 2, 3 …, no gap), in order (settles first)."""
        return [f for f in self.frames if "s" in f]

    def events(self, event: str) -> list[Any]:
        """The payloads of every numbered ``event`` frame so far, in order (settles first)."""
        self._harness.settle()
        self._check()
        return self._payloads(event)

    def _check(self) -> None:
        if self._broken is not None:
            raise AssertionError(self._broken)

    def _payloads(self, event: str) -> list[Any]:
        return [f.get("p") for f in self._frames if "s" in f and f.get("e") == event]

    @property
    def last_seq(self) -> int:
        """The highest ``s`` received (0 before the first numbered frame)."""
        for frame in reversed(self._frames):
            if "s" in frame:
                return int(frame["s"])
        return 0

    # -- the session's state --------------------------------------------------------------------------
    @property
    def data(self) -> dict[str, Any]:
        """The session's ``data`` dict (the object handlers see as ``ctx.session.data``)."""
        data: dict[str, Any] = self._view().data
        return data

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms the session is in."""
        self._harness.settle()
        return frozenset(self._view().rooms)

    @property
    def alive(self) -> bool:
        """True until the session ends (TTL, buffer overflow, failure, end of the harness)."""
        return bool(self._ref.is_alive())

    def _view(self) -> Any:
        # The session actor's WsSession (handlers' ctx.session), fetched through the
        # actor's inbox, so after what was sent to it. The object is live: read it
        # between requests (gevent is cooperative; nothing changes it while a test reads).
        if self._view_cache is None:
            self._view_cache = self._ref.proxy().view.get(timeout=self._harness.timeout)
        return self._view_cache


class HandlerTestServer:
    """Runs ``server``'s actors (router, sessions, rooms) in process, without a listener."""

    def __init__(self, server: WsServer, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.server = server
        self.timeout = timeout
        self._router: Any = None
        self._sessions: list[HandlerTestSession] = []

    def __enter__(self) -> HandlerTestServer:
        server = self.server
        if server._router is not None or server._transport is not None:
            raise UsageError("HandlerTestServer needs a server that is not started (nor in a test)")
        self._router = RouterActor.start(make_env=server._make_env,
                                         behaviour_for=server.rooms._behaviour_for)
        server._router = self._router  # what server.rooms / send_to_* route through
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """End every session (close 1001, rooms left), stop the router and the rooms."""
        router = self._router
        if router is None:
            return
        self._router = None
        try:
            router.tell(StopAll(CLOSE_GOING_AWAY, "test server closed"))
        except pykka.ActorDeadError:
            pass
        router.actor_stopped.wait(self.timeout)
        for s in self._sessions:
            s._ref.actor_stopped.wait(self.timeout)
        if self.server._router is router:
            self.server._router = None

    def session(self, *, user_id: str | None = None, token: str | None = None,
                headers: dict[str, str] | None = None) -> HandlerTestSession:
        """Open and attach a new session.

        With ``token``, the server's authenticator decides (as on a real
        handshake) and ``user_id`` must be None; a refusal raises WsError 1004,
        no token on a ``require_auth`` server 1003. Without ``token``,
        ``user_id`` is taken as is (the authenticator is not run).
        """
        router = self._require_router()
        info = ConnectionInfo(("127.0.0.1", 0), dict(headers or {}),
                              {"token": token} if token is not None else {}, self.server.config.path)
        expires_at = None
        if token is not None:
            if user_id is not None:
                raise UsageError("give user_id or token, not both")
            result = self._authenticate(info, token)
            user_id, expires_at = result.user_id, result.expires_at
        elif self.server.config.require_auth and user_id is None:
            raise WsError(ErrorCode.AUTH_REQUIRED, "a token is required")
        opened = router.ask(OpenSession(user_id), timeout=self.timeout)
        s = HandlerTestSession(self, opened.session_id, opened.session_ref, user_id, expires_at, info)
        s._attach(None)
        self._sessions.append(s)
        s._wait(lambda f: f.get("e") == "sys.connected", 0, None, "sys.connected")
        return s

    def _authenticate(self, info: ConnectionInfo, token: str) -> AuthResult:
        authenticator = self.server.authenticator
        if authenticator is None:
            return AuthResult(ok=True)  # no authenticator: tokens carry no identity
        try:
            result = authenticator.authenticate(info, token)
        except Exception as exc:
            raise WsError(ErrorCode.AUTH_FAILED, f"the authenticator raised {exc!r}") from exc
        if not isinstance(result, AuthResult) or not result.ok:
            raise WsError(ErrorCode.AUTH_FAILED, getattr(result, "error", None) or "token refused")
        return result

    def settle(self) -> None:
        """Wait until the router, every room of a test session and every test session have
        handled what was sent to them before this call (twice, for one hop of follow-ups)."""
        router = self._router
        if router is None:
            return
        for _ in range(2):
            _ask_quietly(router, Stats(), self.timeout)
            room_ids = {r for s in self._sessions if s.alive for r in s._view().rooms}
            for room_id in sorted(room_ids):
                room = _ask_quietly(router, FindRoom(room_id), self.timeout)
                if room is not None:
                    _ask_quietly(room, Stats(), self.timeout)
            for s in self._sessions:
                _ask_quietly(s._ref, Stats(), self.timeout)

    def members(self, room_id: str) -> list[str]:
        """The session ids in ``room_id`` (what ``server.rooms.members`` answers)."""
        self._require_router()
        self.settle()
        return self.server.rooms.members(room_id)

    def _require_router(self) -> Any:
        if self._router is None:
            raise UsageError("use HandlerTestServer in a with block (or after __enter__)")
        return self._router


def _ask_quietly(ref: Any, message: Any, timeout: float) -> Any:
    try:
        return ref.ask(message, timeout=timeout)
    except pykka.ActorDeadError:
        return None


@contextmanager
def session(server: WsServer, *, user_id: str | None = None, token: str | None = None,
            timeout: float = DEFAULT_TIMEOUT) -> Iterator[HandlerTestSession]:
    """One test session on ``server``: ``with wscore.testing.session(server, user_id="a") as s:``."""
    with HandlerTestServer(server, timeout=timeout) as t:
        yield t.session(user_id=user_id, token=token)
