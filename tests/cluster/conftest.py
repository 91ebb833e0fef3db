"""Fixtures for the Redis layer: each test gets its OWN redis-server (see ``redisproc``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from redisproc import RedisServer

from wscore.cluster.generation import Generation
from wscore.cluster.writer import RedisWriter


@pytest.fixture
def redis_factory(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``redis_factory(appendonly=True)`` starts a server; all are stopped by PID at teardown."""
    started: list[RedisServer] = []

    def make(*, appendonly: bool = False, appendfsync: str = "always") -> RedisServer:
        directory = tmp_path / f"redis{len(started)}"
        directory.mkdir()
        server = RedisServer(directory, appendonly=appendonly, appendfsync=appendfsync)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def redis_server(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    """A redis-server without persistence (a restart comes back empty)."""
    return redis_factory()


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
