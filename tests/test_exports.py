"""The public surface and the layering rules."""

from __future__ import annotations

import ast
import pathlib

import wscore
from wscore import actors, sandbox

ROOT = pathlib.Path(__file__).resolve().parents[1]

DOCUMENTED = {
    # SPEC §2
    "WsServer", "WsServerConfig", "WsClient", "WsContext", "WsController", "WsAuthenticator",
    "AuthResult", "WsError", "ErrorCode",
    # wscore's additions, documented in README "API"
    "ConnectionInfo", "WsSession", "WsActorController", "WsRoomBehaviour", "RoomHandle",
    "RoomMessage", "WsException", "ConfigError", "UsageError", "ConnectionClosed",
    "SendBufferFull", "SessionLost",
}


def test_top_level_exports_exactly_the_documented_names() -> None:
    assert set(wscore.__all__) == DOCUMENTED
    for name in DOCUMENTED:
        assert getattr(wscore, name) is not None


def test_generic_top_level_packages_are_this_projects() -> None:
    assert pathlib.Path(actors.__file__).resolve().parent == ROOT / "actors"
    assert pathlib.Path(sandbox.__file__).resolve().parent == ROOT / "sandbox"
    assert actors.WSCORE_PACKAGE == "wscore.actors"


def imports_of(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


# The layering rules themselves (protocol ← values ← transport ← actors ← server, the
# client and the sandbox on the client side) are tests/test_layers.py.


def test_only_the_transport_adapter_imports_gevent_websocket() -> None:
    users = [p for p in ROOT.glob("[wa]*/**/*.py")
             if any(n.startswith("geventwebsocket") for n in imports_of(p))]
    assert [p.relative_to(ROOT).as_posix() for p in users] == ["wscore/transport.py"]


def test_no_print_in_library_code() -> None:
    allowed = {"wscore/cli.py", "wscore/client/cli.py", "wscore/client/__main__.py",
               "sandbox/cli.py"}
    for path in list(ROOT.glob("wscore/**/*.py")) + list(ROOT.glob("actors/*.py")) + \
            list(ROOT.glob("sandbox/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in allowed:
            continue
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert not calls, f"print() in {rel}"
