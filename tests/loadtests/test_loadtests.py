"""The locust scenarios, run headless for a few seconds against a real chat server.

One ``wscore run examples.chat.app:server`` subprocess serves the whole
module. Each scenario runs through locust's library API (the files loaded
the way ``locust -f`` loads them, options parsed by locust's own parser)
until enough traffic went through, then the runner quits; one more test runs
the plain ``locust`` command. The assertions are guarantees — no failure,
no gap, no duplicate, every session resumed — never throughput.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import locust
import pytest
from locust.argument_parser import get_parser
from locust.env import Environment
from locust.user import User
from locust.util.load_locustfile import load_locustfile
from wshelpers import wait_for

from wscore import sandbox
from wscore.loadtests.broadcast import BroadcastProbe
from wscore.loadtests.counters import WsCounters, counters_of

ROOT = Path(__file__).resolve().parents[2]
LOADTESTS = ROOT / "loadtests"
BIN = Path(sys.executable).parent


class ChatServer:
    """``wscore run examples.chat.app:server`` on a free loopback port, stderr kept for failures."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "wscore"), "run", "examples.chat.app:server", "--host", "127.0.0.1",
             "--port", "0", "--log-level", "INFO"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: collections.deque[str] = collections.deque(maxlen=200)
        self.port = self._read_port(timeout=20.0)
        # Keep draining stderr: a full pipe would block the server's logging.
        self._drain = gevent.spawn(self._read_lines)

    def _read_port(self, timeout: float) -> int:
        assert self.proc.stderr is not None
        with gevent.Timeout(timeout, AssertionError("the chat server did not start")):
            for line in self.proc.stderr:
                self.log.append(line)
                found = re.search(r"on ws://127\.0\.0\.1:(\d+)/ws", line)
                if found:
                    return int(found.group(1))
        raise AssertionError("the chat server exited:\n" + "".join(self.log))

    def _read_lines(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._drain.kill()


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ChatServer]:
    server = ChatServer()
    yield server
    server.stop()


_loaded: dict[str, dict[str, type[User]]] = {}


def scenario(name: str) -> dict[str, type[User]]:
    """The User classes of ``loadtests/<name>.py``, loaded as ``locust -f`` does, once."""
    if name not in _loaded:
        # Loading a file twice would register its own event listeners twice.
        _loaded[name], _ = load_locustfile(str(LOADTESTS / f"{name}.py"))
    return _loaded[name]


def counters(env: Environment) -> WsCounters:
    return counters_of(env)


#: Counters of each run just before its users were stopped (stopping kills requests in flight).
before_quit: dict[Environment, dict[str, int]] = {}


def run_headless(name: str, host: str, args: list[str], *, users: int,
                 until: Callable[[Environment], bool], what: str, timeout: float = 20.0) -> Environment:
    """Run scenario ``name`` with ``users`` users until ``until(env)`` holds, then quit like ``-t`` does."""
    user_classes = scenario(name)
    options = get_parser().parse_args(["-f", str(LOADTESTS / f"{name}.py"), "--host", host, *args])
    env = Environment(user_classes=list(user_classes.values()), events=locust.events, host=host,
                      parsed_options=options)
    runner = env.create_local_runner()
    fire(env.events.init, environment=env, runner=runner, web_ui=None)  # as locust's main does
    try:
        runner.start(users, spawn_rate=users * 10)
        wait_for(lambda: until(env), timeout=timeout, what=what)
        before_quit[env] = counters(env).snapshot()
    finally:
        runner.quit()
        fire(env.events.quitting, environment=env, reverse=True)
    return env


def fire(hook: Any, **kwargs: Any) -> None:
    """``hook.fire(**kwargs)`` (locust's EventHook is not annotated)."""
    hook.fire(**kwargs)


def entries(env: Environment) -> dict[tuple[str, str], int]:
    return {(s.method, s.name): s.num_requests for s in env.stats.entries.values()}


