"""The demo chat page (``examples/chat/index.html``) as a WSGI app for ``WsServer.mount``.

``GET /`` is the page; it imports the browser client from ``/wscore.js`` (served by the
server itself) and talks to ``/ws`` on the same host. Every other path is 404.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["page_app"]

_PAGE = Path(__file__).with_name("index.html")


def page_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    if environ.get("PATH_INFO") not in ("/", "/index.html"):
        body = b"not found"
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
    body = _PAGE.read_bytes()  # read per request: edit the page and reload
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                              ("Content-Length", str(len(body))), ("Cache-Control", "no-cache")])
    return [body] if environ.get("REQUEST_METHOD") != "HEAD" else []
