"""WsClientConfig validation and the CLI's pure line parser."""

from __future__ import annotations

import attrs
import pytest

from wscore.client import WsClient, WsClientConfig
from wscore.client.cli import parse_line
from wscore.errors import ConfigError, UsageError


def test_defaults_are_valid_and_frozen() -> None:
    cfg = WsClientConfig()
    assert cfg.reconnect and cfg.max_reconnect_attempts is None  # forever by default
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        cfg.backoff_base = 1.0  # type: ignore[misc]
    assert attrs.evolve(cfg, backoff_cap=1.0).backoff_cap == 1.0


@pytest.mark.parametrize(
    "overrides",
    [
        {"backoff_base": 0},
        {"backoff_base": 2.0, "backoff_cap": 1.0},
        {"request_timeout": -1},
        {"max_unacked_frames": 0},
        {"max_reconnect_attempts": 0},
        {"dead_link_timeout": 1.0, "probe_after": 2.0},
        {"open_timeout": True},
    ],
)
def test_invalid_values_name_the_field(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="WsClientConfig"):
        WsClientConfig(**overrides)  # type: ignore[arg-type]


def test_options_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        WsClientConfig(1.0)  # type: ignore[misc]
    with pytest.raises(TypeError):
        WsClient("ws://h/ws", None, WsClientConfig())  # type: ignore[misc]


def test_bad_url_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="ws://"):
        WsClient("http://localhost/ws")


def test_reserved_and_empty_events_are_refused_before_queueing() -> None:
    client = WsClient("ws://127.0.0.1:9/ws")
    with pytest.raises(UsageError, match="reserved"):
        client.send("sys.ping")
    with pytest.raises(UsageError):
        client.send("")
    with pytest.raises(TypeError):
        client.send("x", object())  # not JSON
    assert client.stats().unacked_frames == 0


def test_parse_line() -> None:
    assert parse_line("   ") is None
    assert parse_line('chat.message {"text": "hi"}\n') == (False, "chat.message", {"text": "hi"})
    assert parse_line('?room.join {"roomId":"r"}') == (True, "room.join", {"roomId": "r"})
    assert parse_line("ping") == (False, "ping", None)
    assert parse_line("? echo 3") == (True, "echo", 3)
    with pytest.raises(ValueError, match="not JSON"):
        parse_line("x {bad")
    with pytest.raises(ValueError, match="missing event"):
        parse_line("?")
