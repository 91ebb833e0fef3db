"""wscore.cluster is an I/O layer below the actors and the server."""

from __future__ import annotations

import ast
import pathlib

import wscore.cluster

ROOT = pathlib.Path(__file__).resolve().parents[2]


def imported(path: pathlib.Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_cluster_never_imports_actors_server_or_client() -> None:
    forbidden = ("actors", "pykka", "wscore.server", "wscore.client", "wscore.transport", "sandbox",
                 "geventwebsocket")
    paths = list((ROOT / "wscore" / "cluster").glob("*.py"))
    assert paths
    for path in paths:
        for name in imported(path):
            assert not any(name == f or name.startswith(f + ".") for f in forbidden), (path, name)


def test_the_package_exports_what_it_documents() -> None:
    for name in wscore.cluster.__all__:
        assert getattr(wscore.cluster, name) is not None
    assert sorted(wscore.cluster.__all__) == sorted(set(wscore.cluster.__all__))


def test_nothing_outside_wscore_cluster_imports_redis_yet() -> None:
    # Not wired into the server yet (docs/scaling.md): the embedded default needs no redis-py.
    for path in ROOT.glob("[wa]*/**/*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("wscore/cluster/"):
            continue
        names = imported(path)
        assert not any(n == "redis" or n.startswith(("redis.", "wscore.cluster")) for n in names), rel
