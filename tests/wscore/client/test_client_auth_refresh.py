"""Token expiry and refresh from the client's side (SPEC §3, issue #4 item 2).

A real server with ``require_auth=True`` and an authenticator whose tokens
look like ``user:ttl[:tag]`` (``ttl`` seconds from now, ``-`` for never).
Every wait is on an event or a condition with a deadline; nothing asserts an
upper bound on time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent.event
import pytest
from wshelpers import wait_for

from wscore import (
    AuthResult,
    ConnectionInfo,
    ErrorCode,
    WsAuthenticator,
    WsContext,
    WsError,
    WsServer,
    WsServerConfig,
)
from wscore.client import ConnectionClosed, WsClient, WsClientConfig
from wscore.errors import ConfigError, UsageError
from wscore.protocol.client_session import token_refresh_at

LIFETIME = 1.5  # seconds a test token lives: the margin (30 s by default) is capped to half



class TtlAuth(WsAuthenticator):
    """Tokens ``user:ttl[:tag]``; records every token it was shown, in order."""

    def __init__(self) -> None:
        self.tokens: list[str] = []

    def authenticate(self, conn: ConnectionInfo, token: str) -> AuthResult:
        self.tokens.append(token)
        user, _, rest = token.partition(":")
        ttl = rest.partition(":")[0]
        if not user or user == "bad":
            return AuthResult.failure(error="unknown token")
        expires = None if ttl in ("", "-") else time.time() + float(ttl)
        return AuthResult.success(user_id=user, expires_at=expires)


class Provider:
    """A ``token_provider``: ``user:LIFETIME:pN``; raises while ``failing`` is set."""

    def __init__(self, user: str = "ann") -> None:
        self.user = user
        self.failing = False
        self.calls = 0
        self.issued: list[str] = []

    def __call__(self) -> str:
        self.calls += 1
        if self.failing:
            raise RuntimeError("auth server unreachable")
        token = f"{self.user}:{LIFETIME}:p{self.calls}"
        self.issued.append(token)
        return token


class Events:
    """Hook/listener arguments by name, with deadline waits."""

    def __init__(self) -> None:
        self.items: dict[str, list[Any]] = {}
        self._changed = gevent.event.Event()

    def hook(self, name: str) -> Callable[[Any], None]:
        def record(arg: Any) -> None:
            self.items.setdefault(name, []).append(arg)
            self._changed.set()

        return record

    def get(self, name: str) -> list[Any]:
        return self.items.get(name, [])

    def wait(self, name: str, n: int = 1, timeout: float = 15.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.get(name)) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{len(self.get(name))} of {n} {name!r} within {timeout} s")
            self._changed.clear()
            if len(self.get(name)) < n:
                self._changed.wait(remaining)
        return self.get(name)


@pytest.fixture
def server() -> Iterator[tuple[WsServer, TtlAuth]]:
    auth = TtlAuth()
    cfg = WsServerConfig.dev(host="127.0.0.1", port=0, require_auth=True,
                             ping_interval=0.5, ping_timeout=5.0)
    srv = WsServer(config=cfg, authenticator=auth)

    @srv.on("echo")
    def echo(ctx: WsContext) -> Any:
        return ctx.payload

    @srv.on("set")
    def set_(ctx: WsContext) -> bool:
        ctx.session.data["v"] = ctx.payload
        return True

    @srv.on("get")
    def get(ctx: WsContext) -> Any:
        return ctx.session.data.get("v")

    srv.start()
    yield srv, auth
    srv.stop()




def watch(client: WsClient) -> Events:
    events = Events()
    client.on_disconnect(events.hook("disconnect"))
    client.on_resume(events.hook("resume"))
    client.on_connect(events.hook("connect"))
    client.on("sys.error", events.hook("error"))
    return events


# -- pure parts ---------------------------------------------------------------------------------
def test_refresh_margin_is_capped_at_half_the_remaining_lifetime() -> None:
    assert token_refresh_at(1000.0, 900.0, 30.0) == 970.0  # long-lived: margin before expiry
    assert token_refresh_at(1001.5, 1000.0, 30.0) == 1000.75  # short-lived: halfway
    assert token_refresh_at(1000.0, 1000.5, 30.0) == 1000.5  # already expired (skew): now


@pytest.mark.parametrize("field", ["token_refresh_margin", "token_refresh_timeout"])
def test_refresh_config_must_be_positive(field: str) -> None:
    bad: dict[str, Any] = {field: 0}
    with pytest.raises(ConfigError, match=field):
        WsClientConfig(**bad)


def test_token_provider_must_be_callable() -> None:
    with pytest.raises(ConfigError):
        WsClient("ws://127.0.0.1:1/ws", token_provider="ann:1")  # type: ignore[arg-type]


# -- against a real server ----------------------------------------------------------------------
def test_provider_keeps_the_connection_past_several_expiries(
    server: tuple[WsServer, TtlAuth], make_client: Callable[..., WsClient]
) -> None:
    srv, auth = server
    provider = Provider()
    client = make_client(srv.url, token_provider=provider)
    events = watch(client)
    info = client.connect()
    assert info.expires_at is not None
    assert auth.tokens[0] == "ann:1.5:p1"  # the handshake token came from the provider
    assert client.request("set", "kept") is True

    # Wait until three whole token lifetimes have passed beyond the first token's expiry.
    wait_for(lambda: time.time() > info.expires_at + 3 * LIFETIME  # type: ignore[operator]
             and client.stats().token_refreshes >= 4, what="several expiries")

    stats = client.stats()
    assert events.get("disconnect") == [] and events.get("error") == []
    assert stats.connects == 1 and stats.failed_attempts == 0
    assert stats.token_refresh_failures == 0
    assert client.connected
    assert client.request("get") == "kept"
    assert client.request("echo", {"x": 1}) == {"x": 1}
    expires = client.token_expires_at
    assert expires is not None and expires > info.expires_at
    # Every refresh sent the provider's newest token; the server saw each one once.
    assert auth.tokens == provider.issued


def test_refresh_token_now_returns_the_new_expiry(
    server: tuple[WsServer, TtlAuth], make_client: Callable[..., WsClient]
) -> None:
    srv, auth = server
    client = make_client(srv.url, "ann:-")  # never expires: no automatic refresh
    info = client.connect()
    assert info.expires_at is None and client.token_expires_at is None

    expires = client.refresh_token("ann:60")
    assert expires is not None and expires > time.time() + 30
    assert client.token_expires_at == expires
    assert auth.tokens == ["ann:-", "ann:60"]
    assert client.stats().token_refreshes == 1
    # Without a provider an accepted token also becomes the client's token: a bare
    # refresh_token() re-sends it (and a reconnect would present it).
    again = client.refresh_token()
    assert again is not None and again >= expires
    assert auth.tokens == ["ann:-", "ann:60", "ann:60"]
    with pytest.raises(UsageError):
        client.refresh_token("bad\ntoken")


def test_provider_switching_user_is_refused_and_terminal(
    server: tuple[WsServer, TtlAuth], make_client: Callable[..., WsClient]
) -> None:
    srv, auth = server
    provider = Provider()
    client = make_client(srv.url, token_provider=provider)
    events = watch(client)
    client.connect()
    provider.user = "bob"  # the next refresh presents another user's token

    assert client.wait_closed(timeout=15.0)
    reason = client.close_reason
    assert isinstance(reason, WsError) and reason.code is ErrorCode.AUTH_FAILED
    closes = events.wait("disconnect")
    assert [c.code for c in closes] == [4004]
    assert client.stats().connects == 1
    with pytest.raises(WsError) as exc:
        client.connect()  # the client stopped for good: it does not reconnect
    assert exc.value.code is ErrorCode.AUTH_FAILED
    assert [t.split(":")[0] for t in auth.tokens] == ["ann"] * (len(auth.tokens) - 1) + ["bob"]


def test_refresh_token_while_offline_raises_connection_closed(
    server: tuple[WsServer, TtlAuth], make_client: Callable[..., WsClient]
) -> None:
    srv, _ = server
    client = make_client(srv.url, "ann:-")
    with pytest.raises(ConnectionClosed):
        client.refresh_token()  # not connected yet


def test_manual_refresh_with_another_users_token_raises_1004(
    server: tuple[WsServer, TtlAuth], make_client: Callable[..., WsClient]
) -> None:
    srv, _ = server
    client = make_client(srv.url, "ann:-")
    client.connect()
    with pytest.raises(WsError) as exc:
        client.refresh_token("bob:-")
    assert exc.value.code is ErrorCode.AUTH_FAILED
    assert client.wait_closed(timeout=15.0)


def test_without_provider_expiry_is_terminal(
    server: tuple[WsServer, TtlAuth], make_client: Callable[..., WsClient]
) -> None:
    srv, auth = server
    client = make_client(srv.url, f"ann:{LIFETIME}")
    events = watch(client)
    info = client.connect()
    assert info.expires_at is not None

    assert client.wait_closed(timeout=15.0)
    reason = client.close_reason
    assert isinstance(reason, WsError) and reason.code is ErrorCode.TOKEN_EXPIRED
    assert [e["code"] for e in events.wait("error")] == [1005]
    assert [c.code for c in events.wait("disconnect")] == [4005]
    assert client.stats().connects == 1 and auth.tokens == [f"ann:{LIFETIME}"]
    with pytest.raises(WsError):
        client.refresh_token()  # a stopped client raises its close reason


def test_missed_refresh_reconnects_with_a_fresh_token_and_resumes(
    server: tuple[WsServer, TtlAuth], make_client: Callable[..., WsClient]
) -> None:
    srv, auth = server
    provider = Provider()
    provider.failing = True  # every refresh fails: the token runs out

    client = make_client(srv.url, f"ann:{LIFETIME}:static", token_provider=provider)
    events = watch(client)

    @client.on("sys.error")
    def recover(payload: Any) -> None:
        if payload.get("code") == ErrorCode.TOKEN_EXPIRED.value:
            provider.failing = False  # the auth server is back for the reconnect

    info = client.connect()
    session = client.session_id
    assert client.request("set", {"cart": [1, 2]}) is True
    assert auth.tokens == [f"ann:{LIFETIME}:static"]  # `token` serves the first attempt

    resumed = events.wait("resume")
    assert resumed[0].resumed and client.session_id == session
    assert [e["code"] for e in events.get("error")] == [1005]
    assert [c.code for c in events.get("disconnect")] == [4005]
    assert client.request("get") == {"cart": [1, 2]}  # session data kept
    stats = client.stats()
    assert stats.connects == 2 and stats.resumes == 1 and stats.sessions_lost == 0
    assert stats.token_refresh_failures >= 1
    assert not client.closed
    # The reconnect authenticated with a token fresh from the provider.
    assert len(auth.tokens) >= 2 and auth.tokens[1] in provider.issued
    expires = client.token_expires_at
    assert expires is not None and info.expires_at is not None and expires > info.expires_at
