"""Fixtures for server tests: real servers on 127.0.0.1:0 and raw websocket-client peers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from wshelpers import RawClient

from wscore import WsServer, WsServerConfig


@pytest.fixture
def make_server() -> Iterator[Callable[..., WsServer]]:
    servers: list[WsServer] = []

    def make(**overrides: Any) -> WsServer:
        authenticator = overrides.pop("authenticator", None)
        setup = overrides.pop("setup", None)
        cfg = WsServerConfig.dev(**{"host": "127.0.0.1", "port": 0, **overrides})
        server = WsServer(config=cfg, authenticator=authenticator)
        if setup is not None:
            setup(server)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., RawClient]]:
    made: list[RawClient] = []

    def connect(url: str, **kwargs: Any) -> RawClient:
        client = RawClient(url, **kwargs)
        made.append(client)
        return client

    yield connect
    for client in made:
        client.close()
