"""Testing your own handlers with ``wscore.testing`` — here, the chat example's.

No sockets, no ports: each test session runs on the server's real actors
(router, sessions, rooms) with a recording sink in place of a connection.
Run with ``pytest examples/testing`` (``make test`` includes it).
"""

from __future__ import annotations

import pytest

from examples.chat.app import build_chat_server
from wscore import ErrorCode, WsError, WsServer, WsServerConfig
from wscore.testing import HandlerTestServer, session


@pytest.fixture
def server() -> WsServer:
    return build_chat_server(WsServerConfig.dev(port=0))


def test_a_message_reaches_the_rest_of_the_room(server: WsServer) -> None:
    with HandlerTestServer(server) as t:
        alice = t.session(user_id="alice")
        bob = t.session(user_id="bob")
        carol = t.session(user_id="carol")  # not in the room
        assert alice.request("room.join", {"roomId": "lobby"}) == {"joined": "lobby"}
        assert bob.request("room.join", {"roomId": "lobby"}) == {"joined": "lobby"}

        reply = alice.request("chat.message", {"roomId": "lobby", "text": "hi"})

        assert reply == {"status": "sent"}
        assert bob.events("chat.new_message") == [{"text": "hi", "sender": "alice"}]
        assert alice.events("chat.new_message") == []  # include_self=False
        assert carol.events("chat.new_message") == []


def test_leaving_stops_the_messages(server: WsServer) -> None:
    with HandlerTestServer(server) as t:
        alice, bob = t.session(user_id="alice"), t.session(user_id="bob")
        for s in (alice, bob):
            s.request("room.join", {"roomId": "lobby"})
        assert bob.request("room.leave", {"roomId": "lobby"}) == {"left": "lobby"}
        assert bob.rooms == frozenset()
        alice.request("chat.message", {"roomId": "lobby", "text": "anyone?"})
        assert bob.events("chat.new_message") == []


def test_an_empty_message_fails_validation_and_names_the_field(server: WsServer) -> None:
    with session(server, user_id="alice") as alice:
        with pytest.raises(WsError) as err:
            alice.request("chat.message", {"roomId": "lobby", "text": ""})
        assert err.value.code is ErrorCode.VALIDATION_FAILED
        assert "text" in str(err.value.details)


def test_session_variables_survive_a_reconnect(server: WsServer) -> None:
    with session(server, user_id="alice") as alice:
        alice.request("session.set", {"key": "nick", "value": "Al"})
        alice.request("room.join", {"roomId": "lobby"})
        alice.disconnect()
        alice.reconnect()
        assert alice.request("session.get") == {"data": {"nick": "Al"}, "rooms": ["lobby"]}
        assert alice.data == {"nick": "Al"}


def test_echo_returns_the_payload(server: WsServer) -> None:
    with session(server) as s:
        assert s.request("echo", {"a": [1, 2, 3]}) == {"a": [1, 2, 3]}
