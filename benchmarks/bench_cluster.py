"""In-memory vs Redis-backed wscore, end to end: figures printed, never asserted.

    python benchmarks/bench_cluster.py [--seconds 5] [--subscribers 1000] [--broadcasts 20]
                                       [--resumes 200] [--aof] [--rounds 3] [--slices 10]
                                       [--wsbench DIR]

Starts its own redis-server (tests/cluster/redisproc.py) and ``wscore run
clusterapp:bench`` node processes (the test app with the rate limiter opened up;
without and with ``--redis``), drives them with websocket-client peers in this
process (gevent), and prints:

* RPC round trips/s with 10 and 100 clients (each sends ``echo``, waits for the ack),
  an in-memory and a Redis-backed node up at once and measured in alternating
  slices (``--slices`` per round, ``--seconds`` in all per node), because this
  machine's load drifts within seconds and one-shot runs varied ×2; driven by
  this process's websocket-client loops, or with ``--wsbench DIR`` (or
  ``$WSBENCH``) by the independent Node load generator, which costs far less
  per round trip and so measures the node rather than the generator;
* fan-out: deliveries/s and p99 latency (publisher's clock to receipt) to N room
  subscribers, and how many deliveries were missing (this process reads all N
  sockets, ~20-25k deliveries/s at most: a ceiling of its own); with
  ``--wsbench`` also the Node load generator's fan-out, at saturation (offered
  rates in ``SATURATION_RATE``) and at 5 msg/s for a latency that is not a queue's;
* Redis commands (INFO commandstats) and Redis CPU µs (INFO cpu) per RPC and per broadcast;
* resume on another node: a client cut on node A resumes on node B; the time from
  opening the socket to having ``sys.connected`` and the replay of 5 missed frames;
* SIGKILL of a node holding K sessions: time from the kill until each client (which
  reconnects to the other node as soon as its socket reports the loss) has resumed.

The load generator shares the machine's cores with the nodes and Redis (it says how
many); run it on an otherwise idle machine, the figures vary with load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from gevent import monkey

monkey.patch_all()

import gevent
import websocket

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "cluster")]

from redisproc import RedisServer, free_port


class Node:
    def __init__(self, redis_url: str | None) -> None:
        self.port = free_port()
        env = {**os.environ, "WSCORE_TEST_PORT": str(self.port),
               "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "cluster"), str(ROOT)])}
        cmd = [sys.executable, "-m", "wscore", "run", "clusterapp:bench", "--log-level", "ERROR"]
        if redis_url:
            cmd += ["--redis", redis_url]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("node did not start") from None
                time.sleep(0.05)  # polling for the port, not a synchronisation of results

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def connect(url: str) -> tuple[websocket.WebSocket, dict[str, Any]]:
    ws = websocket.create_connection(url, timeout=30)
    first = json.loads(ws.recv())
    assert first["e"] == "sys.connected", first
    return ws, first["p"]


def recv_json(ws: websocket.WebSocket) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(ws.recv())
    return frame


def node_commands(url: str) -> int:
    """Commands the node sent to Redis (its writer's count, from /healthz)."""
    import urllib.request

    port = int(url.split(":")[2].split("/")[0])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        return int(json.loads(response.read()).get("redis_commands", 0))


def redis_counters(redis: RedisServer | None, url: str = "") -> tuple[int, float, int]:
    """(node commands, Redis CPU s, commands Redis ran, scripts' inner commands included)."""
    if redis is None:
        return 0, 0.0, 0
    stats = redis.info("commandstats")
    calls = sum(int(v["calls"]) for v in stats.values())
    cpu = redis.info("cpu")
    return node_commands(url), float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), calls


class RpcClients:
    """``clients`` connections to one node, each a closed loop of ``echo`` requests
    (a ``sys.ack`` every 50 replies), run slice by slice."""

    def __init__(self, url: str, clients: int) -> None:
        self.url = url
        self.conns = [connect(f"{url}?token=rpc{i}")[0] for i in range(clients)]
        self.sent = [0] * clients

    def run(self, seconds: float) -> int:
        """Run every loop for ``seconds``; the round trips completed."""
        stop_at = time.monotonic() + seconds
        done = [0] * len(self.conns)

        def loop(i: int) -> None:
            ws = self.conns[i]
            n = self.sent[i]
            while time.monotonic() < stop_at:
                ws.send(f'{{"v":"1.0","e":"echo","p":{n},"c":{n}}}')
                while True:
                    frame = recv_json(ws)
                    if frame.get("c") == n:
                        break
                if n % 50 == 49:
                    ws.send(f'{{"v":"1.0","e":"sys.ack","p":{{"s":{frame["s"]}}}}}')
                n += 1
                done[i] += 1
            self.sent[i] = n

        gevent.joinall([gevent.spawn(loop, i) for i in range(len(self.conns))])
        return sum(done)

    def close(self) -> None:
        for ws in self.conns:
            ws.close()


