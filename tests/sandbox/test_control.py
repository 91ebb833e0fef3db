"""The HTTP control API."""

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
import websocket
from sandbox_helpers import EchoWsServer

from wscore import sandbox


def _call(base: str, method: str, path: str, body: Any = None,
          raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        assert text.count(b"\n") == 1  # one-line JSON error
        return exc.code, json.loads(text)


def test_control_api(ws_echo: EchoWsServer) -> None:
    with sandbox.proxy(ws_echo.address, control=True) as net:
        base = net.control_url
        assert base is not None
        status, body = _call(base, "GET", "/")
        assert status == 200 and body["faults"] == [] and body["stats"]["seed"] == 0

        latency = {"type": "latency", "latency_seconds": 0.01, "direction": "down"}
        status, body = _call(base, "PUT", "/faults", {"faults": [latency]})
        assert status == 200 and body["faults"][0]["type"] == "latency"
        status, body = _call(base, "POST", "/faults",
                             {"type": "slicer", "max_slice_bytes": 4})
        assert [f["type"] for f in body["faults"]] == ["latency", "slicer"]
        assert isinstance(net.faults[1], sandbox.Slicer)

        ws = websocket.create_connection(net.url(), timeout=5)
        ws.send("hi")
        assert ws.recv() == "hi"
        status, body = _call(base, "GET", "/stats")
        assert body["connections"]["active"] == 1 and body["frames"]["up"] >= 1

        status, body = _call(base, "POST", "/actions/cut")
        assert body == {"cut": 1}
        with pytest.raises((OSError, websocket.WebSocketException)):
            ws.recv()

        status, body = _call(base, "POST", "/actions/blackhole", {"seconds": 0.05})
        assert status == 200 and net.stats()["blackholed"]
        status, body = _call(base, "POST", "/actions/refuse", {"seconds": 0.05, "mode": "hold"})
        assert status == 200 and net.stats()["refusing"]
        status, body = _call(base, "GET", "/fault-log?since=0")
        assert [r["fault"] for r in body["records"]][-3:] == ["reset_peer", "blackhole", "refuse"]
        status, body = _call(base, "DELETE", "/faults")
        assert body == {"faults": []} and net.faults == ()


@pytest.mark.parametrize(("method", "path", "body", "raw", "code"), [
    ("PUT", "/faults", None, b"{not json", 400),
    ("PUT", "/faults", {"faults": [{"type": "nope"}]}, None, 400),
    ("PUT", "/faults", {"faults": [{"type": "latency", "latency_seconds": -1}]}, None, 400),
    ("POST", "/faults", {"type": "latency", "bogus": 1}, None, 400),
    ("PUT", "/faults", {"type": "latency", "latency_seconds": 1}, None, 400),
    ("POST", "/actions/blackhole", {"seconds": "x"}, None, 400),
    ("POST", "/actions/refuse", {"seconds": 1, "mode": "maybe"}, None, 400),
    ("GET", "/fault-log?since=-1", None, None, 400),
    ("GET", "/nope", None, None, 404),
    ("DELETE", "/stats", None, None, 405),
])
def test_control_api_rejects_bad_input(ws_echo: EchoWsServer, method: str, path: str,
                                       body: Any, raw: bytes | None, code: int) -> None:
    with sandbox.proxy(ws_echo.address, control=True) as net:
        assert net.control_url is not None
        status, payload = _call(net.control_url, method, path, body, raw)
        assert status == code and isinstance(payload["error"], str)
        assert net.faults == ()
