"""Pushes to sessions through their Redis inbox (``send_to_session``, ``send_to_user``, SPEC §6).

First the inbox scripts against a real redis-server (``SessionLog``), then real
nodes (``WsServer`` with ``redis_url``, in this process) and raw websocket-client
peers: a push is delivered exactly once, in order, within the session's numbered
stream, whether its owner is alive, released (stopped) or gone. The node killed
with SIGKILL is in ``test_processes.py``.

A push made by a handler (``tell_session``) is in Redis before that handler's
reply is: both go down the node's one writer connection in that order. So a
client holding the reply knows the push was stored: no waiting needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redisproc import RedisServer
from wshelpers import RawClient, wait_for

from wscore import WsServer
from wscore.cluster import scripts
from wscore.cluster.errors import Fenced, SequenceRefused, SessionMissing
from wscore.cluster.generation import Generation
from wscore.cluster.session_log import LogLimits, SessionLog
from wscore.cluster.writer import RedisWriter
from wscore.protocol.session import ResumeImpossible

Node = Callable[..., WsServer]


# -- the inbox scripts ----------------------------------------------------------------------------
@pytest.fixture
def log(writer: RedisWriter, generation: Generation) -> SessionLog:
    return SessionLog(writer, generation, limits=LogLimits(max_buffered_messages=3,
                                                           max_buffered_bytes=10_000))


def test_a_push_to_an_unknown_session_is_refused_and_writes_nothing(
        log: SessionLog, redis_server: RedisServer) -> None:
    with pytest.raises(SessionMissing):
        log.push("nope", '{"e":"x"')
    assert redis_server.admin().keys("*nope*") == []


def test_pushes_are_numbered_in_the_inbox_and_leave_it_with_their_fenced_append(
        log: SessionLog, redis_server: RedisServer) -> None:
    log.create("s1", "node-a")
    assert log.push("s1", "p1") == (1, "node-a")
    assert log.push("s1", "p2") == (2, "node-a")
    assert log.inbox_nowait("s1").get(timeout=5) == (0, False, ["p1", "p2"])
    # Only the head may be appended, and a refused append writes nothing.
    with pytest.raises(SequenceRefused):
        log.append("s1", 1, 1, "w2", inbox_pos=2)
    log.append("s1", 1, 1, "w1", inbox_pos=1)
    with pytest.raises(SequenceRefused):
        log.append("s1", 1, 2, "again", inbox_pos=1)  # a push never enters the log twice
    record = log.read("s1")
    assert record is not None
    assert (record.last_seq, record.inbox_last, record.inbox_taken) == (1, 2, 1)
    assert log.inbox_nowait("s1").get(timeout=5) == (1, False, ["p2"])
    # A claim fences the old owner's append of the push: it stays for the new owner.
    claim = log.claim("s1", "node-b")
    assert (claim.inbox_taken, claim.inbox_lost) == (1, False)
    with pytest.raises(Fenced):
        log.append("s1", 1, 2, "w2", inbox_pos=2)
    assert log.inbox_nowait("s1").get(timeout=5) == (1, False, ["p2"])
    log.append("s1", claim.epoch, 2, "w2", inbox_pos=2)
    assert log.inbox_nowait("s1").get(timeout=5) == (2, False, [])
    assert redis_server.admin().lrange(log.keys("s1")[2], 0, -1) == [b"w1", b"w2"]


def test_a_released_session_keeps_its_pushes_and_the_inbox_lives_as_long_as_the_session(
        log: SessionLog, redis_server: RedisServer) -> None:
    log.create("s1", "node-a")
    log.release("s1", 1)
    assert log.push("s1", "p1") == (1, "")  # nobody holds it: it waits for the next claim
    admin = redis_server.admin()
    _gen, meta, _log, _rooms, inbox = log.keys("s1")
    # The inbox expires with the session (absolute times: PEXPIRETIME); a push does
    # not lengthen the session's life.
    assert admin.pttl(inbox) > 0
    assert admin.execute_command("PEXPIRETIME", inbox) == admin.execute_command("PEXPIRETIME", meta)
    claim = log.claim("s1", "node-b")
    assert claim.inbox_taken == 0 and log.inbox_nowait("s1").get(timeout=5) == (0, False, ["p1"])
    log.end("s1", claim.epoch)
    assert admin.exists(inbox) == 0


def test_a_full_inbox_refuses_the_push_and_makes_the_session_unresumable(log: SessionLog) -> None:
    log.create("s1", "node-a")
    log.release("s1", 1)
    for n in (1, 2, 3):
        assert log.push("s1", f"p{n}")[0] == n
    assert log.push("s1", "p4") == (0, "")  # max_buffered_messages = 3 waiting already
    assert log.push("s1", "p5") == (0, "")  # and every later one: never a gap
    record = log.read("s1")
    assert record is not None and record.inbox_lost and record.inbox_last == 3
    claim = log.claim("s1", "node-b")
    assert claim.inbox_lost
    with pytest.raises(ResumeImpossible):
        log.replay_after("s1", claim.epoch, 0)


def test_a_push_larger_than_max_buffered_bytes_is_refused(log: SessionLog) -> None:
    log.create("s1", "node-a")
    assert log.push("s1", "x" * 10_001)[0] == 0
    record = log.read("s1")
    assert record is not None and record.inbox_lost


def test_renewal_reports_pushes_waiting_in_the_inbox(log: SessionLog) -> None:
    log.create("s1", "node-a")
    assert log.renew("s1", 1) == (0, False)
    log.push("s1", "p1")
    log.push("s1", "p2")
    assert log.renew("s1", 1) == (2, False)
    log.append("s1", 1, 1, "w1", inbox_pos=1)
    assert log.renew("s1", 1) == (1, False)


def test_a_push_to_a_user_reaches_every_live_session_of_that_user(
        log: SessionLog, redis_server: RedisServer) -> None:
    log.create("a1", "node-a", user_id="ann")
    log.create("a2", "node-b", user_id="ann")
    log.create("b1", "node-a", user_id="bob")
    log.push("a2", "earlier")
    log.create("gone", "node-a", user_id="ann")
    log.end("gone", 1)
    redis_server.admin().sadd(log.user_key("ann"), "expired")  # its keys ran out
    assert log.push_user_nowait("ann", "hi").get(timeout=5) == {"a1": 1, "a2": 2}
    assert log.inbox_nowait("b1").get(timeout=5) == (0, False, [])
    assert redis_server.admin().smembers(log.user_key("ann")) == {b"a1", b"a2"}
    assert log.push_user_nowait("nobody", "hi").get(timeout=5) == {}


def test_each_push_is_announced_to_the_owner_node_only(
        log: SessionLog, redis_server: RedisServer) -> None:
    import json

    log.create("s1", "node-a")
    listener = redis_server.admin().pubsub()
    listener.subscribe("wscore:n:node-a", "wscore:n:node-b")
    for _ in range(2):
        assert listener.get_message(timeout=5)["type"] == "subscribe"  # type: ignore[index]
    log.push("s1", '{"e":"told","p":"é/\\"q\\""')
    message = listener.get_message(timeout=5)
    assert message is not None and message["channel"] == b"wscore:n:node-a"
    assert json.loads(message["data"]) == {"k": "inbox", "sid": "s1", "pos": 1,
                                           "b": '{"e":"told","p":"é/\\"q\\""'}
    assert listener.get_message(timeout=0.2) is None
    listener.close()


# -- real nodes -------------------------------------------------------------------------------
def connected(client: RawClient) -> dict[str, Any]:
    frame = client.recv()
    assert frame["e"] == "sys.connected", frame
    return frame["p"]  # type: ignore[no-any-return]


def meta(redis_server: RedisServer, sid: str) -> dict[str, str]:
    raw = redis_server.admin().hgetall(f"wscore:s:{{{sid}}}:m")
    return {k.decode(): v.decode() for k, v in raw.items()}


def inbox_len(redis_server: RedisServer, sid: str) -> int:
    return int(redis_server.admin().llen(f"wscore:s:{{{sid}}}:in"))


def tell(client: RawClient, sid: str, n: int, **extra: Any) -> int:
    """A push to ``sid`` made by a handler on the client's node; stored once this returns.
    Returns the reply's ``s``."""
    reply = client.request("tell_session", {"sid": sid, "n": n, **extra}, c=f"t{n}")
    assert reply["p"] is True
    return int(reply["s"])


