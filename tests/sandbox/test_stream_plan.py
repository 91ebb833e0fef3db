"""wscore.sandbox.stream_plan with bytes: upgrade and frame scanning, cut planning, schedules (pure)."""

from __future__ import annotations

import ast
import random
import struct
from pathlib import Path

import pytest

from wscore.sandbox.faults import Blackhole, Direction, Fault, Latency, LimitData, ResetPeer, SlowClose
from wscore.sandbox.stream_plan import (
    MAX_HANDSHAKE_BYTES,
    Action,
    Mode,
    StreamPlan,
    frame_header_length,
    windows,
)

UP_HEAD = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
DOWN_HEAD = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


def frame(payload: bytes, *, masked: bool = False, opcode: int = 0x1) -> bytes:
    """An RFC 6455 frame (the mask key is fixed; the payload is not masked: never unmasked)."""
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = bytes([0x80 | opcode, mask_bit | n])
    elif n < 1 << 16:
        header = bytes([0x80 | opcode, mask_bit | 126]) + struct.pack("!H", n)
    else:
        header = bytes([0x80 | opcode, mask_bit | 127]) + struct.pack("!Q", n)
    return header + (b"\x01\x02\x03\x04" if masked else b"") + payload


def plan_for(direction: Direction, faults: list[Fault], seed: int = 1) -> StreamPlan:
    plan = StreamPlan(direction)
    plan.install(faults, lambda index: random.Random(f"{seed}/{index}"))
    return plan


def feed_all(plan: StreamPlan, stream: bytes, chunk: int) -> list[tuple[int, Action]]:
    """Feed ``stream`` in ``chunk``-byte pieces; (offset reached, action) for every action."""
    acted: list[tuple[int, Action]] = []
    offset = 0
    for pos in range(0, len(stream), chunk):
        for data, actions in plan.feed(stream[pos: pos + chunk]).segments:
            offset += len(data)
            acted += [(offset, a) for a in actions]
    return acted


def test_header_lengths() -> None:
    assert frame_header_length(frame(b"x")[:2]) == 2
    assert frame_header_length(frame(b"x", masked=True)[:2]) == 6
    assert frame_header_length(frame(b"x" * 200)[:2]) == 4
    assert frame_header_length(frame(b"x" * 70_000, masked=True)[:2]) == 14


@pytest.mark.parametrize("chunk", [1, 3, 7, 1 << 20])
def test_upgrade_then_frames_are_counted_however_chunked(chunk: int) -> None:
    frames = [frame(b"a" * n, masked=True) for n in (0, 5, 125, 126, 300, 70_000)]
    plan = plan_for(Direction.UP, [])
    feed_all(plan, UP_HEAD + b"".join(frames), chunk)
    assert plan.mode is Mode.FRAMES
    assert plan.frame == len(frames)


