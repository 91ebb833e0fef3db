"""Rooms across nodes: one order per room, and loss made visible.

Publishing (:class:`RoomPublisher`): one Lua script INCRs the room's seq,
XADDs the message to a short per-room stream (entry id ``<seq>-0``, ``MAXLEN ~
history``) and PUBLISHes ``"<seq>:<epoch>:<wire>"``, atomically, so the seq
order *is* the room order every node sees. The room's *epoch* (Redis's clock
when the room's record was made) changes when that record is lost (data loss,
or the room idle past ``room_ttl`` with no live node holding a member: each
subscribing node refreshes it, :meth:`RoomSubscriber.keep_alive`), so a
restarted numbering is never taken for a continuation.

Receiving (:class:`RoomSubscriber`): one pub/sub connection per node, read by
its own greenlet, delivers each subscribed room's messages to
``on_message(room_id, seq, wire)`` in seq order, each exactly once. Pub/sub
alone loses messages silently (while the subscriber reconnects, in a
resubscribe race, or when Redis restarts), so:

- after every (re)subscription the subscriber reads the stream from the last
  seq it delivered (``ROOM_SINCE``) before it trusts pub/sub again;
- a message whose seq is not last + 1 triggers the same fill from the stream;
- what the stream no longer holds (trimmed, or the room's record reset) is
  reported to ``on_gap(RoomGap)`` — never skipped silently. The caller ends
  resumability for the affected sessions (1006); delivery goes on after it.

Callbacks run in the subscriber greenlet, one at a time, and must not block
for long (pub/sub output piles up in Redis meanwhile). Room *membership* is
per session, kept by :class:`wscore.cluster.session_log.SessionLog`
(``join_room`` / ``room_members``), so it does not depend on any node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import gevent
import gevent.event

from wscore.cluster import scripts
from wscore.cluster.errors import ClusterError
from wscore.cluster.writer import (
    CONNECTION_ERRORS,
    RedisConnection,
    RedisWriter,
    disconnect_quietly,
    keep_subscribed,
    open_connection,
    pubsub_replies,
    report_state,
    text,
    wait_result,
)

__all__ = ["RoomGap", "RoomPublisher", "RoomSubscriber", "RoomsLayout"]

log = logging.getLogger("wscore.cluster.rooms")

#: What makes the reader drop its connection, reconnect and sync every room again
#: (a fill that cannot run now — writer down or full — is retried that way).
_READER_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, ClusterError)

#: After this seq nothing is ever published: "read only the room's current seq".
_NOW = 2**62


@attrs.frozen(kw_only=True)
class RoomsLayout:
    """Key and channel names of rooms (``docs/scaling.md`` "Data model")."""

    prefix: str = "wscore"

    def meta_key(self, room_id: str) -> str:
        return f"{self.prefix}:r:{room_id}:m"

    def stream_key(self, room_id: str) -> str:
        return f"{self.prefix}:r:{room_id}:x"

    def channel(self, room_id: str) -> str:
        return f"{self.prefix}:r:{room_id}"


@attrs.frozen(kw_only=True)
class RoomGap:
    """Room messages ``first_missing`` … ``last_missing`` cannot be delivered by this node.

    ``last_missing`` is None when the room's numbering was reset (its record
    was lost): how much was lost is unknown.
    """

    room_id: str
    first_missing: int
    last_missing: int | None
    reason: str


class RoomPublisher:
    """Publishes room messages through the node's writer (see the module docstring)."""

    def __init__(
        self,
        writer: RedisWriter,
        *,
        layout: RoomsLayout | None = None,
        history: int = 1000,
        approximate_trim: bool = True,
        room_ttl: int = 86_400,
        timeout: float | None = 5.0,
    ) -> None:
        if history < 1:
            raise ValueError("history must be at least 1")
        self.writer = writer
        self.layout = layout or RoomsLayout()
        self.history = history
        self.trim = "~" if approximate_trim else "="
        self.room_ttl = room_ttl
        self.timeout = timeout
        writer.register(scripts.PUBLISH, scripts.ROOM_SINCE)

    def publish_nowait(self, room_id: str, wire: str) -> gevent.event.AsyncResult:
        """Queue the publish; the future gives ``[seq, epoch]`` (bytes epoch) once Redis ran it."""
        lay = self.layout
        return self.writer.submit_script(
            scripts.PUBLISH,
            (lay.meta_key(room_id), lay.stream_key(room_id)),
            (lay.channel(room_id), wire, self.history, self.trim, self.room_ttl),
        )

    def publish(self, room_id: str, wire: str) -> int:
        """Publish and wait; returns the message's room seq."""
        reply = wait_result(self.publish_nowait(room_id, wire), self.timeout)
        return int(reply[0])

    def since(self, room_id: str, after: int, *, count: int = 1000) -> tuple[int, str, list[tuple[int, str]]]:
        """(current seq, epoch, up to ``count`` retained messages after ``after``): a resume's catch-up."""
        lay = self.layout
        reply = wait_result(
            self.writer.submit_script(
                scripts.ROOM_SINCE, (lay.meta_key(room_id), lay.stream_key(room_id)), (after, count)
            ),
            self.timeout,
        )
        return int(reply[0]), text(reply[1]), _entries(reply[2])

    def current(self, room_id: str) -> int:
        """The room's current seq (0 if nothing was published)."""
        return self.since(room_id, _NOW)[0]


