"""``GET /wscore.js`` (the shipped browser client), its size budget, and ``WsServer.mount``."""

from __future__ import annotations

import gzip
import http.client
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import wscore  # noqa: F401  (gevent-ready before anything else)
from wscore import WsServer, WsServerConfig, static
from wscore.errors import UsageError

REPO = Path(__file__).resolve().parents[2]
SIZE_BUDGET_GZ = 7 * 1024  # issue 11: smaller than phoenix.min.js (7.8 KB) with more guarantees


def _get(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def server() -> Iterator[WsServer]:
    srv = WsServer(config=WsServerConfig.dev(host="127.0.0.1", port=0))
    srv.start()
    yield srv
    srv.stop()


def test_the_client_is_served_with_an_etag_and_a_long_cache(server: WsServer) -> None:
    status, headers, body = _get(server.port, "/wscore.js")
    assert status == 200
    assert body == (REPO / "wscore/static/wscore.js").read_bytes()
    assert headers["content-type"].startswith("text/javascript")
    assert headers["etag"] == static.client_etag()
    assert headers["cache-control"] == "public, max-age=86400"
    assert headers["access-control-allow-origin"] == "*"  # module scripts are fetched with CORS
    assert b"WsClient" in body


def test_if_none_match_gets_304(server: WsServer) -> None:
    etag = static.client_etag()
    for header in (etag, f'W/{etag}', f'"other", {etag}', "*"):
        status, headers, body = _get(server.port, "/wscore.js", headers={"If-None-Match": header})
        assert (status, body) == (304, b""), header
        assert headers["etag"] == etag
    status, _, body = _get(server.port, "/wscore.js", headers={"If-None-Match": '"stale"'})
    assert status == 200 and body


def test_the_versioned_url_is_immutable_and_an_old_version_is_not(server: WsServer) -> None:
    url = static.client_url()
    assert re.fullmatch(r"/wscore\.js\?v=[0-9a-f]{16}", url)
    _, headers, _ = _get(server.port, url)
    assert headers["cache-control"] == "public, max-age=31536000, immutable"
    _, headers, _ = _get(server.port, "/wscore.js?v=0000000000000000")
    assert headers["cache-control"] == "public, max-age=86400"


def test_head_and_other_methods(server: WsServer) -> None:
    status, headers, body = _get(server.port, "/wscore.js", "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    status, headers, _ = _get(server.port, "/wscore.js", "POST")
    assert status == 405 and headers["allow"] == "GET, HEAD"


def test_the_bundle_fits_the_size_budget() -> None:
    data = (REPO / "wscore/static/wscore.js").read_bytes()
    gz = len(gzip.compress(data, compresslevel=9))
    assert gz <= SIZE_BUDGET_GZ, f"wscore.js is {gz} bytes gzipped, over the {SIZE_BUDGET_GZ} budget"


def test_the_package_ships_the_same_file_it_serves() -> None:
    assert static.client_bytes() == (REPO / "wscore/static/wscore.js").read_bytes()


def test_mount_serves_every_other_path_but_not_the_servers_own(server: WsServer) -> None:
    seen: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"page ", environ["PATH_INFO"].encode()]

    server.mount(app)
    assert _get(server.port, "/")[::2] == (200, b"page /")
    assert _get(server.port, "/a/b?x=1")[::2] == (200, b"page /a/b")
    status, headers, _ = _get(server.port, "/healthz")
    assert status == 200 and headers["content-type"] == "application/json"
    assert _get(server.port, "/ws")[0] == 426  # the WebSocket path stays the server's
    assert _get(server.port, "/wscore.js")[0] == 200
    assert seen == ["/", "/a/b"]
    with pytest.raises(UsageError):
        server.mount("not an app")  # type: ignore[arg-type]


def test_without_mount_unknown_paths_are_404(server: WsServer) -> None:
    assert _get(server.port, "/")[0] == 404
