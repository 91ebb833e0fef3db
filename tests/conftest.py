"""Root test configuration: make the process gevent-ready before anything else."""

from gevent import monkey

monkey.patch_all()

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pykka
import pytest
from cluster.redisproc import RedisServer


@pytest.fixture(autouse=True)
def _no_actor_leaks() -> object:
    """Every test starts and ends with no running actor (teardown stops stragglers)."""
    yield
    pykka.ActorRegistry.stop_all(block=True, timeout=5)


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


logging.getLogger("wscore").setLevel(logging.DEBUG)
