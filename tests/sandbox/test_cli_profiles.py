"""CLI, profiles, fault values and the package surface."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import websocket
from sandbox_helpers import EchoWsServer

from wscore import sandbox
from wscore.sandbox import Blackhole, Direction, Latency, ProfileParams, ResetPeer, build_profile
from wscore.sandbox.cli import main
from wscore.sandbox.faults import fault_from_dict, fault_to_dict
from wscore.sandbox.profiles import ProfileError, load_profile_file, profile_names

REPO = Path(__file__).resolve().parents[2]


def test_imported_sandbox_is_this_project() -> None:
    assert Path(sandbox.__file__).resolve().parent == REPO / "sandbox"


def test_exports_exist() -> None:
    for name in sandbox.__all__:
        assert hasattr(sandbox, name), name


@pytest.mark.parametrize("argv", [
    [],
    ["nope"],
    ["proxy"],
    ["proxy", "--upstream", "nohost"],
    ["proxy", "--upstream", "127.0.0.1:99999"],
    ["proxy", "--upstream", "127.0.0.1:1", "--profile", "no-such-profile"],
    ["proxy", "--upstream", "127.0.0.1:1", "--profile-file", "/nonexistent.toml"],
    ["proxy", "--upstream", "127.0.0.1:1", "--latency-ms", "-5"],
    ["proxy", "--upstream", "127.0.0.1:1", "--reset-after-frames", "x"],
    ["proxy", "--upstream", "127.0.0.1:1", "--listen", "256.0.0.1:0"],
])
def test_cli_user_errors_exit_2_with_one_line(argv: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wscore sandbox: error:")


def test_cli_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["proxy", "--help"]) == 0
    assert "--latency-ms" in capsys.readouterr().out


def test_cli_proxy_serves_and_stops_on_sigterm(ws_echo: EchoWsServer, tmp_path: Path) -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    log_path = tmp_path / "faults.jsonl"
    code = "import sys; from wscore.sandbox.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "proxy", "--listen", f"127.0.0.1:{port}",
         "--upstream", f"127.0.0.1:{ws_echo.address[1]}", "--seed", "5",
         "--reset-after-frames", "2", "--direction", "up", "--fault-log", str(log_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"127.0.0.1:{port}" in line and "seed=5" in line
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws", timeout=5)
        ws.send("one")
        assert ws.recv() == "one"
        ws.send("two")
        with pytest.raises((OSError, websocket.WebSocketException)):
            ws.recv()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = [json.loads(x) for x in log_path.read_text().splitlines()]
    assert [(r["fault"], r["frame"], r["direction"]) for r in records] == [
        ("reset_peer", 2, "up")]


def test_all_profiles_build() -> None:
    assert profile_names() == ["chaos", "clean", "flaky-mobile", "node-restarts", "partition",
                               "ttl-exceeded"]
    params = ProfileParams(heartbeat_seconds=2, session_ttl_seconds=20)
    for name in profile_names():
        faults = build_profile(name, params)
        for fault in faults:
            assert fault_from_dict(json.loads(json.dumps(fault_to_dict(fault)))) == fault
    assert build_profile("clean") == ()
    assert build_profile("node-restarts") == ()  # the runner restarts nodes (sandbox/nodes.py)
    (partition,) = build_profile("partition", params)
    assert isinstance(partition, Blackhole) and partition.all_connections
    assert 2 < partition.duration_seconds[0] < 20
    outage = build_profile("ttl-exceeded", params)[0]
    assert isinstance(outage, Blackhole) and outage.duration_seconds[0] > 20


def test_profile_errors() -> None:
    with pytest.raises(ProfileError, match="unknown profile"):
        build_profile("nope")
    with pytest.raises(ProfileError, match="between"):
        build_profile("partition", ProfileParams(heartbeat_seconds=10, session_ttl_seconds=5))
    with pytest.raises(ProfileError):
        ProfileParams(heartbeat_seconds=-1)


def test_profile_files(tmp_path: Path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text('base = "partition"\n[params]\nheartbeat_seconds = 1\n'
                    'session_ttl_seconds = 9\n[[faults]]\ntype = "latency"\n'
                    'latency_seconds = 0.1\ndirection = "down"\n')
    faults = load_profile_file(toml)
    assert faults[1] == Latency(latency_seconds=0.1, direction=Direction.DOWN)
    assert faults[0].duration_seconds == (5.0, 5.0)  # type: ignore[union-attr]
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"faults": [{"type": "reset_peer", "after_frames": [1, 3]}]}))
    assert load_profile_file(js) == (ResetPeer(after_frames=(1, 3)),)
    for text, match in [("{", "cannot parse"), ('{"x": 1}', "unknown key"),
                        ('{"faults": [{"type": "zap"}]}', "unknown fault type"),
                        ('{"params": {"nope": 1}}', "bad params")]:
        js.write_text(text)
        with pytest.raises(ProfileError, match=match):
            load_profile_file(js)


@pytest.mark.parametrize("bad", [
    {"type": "latency", "latency_seconds": -0.1},
    {"type": "latency", "latency_seconds": 0.1, "probability": 2},
    {"type": "latency", "latency_seconds": 0.1, "direction": "sideways"},
    {"type": "bandwidth", "rate_bytes_per_second": 0},
    {"type": "slicer", "max_slice_bytes": 2, "min_slice_bytes": 3},
    {"type": "reset_peer"},
    {"type": "reset_peer", "after_frames": 1, "after_seconds": 1},
    {"type": "reset_peer", "after_frames": [5, 1]},
    {"type": "blackhole", "duration_seconds": 1, "after_frames": 1, "all_connections": True},
    {"type": "limit_data"},
    {"type": "refuse"},
    {"type": "slow_close", "delay_seconds": [1, 2, 3]},
])
def test_fault_validation(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        fault_from_dict(bad)


def test_faults_are_frozen_and_keyword_only() -> None:
    fault = Latency(latency_seconds=0.1)
    with pytest.raises(AttributeError):
        fault.latency_seconds = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        Latency(0.1)  # type: ignore[call-arg]
