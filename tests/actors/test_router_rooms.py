"""Router, room and session actors with a fake connection outbox (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pykka
from wshelpers import wait_for

from wscore import WsServerConfig
from wscore.actors import FindRoom, RouterActor, SessionEnv
from wscore.actors.messages import (
    Attach,
    ClaimSession,
    ClientFrame,
    JoinRoom,
    LeaveRoom,
    OpenSession,
    RoomBroadcast,
    RoomMembers,
    SendToSessions,
    Stats,
)
from wscore.handlers import HandlerSpec
from wscore.protocol.envelope import Envelope, encode_envelope


class FakeOutbox:
    """Stands in for actors.connection.Outbox: records what would be written."""

    def __init__(self, conn_id: int = 1) -> None:
        self.conn_id = conn_id
        self.frames: list[dict[str, Any]] = []
        self.closed_with: int | None = None

    def send(self, wire: str) -> bool:
        self.frames.append(json.loads(wire))
        return True

    def send_batch(self, wires: list[str]) -> bool:
        for wire in wires:
            self.send(wire)
        return True

    def close(self, code: int, reason: str = "") -> None:
        self.closed_with = code

    def events(self) -> list[str]:
        return [f["e"] for f in self.frames]


def start_router(handlers: dict[str, HandlerSpec] | None = None, **cfg: Any) -> Any:
    config = WsServerConfig.dev(**cfg)
    table = handlers or {}
    return RouterActor.start(make_env=lambda router: SessionEnv(config=config, handlers=table,
                                                                router=router))


def open_attached(router: Any, conn_id: int = 1) -> tuple[str, Any, FakeOutbox]:
    opened = router.ask(OpenSession(None), timeout=5)
    outbox = FakeOutbox(conn_id)
    assert opened.session_ref.ask(Attach(conn_id, outbox, None, None), timeout=5).ok
    return opened.session_id, opened.session_ref, outbox


def test_broadcast_reaches_members_but_the_excluded_one_in_order() -> None:
    router = start_router()
    a_id, _, a_out = open_attached(router, 1)
    b_id, b_ref, b_out = open_attached(router, 2)
    for sid in (a_id, b_id):
        router.tell(JoinRoom("r", sid))
    for i in range(5):
        router.tell(RoomBroadcast("r", encode_envelope("m", i, now_ms=0), "m", i, exclude=a_id))
    room = router.ask(FindRoom("r"), timeout=5)
    assert sorted(room.ask(RoomMembers(), timeout=5)) == sorted([a_id, b_id])
    wait_for(lambda: b_out.events().count("m") == 5, what="deliveries")
    assert [f["p"] for f in b_out.frames if f["e"] == "m"] == [0, 1, 2, 3, 4]
    assert [f["s"] for f in b_out.frames if f["e"] == "m"] == [1, 2, 3, 4, 5]
    assert "m" not in a_out.events()
    assert b_ref.ask(Stats(), timeout=5)["rooms"] == 1


def test_empty_room_stops_and_a_racing_join_is_never_lost() -> None:
    router = start_router()
    a_id, _, _ = open_attached(router, 1)
    b_id, _, b_out = open_attached(router, 2)
    router.tell(JoinRoom("r", a_id))
    first_room = router.ask(FindRoom("r"), timeout=5)
    # Leave (room becomes empty and reports it) and a join routed right behind it:
    router.tell(LeaveRoom("r", a_id))
    router.tell(JoinRoom("r", b_id))
    router.tell(RoomBroadcast("r", encode_envelope("x", 1, now_ms=0), "x", 1))
    wait_for(lambda: "x" in b_out.events(), what="the broadcast to the joined member")
    room = router.ask(FindRoom("r"), timeout=5)
    assert room is first_room or room is not None
    assert room.ask(RoomMembers(), timeout=5) == [b_id]
    router.tell(LeaveRoom("r", b_id))
    wait_for(lambda: router.ask(FindRoom("r"), timeout=5) is None, what="the empty room to stop")
    wait_for(lambda: not first_room.is_alive(), what="room actor stopped")


def test_claim_checks_the_owner_and_existence() -> None:
    router = start_router()
    opened = router.ask(OpenSession("ann"), timeout=5)
    assert router.ask(ClaimSession(opened.session_id, "ann"), timeout=5).session_ref is not None
    assert router.ask(ClaimSession(opened.session_id, "eve"), timeout=5).refusal == "wrong_user"
    assert router.ask(ClaimSession("nope", "ann"), timeout=5).refusal == "not_found"


def test_pushes_to_a_user_and_to_everyone() -> None:
    router = start_router()
    opened = router.ask(OpenSession("ann"), timeout=5)
    ann = FakeOutbox(1)
    opened.session_ref.ask(Attach(1, ann, None, "ann"), timeout=5)
    _, _, other = open_attached(router, 2)
    router.tell(SendToSessions(encode_envelope("to_ann", 1, now_ms=0), user_id="ann"))
    router.tell(SendToSessions(encode_envelope("to_all", 2, now_ms=0)))
    wait_for(lambda: "to_all" in other.events() and "to_all" in ann.events(), what="pushes")
    assert "to_ann" in ann.events() and "to_ann" not in other.events()


def test_session_runs_handlers_one_at_a_time_and_numbers_everything() -> None:
    order: list[str] = []

    def handler(ctx: Any) -> Any:
        order.append(ctx.payload)
        ctx.emit("side", ctx.payload)
        return ctx.payload

    router = start_router({"h": HandlerSpec("h", handler)})
    _, ref, out = open_attached(router)
    for i in range(3):
        ref.tell(ClientFrame(1, Envelope("h", payload=str(i), correlation_id=i, seq=i + 1)))
    ref.tell(ClientFrame(1, Envelope("h", payload="dup", correlation_id=9, seq=2)))
    wait_for(lambda: out.events().count("ack") == 3 and "sys.ack" in out.events(), what="replies")
    assert order == ["0", "1", "2"]
    numbered = [f for f in out.frames if "s" in f]
    assert [f["s"] for f in numbered] == list(range(1, 7))
    assert [f["e"] for f in numbered] == ["side", "ack"] * 3
    assert out.frames[0]["e"] == "sys.connected" and "s" not in out.frames[0]
    wait_for(lambda: any(f["e"] == "sys.ack" and f["p"] == {"s": 3} for f in out.frames),
             what="a batched sys.ack covering all three")


def test_frames_from_a_replaced_connection_are_ignored() -> None:
    router = start_router({"h": HandlerSpec("h", lambda ctx: "ran")})
    _, ref, first = open_attached(router, 1)
    second = FakeOutbox(2)
    assert ref.ask(Attach(2, second, 0, None), timeout=5).ok
    assert first.closed_with == 4000
    ref.tell(ClientFrame(1, Envelope("h", correlation_id="old")))
    ref.tell(ClientFrame(2, Envelope("h", correlation_id="new")))
    wait_for(lambda: "ack" in second.events(), what="the reply on the new connection")
    assert [f["c"] for f in second.frames if f["e"] == "ack"] == ["new"]
    assert "ack" not in first.events()


def teardown_function() -> None:
    pykka.ActorRegistry.stop_all(block=True, timeout=5)
