"""Imports stay light: the client and the errors never load the server's machinery.

Each check runs in a fresh interpreter (``sys.modules`` of this test process already
holds everything).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import wscore

HEAVY = ("wscore.actors", "pykka", "geventwebsocket", "wscore.server", "wscore.transport")


def loaded_after(statement: str) -> tuple[set[str], dict[str, object]]:
    """The top-level and wscore modules a fresh interpreter holds after ``statement``."""
    probe = (
        f"{statement}\n"
        "import json, sys\n"
        "from gevent import monkey\n"
        "print(json.dumps({'modules': sorted(sys.modules),"
        " 'patched': monkey.is_module_patched('socket')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    report = json.loads(out.strip().splitlines()[-1])
    return set(report["modules"]), report


def heavy_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.mark.parametrize("statement", [
    "import wscore.client",
    "import wscore.errors",
    "from wscore.client import WsClient, WsClientConfig",
    "import wscore.protocol; wscore.protocol.ClientSession",
    "import wscore",
])
def test_light_imports_leave_the_server_machinery_out(statement: str) -> None:
    modules, report = loaded_after(statement)
    assert heavy_in(modules) == []
    assert report["patched"], "importing wscore must make the process gevent-ready"


def test_server_names_still_import_from_the_top_level() -> None:
    modules, _ = loaded_after("from wscore import WsServer, WsServerConfig, WsContext")
    assert {"wscore.server", "wscore.actors", "pykka", "geventwebsocket"} <= modules


def test_actors_package_imports_on_its_own() -> None:
    modules, report = loaded_after("from wscore import actors; actors.SessionActor")
    assert "wscore.actors.session" in modules and report["patched"]


def test_every_public_name_resolves_and_unknown_names_fail() -> None:
    for name in wscore.__all__:
        assert getattr(wscore, name) is not None
    assert set(wscore.__all__) <= set(dir(wscore))
    with pytest.raises(AttributeError):
        _ = wscore.NoSuchName  # type: ignore[attr-defined]
