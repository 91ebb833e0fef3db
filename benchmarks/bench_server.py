"""Server benchmarks that print figures (never asserted in tests).

    python benchmarks/bench_server.py idle --conns 1000
    python benchmarks/bench_server.py echo --clients 10 --duration 10 [--wsbench DIR]
    python benchmarks/bench_server.py fanout --subs 1000 --rate 100 --messages 800 --wsbench DIR
    python benchmarks/bench_server.py all [--wsbench DIR]     # what `make bench` runs (~1 min)

The server runs in its own process (``wscore run benchmarks.bench_app:server``),
pinned to CPU 0 when ``taskset`` exists; the load runs here, pinned to CPU 1.

* idle: RSS of the server process before and after N sessions connect
  (after a warm-up of 50 connections opened and closed), divided by N.
* echo: C closed-loop clients send ``echo`` requests; round trips/s and latency.
  With ``--wsbench DIR`` (or ``WSBENCH=DIR``) an independent Node load generator
  is used; otherwise a gevent raw-socket client using wscore's frame codec
  (which may saturate before the server: watch the CPU figures).
* fanout: the Node load generator only (a Python receiver cannot keep up with
  100k deliveries/s); without one, ``all`` skips it with a message and
  ``fanout`` exits 2.
* all: idle (200 sessions), echo (5 s), and fanout when a load generator is given.

The Node load generator (``wsbench``) is not part of this repository; what it
must provide, and how the figures in docs/guarantees.md were taken, is in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

from gevent import monkey

monkey.patch_all()

import gevent

from wscore.protocol import frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.procs import free_port, rss_kib, wait_until_up


def start_server(port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "wscore.cli", "run", "benchmarks.bench_app:server",
           "--host", "127.0.0.1", "--port", str(port), "--log-level", "WARNING"]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0", *cmd]
        os.sched_setaffinity(0, {1})
    proc = subprocess.Popen(cmd, cwd=ROOT)
    wait_until_up(proc, port)
    return proc


def healthz(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        body: dict[str, Any] = json.loads(resp.read())
        return body


class RawConn:
    """A minimal client: handshake, masked text frames out, events in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          b"Sec-WebSocket-Version: 13\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during handshake")
            data += chunk
        self.decoder = frames.FrameDecoder(role="client", max_message_bytes=1 << 24)
        self.pending: list[str] = []
        rest = data.split(b"\r\n\r\n", 1)[1]
        if rest:
            self._feed(rest)

    def _feed(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if isinstance(event, frames.TextMessage):
                self.pending.append(event.text)

    def recv_text(self) -> str:
        while not self.pending:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self._feed(chunk)
        return self.pending.pop(0)

    def send_text(self, text: str) -> None:
        self.sock.sendall(frames.encode_frame(frames.OP_TEXT, text.encode(), mask_key=os.urandom(4)))


def bench_idle(args: argparse.Namespace) -> None:
    port = free_port()
    server = start_server(port)
    try:
        warm = [RawConn(port) for _ in range(50)]
        for c in warm:
            c.recv_text()
            c.sock.close()
        while healthz(port)["connections"]:
            gevent.sleep(0.05)
        gevent.sleep(0.5)  # let the warm-up garbage settle (measurement, not synchronisation)
        before = rss_kib(server.pid)
        conns = []
        for _ in range(args.conns):
            c = RawConn(port)
            c.recv_text()  # sys.connected: the session exists
            conns.append(c)
        while healthz(port)["sessions"] < args.conns + 0:
            gevent.sleep(0.05)
        gevent.sleep(1.0)
        after = rss_kib(server.pid)
        h = healthz(port)
        print(json.dumps({"mode": "idle", "sessions": h["sessions"], "connections": h["connections"],
                          "rss_kib_before": before, "rss_kib_after": after,
                          "kib_per_session": round((after - before) / args.conns, 2)}))
    finally:
        server.terminate()
        server.wait(10)


def bench_echo_python(args: argparse.Namespace, port: int) -> dict[str, Any]:
    payload = json.dumps({"d": "x" * 48})
    latencies: list[float] = []
    count = [0]
    stop_at = [0.0]
    measuring = [False]

    def loop(i: int) -> None:
        c = RawConn(port)
        c.recv_text()
        n = 0
        while time.monotonic() < stop_at[0]:
            n += 1
            t0 = time.perf_counter()
            c.send_text(f'{{"v":"1.0","e":"echo","p":{payload},"c":"{i}.{n}"}}')
            c.recv_text()
            if measuring[0]:
                latencies.append(time.perf_counter() - t0)
                count[0] += 1
        c.sock.close()

    stop_at[0] = time.monotonic() + args.warmup + args.duration
    workers = [gevent.spawn(loop, i) for i in range(args.clients)]
    gevent.sleep(args.warmup)
    measuring[0] = True
    t0, cpu0 = time.monotonic(), time.process_time()
    gevent.joinall(workers)
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    latencies.sort()
    return {"generator": "python", "rt_per_s": round(count[0] / elapsed, 1),
            "p50_ms": round(statistics.median(latencies) * 1000, 3),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 3),
            "client_cpu": round(cpu / elapsed, 3)}


