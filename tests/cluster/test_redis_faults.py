"""Redis faults under a live node: unreachable, killed and restarted with AOF, restarted empty."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import websocket
from clusterapp import build
from redisproc import RedisServer
from wshelpers import RawClient, wait_for

from wscore import WsError, WsServer, WsServerConfig
from wscore.protocol.codes import ErrorCode


@pytest.fixture
def aof_redis(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_factory(appendonly=True, appendfsync="always")


def _node(url: str) -> WsServer:
    server = build(WsServerConfig.dev(host="127.0.0.1", port=0, redis_url=url, session_ttl=60.0,
                                      shutdown_timeout=1.0))
    server.start()
    return server


@pytest.fixture
def node_on(request: pytest.FixtureRequest) -> Iterator[Callable[[RedisServer], WsServer]]:
    made: list[WsServer] = []

    def make(redis_server: RedisServer) -> WsServer:
        server = _node(redis_server.url)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


def _health(server: WsServer) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _connected(client: RawClient) -> dict[str, Any]:
    frame = client.recv()
    assert frame["e"] == "sys.connected", frame
    return frame["p"]  # type: ignore[no-any-return]


def test_redis_unreachable_503_and_healthz_down_then_resume_when_back(
        aof_redis: RedisServer, node_on: Callable[[RedisServer], WsServer]) -> None:
    node = node_on(aof_redis)
    c = RawClient(node.url + "?token=ivy")
    try:
        sid = _connected(c)["sessionId"]
        last = c.request("count", c="1")["s"]
        aof_redis.kill9()
        wait_for(lambda: _health(node)[0] == 503, what="healthz 503")
        assert _health(node)[1]["redis"] == "down"
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            RawClient(node.url + "?token=other")
        assert refused.value.status_code == 503
        # A push that cannot be stored is refused to its caller, never silently "sent".
        with pytest.raises(WsError) as refused_push:
            node.send_to_session(sid, "told", "lost?")
        assert refused_push.value.code == ErrorCode.INTERNAL_ERROR
        with pytest.raises(WsError):
            node.send_to_user("ivy", "told", "lost?")
        with pytest.raises(WsError) as refused_broadcast:
            node.broadcast("told", "lost?")
        assert refused_broadcast.value.code == ErrorCode.INTERNAL_ERROR
        # A frame that cannot be stored is never sent: the session's connection closes 1012.
        c.send({"e": "count", "c": "2"})
        assert c.recv_close() == 1012
        aof_redis.start()
        wait_for(lambda: _health(node)[0] == 200, what="healthz ok again")
        d = RawClient(node.url + f"?token=ivy&session={sid}&last_seq={last}")
        try:
            assert _connected(d)["resumed"] is True
            assert d.request("count", c="3")["p"] == 2  # the refused frame never ran
        finally:
            d.close()
    finally:
        c.close()


def test_redis_killed_and_restarted_with_aof_under_load_loses_no_acknowledged_frame(
        aof_redis: RedisServer, node_on: Callable[[RedisServer], WsServer]) -> None:
    node = node_on(aof_redis)
    c = RawClient(node.url + "?token=jack")
    sid = _connected(c)["sessionId"]
    replies: dict[int, int] = {}  # client s -> count value
    seqs: list[int] = []
    acked_in = 0
    sent = 0

    def read(client: RawClient) -> bool:
        nonlocal acked_in
        try:
            frame = client.recv()
        except (ConnectionAbortedError, websocket.WebSocketConnectionClosedException):
            return False
        if frame["e"] == "sys.ack":
            acked_in = max(acked_in, frame["p"]["s"])
        elif frame["e"] == "ack":
            seqs.append(frame["s"])
            replies[int(frame["c"])] = frame["p"]
        return True

    # Load: numbered client frames; the first 100 are acknowledged, then Redis dies
    # in the middle of the next 100.
    for s in range(1, 101):
        c.send({"e": "count", "c": str(s), "s": s})
    sent = 100
    while acked_in < 100:
        assert read(c)
    for s in range(101, 201):
        try:
            c.send({"e": "count", "c": str(s), "s": s})
        except OSError:
            break  # the node closed the connection (1012) meanwhile
        sent = s
        if s == 150:
            aof_redis.kill9()
    while read(c):
        pass
    c.close()
    acked_before = acked_in
    aof_redis.start()
    wait_for(lambda: _health(node)[0] == 200, what="Redis back")
    d = RawClient(node.url + f"?token=jack&session={sid}&last_seq={seqs[-1] if seqs else 0}")
    try:
        assert _connected(d)["resumed"] is True
        # As a client does: re-send what the server had not acknowledged; it drops the
        # ones that ran already (their replies come in the replay).
        for s in range(acked_before + 1, sent + 1):
            d.send({"e": "count", "c": str(s), "s": s})
        while len(replies) < sent:
            assert read(d)
    finally:
        d.close()
    assert 100 <= acked_before < sent  # the kill really fell mid-load
    # Every frame acknowledged before the kill ran once, in order (count == its s) …
    assert all(replies[s] == s for s in range(1, acked_before + 1))
    # … and the stream the client read has no gap and no s twice.
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    values = [replies[s] for s in sorted(replies)]
    assert values == sorted(values)


def test_redis_restarted_empty_makes_resumes_answer_1006(
        redis_server: RedisServer, node_on: Callable[[RedisServer], WsServer]) -> None:
    node = node_on(redis_server)
    c = RawClient(node.url + "?token=kim")
    sid = _connected(c)["sessionId"]
    last = c.request("echo", 1, c="1")["s"]
    c.cut()
    redis_server.restart()  # no AOF: it comes back empty
    # The node notices (generation check on reconnect) and lets go of what Redis lost.
    wait_for(lambda: _health(node)[0] == 200 and node.stats()["sessions"] == 0,
             what="Redis back, the lost session dropped")
    d = RawClient(node.url + f"?token=kim&session={sid}&last_seq={last}")
    try:
        err = d.recv()
        assert err["e"] == "sys.error" and err["p"]["code"] == 1006
        assert _connected(d)["resumed"] is False
        assert d.request("echo", 2, c="2")["p"] == 2
    finally:
        d.close()
