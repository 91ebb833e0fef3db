"""RoomActor on its own: what a crash or a stop does to broadcasts still waiting to be published."""

from __future__ import annotations

from typing import Any

import gevent.event
import pykka
import pytest

from wscore.actors.messages import RoomBroadcast, RoomPublished
from wscore.actors.room import RoomActor
from wscore.protocol.envelope import encode_envelope


class Recorder:
    """Stands in for the router: keeps what the room tells it (RoomEmpty), answers nothing."""

    def __init__(self) -> None:
        self.told: list[Any] = []

    def tell(self, message: Any) -> None:
        self.told.append(message)


def test_broadcasts_queued_when_the_room_crashes_fail_their_waiters() -> None:
    release = gevent.event.Event()
    published: list[str] = []

    def publish(room_id: str, exclude: str | None, body: str) -> Any:
        published.append(body)
        release.wait(10)  # keeps the room busy while more messages queue behind
        done = gevent.event.AsyncResult()
        done.set(len(published))
        return done

    ref = RoomActor.start("r", Recorder(), None, publish=publish)
    frame = encode_envelope("said", "x", now_ms=0)
    first, queued = gevent.event.AsyncResult(), gevent.event.AsyncResult()
    ref.tell(RoomBroadcast("r", frame, "said", "x", done=first))
    ref.tell(RoomPublished("r", 1, None))  # type: ignore[arg-type]  # a bug of ours: crashes the room
    ref.tell(RoomBroadcast("r", frame, "said", "x", done=queued))
    release.set()
    assert first.get(timeout=5) == 1
    # The crash stopped the room before it reached the second broadcast: its sender
    # must hear so (it gates its writes on it), not wait forever.
    with pytest.raises(pykka.ActorDeadError):
        queued.get(timeout=5)
    assert published == [frame.body] and not ref.is_alive()
