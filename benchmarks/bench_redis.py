"""Redis layer benchmarks that print figures (never asserted in tests).

    python benchmarks/bench_redis.py [--appends 20000] [--greenlets 100] [--sessions 20] [--aof]

Starts its own redis-server (tests/cluster/redisproc.py) on a free port with
a temporary directory, then measures, through one wscore.cluster.RedisWriter:

* appends/s of the fenced session-log script (one 200 B frame each) from one
  greenlet waiting for each append, from one greenlet queueing them all
  (``append_nowait``), and from G greenlets each appending to its own session;
* µs of this process's CPU per append (``time.process_time``);
* Redis CPU µs per append (INFO cpu ``used_cpu_user + used_cpu_sys``, before/after)
  and Redis socket reads per append (INFO stats ``total_reads_processed``);
* Redis memory per session holding 1,000 unacknowledged 200 B frames (INFO memory).

Run it on an otherwise idle machine; the figures vary with load.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gevent import monkey

monkey.patch_all()

import gevent

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "cluster")]

from redisproc import RedisServer

from wscore.cluster import Generation, LogLimits, RedisWriter, SessionLog

logging.getLogger("wscore").setLevel(logging.ERROR)  # the memory run flushes Redis on purpose

FRAME = "x" * 200


def redis_cpu(server: RedisServer) -> float:
    info = server.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def redis_reads(server: RedisServer) -> int:
    return int(server.info("stats")["total_reads_processed"])


def measure(name: str, server: RedisServer, count: int, run: Callable[[], None]) -> None:
    cpu0, reads0 = redis_cpu(server), redis_reads(server)
    wall0, proc0 = time.perf_counter(), time.process_time()
    run()
    wall, proc = time.perf_counter() - wall0, time.process_time() - proc0
    cpu, reads = redis_cpu(server) - cpu0, redis_reads(server) - reads0
    print(f"{name:<38} {count / wall:>10,.0f} {proc / count * 1e6:>10.1f} {cpu / count * 1e6:>10.1f}"
          f" {reads / count:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--greenlets", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=20, help="sessions for the memory figure")
    parser.add_argument("--aof", action="store_true", help="appendonly yes, appendfsync always")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=args.aof, appendfsync="always")
        server.start()
        writer = RedisWriter(server.url)
        try:
            writer.start()
            generation = Generation(writer)
            generation.establish()
            log = SessionLog(writer, generation, limits=LogLimits(max_buffered_messages=1_000_000))
            version = server.info("server")["redis_version"]
            print(f"redis-server {version}, AOF {'always' if args.aof else 'off'}, "
                  f"{os.cpu_count()} CPUs, frame 200 B")
            print(f"{'appends through one writer':<38} {'appends/s':>10} {'node µs':>10} {'redis µs':>10}"
                  f" {'reads':>8}")
            n = args.appends

            log.create("one", "bench")
            def sequential() -> None:
                for seq in range(1, n // 4 + 1):
                    log.append("one", 1, seq, FRAME)
            measure("1 greenlet, waits for each", server, n // 4, sequential)

            log.create("queued", "bench")
            def queued() -> None:
                futures = [log.append_nowait("queued", 1, seq, FRAME) for seq in range(1, n + 1)]
                for future in futures:
                    future.get()
            measure("1 greenlet, append_nowait", server, n, queued)

            g = args.greenlets
            for i in range(g):
                log.create(f"g{i}", "bench")
            def many() -> None:
                def one(i: int) -> None:
                    for seq in range(1, n // g + 1):
                        log.append(f"g{i}", 1, seq, FRAME)
                gevent.joinall([gevent.spawn(one, i) for i in range(g)], raise_error=True)
            measure(f"{g} greenlets, each waits for each", server, n // g * g, many)
            stats = writer.stats()
            print(f"writer: {stats['commands']:,} commands in {stats['batches']:,} batches, "
                  f"largest {stats['largest_batch']}")

            writer.execute("FLUSHALL")
            generation.recover()
            log = SessionLog(writer, generation, limits=LogLimits(max_buffered_messages=1000))
            before = int(server.info("memory")["used_memory"])
            for i in range(args.sessions):
                sid = f"mem-{i:04d}-{os.urandom(8).hex()}"
                log.create(sid, "bench", user_id=f"user{i}", data={"name": "bench"})
                futures = [log.append_nowait(sid, 1, seq, FRAME) for seq in range(1, 1001)]
                for future in futures:
                    future.get()
            used = int(server.info("memory")["used_memory"]) - before
            per_session = used / args.sessions / 1024
            print(f"Redis memory per session with 1,000 x 200 B frames: {per_session:,.0f} KiB"
                  f" ({args.sessions} sessions)")
        finally:
            writer.stop()
            server.stop()


if __name__ == "__main__":
    main()
