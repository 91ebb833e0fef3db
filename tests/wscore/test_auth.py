"""Handshake authentication, token expiry, in-band refresh and session theft (SPEC §3)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import gevent.event
import pytest
from wshelpers import RawClient, wait_for

from wscore import AuthResult, ConfigError, ConnectionInfo, WsAuthenticator, WsContext, WsServer


class TableAuth(WsAuthenticator):
    """Tokens look like ``user:ttl``; ``ttl`` seconds from now (or ``-`` for no expiry)."""

    def __init__(self) -> None:
        self.seen: list[ConnectionInfo] = []
        self.gate: gevent.event.Event | None = None

    def authenticate(self, conn: ConnectionInfo, token: str) -> AuthResult:
        self.seen.append(conn)
        if self.gate is not None and token.startswith("slow"):
            self.gate.wait()  # an authenticator blocking on I/O
        user, _, ttl = token.partition(":")
        if user == "bad" or not user:
            return AuthResult.failure(error="unknown token")
        if user == "raise":
            raise RuntimeError("auth backend down")
        expires = None if ttl in ("", "-") else time.time() + float(ttl)
        return AuthResult.success(user_id=user, expires_at=expires)


def whoami_app(server: WsServer) -> None:
    @server.on("whoami")
    def whoami(ctx: WsContext) -> Any:
        return {"user": ctx.user_id}

    @server.on("set")
    def set_(ctx: WsContext) -> Any:
        ctx.session.data["v"] = ctx.payload
        return True

    @server.on("get")
    def get(ctx: WsContext) -> Any:
        return ctx.session.data.get("v")


@pytest.fixture
def auth_server(make_server: Any) -> tuple[WsServer, TableAuth]:
    auth = TableAuth()
    return make_server(require_auth=True, authenticator=auth, setup=whoami_app), auth


def test_missing_token_gets_1003_then_close_4003(auth_server: Any, clients: Any) -> None:
    server, _ = auth_server
    c = clients(server.url)
    err = c.recv()
    assert err["e"] == "sys.error" and err["p"]["code"] == 1003 and "s" not in err
    assert c.recv_close() == 4003


@pytest.mark.parametrize("token", ["bad", "raise", "gone:-1"])
def test_refused_token_gets_1004_then_close_4004(auth_server: Any, clients: Any, token: str) -> None:
    server, _ = auth_server
    c = clients(f"{server.url}?token={token}")
    err = c.recv()
    assert err["p"]["code"] == 1004 and "auth backend" not in err["p"]["message"]
    assert c.recv_close() == 4004


def test_token_from_query_and_bearer_header(auth_server: Any, clients: Any) -> None:
    server, auth = auth_server
    q = clients(f"{server.url}?token={quote('ann smith:-')}")
    assert q.recv()["e"] == "sys.connected"
    assert q.request("whoami", None)["p"] == {"user": "ann smith"}
    h = clients(server.url, header=["Authorization: Bearer bob:-"])
    assert h.recv()["e"] == "sys.connected"
    assert h.request("whoami", None)["p"] == {"user": "bob"}
    assert auth.seen[-1].headers["Authorization"] == "Bearer bob:-"
    assert auth.seen[-1].remote_address[0] == "127.0.0.1"


def test_require_auth_without_authenticator_is_a_config_error() -> None:
    from wscore import WsServerConfig

    with pytest.raises(ConfigError, match="authenticator"):
        WsServer(config=WsServerConfig.dev(port=0, require_auth=True)).start()


def test_token_expiry_closes_with_4005_unless_refreshed(auth_server: Any, clients: Any) -> None:
    server, _ = auth_server
    expiring = clients(f"{server.url}?token=ann:0.3")
    assert expiring.recv()["e"] == "sys.connected"
    err = expiring.recv()  # no message needed: a timer enforces expiry
    assert err["p"]["code"] == 1005 and "s" not in err
    assert expiring.recv_close() == 4005

    refreshed = clients(f"{server.url}?token=bob:1.5")
    sid = refreshed.recv()["p"]["sessionId"]
    for i in range(4):  # refresh in-band before each expiry; together they outlive the first
        ack = refreshed.request("sys.auth", {"token": "bob:1.5"}, c=f"auth{i}")
        assert ack["e"] == "ack"
        refreshed.ws.settimeout(0.5)
        with pytest.raises(Exception, match="timed out"):
            refreshed.recv()  # nothing arrives: no 1005
        refreshed.ws.settimeout(5)
    assert refreshed.request("whoami", None)["p"] == {"user": "bob"}
    # The session outlives the expired connection: resume with a fresh token.
    refreshed.send({"e": "set", "p": 42, "c": "s"})
    assert refreshed.recv_until(lambda f: f.get("c") == "s")["e"] == "ack"
    err = refreshed.recv_until(lambda f: f["e"] == "sys.error")
    assert err["p"]["code"] == 1005
    again = clients(f"{server.url}?token=bob:-&session={sid}&last_seq=0")
    assert again.recv_until(lambda f: f["e"] == "sys.connected")["p"]["resumed"] is True
    assert again.request("get", None, c="g")["p"] == 42


def test_sys_auth_for_another_user_closes_4004(auth_server: Any, clients: Any) -> None:
    server, _ = auth_server
    c = clients(f"{server.url}?token=ann:-")
    c.recv()
    c.send({"e": "sys.auth", "p": {"token": "mallory:-"}, "c": "x"})
    assert c.recv()["p"]["code"] == 1004
    assert c.recv_close() == 4004


def test_resume_by_another_user_is_refused_and_the_session_untouched(auth_server: Any, clients: Any
                                                                     ) -> None:
    server, _ = auth_server
    ann = clients(f"{server.url}?token=ann:-")
    sid = ann.recv()["p"]["sessionId"]
    ann.request("set", "secret", c="1")
    thief = clients(f"{server.url}?token=mallory:-&session={sid}&last_seq=0")
    assert thief.recv()["p"]["code"] == 1004
    assert thief.recv_close() == 4004
    # ann's connection was not taken over and her session kept its data
    assert ann.request("get", None, c="2")["p"] == "secret"
    anon = clients(f"{server.url}?session={sid}&last_seq=0")
    assert anon.recv()["p"]["code"] == 1003


def test_a_blocking_authenticator_does_not_stall_other_connections(auth_server: Any, clients: Any
                                                                   ) -> None:
    server, auth = auth_server
    auth.gate = gevent.event.Event()
    slow = gevent.spawn(RawClient, f"{server.url}?token=slow:-")
    wait_for(lambda: len(auth.seen) == 1, what="slow authentication to start")
    fast = clients(f"{server.url}?token=fast:-")  # would block if authentication were serial
    assert fast.recv()["e"] == "sys.connected"
    auth.gate.set()
    slow_client = slow.get(timeout=5)
    assert slow_client.recv()["e"] == "sys.connected"
    slow_client.close()


def test_session_ids_and_tokens_are_never_logged(auth_server: Any, clients: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    server, _ = auth_server
    caplog.set_level("DEBUG", logger="wscore")
    c = clients(f"{server.url}?token=ann:-")
    sid = c.recv()["p"]["sessionId"]
    c.cut()
    thief = clients(f"{server.url}?token=eve:-&session={sid}")
    thief.recv()
    wait_for(lambda: server.stats()["connections"] == 0, what="connections to end")
    messages = [r.getMessage() for r in caplog.records]
    assert any("GET /ws" in m for m in messages)  # the access log is there …
    assert not any(sid in m or "ann:-" in m or "eve:-" in m for m in messages)  # … redacted
