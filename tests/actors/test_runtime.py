"""GeventActor: pykka on gevent, and the idle fast path of offer()."""

from __future__ import annotations

from typing import Any

import attrs
import gevent
import gevent.event
import pykka
import pytest

from wscore.actors import GeventActor


@attrs.frozen
class Note:
    text: str


@attrs.frozen
class Block:
    gate: Any


class Recorder(GeventActor):
    inline_types = frozenset({Note})

    def _actor_loop(self) -> None:
        try:
            super()._actor_loop()
        finally:
            self.loop_exited.set()

    def __init__(self) -> None:
        super().__init__()
        self.loop_exited = gevent.event.Event()
        self.seen: list[str] = []
        self.greenlets: list[Any] = []

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Note):
            self.seen.append(message.text)
            self.greenlets.append(gevent.getcurrent())
        elif isinstance(message, Block):
            message.gate.wait()
        elif message == "seen":
            return list(self.seen)
        elif message == "boom":
            raise ValueError("boom")
        return None


def test_ask_and_tell_run_in_the_actor_greenlet() -> None:
    ref = Recorder.start()
    ref.tell(Note("a"))
    assert ref.ask("seen", timeout=5) == ["a"]
    gate = gevent.event.Event()
    with pytest.raises(pykka.Timeout):
        ref.ask(Block(gate), block=False).get(timeout=0.05)
    gate.set()
    ref.stop()


def test_offer_runs_inline_only_when_idle_and_keeps_order() -> None:
    actor = Recorder.start_actor()
    ref = actor.actor_ref
    assert ref.ask("seen", timeout=5) == []  # the actor is up and idle
    actor.offer(Note("inline"))
    assert actor.seen == ["inline"] and actor.greenlets == [gevent.getcurrent()]
    gate = gevent.event.Event()
    ref.tell(Block(gate))
    gevent.idle()  # let the actor start the blocking message
    actor.offer(Note("queued-1"))  # busy: must queue behind, not run now
    actor.offer(Note("queued-2"))
    assert actor.seen == ["inline"]
    gate.set()
    assert ref.ask("seen", timeout=5) == ["inline", "queued-1", "queued-2"]
    assert all(g is not gevent.getcurrent() for g in actor.greenlets[1:])
    ref.stop()
    with pytest.raises(pykka.ActorDeadError):
        actor.offer(Note("late"))


def test_offer_of_a_non_inline_type_is_a_tell() -> None:
    actor = Recorder.start_actor()
    actor.offer("boom")  # not inline: the failure happens in the actor, not here
    assert actor.actor_stopped.wait(5)


def test_offer_failure_stops_the_actor_like_a_failing_tell() -> None:
    class Fragile(Recorder):
        def on_receive(self, message: Any) -> Any:
            if isinstance(message, Note) and message.text == "bad":
                raise ValueError("bad")
            return super().on_receive(message)

    actor = Fragile.start_actor()
    actor.actor_ref.ask("seen", timeout=5)
    actor.offer(Note("bad"))
    assert not actor.actor_ref.is_alive()
    assert actor.loop_exited.wait(5)  # its greenlet does not linger
