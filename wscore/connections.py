"""One connection's life on the server: handshake verdict, attach, read loop (composition layer).

:class:`ConnectionHandler` runs in each upgraded connection's own greenlet
(the *reader*): it authenticates the handshake, asks the router for a session
— new, resumed here, or (with Redis) claimed from another node and hydrated
here — asks that session to ``Attach``, then decodes frames and tells them to
it, with backpressure, until the socket ends. Then it tells the session
``Detach`` (the session lives on for ``session_ttl``) or, after a 1000 close,
``EndSession`` (SPEC §7). The protocol's verdicts (resume, 1006, stale
attempts, takeover) are the session's, in :class:`wscore.protocol.ServerSession`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import gevent.lock
import pykka

from wscore.actors.connection import ActorWriter, ConnectionActor
from wscore.actors.messages import (
    AdoptSession,
    Attach,
    AttachResult,
    ClaimResult,
    ClaimSession,
    ClientFrame,
    Detach,
    EndSession,
    Handover,
    JoinRoom,
    OpenSession,
    Unparseable,
)
from wscore.actors.store import Hydration
from wscore.auth import AuthResult, ConnectionInfo, token_from
from wscore.errors import ConnectionClosed, PeerProtocolError, WsError
from wscore.outbox import Outbox
from wscore.protocol.codes import (
    CLOSE_NORMAL,
    CLOSE_REPLACED,
    CLOSE_SERVICE_RESTART,
    EVERYONE_ROOM,
    ErrorCode,
)
from wscore.protocol.envelope import decode_envelope, encode_error
from wscore.transport import WsTransport

if TYPE_CHECKING:
    from wscore.server import WsServer

__all__ = ["ConnectionHandler", "LiveConnection"]

log = logging.getLogger("wscore.server")

_ASK_TIMEOUT = 10.0
#: Client frames one connection may have handed to its session and not yet seen
#: handled. Past it the reader stops reading, so TCP slows a client that pipelines
#: faster than its session runs, instead of its replies piling up (SPEC §4).
_INBOUND_WINDOW = 64
#: How often a reader held back by backpressure re-checks that its connection lives
#: (a periodic re-check of a condition it also waits on, not a synchronisation).
_BACKPRESSURE_RECHECK_SECONDS = 1.0


class LiveConnection:
    """The server's record of one live connection (for heartbeat, /healthz, shutdown)."""

    __slots__ = ("last_ping", "outbox", "transport")

    def __init__(self, transport: WsTransport, outbox: Outbox) -> None:
        self.transport = transport
        self.outbox = outbox
        self.last_ping = time.monotonic()


