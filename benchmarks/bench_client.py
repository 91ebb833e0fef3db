"""Client benchmarks (prints figures, asserts nothing).

    .venv/bin/python benchmarks/bench_client.py [--cuts 100] [--messages 10000]

(a) Resume latency through the sandbox proxy, over ``--cuts`` cuts each:
    * ``held``:    the link is cut while the proxy holds new connections (blackhole);
                   restored with a reconnect attempt already in flight;
    * ``refused``: the link is cut while the proxy refuses connections for 0.3 s;
                   the client is then asleep in its backoff (default config), so
                   this shows what the backoff costs after an outage.
    Measured from "link restored" to the client's ``on_resume`` hook.

(b) The client's own CPU per 10k received messages (``time.process_time`` of this
    process; the server runs in a subprocess, no proxy): 10k events pushed by the
    server (in bursts answered by one reply each), and 10k sequential request/reply
    round trips.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import gevent
import gevent.event

import wscore  # noqa: F401  (gevent-ready process)

__all__ = ["main"]


def serve(port: int) -> None:
    """Server mode (run in a subprocess): an app with echo and burst handlers."""
    from wscore import WsContext, WsServer, WsServerConfig

    server = WsServer(
        config=WsServerConfig.dev(host="127.0.0.1", port=port, rate_limit=100_000.0, rate_burst=100_000.0)
    )

    @server.on("echo")
    def echo(ctx: WsContext) -> Any:
        return ctx.payload

    @server.on("burst")
    def burst(ctx: WsContext) -> int:
        n = int(ctx.payload)
        for i in range(n):
            ctx.emit("tick", i)
        return n

    server.start()
    print(server.port, flush=True)
    server.serve_forever()


def start_server() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        raise SystemExit("server subprocess did not start")
    return proc, int(line)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def bench_resume(port: int, cuts: int, mode: str) -> list[float]:
    from wscore import sandbox
    from wscore.client import WsClient, WsClientConfig

    latencies: list[float] = []
    resumed = gevent.event.Event()
    down = gevent.event.Event()
    stamp: dict[str, float] = {}
    with sandbox.proxy(("127.0.0.1", port), seed=0) as net:
        # open_timeout bounds an attempt held by the blackhole; the rest is the default config.
        client = WsClient(net.url("/ws"), config=WsClientConfig(open_timeout=60.0))

        @client.on_resume
        def on_resume(info: Any) -> None:
            stamp["resumed"] = time.monotonic()
            resumed.set()

        @client.on_disconnect
        def on_disconnect(reason: Any) -> None:
            down.set()

        client.connect()
        for _ in range(cuts):
            resumed.clear()
            down.clear()
            if mode == "held":
                window = net.blackhole()
                net.cut_all()
                down.wait(10)
                # Let the client's next attempt reach the proxy (it is held there).
                accepted = net.proxy.accepted
                net.proxy.wait_until(lambda a=accepted: net.proxy.accepted > a, 30)
                restored = time.monotonic()
                window.end()
            else:
                restored = time.monotonic() + 0.3
                net.refuse(0.3)
                net.cut_all()
            if not resumed.wait(60):
                raise SystemExit("no resume within 60 s")
            latencies.append(stamp["resumed"] - restored)
            assert client.request("echo", 1) == 1
        client.close()
    return latencies


def bench_cpu(port: int, messages: int) -> tuple[float, float, float, float]:
    from wscore.client import WsClient

    client = WsClient(f"ws://127.0.0.1:{port}/ws")
    count = [0]
    client.on("tick", lambda payload: count.__setitem__(0, count[0] + 1))
    client.connect()
    client.request("burst", 100)  # warm-up
    burst = 500
    cpu0, wall0 = time.process_time(), time.perf_counter()
    received = 0
    while received < messages:
        received += client.request("burst", burst)
    while count[0] < 100 + received:  # every callback ran
        gevent.sleep(0.001)
    events_cpu, events_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(messages):
        client.request("echo", i)
    rpc_cpu, rpc_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    client.close()
    scale = 10_000 / messages
    return events_cpu * scale, events_wall * scale, rpc_cpu * scale, rpc_wall * scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cuts", type=int, default=100)
    parser.add_argument("--messages", type=int, default=10_000)
    args = parser.parse_args(argv)
    if args.serve:
        serve(0)
        return 0
    proc, port = start_server()
    try:
        print(f"python {sys.version.split()[0]}, gevent {gevent.__version__}, {os.cpu_count()} CPUs")
        for mode in ("held", "refused"):
            lat = bench_resume(port, args.cuts, mode)
            print(
                f"(a) resume after link restored [{mode}, {len(lat)} cuts]: "
                f"median {statistics.median(lat) * 1000:.1f} ms, "
                f"p99 {percentile(lat, 0.99) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms"
            )
        ev_cpu, ev_wall, rpc_cpu, rpc_wall = bench_cpu(port, args.messages)
        print(
            f"(b) client CPU per 10k server events: {ev_cpu * 1000:.0f} ms "
            f"({ev_cpu * 100:.1f} us/msg; wall {ev_wall * 1000:.0f} ms, "
            f"{10_000 / ev_wall:,.0f} msg/s)"
        )
        print(
            f"(b) client CPU per 10k request/reply round trips: {rpc_cpu * 1000:.0f} ms "
            f"({rpc_cpu * 100:.1f} us/req; wall {rpc_wall * 1000:.0f} ms, "
            f"{10_000 / rpc_wall:,.0f} req/s)"
        )
    finally:
        proc.terminate()
        proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
