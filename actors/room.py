"""RoomActor: one per room and node. Owns the room's local membership and fans broadcasts out.

Rules it keeps:

* one message at a time; every message reaches it through the router, in
  the order the router forwarded them, so a join told before a broadcast is
  always applied before it;
* a broadcast arrives encoded once; the room hands the *same* ``Deliver``
  value to every member, and each session only splices in its own ``s``;
* it never waits on another actor (behaviour hooks are user code: they must
  not wait on this room, e.g. through ``server.rooms.members`` of their own
  room, or it would wait on itself); when it has no member left after a
  routed message it reports :class:`RoomEmpty` with the number of routed
  messages it handled, and the router stops it only if nothing was routed to
  it since (no lost joins);
* behaviour hooks (:class:`wscore.WsRoomBehaviour`) run here, one at a time;
* a join is the one message a session may wait on (its ``answer``, sent by
  ``server.rooms.join`` for a room with a behaviour): a new member is added,
  ``on_join`` runs (it sees the joiner in ``room.members``; what it
  broadcasts reaches the joiner only once admitted), and a ``WsError`` it
  raises refuses the join — the member is removed again, the session is not
  told :class:`JoinedRoom` (so nothing is stored, with Redis), the answer
  carries the error, and a room left empty reports :class:`RoomEmpty`. Any
  other exception is logged and the join stands. The asking handler waits
  for what the room had queued before the join, plus the hook; the room
  never waits on a session (it only tells and offers to one), so that wait
  cannot deadlock.

With Redis (``publish``, the router's :attr:`ClusterLinks.publish
<actors.store.ClusterLinks.publish>`), every node with a local member has its
own actor (and its own behaviour instance) for the room:

* the room's messages come from the node's subscriber (:class:`RoomPublished`,
  in room-seq order) and go to this node's members with their room seq; a gap
  the subscriber could not fill (:class:`RoomGapped`) goes to every member,
  which ends its resumability. No hook runs on them: ``on_message`` ran
  already, on the node that published;
* a :class:`RoomBroadcast` reaches this actor only when the room has a
  behaviour (the router publishes the others itself): ``on_message`` runs
  here, on the sender's node, once per broadcast, and the message it returns
  is published (its ``done`` resolved with the publish; a None return drops
  it everywhere). So every member on every node gets the same message, in the
  room's one order, encoded once. A node without a local member of the room
  gets an actor for the broadcast only: it reports :class:`RoomEmpty` once
  its queue is handled and the router stops it (its behaviour instance, and
  so its state, last that long);
* the behaviour's ``RoomHandle.broadcast`` is published as well (it reaches
  every node's members, in room order, without ``on_message``);
  ``RoomHandle.members``/``size`` are this node's members.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pykka

from wscore.actors._runtime import GeventActor, offer_quietly, tell_quietly
from wscore.actors.messages import (
    Deliver,
    JoinedRoom,
    JoinRoom,
    LeaveRoom,
    LeftRoom,
    RoomBroadcast,
    RoomEmpty,
    RoomGapped,
    RoomMembers,
    RoomPublished,
    Stats,
)
from wscore.actors.store import split_room_wire
from wscore.behaviours import RoomHandle, RoomMessage
from wscore.errors import WsError
from wscore.protocol.envelope import EncodedFrame, encode_envelope

__all__ = ["RoomActor", "publish_room_message"]

log = logging.getLogger("wscore.actors.room")


def publish_room_message(publish: Callable[[str, str | None, str], Any], room_id: str,
                         exclude: str | None, body: str, done: Any = None) -> None:
    """Publish a room message through ``publish`` (``ClusterLinks.publish``) without waiting.

    ``done`` (an ``AsyncResult`` or None) gets the publish's outcome; without
    one, a failure is logged here (with one, the session that gates on it
    reports it).
    """
    try:
        future = publish(room_id, exclude, body)
    except Exception as exc:  # the store refuses at once while Redis is down
        if done is not None:
            done.set_exception(exc)
        else:
            log.warning("room %s: message not published: %s", room_id, exc)
        return

    def report(result: Any) -> None:
        if result.successful():
            if done is not None:
                done.set(result.value)
        elif done is not None:
            done.set_exception(result.exception)
        else:
            log.warning("room %s: message not published: %s", room_id, result.exception)

    future.rawlink(report)


def _fail_waiter(message: Any, reason: str) -> None:
    """Fail a queued or failed broadcast's ``done`` or join's ``answer`` (if pending)."""
    if isinstance(message, RoomBroadcast):
        waiter = message.done
    elif isinstance(message, JoinRoom):
        waiter = message.answer
    else:
        return
    if waiter is not None and not waiter.ready():
        waiter.set_exception(pykka.ActorDeadError(reason))


class RoomActor(GeventActor):
    def __init__(self, room_id: str, router: Any, behaviour: Any = None, *,
                 publish: Callable[[str, str | None, str], Any] | None = None) -> None:
        super().__init__()
        self.room_id = room_id
        self.router = router
        self.behaviour = behaviour
        #: With Redis: ``ClusterLinks.publish`` (broadcasts are published, not delivered here).
        self.publish = publish
        #: session id → (ref, offer) of the member session
        self.members: dict[str, tuple[Any, Any]] = {}
        self.handled = 0
        self.delivered = 0
        #: With Redis: the highest room seq delivered here.
        self.last_seq = 0
        #: While ``on_join`` runs: (the joiner, the frames the hook sent it, held).
        self._joining: tuple[str, list[Deliver]] | None = None

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, RoomPublished):
            self.handled += 1
            self._published(message)
            self._report_if_empty()
        elif isinstance(message, RoomBroadcast):
            self.handled += 1
            try:
                self._broadcast(message)
            except BaseException:
                _fail_waiter(message, f"room {self.room_id} failed")  # then the actor's failure
                raise
            self._report_if_empty()
        elif isinstance(message, RoomGapped):
            self.handled += 1
            for ref, _offer in list(self.members.values()):
                tell_quietly(ref, message)
            self._report_if_empty()
        elif isinstance(message, JoinRoom):
            self.handled += 1
            try:
                self._join(message)
            except BaseException:
                _fail_waiter(message, f"room {self.room_id} failed")  # then the actor's failure
                raise
        elif isinstance(message, LeaveRoom):
            self.handled += 1
            member = self.members.get(message.session_id)
            if message.ref is None or (member is not None and member[0] == message.ref):
                self._leave(message.session_id)
            elif not self.members:
                tell_quietly(self.router, RoomEmpty(self.room_id, self.handled))
        elif isinstance(message, RoomMembers):
            return sorted(self.members)
        elif isinstance(message, Stats):
            return {"members": len(self.members), "delivered": self.delivered}
        return None

    def _join(self, msg: JoinRoom) -> None:
        session_id = msg.session_id
        new = session_id not in self.members
        member = (msg.session_ref, msg.session_offer)
        self.members[session_id] = member
        held: list[Deliver] = []
        if new and self.behaviour is not None:
            # The joiner is a member while on_join runs (room.members / size count it),
            # but what the hook broadcasts is held for it until the verdict: a refused
            # session receives nothing from the room.
            refusal = self._on_join(session_id, held)
            if refusal is not None:
                del self.members[session_id]
                if msg.answer is not None:
                    msg.answer.set_exception(refusal)  # raised in the handler that asked
                else:
                    # Nobody waits (a join by session id, or a resumed session's rooms
                    # rejoined on adoption): the session learns it is not a member.
                    log.info("room %s: on_join refused a join (%s)", self.room_id, refusal)
                    tell_quietly(msg.session_ref, LeftRoom(self.room_id))
                self._report_if_empty()  # a refused first member leaves no actor behind
                return
        # JoinedRoom before the held frames: the session stores the membership (with
        # Redis, its room cursor) before anything the room sends it.
        tell_quietly(msg.session_ref, JoinedRoom(self.room_id, msg.cursor, self.last_seq))
        if msg.answer is not None:
            msg.answer.set(None)
        for deliver in held:
            if not offer_quietly(member[1], deliver):
                del self.members[session_id]  # it ended meanwhile
                self._report_if_empty()
                break

    def _on_join(self, session_id: str, held: list[Deliver]) -> WsError | None:
        """Run ``on_join``: its ``WsError`` is a refusal; anything else is logged (the join stands)."""
        self._joining = (session_id, held)
        try:
            self.behaviour.on_join(RoomHandle(self.room_id, self), session_id)
        except WsError as refusal:
            return refusal
        except Exception:
            log.exception("room behaviour %s.on_join raised", type(self.behaviour).__name__)
        finally:
            self._joining = None
        return None

    def _leave(self, session_id: str) -> None:
        member = self.members.pop(session_id, None)
        if member is not None:
            tell_quietly(member[0], LeftRoom(self.room_id))
            if self.behaviour is not None:
                self._hook("on_leave", session_id)
        self._report_if_empty()

    def on_stop(self) -> None:
        self._fail_queued("stopped")

    def on_failure(self, *exc_info: Any) -> None:
        self._fail_queued("failed")

    def _fail_queued(self, how: str) -> None:
        # Stopped or crashed with broadcasts still queued: a session gating its
        # writes on one's ``done`` must hear so, not wait forever.
        inbox = self.actor_inbox
        queued = []
        while not inbox.empty():
            envelope = inbox.get()
            _fail_waiter(envelope.message, f"room {self.room_id} {how} before publishing it")
            queued.append(envelope)
        for envelope in queued:  # pykka's teardown still answers the asks among them
            inbox.put(envelope)

    def _report_if_empty(self) -> None:
        # Also after a message that found nobody (an actor started for a broadcast
        # on a node without members, or members that died meanwhile): without a
        # report the router would keep the actor (and its subscription) forever.
        if not self.members:
            tell_quietly(self.router, RoomEmpty(self.room_id, self.handled))

    def _published(self, msg: RoomPublished) -> None:
        self.last_seq = max(self.last_seq, msg.seq)
        exclude, body = split_room_wire(msg.wire)
        # The excluded sender gets it too: it only moves its room cursor.
        self._offer_to_members(Deliver(EncodedFrame(body), self.room_id, msg.seq, exclude), skip=None)

    def _broadcast(self, msg: RoomBroadcast) -> None:
        frame = msg.frame
        if self.behaviour is not None:
            frame = self._hook("on_message", msg)
            if frame is None:
                if msg.done is not None:
                    msg.done.set(None)  # dropped: nothing for the sender to wait for
                return
        if self.publish is not None:
            # Redis: on_message ran here, on the sender's node, once; every node's
            # members get what is published, in the room's order.
            publish_room_message(self.publish, self.room_id, msg.exclude, frame.body, msg.done)
            return
        if msg.done is not None:
            msg.done.set(None)
        self._offer_to_members(Deliver(frame), skip=msg.exclude)

    def _offer_to_members(self, deliver: Deliver, *, skip: str | None) -> None:
        """Offer one ``Deliver`` value to every member but ``skip``; forget the dead ones."""
        dead: list[str] = []
        count = 0
        for session_id, (_ref, offer) in self.members.items():
            if session_id == skip:
                continue
            if offer_quietly(offer, deliver):
                count += 1
            else:
                dead.append(session_id)
        self.delivered += count
        for session_id in dead:
            self.members.pop(session_id, None)

    def _hook(self, name: str, arg: Any) -> Any:
        # Behaviour code is user code: its failure must not take the room down.
        handle = RoomHandle(self.room_id, self)
        try:
            if name != "on_message":
                getattr(self.behaviour, name)(handle, arg)
                return None
            original = RoomMessage(event=arg.event, payload=arg.payload, sender=arg.sender)
            result = self.behaviour.on_message(handle, original)
            if result is None:
                return None
            if result is original:
                return arg.frame
            return encode_envelope(result.event, result.payload, now_ms=int(time.time() * 1000))
        except Exception:
            log.exception("room behaviour %s.%s raised", type(self.behaviour).__name__, name)
            return arg.frame if name == "on_message" else None

    def deliver_from_behaviour(self, event: str, payload: Any) -> None:
        """``RoomHandle.broadcast``: a frame from the behaviour itself, to every member.

        With Redis it is published (to every node's members, in room order); it
        never goes through ``on_message``.
        """
        frame = encode_envelope(event, payload, now_ms=int(time.time() * 1000))
        if self.publish is not None:
            publish_room_message(self.publish, self.room_id, None, frame.body)
            return
        deliver = Deliver(frame)
        joining = self._joining
        for session_id, (_ref, offer) in list(self.members.items()):
            if joining is not None and session_id == joining[0]:
                joining[1].append(deliver)  # on_join's joiner: only once it is admitted
            else:
                offer_quietly(offer, deliver)
