"""examples/two_node_chat: a real redis-server, two real ``wscore run --redis`` nodes, a real nginx.

nginx runs with the example's own ``nginx.conf`` (only its ports rewritten to
free ones) from a temporary prefix and is stopped by PID. Members on both
nodes chat in one room, and a client resumes on the other node.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster.redisproc import RedisServer, free_port
from processes import ROOT, LoggedProcess
from wshelpers import RawClient, wait_for

CONF = Path(ROOT) / "examples" / "two_node_chat" / "nginx.conf"
pytestmark = pytest.mark.timeout(120)


def healthz(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            body: dict[str, Any] = json.loads(resp.read())
            return body
    except (OSError, ValueError):
        return None


class Nginx:
    """The example's nginx.conf with its ports rewritten, run from ``prefix`` (``daemon off``)."""

    def __init__(self, prefix: Path, listen: int, upstreams: list[int]) -> None:
        if shutil.which("nginx") is None:
            raise RuntimeError("nginx is not installed (make nginx installs Debian's package)")
        text = CONF.read_text()
        text, n = re.subn(r"listen 127\.0\.0\.1:8080;", f"listen 127.0.0.1:{listen};", text)
        assert n == 1
        for old, new in zip((8081, 8082), upstreams, strict=True):
            text, n = re.subn(rf"server 127\.0\.0\.1:{old} ", f"server 127.0.0.1:{new} ", text)
            assert n == 1
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(text)
        self.port = listen
        self.proc = LoggedProcess(["nginx", "-p", str(prefix), "-c", str(conf), "-e", "stderr"])

    def stop(self) -> None:
        if self.proc.proc.poll() is None:
            self.proc.signal(signal.SIGQUIT)  # graceful: finish, then exit
            try:
                self.proc.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[Nginx, list[int]]]:
    """Redis, two chat nodes on free ports, nginx in front; all stopped by PID."""
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis = RedisServer(redis_dir, appendonly=True)
    redis.start()
    nodes: list[LoggedProcess] = []
    nginx: Nginx | None = None
    try:
        ports = [free_port(), free_port()]
        for port in ports:
            nodes.append(LoggedProcess.wscore("run", "examples.chat.app:server", "--host", "127.0.0.1",
                                              "--port", str(port), "--redis", redis.url))
        for port, node in zip(ports, nodes, strict=True):
            wait_for(lambda p=port, n=node: healthz(p) is not None or n.proc.poll() is not None,  # type: ignore[misc]
                     timeout=30, what=f"node on {port}")
            assert healthz(port) is not None, node.log
        nginx = Nginx(tmp_path / "nginx", free_port(), ports)
        wait_for(lambda: healthz(nginx.port) is not None or nginx.proc.proc.poll() is not None,
                 timeout=30, what="nginx to serve")
        assert healthz(nginx.port) is not None, nginx.proc.log
        yield nginx, ports
    finally:
        if nginx is not None:
            nginx.stop()
        for node in nodes:
            node.stop()
        redis.stop()


def connect(url: str) -> tuple[RawClient, str]:
    client = RawClient(url, timeout=10)
    hello = client.recv()
    assert hello["e"] == "sys.connected"
    return client, str(hello["p"]["sessionId"])


def connections(ports: list[int]) -> list[int]:
    counts = []
    for port in ports:
        body = healthz(port)
        assert body is not None
        counts.append(int(body["connections"]))
    return counts


def test_nginx_upgrades_and_balances_connections_over_both_nodes(stack: tuple[Nginx, list[int]]) -> None:
    nginx, ports = stack
    url = f"ws://127.0.0.1:{nginx.port}/ws"
    clients = [connect(url)[0] for _ in range(4)]
    try:
        wait_for(lambda: sum(connections(ports)) == 4, what="4 connections on the nodes")
        assert connections(ports) == [2, 2], "nginx round robin: two connections per node"
        for i, client in enumerate(clients):
            assert client.request("echo", {"n": i}, c=f"e{i}")["p"] == {"n": i}
        # the demo page comes through nginx too (plain HTTP on the same upstreams)
        with urllib.request.urlopen(f"http://127.0.0.1:{nginx.port}/", timeout=5) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
    finally:
        for client in clients:
            client.close()


def test_members_on_both_nodes_chat_in_one_room_and_resume_on_the_other_node(
        stack: tuple[Nginx, list[int]]) -> None:
    nginx, ports = stack
    url = f"ws://127.0.0.1:{nginx.port}/ws"
    ann, ann_sid = connect(url)
    wait_for(lambda: sum(connections(ports)) == 1, what="ann connected")
    ann_node = connections(ports).index(1)
    bob, _ = connect(url)
    wait_for(lambda: connections(ports) == [1, 1], what="bob on the other node (round robin)")
    for who, name in ((ann, "ann"), (bob, "bob")):
        assert who.request("room.join", {"roomId": "lobby", "name": name}, c="j")["e"] == "ack"
    assert bob.request("chat.message", {"roomId": "lobby", "text": "hi ann"}, c="m1")["e"] == "ack"
    got = ann.recv_until(lambda f: f["e"] == "chat.new_message")
    assert got["p"] == {"text": "hi ann", "sender": "bob"}
    last = int(ann.request("chat.message", {"roomId": "lobby", "text": "hi bob"}, c="m2")["s"])
    assert bob.recv_until(lambda f: f["e"] == "chat.new_message")["p"] == {"text": "hi bob",
                                                                           "sender": "ann"}
    # ann's link drops; bob talks meanwhile; ann resumes through nginx until it lands on bob's node
    ann.cut()
    wait_for(lambda: sum(connections(ports)) == 1, what="ann's node to see the cut")
    for i in range(3):
        assert bob.request("chat.message", {"roomId": "lobby", "text": f"m{i}"}, c=f"b{i}")["e"] == "ack"
    for attempt in range(10):
        again, sid = connect(f"{url}?session={ann_sid}&last_seq={last}")
        assert sid == ann_sid
        counts = connections(ports)
        texts = [again.recv_until(lambda f: f["e"] == "chat.new_message")["p"]["text"]
                 for _ in range(3)]
        assert texts == ["m0", "m1", "m2"], f"attempt {attempt}"
        if counts[ann_node] == 0:  # served by the other node
            break
        again.cut()
        wait_for(lambda: sum(connections(ports)) == 1, what="the cut to be seen")
    else:
        raise AssertionError("the resume never landed on the other node")
