"""Fixtures for the sandbox tests: real servers on 127.0.0.1, port 0."""

from gevent import monkey

monkey.patch_all()

from collections.abc import Iterator

import pytest
from sandbox_helpers import EchoTcpServer, EchoWsServer


@pytest.fixture
def ws_echo() -> Iterator[EchoWsServer]:
    server = EchoWsServer()
    yield server
    server.stop()


@pytest.fixture
def tcp_echo() -> Iterator[EchoTcpServer]:
    server = EchoTcpServer()
    yield server
    server.stop()
