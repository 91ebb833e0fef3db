"""Checks of the writer shared by its plain-TCP and TLS tests (``test_writer``, ``test_tls``)."""

from __future__ import annotations

from redisproc import RedisServer
from wshelpers import wait_for

from wscore.cluster.writer import RedisWriter


def check_a_dropped_idle_connection_is_noticed_at_once_and_repaired(server: RedisServer) -> None:
    """Redis closes the writer's idle connection: down, then up again, and commands work."""
    states: list[bool] = []
    # a check interval far longer than the test: only the read watcher can notice
    w = RedisWriter(server.url, idle_check_interval=60, reconnect_min_delay=0.01,
                    on_state=states.append, name="idle-writer")
    w.start()
    try:
        assert w.execute("PING") in (True, b"PONG")
        assert server.admin().client_kill_filter(_type="normal", skipme=True) >= 1
        wait_for(lambda: len(states) >= 3, timeout=5, what="down, then up again")
        assert states == [True, False, True]
        assert w.execute("PING") in (True, b"PONG")
    finally:
        w.stop()
