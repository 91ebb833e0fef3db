"""The client's HTTP upgrade helpers (pure, RFC 6455 §4.1)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from wscore.errors import ConfigError, PeerProtocolError
from wscore.protocol.frames import accept_key
from wscore.protocol.handshake import (
    build_upgrade_request,
    check_upgrade_response,
    make_key,
    parse_upgrade_response,
    parse_ws_url,
    replace_query,
)


def test_parse_ws_url_defaults_and_ports() -> None:
    url = parse_ws_url("ws://example.com/ws?token=a%20b")
    assert (url.secure, url.host, url.port) == (False, "example.com", 80)
    assert url.resource == "/ws?token=a%20b" and url.host_header == "example.com"
    url = parse_ws_url("wss://example.com:8443")
    assert (url.secure, url.port, url.resource, url.host_header) == (
        True, 8443, "/", "example.com:8443")
    url = parse_ws_url("ws://[::1]:9000/x")
    assert url.host == "::1" and url.host_header == "[::1]:9000"
    assert parse_ws_url("WS://h:1/p").geturl() == "ws://h:1/p"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("", "non-empty"),
        ("http://h/ws", "ws:// or wss://"),
        ("localhost:8080", "ws:// or wss://"),
        ("ws:///ws", "no host"),
        ("ws://h:99999/ws", "invalid WebSocket URL"),
        ("ws://h:abc/ws", "invalid WebSocket URL"),
        ("ws://h/ws#frag", "fragment"),
    ],
)
def test_parse_ws_url_rejects_with_one_line(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        parse_ws_url(url)
    assert "\n" not in str(info.value)


def test_replace_query_keeps_user_params_and_encodes() -> None:
    resource = replace_query("/ws?token=a%2Fb&x=1&session=old", {"session": "s/1+2", "last_seq": "7"})
    parts = urlsplit(resource)
    assert parts.path == "/ws"
    assert parse_qs(parts.query) == {
        "token": ["a/b"], "x": ["1"], "session": ["s/1+2"], "last_seq": ["7"]}
    assert "session=s%2F1%2B2" in parts.query
    assert replace_query("/", {"a": "b"}) == "/?a=b"


def test_upgrade_request_has_the_rfc_headers() -> None:
    key = make_key(bytes(range(16)))
    req = build_upgrade_request(
        parse_ws_url("ws://h:81/ws?q=1"), key=key, headers=[("Authorization", "Bearer t")])
    text = req.decode("latin-1")
    assert text.startswith("GET /ws?q=1 HTTP/1.1\r\n") and text.endswith("\r\n\r\n")
    for line in ("Host: h:81", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13",
                 "Authorization: Bearer t"):
        assert f"\r\n{line}\r\n" in text
    with pytest.raises(ConfigError):
        build_upgrade_request(parse_ws_url("ws://h/"), key=key, headers=[("X", "a\r\nEvil: 1")])
    with pytest.raises(ValueError):
        make_key(b"short")


def _response(key: str, **overrides: str) -> bytes:
    headers = {"Upgrade": "websocket", "Connection": "Upgrade",
               "Sec-WebSocket-Accept": accept_key(key), **overrides}
    head = "HTTP/1.1 101 Switching Protocols\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items() if v)
    return (head + "\r\n").encode("latin-1")


def test_response_parses_incrementally_and_keeps_the_rest() -> None:
    key = make_key(b"k" * 16)
    data = _response(key) + b"\x81\x02hi"
    for cut in range(len(data) - 4 - 4):
        assert parse_upgrade_response(data[:cut]) is None
    response = parse_upgrade_response(data)
    assert response is not None
    assert response.status == 101 and response.rest == b"\x81\x02hi"
    assert response.headers["upgrade"] == "websocket"
    check_upgrade_response(response, key)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"Sec-WebSocket-Accept": "wrong"}, "Accept"),
        ({"Upgrade": ""}, "Upgrade: websocket"),
        ({"Connection": "keep-alive"}, "Connection: Upgrade"),
        ({"Sec-WebSocket-Extensions": "permessage-deflate"}, "extension"),
    ],
)
def test_bad_101_is_a_protocol_error(overrides: dict[str, str], reason: str) -> None:
    key = make_key(b"k" * 16)
    response = parse_upgrade_response(_response(key, **overrides))
    assert response is not None
    with pytest.raises(PeerProtocolError, match=reason):
        check_upgrade_response(response, key)


def test_non_http_and_oversized_heads_are_refused() -> None:
    with pytest.raises(PeerProtocolError):
        parse_upgrade_response(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(PeerProtocolError):
        parse_upgrade_response(b"HTTP/1.1 200 OK\r\nX" + b"x" * 20000)
    refused = parse_upgrade_response(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
    assert refused is not None and refused.status == 403 and refused.reason == "Forbidden"