class ConnectionHandler:
    """Serves each upgraded connection of one :class:`~wscore.WsServer` (its friend: it
    reads the server's config, router, cluster node and connection table)."""

    def __init__(self, server: WsServer) -> None:
        self._server = server

    def serve(self, transport: WsTransport) -> None:
        """Run one upgraded connection in its own greenlet until it ends."""
        cfg = self._server.config
        conn_id = next(self._server._conn_ids)
        outbox = Outbox(conn_id, transport, limit=cfg.max_queued_frames)
        writer = ActorWriter(ConnectionActor.start(outbox))
        outbox.writer = writer
        self._server._conns[conn_id] = LiveConnection(transport, outbox)
        self._server._all_closed.clear()
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
            del self._server._conns[conn_id]
            if not self._server._conns:
                self._server._all_closed.set()

    def _authenticate(self, transport: WsTransport) -> AuthResult | None:
        """The handshake's verdict; None when refused (the refusal was already sent)."""
        token = token_from(transport.query, transport.headers)
        if token is None:
            if self._server.config.require_auth:
                self._refuse(transport, WsError(ErrorCode.AUTH_REQUIRED, "a token is required"))
                return None
            return AuthResult(ok=True)
        if self._server.authenticator is None:
            return AuthResult(ok=True)  # no authenticator: tokens carry no identity
        result = self.run_authenticator(_conn_info(transport), token)
        if not result.ok:
            self._refuse(transport, WsError(ErrorCode.AUTH_FAILED, result.error or "token refused"))
            return None
        return result

    def run_authenticator(self, conn: ConnectionInfo, token: str) -> AuthResult:
        """The authenticator's verdict; never raises (a raising authenticator refuses)."""
        assert self._server.authenticator is not None
        try:
            result = self._server.authenticator.authenticate(conn, token)
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
        router = self._server._router
        resume_id = transport.query.get("session")
        client_tag = transport.query.get("client") or None
        attempt = _int_or_zero(transport.query.get("attempt")) or None
        if resume_id:
            last_seq = _int_or_zero(transport.query.get("last_seq"))
            claim = router.ask(ClaimSession(resume_id, auth.user_id), timeout=_ASK_TIMEOUT)
            if claim.session_ref is not None and self._server._cluster is not None:
                claim = self._still_ours(resume_id, claim)
            if claim.refusal == "not_found" and self._server._cluster is not None:
                claim = self._claim_elsewhere(resume_id, auth.user_id, last_seq)
                if claim is None:
                    transport.close(CLOSE_SERVICE_RESTART, "session store unavailable; retry")
                    return None
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
        if self._server._cluster is not None:
            try:
                everyone = self._server._cluster.create(opened.session_id, auth.user_id)
            except Exception as exc:
                log.warning("new session not stored (%s); connection refused", exc)
                opened.session_ref.tell(EndSession(CLOSE_SERVICE_RESTART, "store unavailable"))
                transport.close(CLOSE_SERVICE_RESTART, "session store unavailable; retry")
                return None
            # Stored a member of the everyone room (broadcasts) at that cursor; now locally.
            router.tell(JoinRoom(EVERYONE_ROOM, opened.session_id, everyone))
        result = opened.session_ref.ask(
            Attach(conn_id, outbox, None, auth.user_id, auth.expires_at, _conn_info(transport),
                   client_tag, attempt), timeout=_ASK_TIMEOUT)
        return opened.session_ref if result.ok else None

    def _still_ours(self, session_id: str, claim: ClaimResult) -> ClaimResult:
        """A resume of a session this node holds: check Redis still says so (one read).

        Another node may have claimed it while the hand-over message was lost: then
        the local actor is stale (its next write would be fenced) and is dropped, and
        the resume claims the session back from Redis instead (``not_found`` here).
        Redis unreachable: the local actor answers (its writes will tell).
        """
        try:
            owner = self._server._cluster.writer.execute(
                "HGET", self._server._cluster.log.keys(session_id)[1], "owner", timeout=_ASK_TIMEOUT)
        except Exception:
            return claim
        owner = owner.decode() if isinstance(owner, bytes) else owner
        if owner == self._server.node_id:
            return claim
        log.info("session held here was claimed by %r meanwhile; dropping the stale copy", owner)
        self._server._router.tell(Handover(session_id))
        return ClaimResult(None, "not_found")

    def _claim_elsewhere(self, session_id: str, user_id: str | None, last_seq: int
                         ) -> ClaimResult | None:
        """A resume of a session this node does not hold: claim it in Redis and hydrate it here.

        None when Redis cannot answer now (the caller closes with 1012: the
        session may well exist, so it must not be answered 1006).
        """
        from wscore.cluster.errors import ClusterError
        from wscore.cluster.node import Resumed

        try:
            outcome = self._server._cluster.resume(session_id, user_id, last_seq)
        except ClusterError as exc:
            log.warning("resume not possible now (Redis): %s", exc)
            return None
        if not isinstance(outcome, Resumed):
            return ClaimResult(None, "wrong_user" if outcome == "wrong_user" else "not_found")
        c = outcome.claim
        rooms = dict(c.rooms)
        run = outcome.run_room if outcome.run_room in rooms else None
        if run is not None:
            rooms[run] = outcome.run_cursor  # the replay read the open run up to there
        hydration = Hydration(epoch=c.epoch, resume_from=outcome.resume_from, frames=outcome.frames,
                              inbound=c.inbound, data=c.data, rooms=rooms,
                              inbox=c.inbox_taken, run=run)
        opened = self._server._router.ask(AdoptSession(session_id, user_id, hydration), timeout=_ASK_TIMEOUT)
        return ClaimResult(opened.session_ref)

    def _read_loop(self, conn_id: int, outbox: Outbox, transport: WsTransport, session_ref: Any
                   ) -> None:
        """Decode frames and hand every one to the session (which rate-limits them all).

        Backpressure: at most ``_INBOUND_WINDOW`` frames are in flight to the
        session, and reading pauses while the outbox holds half of
        ``max_queued_frames``; a client that pipelines but reads is slowed by
        TCP, never cut as a slow consumer (SPEC §4).
        """
        tell = session_ref.tell
        high_water = max(self._server.config.max_queued_frames // 2, 1)
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


def _now_ms() -> int:
    return int(time.time() * 1000)