def wsbench_slice(wsbench: str, node: Node, clients: int, seconds: float) -> tuple[int, float, float]:
    """One wsbench ``rpc`` run against ``node``: (round trips, measured seconds, node CPU seconds)."""
    cmd = ["node", os.path.join(wsbench, "wsbench.js"), "rpc", "-c", str(clients),
           "--duration", str(seconds), "--warmup", "0.5", "--url", f"{node.url}?token=rpc",
           "--label", "wscore", "--server-pid", str(node.proc.pid), "--quiet"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])["results"]
    if r["errors"]:
        raise RuntimeError(f"wsbench reported errors: {r['error_detail']}")
    return int(r["ok"]), float(r["measured_s"]), float(r["server"]["cpu_util"]) * float(r["measured_s"])


def bench_rpc(mem_node: Node, red_node: Node, clients: int, seconds: float, slices: int,
              redis: RedisServer, wsbench: str | None) -> tuple[dict[str, float], dict[str, float]]:
    """RPC round trips/s of an in-memory and a Redis-backed node, measured in ``slices``
    alternating slices (``seconds`` in all per node; which node goes first alternates):
    the machine's load, which drifts within seconds here, hits both alike. The load is
    this process's websocket-client loops, or with ``wsbench`` the Node load generator
    (one run per slice, after a 0.5 s warm-up), which also reads each node's CPU."""
    slice_s = seconds / slices
    nodes = {"mem": mem_node, "red": red_node}
    clients_of: dict[str, RpcClients] = {}
    if wsbench is None:
        clients_of = {key: RpcClients(node.url, clients) for key, node in nodes.items()}
    totals = {"mem": 0, "red": 0}
    walls = {"mem": 0.0, "red": 0.0}
    node_cpu = {"mem": 0.0, "red": 0.0}
    calls = cpu = inner = 0.0
    try:
        for k in range(slices):
            for which in (("mem", "red") if k % 2 == 0 else ("red", "mem")):
                if which == "red":
                    c0, u0, i0 = redis_counters(redis, red_node.url)
                if wsbench is None:
                    t0 = time.monotonic()
                    totals[which] += clients_of[which].run(slice_s)
                    walls[which] += time.monotonic() - t0
                else:
                    done, wall, used = wsbench_slice(wsbench, nodes[which], clients, slice_s)
                    totals[which] += done
                    walls[which] += wall
                    node_cpu[which] += used
                if which == "red":
                    c1, u1, i1 = redis_counters(redis, red_node.url)
                    calls, cpu, inner = calls + c1 - c0, cpu + u1 - u0, inner + i1 - i0
    finally:
        for group in clients_of.values():
            group.close()
    n = max(totals["red"], 1)
    # Redis's counters also see the wsbench warm-ups: per RPC, divide by every round trip
    # Redis served, estimated from the measured rate over the warm-ups too.
    served = n if wsbench is None else n * (1 + 0.5 * slices / max(walls["red"], 1e-9))
    return ({"rate": totals["mem"] / walls["mem"], "cmds": 0.0, "inner": 0.0, "cpu_us": 0.0,
             "node_us": node_cpu["mem"] / max(totals["mem"], 1) * 1e6},
            {"rate": totals["red"] / walls["red"], "cmds": calls / served, "inner": inner / served,
             "cpu_us": cpu / served * 1e6, "node_us": node_cpu["red"] / n * 1e6})


#: msg/s offered to 1,000 subscribers for the fan-out saturation figure, per node kind
SATURATION_RATE = {"in-memory": 250, "Redis": 250}


def wsbench_fanout(wsbench: str, node: Node, subscribers: int, rate: float, messages: int
                   ) -> dict[str, float]:
    """One wsbench ``fanout`` run: ``subscribers`` join one room, a publisher sends
    ``messages`` at ``rate``/s (open loop), latency from the publish instant."""
    cmd = ["node", os.path.join(wsbench, "wsbench.js"), "fanout", "--subs", str(subscribers),
           "--rate", str(rate), "--messages", str(messages), "--drain", "30",
           "--url", f"{node.url}?token=fan",
           "--label", "wscore", "--server-pid", str(node.proc.pid), "--quiet"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])["results"]
    return {"rate": float(r["deliveries_per_s"]), "p99_ms": float(r["latency"]["p99_ms"]),
            "missing": float(r["missing_total"]), "dups": float(r["duplicates_total"])}


