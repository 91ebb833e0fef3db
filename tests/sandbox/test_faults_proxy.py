"""Each fault, one by one, through a real proxy on 127.0.0.1."""

import socket
import time

import pytest
import websocket
from sandbox_helpers import (
    EchoTcpServer,
    EchoWsServer,
    raw_ws_connect,
    recv_exactly,
    recv_until_closed,
    ws_frame,
)

from wscore import sandbox
from wscore.sandbox import (
    Bandwidth,
    Blackhole,
    Direction,
    Latency,
    LimitData,
    Refuse,
    RefuseMode,
    ResetPeer,
    Slicer,
    SlowClose,
)

CONNECTION_ERRORS = (OSError, websocket.WebSocketException)


def _connect(net: sandbox.ProxyHandle, timeout: float = 5.0) -> websocket.WebSocket:
    return websocket.create_connection(net.url("/ws"), timeout=timeout)


def test_clean_passthrough_counts_frames(ws_echo: EchoWsServer) -> None:
    with sandbox.proxy(ws_echo.address) as net:
        ws = _connect(net)
        for i in range(20):
            ws.send(f"m{i}")
            assert ws.recv() == f"m{i}"
        ws.send_binary(b"\x00" * 70000)  # 64-bit length header path
        assert ws.recv() == b"\x00" * 70000
        ws.close()
        stats = net.stats()
        assert stats["frames"]["up"] >= 21
        assert stats["frames"]["down"] >= 21
        assert net.fault_log == []
        assert net.wait_for_active(0)


def test_plain_http_passes_through_raw(ws_echo: EchoWsServer) -> None:
    with sandbox.proxy(ws_echo.address) as net:
        sock = socket.create_connection(("127.0.0.1", net.port), timeout=5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _err = recv_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"ok")
        assert net.stats()["frames"] == {"up": 0, "down": 0}


def test_latency_is_at_least_configured(ws_echo: EchoWsServer) -> None:
    fault = Latency(latency_seconds=0.08, jitter_seconds=0.02, direction=Direction.DOWN)
    with sandbox.proxy(ws_echo.address, faults=[fault]) as net:
        ws = _connect(net)
        for _ in range(3):
            start = time.monotonic()
            ws.send("ping")
            assert ws.recv() == "ping"
            assert time.monotonic() - start >= 0.06  # latency - jitter
        ws.close()
        assert [r.fault for r in net.fault_log] == ["latency"]


def test_bandwidth_caps_rate(tcp_echo: EchoTcpServer) -> None:
    rate, total = 100_000, 40_000
    fault = Bandwidth(rate_bytes_per_second=rate, direction=Direction.DOWN)
    with sandbox.proxy(tcp_echo.address, faults=[fault]) as net:
        sock = socket.create_connection(("127.0.0.1", net.port), timeout=5)
        start = time.monotonic()
        sock.sendall(b"x" * total)
        assert recv_exactly(sock, total) == b"x" * total
        # A token bucket may send its first piece (rate * 0.05) at once.
        assert time.monotonic() - start >= (total - rate * 0.05) / rate * 0.95
        sock.close()


def test_slicer_delivers_intact_frames(ws_echo: EchoWsServer, tcp_echo: EchoTcpServer) -> None:
    faults = [Slicer(max_slice_bytes=3, direction=Direction.BOTH)]
    with sandbox.proxy(ws_echo.address, faults=faults) as net:
        ws = _connect(net)
        messages = ["a", "hello" * 30, "é" * 200, "x" * 1000]
        for msg in messages:
            ws.send(msg)
            assert ws.recv() == msg
        ws.close()
    with sandbox.proxy(tcp_echo.address, faults=[
            Slicer(max_slice_bytes=4, slice_delay_seconds=0.002, direction=Direction.UP)]) as net:
        sock = socket.create_connection(("127.0.0.1", net.port), timeout=5)
        sock.sendall(b"y" * 200)
        assert recv_exactly(sock, 200) == b"y" * 200
        sock.close()
    # The server saw the data in more than one piece (sliced writes).
    assert len(tcp_echo.recv_sizes) > 1


