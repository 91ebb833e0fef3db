"""The batching writer against a real redis-server (wscore/cluster/writer.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import gevent
import pytest
import redis
from redisproc import RedisServer, free_port
from writer_checks import check_a_dropped_idle_connection_is_noticed_at_once_and_repaired
from wshelpers import wait_for

from wscore.cluster.errors import RedisUnavailable, WriterQueueFull
from wscore.cluster.scripts import Script
from wscore.cluster.writer import RedisWriter


def reads_processed(server: RedisServer) -> int:
    """Redis's count of socket reads it served (each INFO call adds one of its own)."""
    return int(server.info("stats")["total_reads_processed"])


@pytest.fixture
def states() -> list[bool]:
    return []


@pytest.fixture
def fast_writer(redis_server: RedisServer, states: list[bool]) -> Iterator[RedisWriter]:
    w = RedisWriter(redis_server.url, socket_timeout=0.3, reconnect_min_delay=0.01,
                    reconnect_max_delay=0.05, idle_check_interval=0.02, on_state=states.append)
    w.start()
    yield w
    w.stop()


def test_commands_of_one_loop_turn_share_one_round_trip(writer: RedisWriter,
                                                        redis_server: RedisServer) -> None:
    redis_server.admin()  # connect the inspector before counting
    before = reads_processed(redis_server)
    batches = writer.stats()["batches"]
    # 500 greenlets each send one command in the same loop turn
    greenlets = [gevent.spawn(writer.execute, "INCR", "counter") for _ in range(500)]
    gevent.joinall(greenlets, raise_error=True)
    after = reads_processed(redis_server)
    assert writer.execute("GET", "counter") == b"500"
    assert writer.stats()["batches"] - batches <= 3  # one pipeline (the GET is one more)
    # Redis read the 500 commands in a handful of socket reads, not 500 (+1 for the INFO itself)
    assert after - before <= 6
    # the contrast: the same commands one at a time, each waiting for its reply
    before = reads_processed(redis_server)
    for _ in range(50):
        writer.execute("INCR", "counter")
    assert reads_processed(redis_server) - before >= 50


def test_replies_match_their_commands_across_batches_in_flight(writer: RedisWriter) -> None:
    futures = []
    for i in range(10_000):
        futures.append(writer.submit("INCR", "n"))
        if i % 100 == 99:
            gevent.sleep(0)  # a new batch while earlier ones are still unanswered
    assert [f.get() for f in futures] == list(range(1, 10_001))
    assert writer.stats()["batches"] >= 2  # it did not all go as one batch


def test_replies_and_errors_reach_the_right_caller(writer: RedisWriter) -> None:
    ok = writer.submit("SET", "k", "v")
    bad = writer.submit("INCR", "k")  # not an integer: this command's own error
    get = writer.submit("GET", "k")
    assert ok.get() is True or ok.get() == b"OK"
    with pytest.raises(redis.ResponseError):
        bad.get()
    assert get.get() == b"v"


def test_a_full_queue_raises_instead_of_blocking(redis_server: RedisServer) -> None:
    w = RedisWriter(redis_server.url, max_queued=10)
    w.start()
    try:
        futures = [w.submit("PING") for _ in range(10)]  # no yield: the writer has not run
        with pytest.raises(WriterQueueFull):
            w.submit("PING")
        for f in futures:
            assert f.get() in (True, b"PONG")
        assert w.submit("PING").get() in (True, b"PONG")  # room again once drained
    finally:
        w.stop()


def test_start_against_no_redis_fails_at_once() -> None:
    w = RedisWriter(f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisUnavailable, match="unreachable"):
        w.start()
    assert not w.up


def test_kill_fails_pending_fast_then_reconnects(redis_server: RedisServer, fast_writer: RedisWriter,
                                                 states: list[bool]) -> None:
    errors: list[BaseException] = []
    done = 0

    def load() -> None:
        nonlocal done
        while True:
            try:
                fast_writer.execute("INCR", "n")
                done += 1
            except RedisUnavailable as exc:
                errors.append(exc)
                return

    workers = [gevent.spawn(load) for _ in range(20)]
    wait_for(lambda: done > 1000, what="load to run")
    redis_server.kill9()
    gevent.joinall(workers, timeout=10, raise_error=True)
    # every greenlet got a clear RedisUnavailable (none hangs in a retry loop)
    assert all(w.dead for w in workers) and len(errors) == 20
    wait_for(lambda: states[-1] is False, what="the down report")
    # while down, a submit fails without waiting: it does not even yield to the hub
    yielded = []
    gevent.spawn(yielded.append, True)
    with pytest.raises(RedisUnavailable, match="down"):
        fast_writer.submit("PING")
    assert yielded == []
    redis_server.start()
    wait_for(lambda: fast_writer.up, what="the writer to reconnect")
    assert states == [True, False, True]
    assert fast_writer.execute("INCR", "n") == 1  # a fresh Redis (no persistence)
    assert fast_writer.stats()["connects"] >= 2


