"""Same seed + same traffic → same fault log (timestamps aside)."""

import json
from pathlib import Path

import websocket
from sandbox_helpers import EchoWsServer

from wscore import sandbox
from wscore.sandbox import (
    Blackhole,
    Direction,
    FaultRecord,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    diff_fault_logs,
    same_fault_log,
)

FAULTS = (
    Latency(latency_seconds=0.002, jitter_seconds=0.002, probability=0.5),
    Slicer(max_slice_bytes=9, direction=Direction.DOWN, probability=0.5),
    ResetPeer(direction=Direction.DOWN, after_frames=(2, 8), mid_frame_probability=0.5,
              probability=0.6),
    ResetPeer(direction=Direction.UP, after_frames=(3, 9), probability=0.4),
    Blackhole(direction=Direction.UP, after_frames=(1, 4), duration_seconds=(0.0, 0.02),
              repeat=True, probability=0.5),
    LimitData(direction=Direction.DOWN, max_frames=7, probability=0.3),
)


def _traffic(ws_echo: EchoWsServer, seed: int, log_path: Path | None = None
             ) -> list[FaultRecord]:
    """Eight sequential clients, each sending up to 10 messages one at a time."""
    with sandbox.proxy(ws_echo.address, seed=seed, faults=FAULTS,
                       fault_log_path=str(log_path) if log_path else None) as net:
        for client in range(8):
            try:
                ws = websocket.create_connection(net.url(), timeout=5)
            except (OSError, websocket.WebSocketException):
                continue
            try:
                for i in range(10):
                    msg = f"c{client}m{i}" * (i + 1)
                    ws.send(msg)
                    assert ws.recv() == msg
            except (OSError, websocket.WebSocketException):
                pass
            finally:
                ws.close()
            assert net.wait_for_active(0)
        return net.fault_log


def test_same_seed_same_fault_log(ws_echo: EchoWsServer, tmp_path: Path) -> None:
    path = tmp_path / "faults.jsonl"
    first = _traffic(ws_echo, seed=42, log_path=path)
    second = _traffic(ws_echo, seed=42)
    assert {r.fault for r in first} >= {"reset_peer", "blackhole"}
    assert same_fault_log(first, second), diff_fault_logs(first, second)
    from_file = [FaultRecord.from_dict(json.loads(line))
                 for line in path.read_text().splitlines()]
    assert same_fault_log(first, from_file)


def test_other_seed_other_fault_log(ws_echo: EchoWsServer) -> None:
    assert not same_fault_log(_traffic(ws_echo, seed=1), _traffic(ws_echo, seed=2))
