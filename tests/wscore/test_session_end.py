"""Ending a session on purpose (SPEC §7): a 1000 close ends it; any other end only detaches it."""

from __future__ import annotations

from typing import Any

import pytest
from wshelpers import RawClient, wait_for

from wscore import WsContext, WsServer


def app(server: WsServer) -> None:
    @server.on("join")
    def join(ctx: WsContext) -> Any:
        server.rooms.join("lobby", ctx.session)
        return True


def test_a_1000_close_ends_the_session_at_once(make_server: Any, clients: Any) -> None:
    server = make_server(setup=app, session_ttl=300)
    c = RawClient(server.url)
    sid = c.recv()["p"]["sessionId"]
    assert c.request("join", None, c="j")["e"] == "ack"
    assert server.rooms.members("lobby") == [sid]
    c.ws.close(status=1000)  # websocket-client sends the 1000 close frame and waits for ours
    wait_for(lambda: server.stats()["sessions"] == 0, what="the session to end (not after the TTL)")
    wait_for(lambda: server.rooms.members("lobby") == [], what="the room to be left")
    again = clients(f"{server.url}?session={sid}&last_seq=0")
    assert again.recv()["p"]["code"] == 1006


@pytest.mark.parametrize("code", [1001, 4000, 3002])
def test_any_other_close_only_detaches(make_server: Any, clients: Any, code: int) -> None:
    server = make_server(setup=app, session_ttl=300)
    c = RawClient(server.url)
    sid = c.recv()["p"]["sessionId"]
    c.ws.close(status=code)
    wait_for(lambda: server.stats()["connections"] == 0, what="the connection to close")
    assert server.stats()["sessions"] == 1
    again = clients(f"{server.url}?session={sid}&last_seq=0")
    assert again.recv()["p"]["resumed"] is True


def test_a_replaced_connection_closing_with_1000_does_not_end_the_session(
        make_server: Any, clients: Any) -> None:
    server = make_server(setup=app, session_ttl=300)
    first = RawClient(server.url)
    sid = first.recv()["p"]["sessionId"]
    second = clients(f"{server.url}?session={sid}&last_seq=0")
    assert second.recv()["p"]["resumed"] is True
    assert first.recv_close() == 4000
    first.ws.close(status=1000)
    assert second.request("join", None, c="still")["e"] == "ack"
    assert server.stats()["sessions"] == 1
