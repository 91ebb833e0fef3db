"""Layers run one way (docs/architecture.md "Layers"): each module imports only from below.

    protocol + errors  ←  values  ←  transport  ←  actors  ←  server (composition root)
                                                     ↑ never the transport
    client: protocol + errors (+ gevent);  sandbox, load tests: only what a client uses

Imports inside ``if TYPE_CHECKING:`` are not imports at run time and are not
counted. The test names the offending module and import, so it fails (and says
why) as soon as, say, an actor module imports the transport.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

PROTOCOL, VALUES, TRANSPORT, ACTORS, SERVER = range(5)

#: Module name prefix → layer. The longest matching prefix wins.
LAYER_OF = {
    "wscore.protocol": PROTOCOL,
    "wscore.errors": PROTOCOL,
    "wscore.config": VALUES,
    "wscore.auth": VALUES,
    "wscore.handlers": VALUES,
    "wscore.context": VALUES,
    "wscore.behaviours": VALUES,
    "wscore.jwt": VALUES,
    "wscore.transport": TRANSPORT,
    "wscore.http_reader": TRANSPORT,
    "wscore.outbox": TRANSPORT,
    "wscore.static": TRANSPORT,
    "wscore.cluster": TRANSPORT,
    "wscore.actors": ACTORS,
    "wscore.server": SERVER,
    "wscore.cli": SERVER,
    "wscore.testing": SERVER,
    "wscore.workers": SERVER,
    "wscore.__main__": SERVER,
    "wscore": SERVER,  # the package facade (lazy re-exports of every layer)
}
#: What each layer may import besides its own layer and those below it.
ALSO_FORBIDDEN = {
    ACTORS: ("wscore.transport", "wscore.outbox", "wscore.static", "wscore.cluster"),
}
#: Third-party I/O each layer may not touch.
NO_IO = ("gevent", "geventwebsocket", "pykka", "socket", "redis")
THIRD_PARTY_FORBIDDEN = {
    PROTOCOL: (*NO_IO, "time", "random", "threading", "asyncio"),
    VALUES: ("geventwebsocket", "pykka", "socket", "redis"),
    TRANSPORT: ("pykka",),
    ACTORS: ("geventwebsocket", "socket", "redis"),
}
CLIENT_ALLOWED = ("wscore.protocol", "wscore.errors", "wscore.client")
CLIENT_SIDE_FORBIDDEN = ("wscore.actors", "wscore.server", "wscore.transport", "wscore.outbox",
                         "wscore.cluster", "wscore.protocol.session", "wscore.protocol.server_session",
                         "geventwebsocket", "pykka")


def module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] in ("actors", "sandbox", "loadtests"):
        parts.insert(0, "wscore")  # installed as wscore.actors, wscore.sandbox, wscore.loadtests
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(name: str) -> int | None:
    best = None
    for prefix, layer in LAYER_OF.items():
        if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return None if best is None else best[1]


def runtime_imports(path: pathlib.Path) -> set[str]:
    """Absolute imports executed at run time (``if TYPE_CHECKING:`` blocks skipped)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if node.module == "wscore")
    return found


def matches(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def server_side_modules() -> list[pathlib.Path]:
    return [p for p in [*ROOT.glob("wscore/**/*.py"), *ROOT.glob("actors/*.py")]
            if not any(q.is_symlink() for q in p.relative_to(ROOT).parents if str(q) != ".")
            and not any((ROOT / q).is_symlink() for q in p.relative_to(ROOT).parents)
            and not matches(module_name(p), ("wscore.client", "wscore.sandbox", "wscore.loadtests"))]


@pytest.mark.parametrize("path", server_side_modules(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_server_side_modules_import_only_from_below(path: pathlib.Path) -> None:
    name = module_name(path)
    own = layer_of(name)
    assert own is not None, f"{name} is in no layer: add it to LAYER_OF (and docs/architecture.md)"
    for imported in runtime_imports(path):
        if imported == "wscore":
            # The bare package runs only its eager part (gevent monkey patching, the
            # errors); its public names load lazily and ``from wscore import X`` is
            # checked as ``wscore.X``.
            continue
        if matches(imported, ("wscore.client",)):
            assert own == SERVER, f"{name} (layer {own}) imports the client: {imported}"
            continue
        layer = layer_of(imported)
        if layer is not None:
            assert layer <= own, f"{name} (layer {own}) imports {imported} (layer {layer}) from above"
            assert not matches(imported, ALSO_FORBIDDEN.get(own, ())), \
                f"{name} imports {imported}: actors write through sinks, never the transport"
        assert not matches(imported, THIRD_PARTY_FORBIDDEN.get(own, ())), \
            f"{name} (layer {own}) imports {imported}"


@pytest.mark.parametrize("path", sorted(ROOT.glob("wscore/client/*.py")),
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_client_depends_on_the_protocol_and_gevent_only(path: pathlib.Path) -> None:
    for imported in runtime_imports(path):
        if matches(imported, ("wscore",)):
            assert matches(imported, CLIENT_ALLOWED), f"{path.name} imports {imported}"
        assert not matches(imported, ("pykka", "geventwebsocket", "redis")), f"{path.name}: {imported}"


@pytest.mark.parametrize("path", [*ROOT.glob("sandbox/**/*.py"), *ROOT.glob("loadtests/*.py")],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_sandbox_and_load_tests_talk_to_wscore_only_as_clients_do(path: pathlib.Path) -> None:
    for imported in runtime_imports(path):
        assert not matches(imported, CLIENT_SIDE_FORBIDDEN), f"{path.name} imports {imported}"


def test_the_rules_catch_an_actor_importing_the_transport(tmp_path: pathlib.Path) -> None:
    """The test above is only worth something if this kind of import fails it."""
    bad = ROOT / "actors" / "_layering_probe.py"
    bad.write_text("from wscore.transport import WsTransport\n")
    try:
        with pytest.raises(AssertionError, match=r"never the transport|from above"):
            test_server_side_modules_import_only_from_below(bad)
    finally:
        bad.unlink()
