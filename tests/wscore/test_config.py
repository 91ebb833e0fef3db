"""WsServerConfig values: what a log line or an error may show of a Redis URL."""

from __future__ import annotations

import logging
import socket

import pytest

from wscore import WsServer, WsServerConfig
from wscore.config import redacted_url
from wscore.errors import ConfigError


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://app:hunter2@cache:6380/1", "rediss://app:***@cache:6380/1"),
    ("redis://hunter2@cache/0", "<a URL with credentials>"),
    ("redis://cache:6379/0?password=hunter2&db=1", "redis://cache:6379/0?password=***&db=1"),
    ("redis://app:hunter2@cache/0?socket_timeout=5", "redis://app:***@cache/0?socket_timeout=5"),
])
def test_a_redis_password_is_never_shown(url: str, shown: str) -> None:
    assert redacted_url(url) == shown


def test_an_unusable_redis_is_reported_without_its_password(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = WsServer(config=WsServerConfig.dev(host="127.0.0.1", port=0,
                                                redis_url=f"redis://:hunter2@127.0.0.1:{port}/0"))
    caplog.set_level(logging.DEBUG, logger="wscore")
    with pytest.raises(ConfigError) as refused:
        server.start()
    assert f"redis://:***@127.0.0.1:{port}/0" in str(refused.value)
    assert "hunter2" not in str(refused.value) and "hunter2" not in caplog.text


def test_a_malformed_redis_url_is_refused_without_its_password() -> None:
    with pytest.raises(ConfigError) as refused:
        WsServerConfig(redis_url="http://:hunter2@cache:6379/0")
    assert "hunter2" not in str(refused.value) and "***" in str(refused.value)
