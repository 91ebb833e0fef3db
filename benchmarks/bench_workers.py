"""Throughput of ``wscore run --workers N`` (1 vs 2 …): prints figures, asserts nothing.

    python benchmarks/bench_workers.py --workers 1 2 --clients 20 --duration 10 --rounds 3 [--wsbench DIR]

Starts its own redis-server (tests/cluster/redisproc.py) and, per N,
``wscore run benchmarks.bench_app:server --workers N --redis URL`` on a free
port; the load is echo RPC round trips from closed-loop clients: the Node
harness (shared/tools/wsbench) when ``--wsbench DIR`` is given, pinned to the
last CPU with ``taskset``, else this process's gevent raw-socket clients. The
workers are not pinned: on a small machine they share cores with the load
generator, so read the figures with the core counts it prints.

Each run prints one JSON line with the CPU each party used during it, in cores
(CPU seconds / wall seconds): ``cores_generator`` (the load generator),
``cores_server`` (the supervisor and its workers) and ``cores_redis``. Runs
alternate (1, 2, 1, 2 …, ``--rounds`` times) so that the machine's drifting
load hits both alike; the last line gives the medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
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


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (gone ones count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def family(pid: int) -> list[int]:
    """``pid`` and its children (the supervisor's workers)."""
    found = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except OSError:
                continue
    return found


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
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    rates: dict[int, list[float]] = {n: [] for n in args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp))
        redis.start()
        try:
            for _ in range(args.rounds):
                for n in args.workers:
                    out = run_once(args, n, redis)
                    rates[n].append(out["rt_per_s"])
                    print(json.dumps(out), flush=True)
        finally:
            redis.stop()
    medians = {n: statistics.median(v) for n, v in rates.items()}
    base = medians[args.workers[0]]
    print(json.dumps({"summary": "median round trips/s", "cpus": os.cpu_count(), "rounds": args.rounds,
                      **{f"workers_{n}": round(m) for n, m in medians.items()},
                      **{f"ratio_{n}_vs_{args.workers[0]}": round(m / base, 2) for n, m in medians.items()}}))


def run_once(args: argparse.Namespace, n: int, redis: RedisServer) -> dict[str, object]:
    proc, port = start_workers(n, redis.url)
    try:
        server = family(proc.pid)
        redis_pid = [redis.pid]
        # wsbench is a child process (reaped by the run); the Python clients run in this one.
        who = resource.RUSAGE_CHILDREN if args.wsbench else resource.RUSAGE_SELF
        before = (time.monotonic(), cpu_seconds(server), cpu_seconds(redis_pid), resource.getrusage(who))
        each_before = [cpu_seconds([pid]) for pid in server]
        if args.wsbench:
            result = run_wsbench(args.wsbench, args.clients, args.duration, args.warmup, port)
            out: dict[str, object] = {"generator": "wsbench", **result}
        else:
            out = {"generator": "python", **bench_echo_python(SimpleNamespace(
                clients=args.clients, duration=args.duration, warmup=args.warmup), port)}
        wall = time.monotonic() - before[0]
        after = resource.getrusage(who)
        generator = after.ru_utime + after.ru_stime - before[3].ru_utime - before[3].ru_stime
        return {"workers": n, "clients": args.clients, "cpus": os.cpu_count(), **out,
                "cores_generator": round(generator / wall, 2),
                "cores_server": round((cpu_seconds(server) - before[1]) / wall, 2),
                # The supervisor first (it only supervises), then each worker: how evenly
                # the shared listening socket spread the connections.
                "cores_each": [round((cpu_seconds([pid]) - was) / wall, 2)
                               for pid, was in zip(server, each_before, strict=True)],
                "cores_redis": round((cpu_seconds(redis_pid) - before[2]) / wall, 2)}
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
