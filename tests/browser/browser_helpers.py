"""Starting ``drive.mjs`` (headless Chromium) from a test and reading its RESULT."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from wscore import WsServer
from wscore.sandbox.api import ProxyHandle

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("drive.mjs")


def driver_config(server: WsServer, net: ProxyHandle) -> dict[str, str]:
    return {
        "http": f"http://127.0.0.1:{server.port}",
        "ws": server.url,
        "proxyWs": net.url("/ws"),
        "control": net.control_url or "",
    }


def start_driver(scenario: str, config: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(["node", str(DRIVER), scenario, json.dumps(config)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_driver(proc: subprocess.Popen[str], timeout: float = 90.0) -> dict[str, Any]:
    """Wait for the driver; return its RESULT, or fail with its output."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"browser driver did not finish in {timeout:g} s\n{out}\n{err}")
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        pytest.fail(f"browser driver failed (status {proc.returncode})\n{out}\n{err}")
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result


def run_driver(scenario: str, config: dict[str, str]) -> dict[str, Any]:
    return finish_driver(start_driver(scenario, config))
