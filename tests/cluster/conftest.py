"""Fixtures for the Redis layer: each test gets its OWN redis-server (see ``redisproc``).

``make_node(**config)`` starts in-process ``clusterapp`` nodes on that server and
``raw(url)`` connects websocket-client peers; both are closed at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from clusterapp import build
from redisproc import RedisServer
from wshelpers import RawClient

from wscore import WsServer, WsServerConfig
from wscore.cluster.generation import Generation
from wscore.cluster.writer import RedisWriter


@pytest.fixture
def writer(redis_server: RedisServer) -> Iterator[RedisWriter]:
    w = RedisWriter(redis_server.url, reconnect_min_delay=0.01, reconnect_max_delay=0.1)
    w.start()
    yield w
    w.stop()


@pytest.fixture
def generation(writer: RedisWriter) -> Generation:
    g = Generation(writer)
    g.establish()
    return g


@pytest.fixture
def make_node(redis_server: RedisServer) -> Iterator[Callable[..., WsServer]]:
    made: list[WsServer] = []

    def make(**overrides: Any) -> WsServer:
        cfg = WsServerConfig.dev(**{"host": "127.0.0.1", "port": 0, "redis_url": redis_server.url,
                                    "session_ttl": 60.0, "shutdown_timeout": 2.0, **overrides})
        server = build(cfg)
        server.start()
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def raw() -> Iterator[Callable[..., RawClient]]:
    made: list[RawClient] = []

    def connect(url: str) -> RawClient:
        client = RawClient(url)
        made.append(client)
        return client

    yield connect
    for client in made:
        client.close()
