"""Real ``wscore run --redis`` node processes: SIGKILL and SIGTERM of a node mid-stream.

A raw websocket-client peer reads a room's stream from node A while a sender on
node B keeps talking; node A is killed; the peer resumes on node B and must
end up with every message exactly once, in the room's order (SPEC §6). And a
push made while its session's node is dead waits in the session's inbox and
reaches the client after it resumed on the other node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redisproc import RedisServer, free_port
from wshelpers import RawClient, wait_for

ROOT = Path(__file__).resolve().parents[2]


class NodeProcess:
    def __init__(self, redis_url: str) -> None:
        self.port = free_port()
        env = {**os.environ, "WSCORE_TEST_PORT": str(self.port),
               "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "cluster"), str(ROOT)])}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wscore", "run", "clusterapp:server", "--redis", redis_url,
             "--log-level", "WARNING"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        wait_for(self._answers, timeout=30, what="node process listening")

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"node exited: {self.proc.stderr.read().decode()[-2000:]}"
                                 if self.proc.stderr else "node exited")
        import socket

        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def nodes(redis_server: RedisServer) -> Iterator[Callable[[], NodeProcess]]:
    made: list[NodeProcess] = []

    def make() -> NodeProcess:
        node = NodeProcess(redis_server.url)
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()


def _connected(client: RawClient) -> dict[str, Any]:
    frame = client.recv()
    assert frame["e"] == "sys.connected", frame
    return frame["p"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_node_dies_mid_stream_and_its_client_resumes_on_the_other_with_nothing_lost(
        nodes: Callable[[], NodeProcess], sig: int) -> None:
    a, b = nodes(), nodes()
    reader = RawClient(a.url + "?token=reader")
    sender = RawClient(b.url + "?token=sender")
    try:
        sid = _connected(reader)["sessionId"]
        _connected(sender)
        assert reader.request("join", {"room": "stream"}, c="j")["p"] is True
        total = 300
        for i in range(total):
            sender.send({"e": "say", "p": {"room": "stream", "i": i}})
        got: list[int] = []
        last_seq = 0
        while len(got) < 50:  # read part of the stream from node A
            frame = reader.recv()
            if frame["e"] == "said":
                got.append(frame["p"]["i"])
                last_seq = frame["s"]
        a.signal(sig)
        code = reader.recv_close() if sig == signal.SIGTERM else None
        if sig == signal.SIGTERM:
            assert code == 1012
        reader.close()
        # ... the sender goes on while the reader is away.
        for i in range(total, total + 50):
            sender.send({"e": "say", "p": {"room": "stream", "i": i}})
        resumed = RawClient(b.url + f"?token=reader&session={sid}&last_seq={last_seq}")
        try:
            info = _connected(resumed)
            assert info["resumed"] is True
            seqs = [last_seq]
            while len(got) < total + 50:
                frame = resumed.recv()
                if frame["e"] == "said":
                    got.append(frame["p"]["i"])
                    seqs.append(frame["s"])
            assert got == list(range(total + 50))  # once each, in the room's order
            assert seqs == list(range(last_seq, last_seq + len(seqs)))  # no gap, no s reused
        finally:
            resumed.close()
    finally:
        sender.close()
        reader.close()


def test_a_push_made_while_its_node_is_dead_reaches_the_client_after_the_resume(
        nodes: Callable[[], NodeProcess], redis_server: RedisServer) -> None:
    a, b = nodes(), nodes()
    reader = RawClient(a.url + "?token=reader")
    pusher = RawClient(b.url + "?token=pusher")
    try:
        sid = _connected(reader)["sessionId"]
        _connected(pusher)
        seen = reader.request("echo", "seen", c="seen")["s"]
        for i in range(3):  # replies the reader never reads: stored, then replayed
            reader.send({"e": "echo", "p": i, "c": f"m{i}"})
        meta = f"wscore:s:{{{sid}}}:m"
        wait_for(lambda: int(redis_server.admin().hget(meta, "last") or 0) == seen + 3,
                 what="3 replies stored")
        a.signal(signal.SIGKILL)  # no release: Redis still names node A the owner, lease live
        reader.close()
        for n in range(3):
            # Stored before this reply is (one writer connection): no wait needed.
            assert pusher.request("tell_session", {"sid": sid, "n": n}, c=f"t{n}")["p"] is True
        assert redis_server.admin().llen(f"wscore:s:{{{sid}}}:in") == 3
        resumed = RawClient(b.url + f"?token=reader&session={sid}&last_seq={seen}")
        try:
            assert _connected(resumed)["resumed"] is True
            frames = [resumed.recv() for _ in range(6)]
            assert [(f["e"], f["p"]) for f in frames[:3]] == [("ack", 0), ("ack", 1), ("ack", 2)]
            assert [(f["e"], f["p"]["n"]) for f in frames[3:]] == [("told", 0), ("told", 1),
                                                                  ("told", 2)]
            assert [f["s"] for f in frames] == list(range(seen + 1, seen + 7))
            # Exactly once: the next frame is a fresh reply, and the inbox is drained.
            reply = resumed.request("echo", "after", c="after")
            assert resumed.skipped == [] and reply["s"] == seen + 7
            assert redis_server.admin().llen(f"wscore:s:{{{sid}}}:in") == 0
        finally:
            resumed.close()
    finally:
        pusher.close()
        reader.close()


def test_a_broadcast_made_while_a_sessions_node_is_dead_reaches_it_after_the_resume(
        nodes: Callable[[], NodeProcess]) -> None:
    a, b = nodes(), nodes()
    reader = RawClient(a.url + "?token=reader")
    shouter = RawClient(b.url + "?token=shouter")
    try:
        sid = _connected(reader)["sessionId"]
        _connected(shouter)
        seen = reader.request("echo", "seen", c="seen")["s"]
        a.signal(signal.SIGKILL)  # no release: Redis still names node A the owner, lease live
        reader.close()
        for n in range(3):
            assert shouter.request("shout", {"n": n}, c=f"b{n}")["p"] is True
        resumed = RawClient(b.url + f"?token=reader&session={sid}&last_seq={seen}")
        try:
            assert _connected(resumed)["resumed"] is True
            frames = [resumed.recv() for _ in range(3)]
            assert [(f["e"], f["p"]["n"]) for f in frames] == [("shouted", 0), ("shouted", 1),
                                                              ("shouted", 2)]
            assert [f["s"] for f in frames] == list(range(seen + 1, seen + 4))
            # Exactly once: the next frame is a fresh reply.
            reply = resumed.request("echo", "after", c="after")
            assert resumed.skipped == [] and reply["s"] == seen + 4
        finally:
            resumed.close()
    finally:
        shouter.close()
        reader.close()


def test_unusable_redis_makes_wscore_run_exit_2_with_one_line() -> None:
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "wscore", "run", "clusterapp:server", "--redis",
         f"redis://127.0.0.1:{port}/0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "cluster"), str(ROOT)])})
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("wscore: error:")]
    assert len(lines) == 1 and "Redis" in lines[0], proc.stderr


def test_a_bad_redis_url_on_the_command_line_is_one_line_and_exit_2(
        capsys: pytest.CaptureFixture[str]) -> None:
    from wscore.cli import main

    assert main(["run", "clusterapp:server", "--redis", "http://not-redis"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wscore: error: redis_url")