def test_reset_mid_frame_gives_client_an_error(ws_echo: EchoWsServer) -> None:
    fault = ResetPeer(direction=Direction.DOWN, after_frames=2, mid_frame_probability=1.0)
    with sandbox.proxy(ws_echo.address, faults=[fault]) as net:
        sock = raw_ws_connect(net.port)
        payload1, payload2 = b"first", b"z" * 300
        sock.sendall(ws_frame(payload1))
        assert recv_exactly(sock, 2 + len(payload1)) == ws_frame(payload1, masked=False)
        sock.sendall(ws_frame(payload2))
        data, err = recv_until_closed(sock)
        full = ws_frame(payload2, masked=False)
        assert 0 < len(data) < len(full) and full.startswith(data)  # cut inside frame 2
        assert isinstance(err, ConnectionResetError)
        (rec,) = net.fault_log
        assert (rec.fault, rec.direction, rec.frame, rec.trigger) == (
            "reset_peer", "down", 2, "frames")
        assert rec.params["mid_frame"] is True
        assert rec.params["bytes_into_frame"] == len(data)


def test_reset_after_client_frame_before_reply(ws_echo: EchoWsServer) -> None:
    fault = ResetPeer(direction=Direction.UP, after_frames=1)
    with sandbox.proxy(ws_echo.address, faults=[fault]) as net:
        ws = _connect(net)
        ws.send("request")
        with pytest.raises(CONNECTION_ERRORS):
            ws.recv()
        (rec,) = net.fault_log
        assert (rec.direction, rec.frame, rec.params["mid_frame"]) == ("up", 1, False)
        assert net.wait_for_active(0)


def test_reset_after_seconds_logs_drawn_time(ws_echo: EchoWsServer) -> None:
    fault = ResetPeer(direction=Direction.DOWN, after_seconds=(0.05, 0.1))
    with sandbox.proxy(ws_echo.address, faults=[fault], seed=3) as net:
        ws = _connect(net)
        assert net.wait_for_fault("reset_peer")
        with pytest.raises(CONNECTION_ERRORS):
            ws.send("x")
            ws.recv()
        (rec,) = net.fault_log
        assert rec.trigger == "time" and 0.05 <= rec.params["after_seconds"] <= 0.1


def test_manual_blackhole_holds_then_resumes(ws_echo: EchoWsServer) -> None:
    with sandbox.proxy(ws_echo.address) as net:
        ws = _connect(net)
        ws.send("before")
        assert ws.recv() == "before"
        with net.blackhole():
            ws.send("held")
            ws.settimeout(0.2)
            with pytest.raises(websocket.WebSocketTimeoutException):
                ws.recv()  # nothing gets through while the blackhole lasts
            assert net.stats()["blackholed"]
        ws.settimeout(5)
        assert ws.recv() == "held"  # held, not dropped
        ws.close()


def test_blackhole_fault_after_frame(ws_echo: EchoWsServer) -> None:
    fault = Blackhole(direction=Direction.UP, after_frames=1, duration_seconds=0.3)
    with sandbox.proxy(ws_echo.address, faults=[fault]) as net:
        ws = _connect(net)
        start = time.monotonic()
        ws.send("one")
        assert ws.recv() == "one"  # the echo is held too (both directions stop)
        assert time.monotonic() - start >= 0.3
        ws.send("two")
        assert ws.recv() == "two"
        ws.close()
        (rec,) = net.fault_log
        assert (rec.fault, rec.frame, rec.params["duration_seconds"]) == ("blackhole", 1, 0.3)


def test_limit_data_bytes(tcp_echo: EchoTcpServer) -> None:
    with sandbox.proxy(tcp_echo.address,
                       faults=[LimitData(max_bytes=50, direction=Direction.DOWN)]) as net:
        sock = socket.create_connection(("127.0.0.1", net.port), timeout=5)
        sock.sendall(b"q" * 100)
        data, err = recv_until_closed(sock)
        assert data == b"q" * 50 and err is None  # exactly N bytes, then FIN
        (rec,) = net.fault_log
        assert (rec.fault, rec.trigger, rec.params["max_bytes"]) == ("limit_data", "bytes", 50)


