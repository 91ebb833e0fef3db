"""Fixtures for the client tests: a real WsServer on 127.0.0.1:0 with a small test app,
and WsClients that are always closed at teardown. No mocks of the server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import gevent
import gevent.event
import pytest
from wshelpers import wait_for

from wscore import ErrorCode, WsContext, WsError, WsServer, WsServerConfig
from wscore.client import WsClient, WsClientConfig

#: Fast reconnects for tests; open_timeout bounds an attempt held by a blackhole.
FAST = WsClientConfig(
    backoff_base=0.02,
    backoff_cap=0.2,
    open_timeout=2.0,
    connect_timeout=10.0,
    request_timeout=10.0,
    ack_delay=0.05,
    close_timeout=2.0,
)


class App:
    """The server side of the tests: records what ran, in order."""

    def __init__(self, server: WsServer) -> None:
        self.server = server
        self.ran: list[Any] = []  # payloads of 'record', in the order the handler ran them
        self.release = gevent.event.Event()  # 'slow' waits on it
        self.slow_started = gevent.event.Event()

        @server.on("echo")
        def echo(ctx: WsContext) -> Any:
            return ctx.payload

        @server.on("record")
        def record(ctx: WsContext) -> None:
            self.ran.append(ctx.payload)

        @server.on("count")
        def count(ctx: WsContext) -> int:
            return len(self.ran)

        @server.on("fail")
        def fail(ctx: WsContext) -> None:
            raise WsError(ErrorCode.VALIDATION_FAILED, "nope", {"field": "x"})

        @server.on("room.join")
        def join(ctx: WsContext) -> dict[str, str]:
            server.rooms.join(ctx.payload["roomId"], ctx.session)
            return {"joined": ctx.payload["roomId"]}

        @server.on("room.say")
        def say(ctx: WsContext) -> None:
            ctx.broadcast_to_room(ctx.payload["roomId"], "room.msg", ctx.payload["body"])

        @server.on("emit")
        def emit(ctx: WsContext) -> None:
            for i in range(int(ctx.payload)):
                ctx.emit("tick", i)

        @server.on("slow")
        def slow(ctx: WsContext) -> str:
            self.slow_started.set()
            self.release.wait(10.0)
            return "done"

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port


@pytest.fixture
def make_app() -> Iterator[Callable[..., App]]:
    apps: list[App] = []

    def make(*, authenticator: Any = None, **overrides: Any) -> App:
        cfg = WsServerConfig.dev(
            **{
                "host": "127.0.0.1",
                "port": 0,
                "ping_interval": 0.5,
                "ping_timeout": 5.0,
                **overrides,
            }
        )
        server = WsServer(config=cfg, authenticator=authenticator)
        app = App(server)
        server.start()
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.release.set()  # let any 'slow' handler finish
        app.server.stop()


@pytest.fixture
def app(make_app: Callable[..., App]) -> App:
    return make_app()


@pytest.fixture
def make_client() -> Iterator[Callable[..., WsClient]]:
    made: list[WsClient] = []

    def make(url: str, token: str | None = None, *, token_provider: Any = None,
             **overrides: Any) -> WsClient:
        client = WsClient(url, token, token_provider=token_provider,
                          config=attrs.evolve(FAST, **overrides))
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait for ``predicate`` with a deadline (yields to the hub; fails the test on timeout)."""
    wait_for(predicate, timeout=timeout, what=what)


class Recorder:
    """Collects callback arguments; ``wait(n)`` blocks until n arrived (deadline)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = gevent.event.Event()

    def __call__(self, *args: Any) -> None:
        self.items.append(args[0] if len(args) == 1 else args)
        self._changed.set()

    def wait(self, n: int = 1, timeout: float = 10.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while len(self.items) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"got {len(self.items)} of {n} within {timeout} s")
            self._changed.clear()
            if len(self.items) < n:
                self._changed.wait(remaining)
        return self.items


@pytest.fixture
def recorder() -> type[Recorder]:
    """The :class:`Recorder` class (tests do not import conftest modules)."""
    return Recorder


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., None]:
    return wait_until