def bench_fanout(url: str, subscribers: int, broadcasts: int, redis: RedisServer | None
                 ) -> dict[str, float]:
    subs = []
    for i in range(subscribers):
        ws, _ = connect(f"{url}?token=sub{i}")
        ws.send('{"v":"1.0","e":"join","p":{"room":"fan"},"c":"j"}')
        subs.append(ws)
    for ws in subs:
        while recv_json(ws).get("c") != "j":
            pass
    pub, _ = connect(f"{url}?token=publisher")
    latencies: list[float] = []
    received = [0] * subscribers

    def reader(i: int) -> None:
        ws = subs[i]
        last = 0
        while received[i] < broadcasts:
            frame = recv_json(ws)
            if frame["e"] == "said":
                latencies.append(time.time() - frame["p"]["t"])
                received[i] += 1
                last = frame["s"]
                if received[i] % 50 == 0:
                    ws.send(f'{{"v":"1.0","e":"sys.ack","p":{{"s":{last}}}}}')

    readers = [gevent.spawn(reader, i) for i in range(subscribers)]
    calls0, cpu0, inner0 = redis_counters(redis, url)
    t0 = time.monotonic()
    for k in range(broadcasts):
        pub.send(json.dumps({"v": "1.0", "e": "say", "p": {"room": "fan", "k": k, "t": time.time()}}))
        gevent.sleep(0)
    gevent.joinall(readers, timeout=120)
    wall = time.monotonic() - t0
    calls1, cpu1, inner1 = redis_counters(redis, url)
    missing = subscribers * broadcasts - sum(received)
    for ws in [*subs, pub]:
        ws.close()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    return {"rate": sum(received) / wall, "p99_ms": p99 * 1000, "missing": missing,
            "cmds": (calls1 - calls0) / broadcasts, "inner": (inner1 - inner0) / broadcasts,
            "cpu_us": (cpu1 - cpu0) / broadcasts * 1e6}