def run_wsbench(wsbench: str, mode_args: list[str], port: int, pid: int) -> dict[str, Any]:
    cmd = ["node", os.path.join(wsbench, "wsbench.js"), *mode_args,
           "--url", f"ws://127.0.0.1:{port}/ws", "--label", "wscore", "--server-pid", str(pid),
           "--quiet"]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "1", *cmd]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])["results"]
    return result


def bench_echo(args: argparse.Namespace) -> None:
    port = free_port()
    server = start_server(port)
    try:
        if args.wsbench:
            r = run_wsbench(args.wsbench, ["rpc", "-c", str(args.clients), "--duration",
                                           str(args.duration), "--warmup", str(args.warmup)],
                            port, server.pid)
            out = {"generator": "wsbench", "rt_per_s": r["rt_per_s"],
                   "p50_ms": r["latency"]["p50_ms"], "p99_ms": r["latency"]["p99_ms"],
                   "errors": r["errors"], "client_cpu": r.get("client_cpu"),
                   "server_cpu": r.get("server", {}).get("cpu_util")}
        else:
            out = bench_echo_python(args, port)
        print(json.dumps({"mode": "echo", "clients": args.clients, **out}))
    finally:
        server.terminate()
        server.wait(10)


def find_wsbench(path: str | None) -> str | None:
    """The load generator's directory (``--wsbench``, else ``$WSBENCH``), checked; None if unset."""
    path = path or os.environ.get("WSBENCH") or None
    if path is None:
        return None
    if not os.path.isfile(os.path.join(path, "wsbench.js")):
        raise SystemExit(f"bench: no wsbench.js in {path!r} (--wsbench / WSBENCH)")
    if shutil.which("node") is None:
        raise SystemExit("bench: --wsbench needs node on PATH")
    return path


def bench_fanout(args: argparse.Namespace) -> None:
    if not args.wsbench:
        raise SystemExit("bench: fanout needs the Node load generator: --wsbench DIR or WSBENCH=DIR "
                         "(see benchmarks/README.md)")
    port = free_port()
    server = start_server(port)
    try:
        r = run_wsbench(args.wsbench, ["fanout", "--subs", str(args.subs), "--rate", str(args.rate),
                                       "--messages", str(args.messages)], port, server.pid)
        print(json.dumps({"mode": "fanout", "subs": args.subs, "rate": args.rate,
                          "deliveries_per_s": r["deliveries_per_s"],
                          "p50_ms": r["latency"]["p50_ms"], "p99_ms": r["latency"]["p99_ms"],
                          "missing": r["missing_total"], "duplicates": r["duplicates_total"],
                          "client_cpu": r.get("client_cpu"),
                          "server_cpu": r.get("server", {}).get("cpu_util"),
                          "foreign_cores": r.get("foreign_cores")}))
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    idle = sub.add_parser("idle")
    idle.add_argument("--conns", type=int, default=1000)
    echo = sub.add_parser("echo")
    echo.add_argument("--clients", type=int, default=10)
    echo.add_argument("--duration", type=float, default=10)
    echo.add_argument("--warmup", type=float, default=2)
    echo.add_argument("--wsbench", default=None)
    fan = sub.add_parser("fanout")
    fan.add_argument("--subs", type=int, default=1000)
    fan.add_argument("--rate", type=int, default=100)
    fan.add_argument("--messages", type=int, default=800)
    fan.add_argument("--wsbench", default=None)
    every = sub.add_parser("all", help="idle, echo and (with a load generator) fanout, bounded")
    every.add_argument("--wsbench", default=None)
    args = ap.parse_args()
    args.wsbench = find_wsbench(args.wsbench) if hasattr(args, "wsbench") else None
    if args.mode == "all":
        bench_all(args)
        return
    {"idle": bench_idle, "echo": bench_echo, "fanout": bench_fanout}[args.mode](args)


def bench_all(args: argparse.Namespace) -> None:
    """The bounded run of ``make bench``: each figure prints one JSON line."""
    base = {"wsbench": args.wsbench}
    bench_idle(argparse.Namespace(**base, conns=200))
    bench_echo(argparse.Namespace(**base, clients=10, duration=5.0, warmup=1.0))
    if args.wsbench:
        bench_fanout(argparse.Namespace(**base, subs=1000, rate=100, messages=400))
    else:
        print("bench: fanout skipped: it needs the Node load generator (--wsbench DIR or "
              "WSBENCH=DIR; see benchmarks/README.md)", file=sys.stderr)


if __name__ == "__main__":
    main()
