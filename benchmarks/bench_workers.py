"""Throughput of ``wscore run --workers N`` (1 vs 2 …): prints figures, asserts nothing.

    python benchmarks/bench_workers.py --workers 1 2 --clients 20 --duration 10 [--wsbench DIR]

Starts its own redis-server (tests/cluster/redisproc.py) and, per N,
``wscore run benchmarks.bench_app:server --workers N --redis URL`` on a free
port; the load is echo RPC round trips from closed-loop clients: the Node
harness (shared/tools/wsbench) when ``--wsbench DIR`` is given, pinned to the
last CPU with ``taskset``, else this process's gevent raw-socket clients. The
workers are not pinned: on a small machine they share cores with the load
generator, so read the figures with the core counts it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "cluster")]

from redisproc import RedisServer

from benchmarks.bench_server import bench_echo_python


def start_workers(n: int, redis_url: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wscore", "run", "benchmarks.bench_app:server", "--host", "127.0.0.1",
         "--port", "0", "--workers", str(n), "--redis", redis_url, "--log-level", "INFO"],
        cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    port = 0
    for line in proc.stderr:  # the supervisor's log (the port, then readiness), or one server's
        found = re.search(r"supervising \d+ workers on ws://[^:]+:(\d+)/", line)
        if found:
            port = int(found.group(1))
        if re.search(r"all \d+ workers ready", line):
            break
        single = re.search(r"wscore.cli: serving \S+ on ws://[^:]+:(\d+)/", line)
        if single:  # --workers 1: the plain server, no supervisor
            port = int(single.group(1))
            break
    else:
        raise SystemExit(f"bench: --workers {n} did not start")
    # Keep reading what the processes log, or a full pipe would stall them.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc, port


def run_wsbench(wsbench: str, clients: int, duration: float, warmup: float, port: int) -> dict[str, float]:
    cmd = ["node", os.path.join(wsbench, "wsbench.js"), "rpc", "-c", str(clients), "--duration",
           str(duration), "--warmup", str(warmup), "--url", f"ws://127.0.0.1:{port}/ws", "--quiet"]
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", str((os.cpu_count() or 1) - 1), *cmd]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])["results"]
    return {"rt_per_s": r["rt_per_s"], "p50_ms": r["latency"]["p50_ms"], "p99_ms": r["latency"]["p99_ms"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--wsbench", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp))
        redis.start()
        try:
            for n in args.workers:
                proc, port = start_workers(n, redis.url)
                try:
                    if args.wsbench:
                        out = {"generator": "wsbench (1 core)",
                               **run_wsbench(args.wsbench, args.clients, args.duration, args.warmup, port)}
                    else:
                        out = bench_echo_python(SimpleNamespace(
                            clients=args.clients, duration=args.duration, warmup=args.warmup), port)
                    print(json.dumps({"workers": n, "clients": args.clients, "cpus": os.cpu_count(), **out}))
                finally:
                    proc.terminate()
                    proc.wait(60)
        finally:
            redis.stop()


if __name__ == "__main__":
    main()