def _entries(raw: list[Any]) -> list[tuple[int, str]]:
    out = []
    for entry_id, fields in raw:
        values = {text(fields[i]): fields[i + 1] for i in range(0, len(fields), 2)}
        out.append((int(text(entry_id).split("-", 1)[0]), text(values["w"])))
    return out


class _Room:
    __slots__ = ("epoch", "last", "room_id")

    def __init__(self, room_id: str, last: int | None) -> None:
        self.room_id = room_id
        self.last = last  # None: start at the room's current seq when the subscription is active
        self.epoch: str | None = None


class RoomSubscriber:
    """The node's one pub/sub reader; see the module docstring for the delivery rules."""

    def __init__(
        self,
        url: str,
        publisher: RoomPublisher,
        *,
        on_message: Callable[[str, int, str], None],
        on_gap: Callable[[RoomGap], None],
        on_state: Callable[[bool], None] | None = None,
        socket_timeout: float = 1.0,
        connect_timeout: float = 0.5,
        ping_interval: float = 1.0,
        reconnect_min_delay: float = 0.05,
        reconnect_max_delay: float = 1.0,
        fill_batch: int = 1000,
        name: str = "wscore-rooms",
    ) -> None:
        self.url = url
        self.publisher = publisher
        self.layout = publisher.layout
        self.on_message = on_message
        self.on_gap = on_gap
        self.on_state = on_state
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.reconnect_min_delay = reconnect_min_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.fill_batch = fill_batch
        self.name = name
        self._rooms: dict[str, _Room] = {}  # by channel
        self._conn: RedisConnection | None = None
        self._greenlet: gevent.Greenlet[Any, Any] | None = None
        self._stopped = gevent.event.Event()
        self._up = False
        self._stats = {"delivered": 0, "filled": 0, "duplicates": 0, "gaps": 0, "connects": 0, "syncs": 0}

    # -- life -------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the reader greenlet (it connects, and reconnects, on its own)."""
        if self._greenlet is not None:
            raise RuntimeError("subscriber already started")
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        self._stopped.set()
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)
            self._greenlet = None
        self._drop()

    @property
    def up(self) -> bool:
        """True while subscribed on a working connection."""
        return self._up

    def stats(self) -> dict[str, int | bool]:
        return {"up": self._up, "rooms": len(self._rooms), **self._stats}

    def keep_alive(self) -> int:
        """Refresh the TTL (``room_ttl``) of every room this node subscribes to; the count.

        A room's record (seq, epoch, stream) expires ``room_ttl`` after its last
        publish. A room whose members are live but silent for that long would then
        restart its numbering at its next message, which every member must take
        as a reset (the sessions end, their resumes answer 1006). Refreshed by a
        node that has members, a room expires only once no live node holds one.
        Queued without waiting; ``ClusterError`` at once while Redis is known down
        (the caller tries again next time).
        """
        ttl = self.publisher.room_ttl
        rooms = list(self._rooms.values())
        for room in rooms:
            for key in (self.layout.meta_key(room.room_id), self.layout.stream_key(room.room_id)):
                self.publisher.writer.submit("EXPIRE", key, ttl)
        return len(rooms)

    def last_delivered(self, room_id: str) -> int | None:
        room = self._rooms.get(self.layout.channel(room_id))
        return None if room is None else room.last

    # -- subscriptions ----------------------------------------------------------------------
    def subscribe(self, room_id: str, *, after_seq: int | None = None) -> None:
        """Deliver ``room_id``'s messages after ``after_seq`` (None: from the room's current seq).

        Returns at once; what was published after ``after_seq`` and is still in
        the stream is delivered first, what is not is reported as a gap.
        """
        channel = self.layout.channel(room_id)
        if channel in self._rooms:
            return
        self._rooms[channel] = _Room(room_id, after_seq)
        self._send("SUBSCRIBE", channel)

    def unsubscribe(self, room_id: str) -> None:
        channel = self.layout.channel(room_id)
        if self._rooms.pop(channel, None) is not None:
            self._send("UNSUBSCRIBE", channel)

    def _send(self, *args: Any) -> None:
        # Written from the caller's greenlet while the reader waits to read: gevent
        # allows one reader and one writer on a socket. A failure here shows up in
        # the reader, which resubscribes everything on reconnect.
        conn = self._conn
        if conn is None:
            return
        try:
            conn.send_command(*args, check_health=False)
        except CONNECTION_ERRORS as exc:
            log.debug("room subscriber send failed (the reader will reconnect): %s", exc)

    # -- the reader greenlet ------------------------------------------------------------------
    def _run(self) -> None:
        keep_subscribed(connect=self._connect, read=self._read_loop, drop=self._drop,
                        stopped=self._stopped, min_delay=self.reconnect_min_delay,
                        max_delay=self.reconnect_max_delay, errors=_READER_ERRORS, logger=log,
                        what="room subscriber")

    def _connect(self) -> None:
        conn = open_connection(
            self.url, socket_timeout=self.socket_timeout, connect_timeout=self.connect_timeout,
            name=self.name,
        )
        conn.connect()
        self._conn = conn
        self._stats["connects"] += 1
        if self._rooms:
            conn.send_command("SUBSCRIBE", *self._rooms, check_health=False)
        self._set_up(True)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        disconnect_quietly(conn)
        if self._up:
            self._set_up(False)

    def _read_loop(self) -> None:
        conn = self._conn
        assert conn is not None
        for reply in pubsub_replies(conn, stopped=self._stopped, ping_interval=self.ping_interval):
            kind = text(reply[0]).lower()
            if kind == "message":
                self._on_published(text(reply[1]), text(reply[2]))
            elif kind == "subscribe":
                self._on_subscribed(text(reply[1]))

    def _on_subscribed(self, channel: str) -> None:
        room = self._rooms.get(channel)
        if room is not None:
            # Anything published before this point came while we were not listening.
            self._sync(room)

    def _on_published(self, channel: str, payload: str) -> None:
        room = self._rooms.get(channel)
        if room is None or room.last is None:
            return  # unsubscribed meanwhile (or not synced: its sync reads the stream)
        seq_text, epoch, wire = payload.split(":", 2)
        seq = int(seq_text)
        if room.epoch is not None and epoch != room.epoch:
            self._sync(room)  # the room's numbering restarted: the sync reports it
        elif seq <= room.last:
            self._stats["duplicates"] += 1
        elif seq == room.last + 1:
            room.last = seq
            room.epoch = epoch
            self._deliver(room, seq, wire)
        else:
            # Pub/sub lost something: the stream holds it (everything up to this
            # message was published before the read the sync makes).
            self._sync(room)

    def _sync(self, room: _Room) -> None:
        self._sync_pages(room)
        self._stats["syncs"] += 1  # completed syncs (tests wait for one)

    def _sync_pages(self, room: _Room) -> None:
        """Read the stream after ``room.last`` and deliver it; report what it no longer holds.

        It reads up to the room's seq at its first read only: the subscription is
        active, so everything published after that read is already on its way
        through pub/sub (duplicates of what the stream gave are dropped there).
        """
        after = _NOW if room.last is None else room.last
        target: int | None = None
        while True:
            current, epoch, entries = self.publisher.since(room.room_id, after, count=self.fill_batch)
            if self._rooms.get(self.layout.channel(room.room_id)) is not room:
                return  # unsubscribed while we waited
            if room.last is None:  # first sync of a subscription "from now"
                room.last, room.epoch = current, epoch or None
                return
            if (room.epoch is not None and epoch != room.epoch) or current < room.last:
                self._gap(room, room.last + 1, None, "the room's numbering was reset (its record was lost)")
                room.last, room.epoch = 0, epoch or None
                after, target = 0, None
                continue
            room.epoch = epoch or room.epoch
            if target is None:
                target = current
            for seq, wire in entries:
                if seq > room.last + 1:
                    self._gap(room, room.last + 1, seq - 1, "no longer in the room's history")
                room.last = seq
                self._stats["filled"] += 1
                self._deliver(room, seq, wire)
            if room.last >= target:
                return
            if len(entries) < self.fill_batch:  # the stream ended short of the target
                self._gap(room, room.last + 1, target, "no longer in the room's history")
                room.last = target
                return
            after = room.last

    def _deliver(self, room: _Room, seq: int, wire: str) -> None:
        self._stats["delivered"] += 1
        try:
            self.on_message(room.room_id, seq, wire)
        except Exception:
            log.exception("on_message callback failed for room %s seq %d", room.room_id, seq)

    def _gap(self, room: _Room, first: int, last: int | None, reason: str) -> None:
        self._stats["gaps"] += 1
        gap = RoomGap(room_id=room.room_id, first_missing=first, last_missing=last, reason=reason)
        log.warning("room %s: messages %s..%s lost: %s", room.room_id, first, last, reason)
        try:
            self.on_gap(gap)
        except Exception:
            log.exception("on_gap callback failed for room %s", room.room_id)

    def _set_up(self, up: bool) -> None:
        self._up = up
        report_state(self.on_state, up)
