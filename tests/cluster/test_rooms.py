"""Rooms across nodes with a per-room seq, on a real redis-server (wscore/cluster/rooms.py)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import gevent
import pytest
from redisproc import RedisServer
from wshelpers import wait_for

from wscore.cluster.rooms import RoomGap, RoomPublisher, RoomSubscriber
from wscore.cluster.writer import RedisWriter


class Node:
    """One node's room machinery: its writer, publisher and subscriber, recording what it got."""

    def __init__(self, url: str, *, history: int = 1000, approximate_trim: bool = True,
                 on_down: Callable[[], None] | None = None, fill_batch: int = 1000) -> None:
        self.writer = RedisWriter(url, reconnect_min_delay=0.01, reconnect_max_delay=0.1)
        self.writer.start()
        self.publisher = RoomPublisher(self.writer, history=history, approximate_trim=approximate_trim)
        self.got: list[tuple[str, int, str]] = []
        self.gaps: list[RoomGap] = []
        self.states: list[bool] = []
        self.on_down = on_down
        self.subscriber = RoomSubscriber(
            url, self.publisher, on_message=lambda r, s, w: self.got.append((r, s, w)),
            on_gap=self.gaps.append, on_state=self._state, reconnect_min_delay=0.01,
            reconnect_max_delay=0.1, fill_batch=fill_batch,
        )
        self.subscriber.start()

    def _state(self, up: bool) -> None:
        self.states.append(up)
        if not up and self.on_down is not None:
            self.on_down()

    def subscribed(self, room: str, **kwargs: int) -> Node:
        before = self.subscriber.stats()["syncs"]
        self.subscriber.subscribe(room, **kwargs)
        wait_for(lambda: self.subscriber.stats()["syncs"] > before, what="the subscription's first sync")
        return self

    def seqs(self, room: str) -> list[int]:
        return [s for r, s, _ in self.got if r == room]

    def stop(self) -> None:
        self.subscriber.stop()
        self.writer.stop()


@pytest.fixture
def nodes(redis_server: RedisServer) -> Iterator[Callable[..., Node]]:
    made: list[Node] = []

    def make(**kwargs: object) -> Node:
        node = Node(redis_server.url, **kwargs)  # type: ignore[arg-type]
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()


def test_every_node_sees_one_room_order(nodes: Callable[..., Node]) -> None:
    a, b = nodes().subscribed("lobby"), nodes().subscribed("lobby")

    def chat(node: Node, who: str) -> None:
        for i in range(150):
            node.publisher.publish_nowait("lobby", f"{who}{i}")
            if i % 10 == 0:
                gevent.sleep(0)  # interleave the two nodes' publishers

    gevent.joinall([gevent.spawn(chat, a, "a"), gevent.spawn(chat, b, "b")], raise_error=True)
    wait_for(lambda: len(a.got) == len(b.got) == 300, what="both nodes to get all 300")
    assert a.got == b.got  # same messages, same order, on both nodes
    assert a.seqs("lobby") == list(range(1, 301))
    assert [w for _, _, w in a.got if w.startswith("a")] == [f"a{i}" for i in range(150)]
    assert a.gaps == b.gaps == []


def test_subscribe_after_a_seq_replays_from_the_stream(nodes: Callable[..., Node]) -> None:
    publisher = nodes()
    for i in range(1, 6):
        assert publisher.publisher.publish("r", f"m{i}") == i
    late = nodes(fill_batch=2).subscribed("r", after_seq=2)
    assert late.got == [("r", 3, "m3"), ("r", 4, "m4"), ("r", 5, "m5")]
    publisher.publisher.publish("r", "m6")
    wait_for(lambda: len(late.got) == 4, what="the live message")
    assert late.seqs("r") == [3, 4, 5, 6]
    fresh = nodes().subscribed("r")  # from now: nothing old
    publisher.publisher.publish("r", "m7")
    wait_for(lambda: fresh.got == [("r", 7, "m7")], what="only the new message")


def test_messages_published_while_the_subscriber_is_away_are_filled(
    nodes: Callable[..., Node], redis_server: RedisServer
) -> None:
    pub = nodes()
    # While the subscriber is down (its connection killed) 40 messages are published:
    # pub/sub drops them all; the resubscribe's sync must fetch them from the stream.
    away = nodes(on_down=lambda: [pub.publisher.publish("lobby", f"away{i}") for i in range(40)],
                 fill_batch=7)  # small pages: the fill loops
    away.subscribed("lobby")
    for i in range(5):
        pub.publisher.publish("lobby", f"before{i}")
    wait_for(lambda: len(away.got) == 5, what="the first five")
    redis_server.admin().client_kill_filter(_type="pubsub")
    wait_for(lambda: away.states[-2:] == [False, True], what="the subscriber to reconnect")
    for i in range(5):
        pub.publisher.publish("lobby", f"after{i}")
    wait_for(lambda: len(away.got) == 50, what="all 50 messages")
    assert away.seqs("lobby") == list(range(1, 51))
    assert [w for _, _, w in away.got][5:45] == [f"away{i}" for i in range(40)]
    assert away.gaps == []
    assert away.subscriber.stats()["filled"] >= 40


