"""Browser tests: a real WsServer (the chat example) on 127.0.0.1:0, the sandbox proxy in
front of it, and headless Chromium driven by ``tests/browser/drive.mjs`` (playwright-core).

Chromium is Debian's ``/usr/bin/chromium`` (``make chromium`` installs it) and the Node
packages come from ``make js``; when either is missing the tests fail with that hint —
they are skipped nowhere.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import wscore  # noqa: F401  (gevent-ready before anything else)
from examples.chat.app import build_chat_server
from examples.chat.page import page_app
from wscore import AuthResult, WsAuthenticator, WsServer, WsServerConfig, sandbox
from wscore.auth import ConnectionInfo
from wscore.sandbox.api import ProxyHandle

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("WSCORE_CHROMIUM", "/usr/bin/chromium")

TEST_PAGE = """<!doctype html><meta charset="utf-8"><title>wscore browser test</title>
<script type="module">import * as W from "{origin}/wscore.js"; window.W = W;</script>"""


def _require_tools() -> None:
    missing = []
    if shutil.which("node") is None:
        missing.append("node")
    if not Path(CHROMIUM).exists():
        missing.append(f"{CHROMIUM} (run `make chromium`)")
    if not (REPO / "clients/js/node_modules/playwright-core").is_dir():
        missing.append("clients/js/node_modules (run `make js`)")
    if missing:
        pytest.fail("browser tests need " + ", ".join(missing))


def _test_page_app(origin: Callable[[], str]) -> Any:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        body = TEST_PAGE.format(origin=origin()).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return app


@pytest.fixture
def chat_server() -> Iterator[WsServer]:
    """The example chat app with a short heartbeat, serving the test page on every other path."""
    _require_tools()
    server = build_chat_server(WsServerConfig.dev(host="127.0.0.1", port=0, ping_interval=0.5,
                                                  ping_timeout=2.0))
    server.mount(_test_page_app(lambda: f"http://127.0.0.1:{server.port}"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def demo_server() -> Iterator[WsServer]:
    """The example chat app with its demo page mounted, as ``make run`` serves it (port 0)."""
    _require_tools()
    server = build_chat_server(WsServerConfig.dev(host="127.0.0.1", port=0, ping_interval=0.5,
                                                  ping_timeout=2.0))
    server.mount(page_app)
    server.start()
    yield server
    server.stop()


class ShortLivedTokens(WsAuthenticator):
    """Accepts ``user:n`` tokens for ``user``, each valid for ``lifetime`` seconds; records what it saw."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.seen: list[str] = []

    def authenticate(self, conn: ConnectionInfo, token: str) -> AuthResult:
        self.seen.append(token)
        user, _, n = token.partition(":")
        if not user or not n.isdigit():
            return AuthResult.failure("bad token")
        return AuthResult.success(user, expires_at=time.time() + self.lifetime)


@pytest.fixture
def auth_server() -> Iterator[WsServer]:
    """The chat app behind an authenticator whose tokens live 2 s (``server.authenticator.seen``)."""
    _require_tools()
    server = build_chat_server(WsServerConfig.dev(host="127.0.0.1", port=0, ping_interval=0.5,
                                                  ping_timeout=2.0, require_auth=True))
    server.authenticator = ShortLivedTokens(lifetime=2.0)
    server.mount(_test_page_app(lambda: f"http://127.0.0.1:{server.port}"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def net(request: pytest.FixtureRequest) -> Iterator[ProxyHandle]:
    """The sandbox proxy in front of the test's server (``chat_server`` or ``auth_server``),
    with its HTTP control API (the driver cuts through it)."""
    name = "auth_server" if "auth_server" in request.fixturenames else "chat_server"
    server: WsServer = request.getfixturevalue(name)
    with sandbox.proxy(("127.0.0.1", server.port), control=True) as handle:
        yield handle
