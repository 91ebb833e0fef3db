"""Redis over TLS (``rediss://``): a real TLS-only redis-server with a throwaway CA.

Before, ``open_connection`` dropped redis-py's ``SSLConnection`` class from the
parsed URL, so a ``rediss://`` URL silently spoke plain TCP. The writer's
hub-driven data path reads and writes through the TLS object itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from clusterapp import build
from redisproc import RedisServer
from writer_checks import check_a_dropped_idle_connection_is_noticed_at_once_and_repaired
from wshelpers import RawClient

from wscore import WsServer, WsServerConfig
from wscore.cluster.scripts import Script
from wscore.cluster.writer import RedisWriter
from wscore.errors import ConfigError


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Overrides the plain server for this module: the cluster fixtures then use TLS."""
    directory = tmp_path / "tls-redis"
    directory.mkdir()
    server = RedisServer(directory, tls=True)
    server.start()
    yield server
    server.stop()


def test_the_writer_speaks_tls_batches_scripts_and_a_send_larger_than_the_socket_takes(
        writer: RedisWriter, redis_server: RedisServer) -> None:
    assert writer.url.startswith("rediss://")
    futures = [writer.submit("INCR", "n") for _ in range(5_000)]
    assert [f.get(timeout=30) for f in futures] == list(range(1, 5_001))
    value = "v" * 12_000  # ~24 MiB in one loop turn: TLS writes stop short and resume
    sets = [writer.submit("SET", f"big{i}", value) for i in range(2_000)]
    assert all(f.get(timeout=30) in (True, b"OK") for f in sets)
    assert writer.execute("STRLEN", "big1999") == 12_000
    echo = Script("echo", "return {KEYS[1], ARGV[1]}")
    writer.register(echo)
    assert writer.submit_script(echo, ["k"], ["a"]).get(timeout=10) == [b"k", b"a"]
    # the server really is TLS-only: a plain-TCP client gets no answer on that port
    plain = redis.Redis(host="127.0.0.1", port=redis_server.port, socket_timeout=2,
                        socket_connect_timeout=2)
    with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
        plain.ping()
    plain.close()


def test_a_tls_connection_redis_drops_is_repaired(redis_server: RedisServer) -> None:
    check_a_dropped_idle_connection_is_noticed_at_once_and_repaired(redis_server)


def test_two_nodes_over_tls_share_a_room_and_resume_each_others_sessions(
        make_node: Callable[..., WsServer], raw: Callable[..., RawClient]) -> None:
    a, b = make_node(), make_node()
    alice, bob = raw(a.url + "?token=alice"), raw(b.url + "?token=bob")
    sid = alice.recv()["p"]["sessionId"]
    bob.recv()
    assert alice.request("join", {"room": "r"}, c="j")["p"] is True
    assert bob.request("join", {"room": "r"}, c="j")["p"] is True
    bob.send({"e": "say", "p": {"room": "r", "text": "hi"}, "c": "s"})
    heard = alice.recv_until(lambda f: f.get("e") == "said")
    assert heard["p"]["text"] == "hi"
    last = heard["s"]
    bob.send({"e": "say", "p": {"room": "r", "text": "missed"}, "c": "s2"})
    bob.recv_until(lambda f: f.get("c") == "s2")
    alice.cut()
    again = raw(b.url + f"?token=alice&session={sid}&last_seq={last}")
    info = again.recv()["p"]
    assert info["resumed"] is True
    missed = again.recv_until(lambda f: f.get("e") == "said")
    assert missed["p"]["text"] == "missed" and missed["s"] == last + 1


def test_a_rediss_url_to_a_plain_redis_fails_at_start_instead_of_speaking_plain_tcp(
        tmp_path: Path) -> None:
    plain = RedisServer(tmp_path / "plain")
    (tmp_path / "plain").mkdir()
    plain.start()
    try:
        server = build(WsServerConfig.dev(port=0, redis_url=f"rediss://127.0.0.1:{plain.port}/0"))
        with pytest.raises(ConfigError, match="Redis"):
            server.start()
        plain_node = build(WsServerConfig.dev(port=0, redis_url=plain.url))
        plain_node.start()  # the same server in plain TCP works: the refusal was the TLS
        plain_node.stop()
    finally:
        plain.stop()
