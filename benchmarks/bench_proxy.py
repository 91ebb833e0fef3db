"""Throughput of the sandbox proxy (no faults) versus a direct connection.

Usage: python benchmarks/bench_proxy.py [--messages N] [--size BYTES]

The WebSocket echo server and the client run in this process (gevent); the
proxy runs in a child process (``sandbox.cli proxy``), as it would in use, so
the figures show whether the proxy is the bottleneck.  Three patterns:
``down`` (server pushes N frames), ``up`` (client pushes N frames) and
``echo`` (client keeps a window of 64 requests in flight).
"""

from gevent import monkey

monkey.patch_all()

import argparse
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.event
import websocket
from gevent.pywsgi import WSGIServer
from geventwebsocket.handler import WebSocketHandler

REPO = Path(__file__).resolve().parents[1]
WINDOW = 64


class Server:
    def __init__(self, n: int, size: int) -> None:
        self.n, self.payload = n, "x" * size
        self.received = 0
        self.done = gevent.event.Event()
        self.http = WSGIServer(("127.0.0.1", 0), self.app, handler_class=WebSocketHandler,
                               log=None)
        self.http.start()

    def app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        ws = environ["wsgi.websocket"]
        mode = environ["PATH_INFO"].strip("/")
        if mode == "down":
            for _ in range(self.n):
                ws.send(self.payload)
        while True:
            msg = ws.receive()
            if msg is None:
                break
            if mode == "echo":
                ws.send(msg)
            else:
                self.received += 1
                if self.received == self.n:
                    self.done.set()
        return []


def run(port: int, mode: str, server: Server, n: int, size: int) -> float:
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/{mode}", timeout=30)
    payload = "x" * size
    start = time.perf_counter()
    if mode == "down":
        for _ in range(n):
            ws.recv()
    elif mode == "up":
        server.received = 0
        server.done.clear()
        for _ in range(n):
            ws.send(payload)
        server.done.wait(60)
    else:
        sent = got = 0
        while got < n:
            while sent < n and sent - got < WINDOW:
                ws.send(payload)
                sent += 1
            ws.recv()
            got += 1
    elapsed = time.perf_counter() - start
    ws.close()
    return n / elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=100)
    args = parser.parse_args()
    server = Server(args.messages, args.size)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    proxy_port = probe.getsockname()[1]
    probe.close()
    code = "import sys; from wscore.sandbox.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "proxy", "--listen", f"127.0.0.1:{proxy_port}",
         "--upstream", f"127.0.0.1:{server.http.server_port}"],
        stdout=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    proc.stdout.readline()  # startup line: the proxy is listening
    try:
        print(f"{args.messages} messages of {args.size} bytes")
        print(f"{'pattern':8} {'direct msg/s':>14} {'proxied msg/s':>14} {'ratio':>7}")
        for mode in ("down", "up", "echo"):
            direct = run(server.http.server_port, mode, server, args.messages, args.size)
            proxied = run(proxy_port, mode, server, args.messages, args.size)
            print(f"{mode:8} {direct:14,.0f} {proxied:14,.0f} {proxied / direct:7.2f}")
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