def test_downstream_switches_on_101_only() -> None:
    ok = plan_for(Direction.DOWN, [])
    ok.feed(DOWN_HEAD + frame(b"hi"))
    assert (ok.mode, ok.frame) == (Mode.FRAMES, 1)
    refused = plan_for(Direction.DOWN, [])
    refused.feed(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\n" + frame(b"hi"))
    assert (refused.mode, refused.frame) == (Mode.RAW, 0)


def test_plain_http_and_endless_heads_are_raw() -> None:
    plain = plan_for(Direction.UP, [])
    plain.feed(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + frame(b"not a frame"))
    assert (plain.mode, plain.frame) == (Mode.RAW, 0)
    endless = plan_for(Direction.UP, [])
    endless.feed(b"GET / HTTP/1.1\r\nX: " + b"y" * MAX_HANDSHAKE_BYTES)
    assert endless.mode is Mode.RAW


def test_reset_after_frames_cuts_at_the_end_of_frame_k() -> None:
    frames = [frame(b"m%d" % i, masked=True) for i in range(6)]
    stream = UP_HEAD + b"".join(frames)
    plan = plan_for(Direction.UP, [ResetPeer(after_frames=3, direction=Direction.UP)])
    [(offset, action)] = feed_all(plan, stream, 1 << 20)
    assert offset == len(UP_HEAD) + sum(len(f) for f in frames[:3])
    assert (action.kind, action.fault, action.frame, action.params) == (
        "reset", "reset_peer", 3, {"mid_frame": False})


@pytest.mark.parametrize("chunk", [1, 5, 1 << 20])
def test_mid_frame_reset_lands_strictly_inside_the_frame(chunk: int) -> None:
    frames = [frame(b"x" * 40) for _ in range(4)]
    stream = DOWN_HEAD + b"".join(frames)
    plan = plan_for(Direction.DOWN, [ResetPeer(after_frames=2, mid_frame_probability=1.0,
                                               direction=Direction.DOWN)], seed=5)
    [(offset, action)] = feed_all(plan, stream, chunk)
    start = len(DOWN_HEAD) + len(frames[0])
    assert start < offset < start + len(frames[1])
    assert action.params == {"mid_frame": True, "bytes_into_frame": offset - start,
                             "frame_bytes": len(frames[1])}


def test_the_plan_does_not_depend_on_chunking() -> None:
    faults: list[Fault] = [ResetPeer(after_frames=(2, 6), mid_frame_probability=0.5),
                           Blackhole(after_frames=(1, 2), duration_seconds=(0.0, 1.0), repeat=True),
                           LimitData(max_bytes=900)]
    stream = UP_HEAD + b"".join(frame(b"p" * (i * 13 % 90), masked=True) for i in range(30))

    def plan(chunk: int) -> list[tuple[int, str, int, dict[str, object]]]:
        return [(o, a.kind, a.frame, a.params)
                for o, a in feed_all(plan_for(Direction.UP, faults, seed=9), stream, chunk)]

    whole = plan(1 << 20)
    assert {kind for _o, kind, _f, _p in whole} == {"reset", "blackhole", "close"}
    assert plan(1) == plan(4) == plan(17) == whole


def test_limit_bytes_cuts_at_the_byte_and_names_its_frame() -> None:
    frames = [frame(b"z" * 10, masked=True) for _ in range(5)]
    limit = len(UP_HEAD) + 20  # inside frame 2 (frames are 16 bytes)
    plan = plan_for(Direction.UP, [LimitData(max_bytes=limit, reset=False)])
    [(offset, action)] = feed_all(plan, UP_HEAD + b"".join(frames), 7)
    assert offset == limit
    assert (action.kind, action.frame) == ("close", 2)


def test_probability_zero_installs_nothing_and_direction_is_respected() -> None:
    stream = UP_HEAD + frame(b"a", masked=True) * 5
    assert feed_all(plan_for(Direction.UP, [ResetPeer(after_frames=1, probability=0.0)]),
                    stream, 64) == []
    assert feed_all(plan_for(Direction.UP, [ResetPeer(after_frames=1, direction=Direction.DOWN)]),
                    stream, 64) == []


def test_slow_close_delays_close_frames_and_the_fin() -> None:
    plan = plan_for(Direction.DOWN, [SlowClose(delay_seconds=0.25)])
    close = frame(b"\x03\xe8", opcode=0x8)
    acted = feed_all(plan, DOWN_HEAD + frame(b"hi") + close, 1 << 20)
    assert [(a.kind, a.seconds, a.params["what"]) for _o, a in acted] == [
        ("delay", 0.25, "close_frame")]
    assert acted[0][0] == len(DOWN_HEAD) + len(frame(b"hi"))  # held before the close frame
    [(record, delay)] = plan.fin_delays()
    assert (record.fault, delay, record.params["what"]) == ("slow_close", 0.25, "fin")


def test_latency_is_a_delay_per_chunk_and_is_recorded_on_install() -> None:
    plan = StreamPlan(Direction.UP)
    installed = plan.install([Latency(latency_seconds=0.1)], lambda _i: random.Random(0))
    assert [r.fault for r in installed.records] == ["latency"]
    assert plan.feed(UP_HEAD).delay == pytest.approx(0.1)
    assert StreamPlan(Direction.UP).feed(UP_HEAD).delay is None


def test_time_faults_come_back_as_timers_with_a_seeded_schedule() -> None:
    faults: list[Fault] = [Blackhole(after_seconds=(1.0, 2.0), duration_seconds=(0.5, 1.0),
                                     repeat=True), ResetPeer(after_seconds=3.0)]
    timers = StreamPlan(Direction.UP).install(faults, lambda i: random.Random(f"t/{i}")).timers
    assert [type(t.fault).__name__ for t in timers] == ["Blackhole", "ResetPeer"]
    schedule = timers[0].schedule()
    first = [next(schedule) for _ in range(3)]
    assert all(1.0 <= w.after <= 2.0 and w.duration is not None and 0.5 <= w.duration <= 1.0
               and not w.last for w in first)
    [reset] = list(timers[1].schedule())
    assert (reset.after, reset.duration, reset.last) == (3.0, None, True)
    rng = random.Random("t/0")
    rng.random()  # the install's draw: is the fault active on this connection?
    again = windows(rng, (1.0, 2.0), (0.5, 1.0), True)
    assert [next(again) for _ in range(3)] == first


def test_the_module_is_pure() -> None:
    path = Path(__file__).resolve().parents[2] / "sandbox" / "stream_plan.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    assert not {n.split(".")[0] for n in found} & {"gevent", "socket", "time", "random",
                                                    "select", "threading", "asyncio"}
