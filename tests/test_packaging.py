"""The distribution installs ``wscore`` and nothing else at the top level (issue 9).

The repository keeps ``actors/``, ``sandbox/`` and ``loadtests/`` at its top (the
required layout); ``wscore/<name>`` links to each, so they install and import as
``wscore.actors``, ``wscore.sandbox`` and ``wscore.loadtests`` and cannot clash
with anything else called ``actors`` or ``sandbox``.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_wheel_holds_wscore_and_nothing_else_at_top_level(tmp_path: pathlib.Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path),
                    str(ROOT)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("wscore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"wscore"}
    for package in ("actors", "sandbox", "loadtests"):
        assert f"wscore/{package}/__init__.py" in names
    assert "wscore/static/wscore.js" in names and "wscore/sandbox/py.typed" in names


def test_importing_the_internal_packages_loads_no_generic_top_level_name() -> None:
    code = ("import sys, wscore.actors, wscore.sandbox, wscore.loadtests, wscore.server; "
            "print(sorted(n for n in ('actors', 'sandbox', 'loadtests') if n in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=ROOT, timeout=60).stdout.strip()
    assert out == "[]"
