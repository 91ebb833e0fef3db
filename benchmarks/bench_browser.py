"""Browser-client figures in headless Chromium (prints figures, asserts nothing).

    .venv/bin/python benchmarks/bench_browser.py [--cuts 60] [--messages 10000]

Needs ``make js chromium``. One page imports ``/wscore.js`` from an in-process server
and connects through the sandbox proxy (also in-process); ``tests/browser/drive.mjs
bench`` drives it and takes commands on stdin.

(a) Bundle size: ``wscore/static/wscore.js`` minified, and gzipped (level 9).
(b) Resume time after the link returns, over ``--cuts`` cuts: the proxy holds new
    connections (blackhole), the live link is reset, and once the client's reconnect
    attempt is held in the proxy the network is restored; measured from "restored"
    to the page's ``onResume`` hook (both wall clocks of this machine).
(c) The page's CPU per ``--messages`` received server events (pushed in bursts of
    200, each answered by one reply): Chrome DevTools ``Performance.getMetrics``
    ``TaskDuration`` (all main-thread work of the page: WebSocket dispatch, JSON,
    the client, the listener) and ``ScriptDuration`` (JavaScript only); first for a bare
    WebSocket that only parses each frame (the browser's own floor), then for WsClient.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import wscore  # noqa: F401  (gevent-ready process)

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
PAGE = b"""<!doctype html><meta charset="utf-8"><script type="module">
import * as W from "/wscore.js"; window.W = W;</script>"""


def page_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(PAGE)))])
    return [PAGE]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def read_line(proc: subprocess.Popen[str], prefix: str) -> str:
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"bench driver ended early (status {proc.wait()})")
        if line.startswith(prefix):
            return line[len(prefix):].strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=60)
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args(argv)

    from wscore import WsContext, WsServer, WsServerConfig, sandbox

    data = (REPO / "wscore/static/wscore.js").read_bytes()
    print(f"bundle: {len(data)} B minified, {len(gzip.compress(data, 9))} B min+gzip")

    server = WsServer(config=WsServerConfig.dev(host="127.0.0.1", port=0, rate_limit=100_000.0,
                                                rate_burst=100_000.0))

    @server.on("burst")
    def burst(ctx: WsContext) -> int:
        n = int(ctx.payload)
        for i in range(n):
            ctx.emit("tick", i)
        return n

    server.mount(page_app)
    server.start()
    try:
        with sandbox.proxy(("127.0.0.1", server.port)) as net:
            cfg = {"http": f"http://127.0.0.1:{server.port}", "proxyWs": net.url("/ws")}
            proc = subprocess.Popen(["node", str(REPO / "tests/browser/drive.mjs"), "bench",
                                     json.dumps(cfg)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            assert proc.stdin is not None
            try:
                read_line(proc, "READY")
                times: list[float] = []
                for i in range(1, args.cuts + 1):
                    window = net.blackhole()
                    accepted = net.proxy.accepted
                    net.cut_all()
                    if not net.proxy.wait_until(lambda a=accepted: net.proxy.accepted > a, 10):
                        raise SystemExit("the client made no reconnect attempt")
                    restored = time.time() * 1000
                    window.end()
                    proc.stdin.write(f"resume {i}\n")
                    proc.stdin.flush()
                    times.append(float(read_line(proc, "RESUMED ")) - restored)
                print(f"resume after the link returns, attempt held in flight ({args.cuts} cuts): "
                      f"median {statistics.median(times):.1f} ms, p99 {percentile(times, 0.99):.1f} ms, "
                      f"max {max(times):.1f} ms")
                for cmd, what in (("cpu-raw", "bare WebSocket + JSON.parse (floor)"),
                                  ("cpu", "WsClient")):
                    proc.stdin.write(f"{cmd} {args.messages}\n")
                    proc.stdin.flush()
                    cpu = json.loads(read_line(proc, "CPU "))
                    per10k = 10_000 / cpu["n"]
                    print(f"page CPU per 10k received events, {what}: "
                          f"{cpu['taskS'] * per10k * 1000:.0f} ms main-thread tasks, "
                          f"{cpu['scriptS'] * per10k * 1000:.0f} ms script "
                          f"({cpu['n'] / (cpu['wallMs'] / 1000):.0f} events/s wall)")
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                proc.wait(30)
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
