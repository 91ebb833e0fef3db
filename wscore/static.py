"""The browser client served at ``GET /wscore.js`` (SPEC §9).

The file is built from ``clients/js`` (TypeScript, esbuild) and ships inside the
package as ``wscore/static/wscore.js``, so a Python user needs no Node. It is read
once and answered with an ETag (its content hash): a request whose
``If-None-Match`` names it gets ``304 Not Modified``. Caching: the plain URL is
cached for a day and then revalidated (a cheap 304 while the file is unchanged),
so an upgrade reaches browsers within a day; a page that imports the versioned URL
(:func:`client_url`, ``/wscore.js?v=<hash>``) gets a year and ``immutable``,
since that URL's content never changes. ``Access-Control-Allow-Origin: *`` lets
pages of any origin import it as a module (module scripts are fetched with CORS).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any

__all__ = ["CLIENT_PATH", "WsgiApp", "client_bytes", "client_etag", "client_url", "serve_client"]

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

CLIENT_PATH = "/wscore.js"

_DAY = "public, max-age=86400"
_YEAR = "public, max-age=31536000, immutable"


@functools.lru_cache(maxsize=1)
def client_bytes() -> bytes:
    """The built browser client (raises ``FileNotFoundError`` if the package lacks it)."""
    return resources.files("wscore").joinpath("static/wscore.js").read_bytes()


@functools.lru_cache(maxsize=1)
def client_etag() -> str:
    """A strong ETag: the first 16 hex digits of the file's SHA-256, quoted."""
    return '"' + hashlib.sha256(client_bytes()).hexdigest()[:16] + '"'


def client_url() -> str:
    """``/wscore.js?v=<hash>``: the URL a page should import to be cached for a year."""
    return f"{CLIENT_PATH}?v={client_etag().strip(chr(34))}"


def _matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    # RFC 9110 §13.1.2: weak comparison; a list of entity tags.
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def serve_client(environ: dict[str, Any], start_response: Callable[..., Any],
                 headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    """Answer a request for :data:`CLIENT_PATH` (GET/HEAD; anything else is 405)."""
    out = list(headers)
    if not any(k.lower() == "access-control-allow-origin" for k, _ in out):
        out.append(("Access-Control-Allow-Origin", "*"))
    method = environ.get("REQUEST_METHOD", "GET")
    if method not in ("GET", "HEAD"):
        out += [("Allow", "GET, HEAD"), ("Content-Length", "0")]
        start_response("405 Method Not Allowed", out)
        return []
    etag = client_etag()
    # Immutable only when the URL names this very content (an old ?v= must revalidate).
    versioned = f"v={etag.strip(chr(34))}" in environ.get("QUERY_STRING", "").split("&")
    out += [("ETag", etag), ("Cache-Control", _YEAR if versioned else _DAY)]
    if _matches(environ.get("HTTP_IF_NONE_MATCH"), etag):
        start_response("304 Not Modified", out)
        return []
    body = client_bytes()
    out += [("Content-Type", "text/javascript; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response("200 OK", out)
    return [body] if method == "GET" else []