def assert_clean(env: Environment) -> None:
    """No failure, no task exception, no broken delivery guarantee, no lost session."""
    errors = {f"{e.method} {e.name}: {e.error}": e.occurrences for e in env.stats.errors.values()}
    assert env.stats.total.num_failures == 0, errors
    assert env.runner is not None
    assert not env.runner.exceptions, [e["msg"] for e in env.runner.exceptions.values()]
    c = counters(env)
    assert c.broken_guarantees() == {}, c.summary()
    assert c["sessions_lost"] == 0, c.summary()
    # No request timed out (no failure), so an unmatched reply would be a handler run twice.
    # Counted before the quit: a user killed mid-request leaves a reply nobody waits for.
    assert before_quit[env]["unmatched_replies"] == 0, before_quit[env]
    assert c["stray_replies"] == 0, c.summary()
    assert env.process_exit_code in (None, 0)


def num(env: Environment, method: str, name: str) -> int:
    return entries(env).get((method, name), 0)


def test_rpc_closed_loop_has_no_failures(chat_server: ChatServer) -> None:
    env = run_headless(
        "rpc", chat_server.url, ["--echo-bytes", "256"], users=8,
        until=lambda e: num(e, "WS", "echo") >= 300 and num(e, "WS", "session.get") >= 30,
        what="300 echoes and 30 session round trips")
    assert_clean(env)
    assert num(env, "CONNECT", "connect") == 8
    assert counters(env)["connects"] == 8


def test_chat_rooms_deliver_every_broadcast_in_order(chat_server: ChatServer) -> None:
    # 8 users in 2 rooms: each message reaches the 3 other members of its room.
    env = run_headless(
        "chat", chat_server.url, ["--rooms", "2", "--message-interval", "0.1"], users=8,
        until=lambda e: counters(e)["broadcasts_received"] >= 150 and num(e, "WS", "room.join") == 8,
        what="150 broadcasts")
    assert_clean(env)
    assert num(env, "BROADCAST", "chat.new_message") == counters(env)["broadcasts_received"]
    assert num(env, "WS", "chat.message") > 0


def test_reconnect_storm_resumes_every_dropped_link(chat_server: ChatServer) -> None:
    users = 6
    env = run_headless(
        "reconnect_storm", chat_server.url,
        ["--rooms", "1", "--message-interval", "0.05", "--drop-interval", "0.5"], users=users,
        until=lambda e: counters(e)["resumes"] >= 2 * users and counters(e)["broadcasts_received"] >= 50,
        what=f"{2 * users} resumes")
    assert_clean(env)
    c = counters(env)
    assert c["drops"] >= 2 * users
    # Every cut ended in a resume (reported as RECONNECT resume), none in a new session.
    assert num(env, "RECONNECT", "resume") == c["resumes"] == c["reconnects"]


def test_proxy_storm_cuts_everyone_and_everyone_resumes(chat_server: ChatServer) -> None:
    users = 6
    with sandbox.proxy(("127.0.0.1", chat_server.port), control=True) as proxy:
        assert proxy.control_url is not None
        env = run_headless(
            "reconnect_storm", proxy.url("/ws"),
            ["--rooms", "1", "--message-interval", "0.05", "--drop-interval", "0",
             "--proxy-control", proxy.control_url, "--storm-interval", "0.7"], users=users,
            until=lambda e: counters(e)["storms"] >= 2 and counters(e)["resumes"] >= 2 * users,
            what="2 proxy storms, all resumed")
    assert_clean(env)
    c = counters(env)
    assert c["drops"] == 0
    assert c["storm_links_cut"] >= 2 * users
    assert num(env, "STORM", "proxy cut") == c["storms"]