def _medians(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each figure of each benchmark: its median over the rounds (missing or duplicated
    deliveries: the most)."""
    out: dict[str, dict[str, Any]] = {}
    for key in runs[0]:
        out[key] = {field: (max if field in ("missing", "dups") else statistics.median)(
                        run[key][field] for run in runs) for field in runs[0][key]}
    return out


def bench_resume(a: Node, b: Node, count: int) -> tuple[float, float]:
    times: list[float] = []
    for i in range(count):
        ws, info = connect(f"{a.url}?token=res{i}")
        sid = info["sessionId"]
        ws.send('{"v":"1.0","e":"echo","p":0,"c":"x"}')
        last = recv_json(ws)["s"]
        for k in range(5):
            ws.send(f'{{"v":"1.0","e":"echo","p":{k + 1},"c":{k}}}')
        ws.send('{"v":"1.0","e":"echo","p":"end","c":"end"}')
        while recv_json(ws).get("c") != "end":
            pass
        # A cut link, not a close: a close with 1000 would end the session (SPEC §7).
        ws.shutdown()
        t0 = time.perf_counter()
        ws2, info2 = connect(f"{b.url}?token=res{i}&session={sid}&last_seq={last}")
        assert info2["resumed"], info2
        replay = [recv_json(ws2) for _ in range(6)]
        times.append(time.perf_counter() - t0)
        assert [f["s"] for f in replay] == list(range(last + 1, last + 7)), replay
        ws2.close()
    times.sort()
    return times[len(times) // 2] * 1000, times[int(len(times) * 0.99) - 1] * 1000


def bench_kill(redis_url: str, clients: int) -> tuple[float, float, int]:
    """SIGKILL a node holding ``clients`` sessions; each client resumes on the other node
    as soon as its socket reports the loss. Returns (p50, max) ms from the kill to
    ``sys.connected`` (resumed), and how many resumed."""
    a, b = Node(redis_url), Node(redis_url)
    try:
        conns = []
        for i in range(clients):
            ws, info = connect(f"{a.url}?token=kill{i}")
            ws.send('{"v":"1.0","e":"echo","p":0,"c":"x"}')
            conns.append((ws, info["sessionId"], recv_json(ws)["s"], i))
        done: list[float] = []

        def resume(ws: websocket.WebSocket, sid: str, last: int, i: int) -> None:
            try:
                while True:
                    ws.recv()
            except Exception:
                pass  # the node died
            ws2, info = connect(f"{b.url}?token=kill{i}&session={sid}&last_seq={last}")
            if info["resumed"]:
                done.append(time.perf_counter() - t0)
            ws2.close()

        t0 = time.perf_counter()
        greenlets = [gevent.spawn(resume, *c) for c in conns]
        os.kill(a.proc.pid, signal.SIGKILL)
        gevent.joinall(greenlets, timeout=60)
        done.sort()
        return done[len(done) // 2] * 1000, done[-1] * 1000, len(done)
    finally:
        a.stop()
        b.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--broadcasts", type=int, default=20)
    parser.add_argument("--resumes", type=int, default=200)
    parser.add_argument("--kill-clients", type=int, default=100)
    parser.add_argument("--aof", action="store_true", help="Redis with appendfsync always")
    parser.add_argument("--rounds", type=int, default=3, help="alternating in-memory/Redis rounds")
    parser.add_argument("--slices", type=int, default=10,
                        help="alternating in-memory/Redis slices of each RPC figure per round")
    parser.add_argument("--wsbench", default=os.environ.get("WSBENCH") or None, metavar="DIR",
                        help="drive the RPC figures with the Node load generator in DIR (or $WSBENCH)")
    args = parser.parse_args()
    wsbench = args.wsbench
    if wsbench is not None and (not os.path.isfile(os.path.join(wsbench, "wsbench.js"))
                                or shutil.which("node") is None):
        raise SystemExit(f"bench_cluster: --wsbench needs {wsbench}/wsbench.js and node on PATH")
    slices = args.slices
    if wsbench is not None:
        # A new Node process per slice: its JIT needs about a second, and 0.5 s slices
        # measured 10-25 % below 2 s ones, so wsbench slices last at least 2 s.
        slices = min(slices, max(1, int(args.seconds / 2)))
    generator = ("the Node load generator (wsbench, unpinned) for RPC, this process for the rest"
                 if wsbench else "this one process (one core at most)")
    print(f"{os.cpu_count()} CPUs; the load generator is {generator}, sharing them with the "
          f"nodes and Redis")
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp), appendonly=args.aof, appendfsync="always")
        redis.start()
        rounds: dict[str, list[dict[str, Any]]] = {"in-memory": [], "Redis": []}
        try:
            # Alternating rounds (in-memory, Redis, in-memory, …): the machine's drifting
            # load hits both modes alike; each figure is the median of its rounds.
            for _ in range(args.rounds):
                # RPC: both nodes up at once, measured in alternating slices.
                mem_node, red_node = Node(None), Node(redis.url)
                try:
                    rpc = {f"rpc{c}": bench_rpc(mem_node, red_node, c, args.seconds,
                                                slices, redis, wsbench) for c in (10, 100)}
                finally:
                    mem_node.stop()
                    red_node.stop()
                # Fan-out: one node at a time (1,000 subscribers each), in-memory first.
                for i, (mode, url) in enumerate((("in-memory", None), ("Redis", redis.url))):
                    node = Node(url)
                    try:
                        figures = {
                            **{key: pair[i] for key, pair in rpc.items()},
                            "fan": bench_fanout(node.url, args.subscribers, args.broadcasts,
                                                redis if url else None),
                        }
                        if wsbench:
                            # saturation: more offered than the node delivers (measured:
                            # ~140-150k deliveries/s either way since room messages are
                            # stored once; before, the Redis node served ~30k/s and 60 msg/s
                            # filled its writer queue), then a rate both sustain, for a
                            # latency that is not a queue's
                            rate = SATURATION_RATE["Redis" if url else "in-memory"]
                            figures["wsfan"] = wsbench_fanout(wsbench, node, args.subscribers,
                                                              rate, rate * 4)
                            figures["wsfan_p99"] = wsbench_fanout(wsbench, node, args.subscribers,
                                                                  5, 50)
                        rounds[mode].append(figures)
                    finally:
                        node.stop()
            results = {mode: _medians(runs) for mode, runs in rounds.items()}
            a, b = Node(redis.url), Node(redis.url)
            try:
                resume = bench_resume(a, b, args.resumes)
            finally:
                a.stop()
                b.stop()
            kill = bench_kill(redis.url, args.kill_clients)
        finally:
            redis.stop()
    mem, red = results["in-memory"], results["Redis"]
    print(f"redis-server {('AOF always' if args.aof else 'AOF off')}; medians of {args.rounds} "
          f"rounds (RPC: {slices} alternating slices of {args.seconds / slices:.1f} s per node and "
          "round); each round's ratios:")
    for n, (m, rr) in enumerate(zip(rounds["in-memory"], rounds["Redis"], strict=True), 1):
        print(f"  round {n}: RPC 10 {rr['rpc10']['rate'] / m['rpc10']['rate']:.2f} "
              f"({m['rpc10']['rate']:,.0f} / {rr['rpc10']['rate']:,.0f}), RPC 100 "
              f"{rr['rpc100']['rate'] / m['rpc100']['rate']:.2f}, fan-out "
              f"{rr['fan']['rate'] / m['fan']['rate']:.2f}")
    def paired(key: str) -> float:
        """The median of the rounds' Redis/in-memory ratios (each round measures both)."""
        return statistics.median(rr[key]["rate"] / m[key]["rate"]
                                 for m, rr in zip(rounds["in-memory"], rounds["Redis"], strict=True))

    print(f"{'':<34}{'in-memory':>12}{'Redis':>12}{'ratio':>8}   (rates: medians; ratio: median of "
          "the rounds' ratios)")
    for key, label in (("rpc10", "RPC round trips/s, 10 clients"),
                       ("rpc100", "RPC round trips/s, 100 clients"),
                       ("fan", f"fan-out deliveries/s, {args.subscribers} subs")):
        print(f"{label:<34}{mem[key]['rate']:>12,.0f}{red[key]['rate']:>12,.0f}{paired(key):>8.2f}")
    print(f"{'fan-out p99 ms':<34}{mem['fan']['p99_ms']:>12.1f}{red['fan']['p99_ms']:>12.1f}")
    print(f"{'fan-out missing deliveries':<34}{mem['fan']['missing']:>12}{red['fan']['missing']:>12}")
    if wsbench:
        print(f"{'wsbench fan-out deliveries/s':<34}{mem['wsfan']['rate']:>12,.0f}"
              f"{red['wsfan']['rate']:>12,.0f}{paired('wsfan'):>8.2f}   (saturation: "
              f"{SATURATION_RATE['in-memory']} / {SATURATION_RATE['Redis']} msg/s offered)")
        print(f"{'wsbench fan-out p99 ms, saturated':<34}{mem['wsfan']['p99_ms']:>12.1f}"
              f"{red['wsfan']['p99_ms']:>12.1f}")
        print(f"{'wsbench fan-out p99 ms, 5 msg/s':<34}{mem['wsfan_p99']['p99_ms']:>12.1f}"
              f"{red['wsfan_p99']['p99_ms']:>12.1f}")
        print(f"{'wsbench missing / duplicated':<34}"
              f"{mem['wsfan']['missing'] + mem['wsfan_p99']['missing']:>8.0f} / "
              f"{mem['wsfan']['dups'] + mem['wsfan_p99']['dups']:<3.0f}"
              f"{red['wsfan']['missing'] + red['wsfan_p99']['missing']:>8.0f} / "
              f"{red['wsfan']['dups'] + red['wsfan_p99']['dups']:<3.0f}")
    print(f"Redis commands per RPC (node -> Redis; run inside Redis, scripts' calls included): "
          f"{red['rpc100']['cmds']:.2f}; {red['rpc100']['inner']:.1f} (100 clients), "
          f"{red['rpc10']['cmds']:.2f}; {red['rpc10']['inner']:.1f} (10)")
    print(f"Redis CPU µs per RPC: {red['rpc100']['cpu_us']:.1f} (100 clients), "
          f"{red['rpc10']['cpu_us']:.1f} (10)"
          + (" (with wsbench: its warm-ups counted at the measured rate)" if wsbench else ""))
    if wsbench:
        print(f"node CPU µs per RPC, in-memory / Redis: {mem['rpc10']['node_us']:.1f} / "
              f"{red['rpc10']['node_us']:.1f} (10 clients), {mem['rpc100']['node_us']:.1f} / "
              f"{red['rpc100']['node_us']:.1f} (100)")
    print(f"per broadcast to {args.subscribers} subscribers: {red['fan']['cmds']:.0f} node commands, "
          f"{red['fan']['inner']:.0f} inside Redis, {red['fan']['cpu_us']:.0f} Redis CPU µs")
    print(f"resume on another node (5 missed frames), {args.resumes} resumes: "
          f"p50 {resume[0]:.1f} ms, p99 {resume[1]:.1f} ms")
    print(f"SIGKILL of a node holding {args.kill_clients} sessions: {kill[2]} resumed on the other node, "
          f"p50 {kill[0]:.0f} ms, last {kill[1]:.0f} ms after the kill")


if __name__ == "__main__":
    main()
