"""examples/flask_app for real: a Flask app and the wscore chat on one port, under ``wscore run``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from wsgi_support import Served, assert_wscore_paths, chat_pair, get, serve_with_wscore_run


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve_with_wscore_run("examples.flask_app.app:server", tmp_path)


def test_flask_routes_and_the_chat_share_one_port(served: Served) -> None:
    port = served.port
    status, headers, page = get(port, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"Flask + wscore on one port" in page and b'from "/wscore.js"' in page

    alice, bob, _ = chat_pair(port)
    try:
        # A Flask view, in the same process, sees the two live connections.
        status, _, body = get(port, "/api/status")
        assert status == 200 and body["app"] == "flask"
        assert body["wscore"]["connections"] == 2 and body["wscore"]["sessions"] == 2
        # Flask owns every other path: its own 404 page, not wscore's JSON one.
        status, headers, missing = get(port, "/no/such/page")
        assert status == 404 and headers["Content-Type"].startswith("text/html"), missing
        assert_wscore_paths(port)
        # A request body reaches Flask through wscore's own listener (docs/wsgi.md).
        status, _, echoed = get(port, "/api/echo", {"x": 1})
        assert status == 200 and echoed == {"echo": {"x": 1}}
    finally:
        alice.close()
        bob.close()
