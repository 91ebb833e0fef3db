"""Redis layer benchmarks that print figures (never asserted in tests).

    python benchmarks/bench_redis.py [--appends 20000] [--greenlets 100] [--sessions 20]
                                     [--pushes 20000] [--aof]

Starts its own redis-server (tests/cluster/redisproc.py) on a free port with
a temporary directory, then measures, through one wscore.cluster.RedisWriter:

* appends/s of the fenced session-log script (one 200 B frame each) from one
  greenlet waiting for each append, from one greenlet queueing them all
  (``append_nowait``), and from G greenlets each appending to its own session;
* µs of this process's CPU per append (``time.process_time``);
* Redis CPU µs per append (INFO cpu ``used_cpu_user + used_cpu_sys``, before/after)
  and Redis socket reads per append (INFO stats ``total_reads_processed``);
* Redis memory per session holding 1,000 unacknowledged 200 B frames, and per
  idle session as a node creates it (INFO memory);
* what a push to a session costs (``send_to_session``, docs/scaling.md "Pushes
  across nodes"): before, a ``PUBLISH`` on ``P:all`` plus the owner's
  ``append``; now the ``push`` script (into the session's inbox, announcing it
  on the owner's channel) plus the owner's ``append`` with the inbox position
  (which takes it out of the inbox). A ``redis-cli SUBSCRIBE`` process listens
  on both channels, so every ``PUBLISH`` is delivered. Per push: node
  commands, commands Redis ran (scripts' inner commands included, INFO
  commandstats), Redis CPU µs, this process's CPU µs.

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
from wscore.protocol.codes import EVERYONE_ROOM

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


def redis_calls(server: RedisServer) -> int:
    return sum(int(v["calls"]) for v in server.info("commandstats").values())


def measure_pushes(name: str, server: RedisServer, writer: RedisWriter, count: int,
                   run: Callable[[], None]) -> None:
    cpu0, calls0, sent0 = redis_cpu(server), redis_calls(server), int(writer.stats()["commands"])
    wall0, proc0 = time.perf_counter(), time.process_time()
    run()
    wall, proc = time.perf_counter() - wall0, time.process_time() - proc0
    cpu = redis_cpu(server) - cpu0
    calls = redis_calls(server) - calls0 - 2  # the two INFO commandstats of this measurement
    sent = int(writer.stats()["commands"]) - sent0
    print(f"{name:<46} {count / wall:>9,.0f} {sent / count:>9.2f} {calls / count:>9.2f}"
          f" {cpu / count * 1e6:>9.1f} {proc / count * 1e6:>9.1f}")


def bench_pushes(server: RedisServer, writer: RedisWriter, generation: Generation, n: int) -> None:
    import json
    import subprocess

    from wscore.protocol.envelope import encode_envelope

    log = SessionLog(writer, generation, limits=LogLimits(max_buffered_messages=1_000_000,
                                                          max_buffered_bytes=1 << 30))
    listener = subprocess.Popen(
        ["redis-cli", "-p", str(server.port), "SUBSCRIBE", "wscore:all", "wscore:n:owner"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while int(server.info("stats").get("pubsub_channels", 0)) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("redis-cli did not subscribe")
            gevent.sleep(0.01)  # polling a condition (the subscription), not a delay
        frame = encode_envelope("told", {"text": "x" * 160}, now_ms=0)
        body = frame.body
        print(f"{'one push to a session (owner on another node)':<46} {'pushes/s':>9}"
              f" {'node cmd':>9} {'redis cmd':>9} {'redis µs':>9} {'node µs':>9}")

        log.create("before", "owner")
        def before() -> None:
            futures = []
            for seq in range(1, n + 1):
                futures.append(writer.submit("PUBLISH", "wscore:all", json.dumps(
                    {"k": "push", "sid": "before", "uid": None, "b": body, "o": "pusher"})))
                futures.append(log.append_nowait("before", 1, seq, frame.numbered(seq)))
            for future in futures:
                future.get()
        measure_pushes("before: PUBLISH on P:all + append", server, writer, n, before)

        log.create("after", "owner")
        def after() -> None:
            futures = []
            for seq in range(1, n + 1):
                futures.append(log.push_nowait("after", body))
                futures.append(log.append_nowait("after", 1, seq, frame.numbered(seq), inbox_pos=seq))
            for future in futures:
                future.get()
        measure_pushes("now: push script + append(inbox_pos)", server, writer, n, after)

        log.create("user1", "owner", user_id="one-session-user")
        def user() -> None:
            futures = []
            for seq in range(1, n + 1):
                futures.append(log.push_user_nowait("one-session-user", body))
                futures.append(log.append_nowait("user1", 1, seq, frame.numbered(seq), inbox_pos=seq))
            for future in futures:
                future.get()
        measure_pushes("now: push_user (1 session) + append(inbox_pos)", server, writer, n, user)

        def publish_only() -> None:
            futures = [writer.submit("PUBLISH", "wscore:all", json.dumps(
                {"k": "push", "sid": "before", "uid": None, "b": body, "o": "pusher"}))
                for _ in range(n)]
            for future in futures:
                future.get()
        measure_pushes("  the PUBLISH alone (before)", server, writer, n, publish_only)

        log.create("alone", "owner")
        def push_only() -> None:
            futures = [log.push_nowait("alone", body) for _ in range(n)]
            for future in futures:
                future.get()
        measure_pushes("  the push script alone (now)", server, writer, n, push_only)
    finally:
        listener.terminate()
        listener.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--appends", type=int, default=20_000)
    parser.add_argument("--greenlets", type=int, default=100)
    parser.add_argument("--sessions", type=int, default=20, help="sessions for the memory figure")
    parser.add_argument("--pushes", type=int, default=20_000, help="pushes per push figure (0: skip)")
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
            # An idle session as a node creates it (a member of the everyone room), with
            # nothing unacknowledged: what a deployment holds per connected client at rest.
            idle = 2000
            before = int(server.info("memory")["used_memory"])
            for i in range(idle):
                log.create(f"idle-{i:05d}-{os.urandom(8).hex()}", "bench", user_id=f"user{i}",
                           data={"name": "bench"}, everyone=EVERYONE_ROOM)
            used = int(server.info("memory")["used_memory"]) - before
            print(f"Redis memory per idle session: {used / idle:,.0f} B ({idle:,} sessions, "
                  "each with a user set and the everyone room's cursor)")
            if args.pushes:
                writer.execute("FLUSHALL")
                generation.recover()
                bench_pushes(server, writer, generation, args.pushes)
        finally:
            writer.stop()
            server.stop()


if __name__ == "__main__":
    main()
