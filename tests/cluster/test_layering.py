"""wscore.cluster is an I/O layer below the actors and the server, loaded only with Redis."""

from __future__ import annotations

import ast
import pathlib

from test_layers import TRANSPORT, layer_of, runtime_imports

import wscore.cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_cluster_sits_in_the_transport_layer() -> None:
    """The layer rules themselves are tests/test_layers.py (below the actors, no pykka)."""
    assert layer_of("wscore.cluster.writer") == TRANSPORT


def test_the_package_exports_what_it_documents() -> None:
    for name in wscore.cluster.__all__:
        assert getattr(wscore.cluster, name) is not None
    assert sorted(wscore.cluster.__all__) == sorted(set(wscore.cluster.__all__))


def top_level_imports(path: pathlib.Path) -> set[str]:
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_only_the_server_uses_wscore_cluster_and_only_when_redis_is_configured() -> None:
    # The embedded default needs no redis-py: the server imports wscore.cluster inside
    # the functions that run with redis_url only; nothing else imports it at all.
    def redisish(names: set[str]) -> bool:
        return any(n == "redis" or n.startswith(("redis.", "wscore.cluster")) for n in names)

    for path in ROOT.glob("[wa]*/**/*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("wscore/cluster/"):
            continue
        if rel in ("wscore/server.py", "wscore/connections.py"):
            assert not redisish(top_level_imports(path)), rel
            continue
        assert not redisish(runtime_imports(path)), rel