def test_limit_data_frames(ws_echo: EchoWsServer) -> None:
    with sandbox.proxy(ws_echo.address,
                       faults=[LimitData(max_frames=2, direction=Direction.UP)]) as net:
        sock = raw_ws_connect(net.port)
        sock.sendall(ws_frame(b"1") + ws_frame(b"2") + ws_frame(b"3"))
        recv_until_closed(sock)
        assert net.proxy.wait_until(lambda: len(ws_echo.received) >= 2, 5)
        assert ws_echo.received == ["1", "2"]  # frame 3 never reached the server
        (rec,) = net.fault_log
        assert (rec.fault, rec.frame, rec.direction) == ("limit_data", 2, "up")


def test_refuse_window_then_accepts(ws_echo: EchoWsServer) -> None:
    with sandbox.proxy(ws_echo.address) as net:
        net.refuse(0.3)
        with pytest.raises(CONNECTION_ERRORS):
            _connect(net)
        assert net.proxy.wait_until(lambda: not net.proxy.refusing, 5)
        ws = _connect(net)
        ws.send("up again")
        assert ws.recv() == "up again"
        ws.close()
        assert net.stats()["connections"]["refused"] == 1


def test_refuse_hold_mode_delays_connection(ws_echo: EchoWsServer) -> None:
    with sandbox.proxy(ws_echo.address) as net:
        net.refuse(0.3, RefuseMode.HOLD)
        start = time.monotonic()
        ws = _connect(net)
        assert time.monotonic() - start >= 0.25
        ws.close()


def test_refuse_probability_is_per_connection(ws_echo: EchoWsServer) -> None:
    with sandbox.proxy(ws_echo.address, faults=[Refuse(probability=1.0)]) as net:
        with pytest.raises(CONNECTION_ERRORS):
            _connect(net)
        assert [(r.fault, r.connection) for r in net.fault_log] == [("refuse", 0)]


def test_slow_close_delays_fin(tcp_echo: EchoTcpServer) -> None:
    fault = SlowClose(delay_seconds=0.3, direction=Direction.DOWN)
    with sandbox.proxy(tcp_echo.address, faults=[fault]) as net:
        sock = socket.create_connection(("127.0.0.1", net.port), timeout=5)
        sock.sendall(b"bye")
        assert recv_exactly(sock, 3) == b"bye"
        start = time.monotonic()
        sock.shutdown(socket.SHUT_WR)
        data, err = recv_until_closed(sock)
        assert (data, err) == (b"", None)
        assert time.monotonic() - start >= 0.3
        assert [r.params["what"] for r in net.fault_log] == ["fin"]


def test_slow_close_delays_close_frame(ws_echo: EchoWsServer) -> None:
    fault = SlowClose(delay_seconds=0.3, direction=Direction.DOWN)
    with sandbox.proxy(ws_echo.address, faults=[fault]) as net:
        sock = raw_ws_connect(net.port)
        start = time.monotonic()
        sock.sendall(ws_frame(b"\x03\xe8", opcode=0x8))
        head = recv_exactly(sock, 2)
        assert head[0] & 0x0F == 0x8
        assert time.monotonic() - start >= 0.3
        assert net.fault_log[0].params["what"] == "close_frame"


def test_set_faults_applies_to_live_connection(ws_echo: EchoWsServer) -> None:
    with sandbox.proxy(ws_echo.address) as net:
        ws = _connect(net)
        ws.send("a")
        assert ws.recv() == "a"
        net.set_faults([ResetPeer(direction=Direction.UP, after_frames=1)])
        ws.send("b")
        with pytest.raises(CONNECTION_ERRORS):
            ws.recv()
        assert net.fault_log[-1].fault == "reset_peer"


def test_cut_all_resets_every_connection(ws_echo: EchoWsServer) -> None:
    with sandbox.proxy(ws_echo.address) as net:
        clients = [_connect(net) for _ in range(3)]
        assert net.wait_for_connections(3) and net.wait_for_active(3)
        assert net.cut_all() == 3
        for ws in clients:
            with pytest.raises(CONNECTION_ERRORS):
                ws.recv()
        assert net.wait_for_active(0)
        assert len(net.fault_log) == 3


def test_upstream_down_resets_client() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with sandbox.proxy(("127.0.0.1", port)) as net:
        with pytest.raises(CONNECTION_ERRORS):
            _connect(net)
        assert net.stats()["connections"]["upstream_errors"] == 1
