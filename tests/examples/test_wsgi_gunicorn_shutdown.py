"""gunicorn's gevent worker ending — by any of its signals, a reload, ``--max-requests`` or a
dead master — closes each WebSocket with a close frame (1001; 1012 with Redis, whose
sessions a client resumes on another worker), and each WebSocket gets its access-log line.

Real gunicorn (``examples.flask_app.app:application``, docs/wsgi.md), real sockets, a
real redis-server for ``-w 2``; the processes are found and signalled by PID.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gunicorn
import psutil
import pytest
from cluster.redisproc import RedisServer
from processes import alive
from wsgi_support import Served, connect, free_port, get
from wshelpers import RawClient, wait_for

from wscore.protocol.codes import CLOSE_GOING_AWAY, CLOSE_SERVICE_RESTART

pytestmark = pytest.mark.timeout(120)

APP = "examples.flask_app.app:application"
Start = Callable[..., Served]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """``start(*gunicorn_options, app=APP)``: gunicorn -k gevent serving ``app``; stopped by PID."""
    started: list[Served] = []

    def run(*options: str, app: str = APP) -> Served:
        port = free_port()
        args = ["-m", "gunicorn", "-k", "gevent", "--bind", f"127.0.0.1:{port}",
                "--graceful-timeout", "20", *options, app]
        if gunicorn.version_info >= (25,):
            args[2:2] = ["--no-control-socket"]  # a per-user socket: parallel runs would share it
        served = Served(args, port, tmp_path / f"gunicorn{len(started)}.log")
        started.append(served)
        return served

    yield run
    for served in started:
        served.stop()


def assert_clean(served: Served) -> None:
    """Nothing looked like an error to gunicorn, and its graceful wait never ran out."""
    out = served.output()
    assert "Traceback" not in out and "[ERROR]" not in out, out
    assert "graceful timeout" not in out, out  # the WebSockets were gone: the wait ended at once


def workers(served: Served) -> list[int]:
    return [p.pid for p in psutil.Process(served.popen.pid).children()]


def holder(served: Served, client: RawClient) -> int:
    """The PID of the gunicorn worker holding ``client``'s connection."""
    mine = client.ws.sock.getsockname()[1]
    for pid in workers(served):
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == mine and conn.laddr.port == served.port:
                return pid
    raise AssertionError(f"no worker holds the connection from port {mine}")


def wait_exit(served: Served) -> int:
    code = served.popen.wait(timeout=60)
    assert_clean(served)
    return code


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_to_the_master_closes_every_websocket_1001(start: Start, sig: int) -> None:
    # SIGTERM: gunicorn's graceful stop; SIGINT / SIGQUIT: its quick one. Either way a close frame.
    served = start("-w", "1")
    peers = [connect(served.port)[0] for _ in range(2)]
    os.kill(served.popen.pid, sig)
    assert [peer.recv_close() for peer in peers] == [CLOSE_GOING_AWAY, CLOSE_GOING_AWAY]
    assert wait_exit(served) == 0
    assert "Shutting down: Master" in served.output()


def test_sigterm_to_the_worker_closes_1001_and_the_master_replaces_the_worker(start: Start) -> None:
    served = start("-w", "1")
    peer, _ = connect(served.port)
    old = holder(served, peer)
    os.kill(old, signal.SIGTERM)
    assert peer.recv_close() == CLOSE_GOING_AWAY
    wait_for(lambda: not alive(old) and len(workers(served)) == 1, timeout=30, what="a new worker")
    again, hello = connect(served.port)  # the new worker serves WebSockets (a new session)
    assert holder(served, again) != old and hello["resumed"] is False
    again.close()
    assert_clean(served)


def test_a_reload_sighup_closes_the_old_workers_websockets_1001(start: Start) -> None:
    served = start("-w", "1")
    peer, _ = connect(served.port)
    old = holder(served, peer)
    os.kill(served.popen.pid, signal.SIGHUP)  # new workers start, the old ones get SIGTERM
    assert peer.recv_close() == CLOSE_GOING_AWAY
    wait_for(lambda: not alive(old) and len(workers(served)) == 1, timeout=30, what="the reload")
    again, _ = connect(served.port)
    assert holder(served, again) != old
    again.close()
    assert_clean(served)


def test_a_max_requests_restart_closes_1001(start: Start) -> None:
    # Requests of the worker: Served's one /healthz, the upgrade, then the GET that reaches 3.
    served = start("-w", "1", "--max-requests", "3", "--max-requests-jitter", "0")
    peer, _ = connect(served.port)
    old = holder(served, peer)
    assert get(served.port, "/api/status")[0] == 200
    assert peer.recv_close() == CLOSE_GOING_AWAY
    wait_for(lambda: not alive(old), timeout=30, what="the old worker to exit")
    assert "Autorestarting worker after current request" in served.output()
    # Its successor serves (and is past its boot: a SIGTERM while it boots would be lost).
    assert get(served.port, "/healthz")[0] == 200 and workers(served) != [old]
    assert_clean(served)


