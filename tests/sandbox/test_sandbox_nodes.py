"""``sandbox run --nodes N --redis URL``: real node processes, a real redis-server, the balancing proxy.

The mechanics (balancing, node processes, the ``node-restarts`` schedule, one-line
errors), and the verdict: the ledger stays clean while clients resume across
nodes and while nodes are killed and restarted.
"""

from __future__ import annotations

import signal
import socket
import urllib.request

import gevent
import pytest
from cluster.redisproc import RedisServer
from processes import alive

from wscore import sandbox
from wscore.sandbox import cli
from wscore.sandbox.balance import RoundRobin
from wscore.sandbox.fault_proxy import FaultProxy
from wscore.sandbox.nodes import NodeCluster
from wscore.sandbox.report import Report

FAST_APP = "examples.chat_fast.app:server"
pytestmark = pytest.mark.timeout(180)


class NamedServer:
    """A TCP server that writes its name to every connection, then holds it open."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.conns: list[socket.socket] = []
        self._loop = gevent.spawn(self._accept)

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            conn.sendall(self.name)
            self.conns.append(conn)

    def close(self) -> None:
        self._loop.kill()
        self.sock.close()
        for conn in self.conns:
            conn.close()


def served_by(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        return s.recv(1)


def test_the_proxy_balances_per_connection_and_skips_an_upstream_that_refuses() -> None:
    servers = [NamedServer(name) for name in (b"a", b"b", b"c")]
    balancer = RoundRobin([s.address for s in servers])
    fp = FaultProxy(upstream=servers[0].address, balancer=balancer)
    fp.start()
    try:
        assert [served_by(fp.port) for _ in range(6)] == [b"a", b"b", b"c", b"a", b"b", b"c"]
        servers[1].close()  # b is down: its turns go to the next upstream
        assert [served_by(fp.port) for _ in range(3)] == [b"a", b"c", b"c"]
        stats = fp.stats()["upstreams"]
        host, port = servers[1].address
        assert stats[f"{host}:{port}"] == {"connected": 2, "refused": 1}
    finally:
        fp.stop()
        for s in servers:
            s.close()


def healthz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_a_node_cluster_restarts_nodes_on_their_own_ports(redis_server: RedisServer) -> None:
    cluster = NodeCluster(FAST_APP, nodes=2, redis_url=redis_server.url)
    try:
        ports = [node.port for node in cluster.nodes]
        assert len(set(ports)) == 2 and all(healthz(p) for p in ports)
        node = cluster.nodes[0]
        old = node.pid
        assert node.kill(signal.SIGKILL) == -signal.SIGKILL
        assert not healthz(node.port) and healthz(ports[1])
        assert cluster.exit_code() == -signal.SIGKILL
        node.start()
        assert node.pid != old and node.port == ports[0] and healthz(node.port)
        assert node.kill(signal.SIGTERM) == 0
        node.start()
        assert cluster.exit_code() is None and node.exits == [-signal.SIGKILL, 0]
    finally:
        pids = [n.pid for n in cluster.nodes]
        cluster.stop()
    assert not any(alive(pid) for pid in pids if pid is not None)


def node_faults(report: Report) -> dict[str, int]:
    return {k: v for k, v in report.faults.counts.items() if k.startswith("node_")}


def test_node_restarts_kill_with_both_signals_and_bring_every_node_back(redis_server: RedisServer) -> None:
    report = sandbox.run_scenario(app=FAST_APP, profile="node-restarts", clients=4, duration=8,
                                  seed=5, rate=3, nodes=2, redis_url=redis_server.url)
    counts = node_faults(report)
    kills = counts.get("node_sigterm", 0) + counts.get("node_sigkill", 0)
    assert counts.get("node_sigterm", 0) >= 1 and counts.get("node_sigkill", 0) >= 1, counts
    assert counts["node_start"] == kills <= 4
    records = [r for r in report.faults.log if r["fault"].startswith("node_")]
    # one node at a time: each kill is followed by that node's start before the next kill
    for kill, start in zip(records[::2], records[1::2], strict=True):
        assert kill["fault"] != "node_start" and start["fault"] == "node_start"
        assert kill["params"]["node"] == start["params"]["node"]
    assert report.run.app_exit_code is None, "every node was up when the drain ended"
    assert report.run.drained, report.format_text()


@pytest.mark.parametrize(("argv", "message"), [
    (["--nodes", "2"], "--nodes 2 needs --redis URL"),
    (["--profile", "node-restarts"], "profile 'node-restarts' needs --nodes >= 2"),
])
def test_node_options_that_cannot_run_are_one_line(argv: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "--app", FAST_APP, "--clients", "2", "--duration", "1"]
    if "--profile" not in argv:
        args += ["--profile", "clean"]
    code = cli.main(args + argv)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err


def assert_clean_verdict(report: Report) -> None:
    g = report.ledger
    assert report.passed, report.format_text()
    assert (g.lost, g.duplicated, g.out_of_order, g.corrupted) == (0, 0, 0, 0)
    assert g.delivered == g.deliveries_expected > 0
    assert g.sessions_lost == 0 and g.rpc_unanswered == 0


def test_two_nodes_under_chaos_resume_across_nodes_with_a_clean_ledger(redis_server: RedisServer) -> None:
    report = sandbox.run_scenario(app=FAST_APP, profile="chaos", clients=6, duration=5, seed=11,
                                  rate=3, reset_every_seconds=1.0, nodes=2, redis_url=redis_server.url)
    assert_clean_verdict(report)
    assert report.ledger.resumes >= 6  # round robin: a reconnect lands on the other node


def test_node_restarts_keep_the_ledger_clean(redis_server: RedisServer,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", "--app", FAST_APP, "--profile", "node-restarts", "--clients", "6",
                     "--duration", "10", "--seed", "2", "--rate", "3", "--nodes", "2",
                     "--redis", redis_server.url])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "VERDICT: PASS" in printed and "node_sigkill" in printed and "node_sigterm" in printed