def test_plain_locust_command_runs_headless(chat_server: ChatServer, tmp_path: Path) -> None:
    # The documented command line, from another directory: the file must find its package.
    out = tmp_path / "rpc"
    proc = subprocess.run(
        [str(BIN / "locust"), "-f", str(LOADTESTS / "rpc.py"), "--host", chat_server.url,
         "--headless", "-u", "4", "-r", "4", "-t", "2s", "--json-file", str(out), "--skip-log"],
        cwd=tmp_path, capture_output=True, text=True, timeout=40,
        env={**os.environ, "LOCUST_ECHO_BYTES": "16"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = {(s["method"], s["name"]): s for s in json.loads((tmp_path / "rpc.json").read_text())}
    assert stats[("WS", "echo")]["num_requests"] > 0
    assert sum(s["num_failures"] for s in stats.values()) == 0


@pytest.mark.parametrize("counter", ["gaps", "duplicates_dropped", "stray_replies",
                                     "broadcast_gaps", "broadcast_duplicates",
                                     "broadcast_reordered"])
def test_broken_guarantee_sets_exit_code_1(counter: str) -> None:
    scenario("rpc")
    env = Environment(user_classes=[], events=locust.events)
    counters(env).add("connects")  # someone connected: the breach alone must fail the run
    counters(env).add(counter)
    fire(env.events.quitting, environment=env, reverse=True)
    assert env.process_exit_code == 1


def test_late_replies_are_not_a_broken_guarantee() -> None:
    # Requests that gave up may get their replies late: unmatched, but no breach.
    scenario("rpc")
    env = Environment(user_classes=[], events=locust.events)
    counters(env).add("connects")
    counters(env).add("unmatched_replies", 3)
    counters(env).add("requests_given_up", 3)
    fire(env.events.quitting, environment=env, reverse=True)
    assert env.process_exit_code in (None, 0)


def test_importing_the_support_modules_registers_no_listener() -> None:
    code = (
        "import locust\n"
        "hooks = [h for h in vars(locust.events).values() if hasattr(h, '_handlers')]\n"
        "before = sum(len(h._handlers) for h in hooks)\n"
        "import wscore.loadtests.user, wscore.loadtests.counters, wscore.loadtests.options\n"
        "import wscore.loadtests.hooks, wscore.loadtests.pacing, wscore.loadtests.broadcast\n"
        "assert sum(len(h._handlers) for h in hooks) == before, 'a listener was registered'\n"
        "wscore.loadtests.hooks.install(); n = sum(len(h._handlers) for h in hooks)\n"
        "wscore.loadtests.hooks.install()\n"
        "assert n > before and sum(len(h._handlers) for h in hooks) == n, 'install not idempotent'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_options_are_validated() -> None:
    scenario("rpc")
    parser = get_parser()
    assert parser.parse_args(["--rooms", "3"]).rooms == 3
    for bad in (["--rooms", "0"], ["--proxy-control", "http://10.1.2.3:9001"],
                ["--proxy-control", "https://127.0.0.1:9001"], ["--message-interval", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)
    assert parser.parse_args(["--proxy-control", "http://127.0.0.1:9001/"]).proxy_control == \
        "http://127.0.0.1:9001"


class _FakeUser:
    """What BroadcastProbe uses of a WsUser: its counters and record()."""

    def __init__(self) -> None:
        self.counters = WsCounters()
        self.failures: list[str] = []

    def record(self, request_type: str, name: str, response_time_ms: float, response_length: int = 0,
               exception: BaseException | None = None) -> None:
        if exception is not None:
            self.failures.append(str(exception))


def test_broadcast_probe_tells_refusals_from_gaps_and_repeats() -> None:
    sender_user, receiver = _FakeUser(), _FakeUser()
    sender = BroadcastProbe(sender_user, "chat.new_message")
    probe = BroadcastProbe(receiver, "chat.new_message")
    texts = [sender.next_text() for _ in range(2)]          # #1, #2 broadcast
    sender.next_text()
    sender.refused()                                        # #3 refused: never broadcast
    texts.append(sender.next_text())                        # #4 follows #2
    lost = sender.next_text()                               # #5 lost on the way
    texts.append(sender.next_text())                        # #6: a gap after #4
    texts.append(texts[0])                                  # #1 again: a repeat
    assert lost
    for text in texts:
        probe.on_message({"text": text, "sender": "anon"})
    probe.on_message({"text": "hello from a human", "sender": "anon"})  # not a probe: ignored
    c = receiver.counters
    assert (c["broadcasts_received"], c["broadcast_gaps"], c["broadcast_duplicates"]) == (5, 1, 1)
    assert len(receiver.failures) == 2 and "gap" in receiver.failures[0]