def test_a_dead_master_makes_the_worker_close_1001_before_it_exits(start: Start) -> None:
    served = start("-w", "1")
    peer, _ = connect(served.port)
    worker = holder(served, peer)
    served.popen.kill()  # SIGKILL: the worker sees "Parent changed" and exits
    assert peer.recv_close() == CLOSE_GOING_AWAY
    wait_for(lambda: not alive(worker), timeout=30, what="the orphaned worker to exit")
    assert "Parent changed, shutting down" in served.output()
    assert_clean(served)


def test_each_websocket_has_an_access_log_line_without_its_query(start: Start, tmp_path: Path) -> None:
    access = tmp_path / "access.log"
    # The default format's atoms (%(r)s shows the request line) and those that could show a query.
    fmt = '%(h)s "%(r)s" %(s)s %(b)s "%(a)s" D=%(D)s U=%(U)s q="%(q)s" raw="%({raw_uri}e)s"'
    served = start("-w", "1", "--access-logfile", str(access), "--access-logformat", fmt,
                   "--log-level", "debug")
    first, hello = connect(served.port)
    first.cut()  # the session waits for a resume, whose query carries its id and a token
    query = f"?session={hello['sessionId']}&last_seq=0&token=secret"
    peer, hello = connect(served.port, query)
    assert hello["resumed"] is True
    opened = time.time()
    assert peer.request("session.get", None, c="g")["e"] == "ack"
    time.sleep(0.2)  # not a synchronisation: gives the WebSocket a lifetime the log must show
    closing = time.time()
    peer.close()
    # A plain GET and a refused upgrade of the WebSocket path carry the query too.
    assert get(served.port, f"/ws{query}")[0] == 426
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(f"GET /ws{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 8\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 426")

    def ws_lines(status: str) -> list[str]:
        return [line for line in access.read_text().splitlines()
                if '"GET /ws HTTP/1.1" ' + status in line]

    wait_for(lambda: len(ws_lines("101")) == 2 and len(ws_lines("426")) == 2,
             what="an access-log line for each request to /ws")
    for line in ws_lines("101"):
        assert ' U=/ws q="" raw="/ws"' in line, line
    durations = [int(re.search(r" D=(\d+) ", line).group(1))  # type: ignore[union-attr]
                 for line in ws_lines("101")]
    assert max(durations) >= (closing - opened) * 1e6, (durations, closing - opened)  # the whole WebSocket
    text = access.read_text()
    assert "secret" not in text and hello["sessionId"] not in text, text
    assert "secret" not in served.output()  # nor gunicorn's debug log
    assert_clean(served)


def test_two_workers_share_sessions_through_redis_and_resume_after_a_sigterm_1012(
        start: Start, tmp_path: Path) -> None:
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis = RedisServer(redis_dir)
    redis.start()
    try:
        served = start("-w", "2", app=f'tests.examples.gunicorn_redis_app:make("{redis.url}")')
        alice, hello = connect(served.port)
        session_id = hello["sessionId"]
        assert alice.request("room.join", {"roomId": "lobby"}, c="j")["p"] == {"joined": "lobby"}
        last_seen = alice.request("session.get", None, c="g")["s"]
        gone = holder(served, alice)
        os.kill(gone, signal.SIGTERM)
        # The session stays in Redis: 1012 says "reconnect now, anywhere".
        assert alice.recv_close() == CLOSE_SERVICE_RESTART
        bob, _ = connect(served.port)  # on a worker alive now: the other one, or gone's successor
        assert holder(served, bob) != gone
        assert bob.request("room.join", {"roomId": "lobby"}, c="j")["p"] == {"joined": "lobby"}
        assert bob.request("chat.message", {"roomId": "lobby", "text": "away"}, c="m")["e"] == "ack"
        again, hello = connect(served.port, f"?session={session_id}&last_seq={last_seen}")
        assert hello["sessionId"] == session_id and hello["resumed"] is True
        assert holder(served, again) != gone  # resumed by another process than the one that had it
        assert again.recv_until(lambda f: f["e"] == "chat.new_message")["p"]["text"] == "away"
        assert again.request("session.get", None, c="g2")["p"]["rooms"] == ["lobby"]
        again.request("chat.message", {"roomId": "lobby", "text": "back"}, c="b")
        assert bob.recv_until(lambda f: f["e"] == "chat.new_message")["p"]["text"] == "back"
        for peer in (again, bob):
            peer.close()
        os.kill(served.popen.pid, signal.SIGTERM)
        assert wait_exit(served) == 0
    finally:
        redis.stop()