def test_a_paused_redis_is_a_lost_connection_not_a_hang(redis_server: RedisServer,
                                                         fast_writer: RedisWriter,
                                                         states: list[bool]) -> None:
    fast_writer.execute("SET", "k", "1")
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        with pytest.raises(RedisUnavailable, match="lost"):
            fast_writer.execute("GET", "k")  # the socket timeout ends the wait
        assert states[-1] is False
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    wait_for(lambda: fast_writer.up, what="the writer to reconnect")
    assert fast_writer.execute("GET", "k") == b"1"


def test_stop_fails_what_is_queued(redis_server: RedisServer) -> None:
    w = RedisWriter(redis_server.url)
    w.start()
    pending = [w.submit("PING") for _ in range(5)]
    w.stop()
    for f in pending:
        with pytest.raises(RedisUnavailable, match="stopped"):
            f.get(timeout=5)
    with pytest.raises(RedisUnavailable):
        w.submit("PING")


def test_scripts_are_loaded_on_connect_and_survive_a_script_flush(writer: RedisWriter,
                                                                  redis_server: RedisServer) -> None:
    echo = Script("echo", "return {KEYS[1], ARGV[1]}")
    writer.register(echo)
    assert writer.submit_script(echo, ["k"], ["a"]).get() == [b"k", b"a"]
    redis_server.admin().script_flush()
    # both NOSCRIPT; re-sent as EVAL in order
    first, second = writer.submit_script(echo, ["k"], ["1"]), writer.submit_script(echo, ["k"], ["2"])
    assert (first.get(), second.get()) == ([b"k", b"1"], [b"k", b"2"])
    with pytest.raises(ValueError, match="not registered"):
        writer.submit_script(Script("other", "return 1"), [], [])


def test_a_batch_larger_than_the_socket_buffer_goes_out_whole_and_in_order(writer: RedisWriter) -> None:
    # ~24 MiB in one loop turn: far more than a socket takes at once, so the send
    # stops short and the rest goes out as the socket drains (the write watcher path)
    value = "v" * 12_000
    futures = [writer.submit("SET", f"big{i}", value) for i in range(2_000)]
    futures.append(writer.submit("DBSIZE"))
    assert all(f.get(timeout=30) in (True, b"OK") for f in futures[:-1])
    assert futures[-1].get() == 2_000
    assert writer.execute("STRLEN", "big1999") == 12_000


def test_redis_dropping_the_idle_connection_is_noticed_at_once_and_repaired(
        redis_server: RedisServer) -> None:
    check_a_dropped_idle_connection_is_noticed_at_once_and_repaired(redis_server)


def test_script_replies_are_converted_and_refusals_refined_as_they_are_read(
        writer: RedisWriter) -> None:
    script = Script("refuse", "if ARGV[1] == 'no' then return redis.error_reply('NOPE ' .. KEYS[1]) end"
                              " return tonumber(ARGV[1])")
    writer.register(script)

    class Refused(Exception):
        pass

    def refine(error: redis.ResponseError) -> BaseException:
        return Refused(str(error))

    ok = writer.submit_script(script, ["k"], ["41"], convert=lambda r: r + 1, refine=refine)
    refused = writer.submit_script(script, ["k"], ["no"], convert=lambda r: r + 1, refine=refine)
    broken = writer.submit_script(script, ["k"], ["7"], convert=lambda r: r["missing"], refine=refine)
    assert ok.get() == 42
    with pytest.raises(Refused, match="NOPE k"):
        refused.get()
    with pytest.raises(TypeError):  # convert's own failure reaches its caller only
        broken.get()
    assert writer.submit_script(script, ["k"], ["1"]).get() == 1  # the writer is fine


def test_a_send_stuck_on_a_paused_redis_times_out_too(redis_server: RedisServer,
                                                      fast_writer: RedisWriter,
                                                      states: list[bool]) -> None:
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        # more than the socket buffers hold: the send itself waits for a Redis that
        # reads nothing, and the reply deadline still ends it
        futures = [fast_writer.submit("SET", f"big{i}", "v" * 12_000) for i in range(2_000)]
        for future in futures:
            with pytest.raises(RedisUnavailable, match="lost"):
                future.get(timeout=10)
        assert states[-1] is False
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    wait_for(lambda: fast_writer.up, what="the writer to reconnect")
    assert fast_writer.execute("PING") in (True, b"PONG")