def assert_exactly_once_then_quiet(client: RawClient, pushes: list[dict[str, Any]],
                                   first_s: int) -> None:
    """The pushes carry s = first_s, first_s + 1 …, and the next frame is a fresh reply
    (a duplicate from the inbox would come before it)."""
    assert [f["s"] for f in pushes] == list(range(first_s, first_s + len(pushes)))
    reply = client.request("echo", "after", c="after")
    assert client.skipped == [] and reply["s"] == first_s + len(pushes)


def test_a_push_to_a_session_released_on_stop_is_delivered_after_the_resume(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    a, b = make_node(), make_node()
    c = raw(a.url + "?token=rita")
    sid = connected(c)["sessionId"]
    last = c.request("echo", 1, c="1")["s"]
    a.stop()  # SIGTERM-like: 1012, the session released, kept in Redis
    assert c.recv_close() == 1012
    assert meta(redis_server, sid)["owner"] == ""
    pusher = raw(b.url + "?token=sam")
    connected(pusher)
    for n in range(3):
        tell(pusher, sid, n)
    assert inbox_len(redis_server, sid) == 3  # held by nobody: waiting in its inbox
    d = raw(b.url + f"?token=rita&session={sid}&last_seq={last}")
    assert connected(d)["resumed"] is True
    pushes = [d.recv() for _ in range(3)]
    assert [(f["e"], f["p"]["n"]) for f in pushes] == [("told", 0), ("told", 1), ("told", 2)]
    assert_exactly_once_then_quiet(d, pushes, last + 1)
    assert inbox_len(redis_server, sid) == 0 and meta(redis_server, sid)["itaken"] == "3"


def test_pushes_to_a_live_session_on_another_node_arrive_live_exactly_once_in_order(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    a, b = make_node(), make_node()
    target = raw(b.url + "?token=tia")
    sid = connected(target)["sessionId"]
    far, near = raw(a.url + "?token=uma"), raw(b.url + "?token=vic")
    connected(far)
    connected(near)
    per_pusher = 15
    # Both nodes push at once: the session's own node and the other one.
    for n in range(per_pusher):
        far.send({"e": "tell_session", "p": {"sid": sid, "n": n, "from": "far"}})
        near.send({"e": "tell_session", "p": {"sid": sid, "n": n, "from": "near"}})
    pushes = [target.recv() for _ in range(2 * per_pusher)]
    assert all(f["e"] == "told" for f in pushes)
    for source in ("far", "near"):  # each pusher's order kept; none lost, none twice
        assert [f["p"]["n"] for f in pushes if f["p"]["from"] == source] == list(range(per_pusher))
    assert_exactly_once_then_quiet(target, pushes, pushes[0]["s"])
    record = meta(redis_server, sid)
    assert record["ilast"] == record["itaken"] == str(2 * per_pusher)
    assert inbox_len(redis_server, sid) == 0


def test_a_push_whose_announcement_was_lost_arrives_with_the_next_one(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    b = make_node()
    target = raw(b.url + "?token=wes")
    sid = connected(target)["sessionId"]
    last = target.request("echo", 0, c="0")["s"]
    _lost_announcement(redis_server, sid, "told", {"n": 0})
    pusher = raw(b.url + "?token=xia")
    connected(pusher)
    tell(pusher, sid, 1)
    pushes = [target.recv() for _ in range(2)]
    assert [f["p"]["n"] for f in pushes] == [0, 1]  # the gap was read from the inbox, in order
    assert_exactly_once_then_quiet(target, pushes, last + 1)


def test_a_push_whose_announcement_was_lost_arrives_at_the_lease_renewal(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    b = make_node(session_ttl=1.5)  # renewals every 0.5 s
    target = raw(b.url + "?token=yan")
    sid = connected(target)["sessionId"]
    last = target.request("echo", 0, c="0")["s"]
    _lost_announcement(redis_server, sid, "told", {"n": 0})
    push = target.recv()  # within the socket's 5 s timeout
    assert push["e"] == "told" and push["p"] == {"n": 0}
    assert_exactly_once_then_quiet(target, [push], last + 1)


def test_a_push_whose_announcement_was_lost_arrives_when_the_bus_resubscribes(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    b = make_node()  # renewals every 10 s: later than the socket's 5 s timeout
    target = raw(b.url + "?token=zed")
    sid = connected(target)["sessionId"]
    last = target.request("echo", 0, c="0")["s"]
    _lost_announcement(redis_server, sid, "told", {"n": 0})
    subscribed = b._cluster.bus  # type: ignore[union-attr]
    received = subscribed.received
    redis_server.admin().client_kill_filter(_type="pubsub")  # the node's pub/sub drops
    push = target.recv()
    assert push["e"] == "told" and push["p"] == {"n": 0}
    assert_exactly_once_then_quiet(target, [push], last + 1)
    assert subscribed.received == received  # no announcement reached it: the renewal did


def test_the_renewal_after_a_bus_resubscription_spares_a_session_not_stored_yet(
        make_node: Node, redis_server: RedisServer) -> None:
    # A new session's actor owns it before its create is submitted: a renewal in that
    # window finds no record. The renewal the resubscription makes must skip it (a
    # young session) but renew one known to be stored, however young.
    b = make_node()
    store = b._cluster.store  # type: ignore[union-attr]
    lost: list[tuple[str, str]] = []
    store.own("not-created-yet", 1, lambda kind: lost.append(("not-created-yet", kind)))
    # Marked stored but absent from Redis: its renewal is refused, which shows it ran.
    store.stored("marked-stored")
    store.own("marked-stored", 1, lambda kind: lost.append(("marked-stored", kind)))
    redis_server.admin().client_kill_filter(_type="pubsub")  # the bus re-subscribes, then renews
    wait_for(lambda: lost != [], what="the renewal after the re-subscription")
    # The two renewals were pipelined in this order: the first one's answer came first.
    assert b._cluster.flush(timeout=5)  # type: ignore[union-attr]
    assert lost == [("marked-stored", "lost")]
    assert store._owned.keys() == {"not-created-yet"}
    store.disown("not-created-yet")


def _lost_announcement(redis_server: RedisServer, sid: str, event: str, payload: Any) -> None:
    """Store a push in ``sid``'s inbox as the push script does, but announce it on a
    channel nobody listens to: what a pub/sub message lost on the way looks like."""
    from wscore.protocol.envelope import encode_envelope

    admin = redis_server.admin()
    token = admin.get("wscore:gen")
    base = f"wscore:s:{{{sid}}}"
    body = encode_envelope(event, payload, now_ms=0).body
    pos, _owner = admin.eval(scripts.PUSH.source, 5, "wscore:gen", f"{base}:m", f"{base}:log",
                             f"{base}:rooms", f"{base}:in", token, body, 1000, 1 << 22,
                             "nowhere", sid)
    assert pos >= 1


def test_a_push_to_an_unknown_or_ended_session_is_a_no_op(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    a = make_node()
    c = raw(a.url + "?token=abe")
    connected(c)
    tell(c, "no-such-session", 1)
    a.send_to_session("no-such-session", "told", {"n": 2})  # from server code: no error either
    gone = raw(a.url + "?token=bea")
    gone_sid = connected(gone)["sessionId"]
    gone.close()  # 1000: the session ends (SPEC §7)
    wait_for(lambda: not redis_server.admin().exists(f"wscore:s:{{{gone_sid}}}:m"),
             what="the ended session deleted")
    last = tell(c, gone_sid, 3)
    assert redis_server.admin().keys("*no-such-session*") == []
    assert redis_server.admin().keys(f"*{gone_sid}*") == []
    # Nobody else got anything: c's next frame is its own reply.
    reply = c.request("echo", 1, c="1")
    assert c.skipped == [] and reply["s"] == last + 1


def test_a_full_inbox_makes_the_resume_answer_1006_never_a_gap(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    a, b = make_node(max_buffered_messages=4), make_node(max_buffered_messages=4)
    c = raw(a.url + "?token=cal")
    sid = connected(c)["sessionId"]
    last = c.request("echo", 0, c="0")["s"]
    a.stop()
    assert c.recv_close() == 1012
    pusher = raw(b.url + "?token=dee")
    connected(pusher)
    for n in range(5):  # the fifth finds 4 waiting
        tell(pusher, sid, n)
    assert meta(redis_server, sid)["ilost"] == "1"
    d = raw(b.url + f"?token=cal&session={sid}&last_seq={last}")
    err = d.recv()
    assert err["e"] == "sys.error" and err["p"]["code"] == 1006
    assert connected(d)["resumed"] is False


def test_send_to_user_reaches_a_session_no_node_holds_after_its_resume(
        make_node: Node, raw: Callable[..., RawClient], redis_server: RedisServer) -> None:
    a, b = make_node(), make_node()
    on_a = raw(a.url + "?token=eve")
    sid_a = connected(on_a)["sessionId"]
    last_a = on_a.request("echo", 0, c="0")["s"]
    on_b = raw(b.url + "?token=eve")
    sid_b = connected(on_b)["sessionId"]
    a.stop()  # eve's first session is released, held by nobody
    assert on_a.recv_close() == 1012
    pusher = raw(b.url + "?token=fay")
    connected(pusher)
    assert pusher.request("tell_user", {"user": "eve", "x": 1}, c="t")["p"] is True
    live = on_b.recv()
    assert live["e"] == "told" and live["p"]["x"] == 1
    assert_exactly_once_then_quiet(on_b, [live], live["s"])
    back = raw(b.url + f"?token=eve&session={sid_a}&last_seq={last_a}")
    assert connected(back)["resumed"] is True
    later = back.recv()
    assert later["e"] == "told" and later["p"]["x"] == 1
    assert_exactly_once_then_quiet(back, [later], last_a + 1)
    assert sid_a != sid_b