def test_kills_during_a_stream_of_publishes_lose_nothing(
    nodes: Callable[..., Node], redis_server: RedisServer
) -> None:
    pub, sub = nodes(), nodes().subscribed("room")
    total = 3000
    sent: list[int] = []

    def publish_all() -> None:
        for i in range(total):
            sent.append(i)
            pub.publisher.publish_nowait("room", str(i))
            if i % 25 == 0:
                gevent.sleep(0.001)  # let the writer and the killer run

    publisher = gevent.spawn(publish_all)
    for kill in range(3):
        wait_for(lambda k=kill: len(sent) > (k + 1) * 600, what="publishing to go on")
        connects = sub.subscriber.stats()["connects"]
        redis_server.admin().client_kill_filter(_type="pubsub")
        wait_for(lambda c=connects: sub.subscriber.stats()["connects"] > c, what="a reconnect")
    publisher.get()
    wait_for(lambda: len(sub.got) == total, timeout=20, what="every message")
    assert sub.seqs("room") == list(range(1, total + 1))
    assert [w for _, _, w in sub.got] == [str(i) for i in range(total)]
    assert sub.gaps == []
    assert sub.states.count(False) == 3


def test_a_gap_the_stream_cannot_fill_is_reported(nodes: Callable[..., Node],
                                                  redis_server: RedisServer) -> None:
    pub = nodes(history=10, approximate_trim=False)
    sub = nodes(history=10, approximate_trim=False, fill_batch=3,
                on_down=lambda: [pub.publisher.publish("g", f"lost{i}") for i in range(50)])
    sub.subscribed("g")
    pub.publisher.publish("g", "first")
    wait_for(lambda: len(sub.got) == 1, what="the first message")
    redis_server.admin().client_kill_filter(_type="pubsub")
    wait_for(lambda: len(sub.gaps) == 1, what="the gap report")
    # 2..51 were published while away; the stream keeps only the last 10 (42..51)
    assert sub.gaps == [RoomGap(room_id="g", first_missing=2, last_missing=41,
                                reason="no longer in the room's history")]
    wait_for(lambda: len(sub.got) == 11, what="what the stream still held")
    assert sub.seqs("g") == [1, *range(42, 52)]
    pub.publisher.publish("g", "live again")
    wait_for(lambda: sub.seqs("g")[-1] == 52, what="live delivery after the gap")


def test_a_room_whose_record_was_lost_is_a_reset_not_a_continuation(
    nodes: Callable[..., Node], redis_server: RedisServer
) -> None:
    pub, sub = nodes(), nodes().subscribed("lobby")
    for i in range(3):
        pub.publisher.publish("lobby", f"old{i}")
    wait_for(lambda: len(sub.got) == 3, what="three messages")
    redis_server.flushall()  # the room's seq, epoch and stream are gone
    pub.publisher.publish("lobby", "new0")  # seq 1 again, with a new epoch
    wait_for(lambda: len(sub.gaps) == 1, what="the reset report")
    gap = sub.gaps[0]
    assert (gap.room_id, gap.first_missing, gap.last_missing) == ("lobby", 4, None)
    wait_for(lambda: sub.got[-1] == ("lobby", 1, "new0"), what="the new numbering delivered")
    assert sub.seqs("lobby") == [1, 2, 3, 1]


def test_keep_alive_holds_the_record_of_the_rooms_a_node_subscribes_to(
    nodes: Callable[..., Node], redis_server: RedisServer
) -> None:
    node = nodes().subscribed("held")
    for room in ("held", "left"):
        node.publisher.publish(room, "m")
    admin = redis_server.admin()
    keys = {room: (f"wscore:r:{room}:m", f"wscore:r:{room}:x") for room in ("held", "left")}
    for room_keys in keys.values():
        for key in room_keys:
            admin.expire(key, 5)  # as if its last message were nearly room_ttl ago
    assert node.subscriber.keep_alive() == 1
    node.writer.execute("PING")  # after the EXPIREs, on the one writer connection
    # The subscribed room's record lives on (silent members are not a reset later)...
    assert all(admin.ttl(key) > 5 for key in keys["held"])
    # ...a room this node has no member of still expires when its time comes.
    assert all(0 < admin.ttl(key) <= 5 for key in keys["left"])


def test_unsubscribe_stops_delivery(nodes: Callable[..., Node]) -> None:
    pub, sub = nodes(), nodes().subscribed("a").subscribed("b")
    pub.publisher.publish("a", "a1")
    pub.publisher.publish("b", "b1")
    wait_for(lambda: len(sub.got) == 2, what="both rooms")
    sub.subscriber.unsubscribe("a")
    pub.publisher.publish("a", "a2")
    pub.publisher.publish("b", "b2")
    wait_for(lambda: len(sub.got) == 3, what="room b's second message")
    assert sub.got == [("a", 1, "a1"), ("b", 1, "b1"), ("b", 2, "b2")]


def test_a_silent_connection_is_found_by_ping_and_resynced(redis_server: RedisServer) -> None:
    pub_writer = RedisWriter(redis_server.url, reconnect_min_delay=0.01, reconnect_max_delay=0.05)
    pub_writer.start()
    publisher = RoomPublisher(pub_writer)
    got: list[int] = []
    states: list[bool] = []
    sub = RoomSubscriber(redis_server.url, publisher, on_message=lambda r, s, w: got.append(s),
                         on_gap=lambda gap: None, on_state=states.append, ping_interval=0.05,
                         socket_timeout=0.2, reconnect_min_delay=0.01, reconnect_max_delay=0.05)
    sub.start()
    try:
        sub.subscribe("q")
        wait_for(lambda: sub.stats()["syncs"] == 1, what="the first sync")
        publisher.publish("q", "1")
        wait_for(lambda: got == [1], what="the first message")
        os.kill(redis_server.pid, signal.SIGSTOP)  # the connection stays open but answers nothing
        try:
            wait_for(lambda: False in states, what="unanswered pings to drop the connection")
        finally:
            os.kill(redis_server.pid, signal.SIGCONT)
        wait_for(lambda: pub_writer.up, what="the publisher's writer to be back")
        publisher.publish("q", "2")
        wait_for(lambda: got == [1, 2], what="delivery after the resync")
    finally:
        sub.stop()
        pub_writer.stop()
