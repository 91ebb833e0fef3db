"""The client side of the HTTP upgrade (RFC 6455 §4.1), sans I/O.

Pure helpers for :mod:`wscore.client`: parse a ``ws://`` / ``wss://`` URL,
rewrite its query (resume parameters, SPEC §3), build the upgrade request
bytes and parse/check the server's response. The caller supplies the
``Sec-WebSocket-Key`` (16 random bytes, base64) — nothing here draws
randomness, reads the clock or touches a socket.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from wscore.errors import ConfigError, PeerProtocolError
from wscore.protocol.frames import accept_key

__all__ = [
    "UpgradeResponse",
    "WsUrl",
    "build_upgrade_request",
    "check_upgrade_response",
    "make_key",
    "parse_upgrade_response",
    "parse_ws_url",
    "replace_query",
]

#: A response head larger than this is not a WebSocket server talking (guards memory).
MAX_RESPONSE_HEAD_BYTES = 16 * 1024


@attrs.frozen
class WsUrl:
    """A validated WebSocket URL.

    ``resource`` is the request target (path plus query, RFC 6455 §3);
    ``host_header`` is the value of the ``Host`` header (port omitted when default).
    """

    secure: bool
    host: str
    port: int
    resource: str
    host_header: str

    def with_resource(self, resource: str) -> WsUrl:
        return attrs.evolve(self, resource=resource)

    def geturl(self) -> str:
        return f"{'wss' if self.secure else 'ws'}://{self.host_header}{self.resource}"


def parse_ws_url(url: str) -> WsUrl:
    """Validate ``url``; raise :class:`ConfigError` with a one-line reason if it is unusable."""
    if not isinstance(url, str) or not url:
        raise ConfigError(f"WebSocket URL must be a non-empty string, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ConfigError(f"invalid WebSocket URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("ws", "wss"):
        raise ConfigError(f"WebSocket URL must start with ws:// or wss://, got {url!r}")
    host = parts.hostname
    if not host:
        raise ConfigError(f"WebSocket URL has no host: {url!r}")
    if parts.fragment:
        # RFC 6455 §3: fragment identifiers are meaningless in WebSocket URIs.
        raise ConfigError(f"WebSocket URL must not have a #fragment: {url!r}")
    secure = scheme == "wss"
    default_port = 443 if secure else 80
    if port is None:
        port = default_port
    host_literal = f"[{host}]" if ":" in host else host
    host_header = host_literal if port == default_port else f"{host_literal}:{port}"
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return WsUrl(secure=secure, host=host, port=port, resource=resource, host_header=host_header)


def replace_query(resource: str, params: Mapping[str, str]) -> str:
    """Return ``resource`` with each key of ``params`` set (URL-encoded), others kept.

    Existing occurrences of those keys are removed first, so a resume never
    sends two ``session`` values; the user's own parameters (e.g. ``token``)
    keep their order and encoding.
    """
    parts: SplitResult = urlsplit(resource)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query = urlencode([*kept, *params.items()])
    return urlunsplit(("", "", parts.path or "/", query, ""))


def make_key(random16: bytes) -> str:
    """The ``Sec-WebSocket-Key`` for 16 caller-supplied random bytes (RFC 6455 §4.1)."""
    if len(random16) != 16:
        raise ValueError("Sec-WebSocket-Key needs exactly 16 random bytes")
    return base64.b64encode(random16).decode("ascii")


def build_upgrade_request(
    url: WsUrl, *, key: str, headers: Iterable[tuple[str, str]] = ()
) -> bytes:
    """The HTTP/1.1 GET that asks for the upgrade (RFC 6455 §4.1, items 1-12)."""
    lines = [
        f"GET {url.resource} HTTP/1.1",
        f"Host: {url.host_header}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    for name, value in headers:
        if any(ch in name or ch in value for ch in "\r\n"):
            raise ConfigError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@attrs.frozen
class UpgradeResponse:
    """The server's response head; ``headers`` keys are lower-case. ``rest`` follows the head."""

    status: int
    reason: str
    headers: Mapping[str, str]
    rest: bytes


def parse_upgrade_response(data: bytes) -> UpgradeResponse | None:
    """Parse the response head from the bytes read so far; None while it is incomplete.

    Raises :class:`PeerProtocolError` if the bytes are not an HTTP/1.1 response
    or the head grows past :data:`MAX_RESPONSE_HEAD_BYTES`.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > MAX_RESPONSE_HEAD_BYTES:
            raise PeerProtocolError("HTTP response head too large")
        return None
    head = data[:end].decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise PeerProtocolError(f"not an HTTP response: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise PeerProtocolError(f"malformed HTTP header line: {line[:80]!r}")
        key = name.strip().lower()
        value = value.strip()
        # RFC 9110 §5.3: repeated fields combine with commas.
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return UpgradeResponse(int(code), reason, headers, bytes(data[end + 4 :]))


def check_upgrade_response(response: UpgradeResponse, key: str) -> None:
    """Validate a ``101`` response (RFC 6455 §4.1, client requirements 1-4).

    The caller handles a non-101 status itself (it is a refusal, not a protocol
    error); this raises :class:`PeerProtocolError` for a 101 that is wrong.
    """
    headers = response.headers
    if response.status != 101:
        raise PeerProtocolError(f"expected HTTP 101, got {response.status} {response.reason}")
    if headers.get("upgrade", "").lower() != "websocket":
        raise PeerProtocolError("101 response without 'Upgrade: websocket'")
    if "upgrade" not in {t.strip().lower() for t in headers.get("connection", "").split(",")}:
        raise PeerProtocolError("101 response without 'Connection: Upgrade'")
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise PeerProtocolError("101 response with a wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-extensions"):
        # §4.1 item 5: we offered no extension, so the server must not select one.
        raise PeerProtocolError("server selected an extension that was not offered")
