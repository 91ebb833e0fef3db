"""Broadcast delivery under load: probe messages sent by users, checked by every receiver.

The probe format and the order checker are :mod:`sandbox.probe`'s, the same
``wscore sandbox run`` uses; the events are the user's workload's
(:class:`sandbox.chat_workload.ChatWorkload`: ``chat.message`` →
``chat.new_message``).
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from wscore import ErrorCode
from wscore.client import WsError
from wscore.loadtests.options import MESSAGE_INTERVAL
from wscore.loadtests.pacing import Pacer
from wscore.loadtests.user import RequestFailed, WsUser
from wscore.sandbox.chat_workload import ChatWorkload
from wscore.sandbox.probe import Arrival, OrderCheck, ProbeSender, parse_probe

if TYPE_CHECKING:
    from wscore.client import WsClient
    from wscore.loadtests.counters import WsCounters

__all__ = ["BroadcastOrderError", "BroadcastProbe", "ProbeUser", "RoomChatter",
           "send_chat_message", "set_and_read_session_counter"]


class BroadcastOrderError(Exception):
    """A received broadcast skipped, repeated or reordered one of its sender's messages."""


class ProbeUser(Protocol):
    """What BroadcastProbe uses of a WsUser (so it can be tested without one)."""

    @property
    def counters(self) -> WsCounters: ...

    def record(self, request_type: str, name: str, response_time_ms: float,
               response_length: int = 0, exception: BaseException | None = None) -> None: ...


_COUNTER = {Arrival.GAP: "broadcast_gaps", Arrival.REPEAT: "broadcast_duplicates",
            Arrival.REORDER: "broadcast_reordered"}


class BroadcastProbe:
    """Numbers a user's messages and checks the broadcasts it receives from others.

    :meth:`next_text` makes the next probe text (:mod:`sandbox.probe`) under a
    random sender id (users live in several processes). :meth:`on_message`
    records a ``BROADCAST <event>`` entry per probe received, its latency
    send → callback (wall clock: sender and receiver may be different locust
    worker processes — on the same host: loadtests are loopback only), and
    checks with :class:`sandbox.probe.OrderCheck` that each sender's messages
    arrive without gap, repeat or reordering once its first is seen (which one
    that is depends on when the receiver joined). Texts that are not probes
    (other chatters) are ignored.
    """

    def __init__(self, user: ProbeUser, event: str) -> None:
        self.user = user
        self.event = event
        self._sender = ProbeSender(uuid.uuid4().hex[:12])
        self._check = OrderCheck(from_start=False)

    def next_text(self) -> str:
        """The text of the next message (assumed published unless :meth:`refused` follows)."""
        return self._sender.next(sent_ns=time.time_ns()).text()

    def refused(self) -> None:
        """The server refused the last message with ``sys.error``: it was not broadcast."""
        self._sender.refused()

    def on_message(self, payload: Any) -> None:
        """The ``client.on(event, …)`` callback; the text is read from ``payload['text']``."""
        received_ns = time.time_ns()
        text = payload.get("text") if isinstance(payload, dict) else None
        probe = parse_probe(text)
        if probe is None:
            return
        counters = self.user.counters
        counters.add("broadcasts_received")
        arrival = self._check.observe(probe)
        error: BroadcastOrderError | None = None
        if arrival in _COUNTER:
            counters.add(_COUNTER[arrival])
            error = BroadcastOrderError(
                f"sender {probe.sender}: got #{probe.seq} (published after #{probe.prev}): "
                f"{'a gap' if arrival is Arrival.GAP else arrival.value}")
        latency_ms = max(received_ns - probe.sent_ns, 0) / 1e6
        self.user.record("BROADCAST", self.event, latency_ms, len(text or ""), exception=error)


def send_chat_message(user: WsUser, probe: BroadcastProbe) -> None:
    """Publish ``probe``'s next message to the user's room as a request (reply checked).

    Raises :class:`~loadtests.user.RequestFailed` like :meth:`WsUser.request`.
    """
    try:
        user.call(user.workload.publish(probe.next_text()))
    except RequestFailed as exc:
        # Refused (rate limit, validation …): never broadcast, so receivers must not expect it.
        if isinstance(exc.cause, WsError) and exc.cause.code is not ErrorCode.SESSION_NOT_FOUND:
            probe.refused()
        raise


def set_and_read_session_counter(user: WsUser, value: int) -> None:
    """Write ``value`` into the session's variables, then read it back (it must be there).

    The session variables live in the session, so they must survive every
    reconnect. Raises :class:`~loadtests.user.RequestFailed` like :meth:`WsUser.request`.
    """
    workload = user.workload
    if not isinstance(workload, ChatWorkload):
        raise TypeError(f"the session counter needs the chat workload's events, not "
                        f"{type(workload).__name__}'s")
    user.call(workload.session_write("counter", value))
    user.call(workload.session_read("counter", value))


class RoomChatter(WsUser):
    """A user that joins its workload's room, checks every broadcast and runs paced tasks.

    ``on_start`` connects, joins (a user that cannot join stops) and waits a
    random phase; then one task every ``--message-interval`` seconds
    (:class:`~loadtests.pacing.Pacer`: the send rate stays fixed whatever the
    ack latency). :meth:`chat` publishes the next probe.
    """

    abstract = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probe = BroadcastProbe(self, self.workload.delivery_event)
        # Built per instance: the interval is a command-line option, unknown at import time.
        self._pacer = Pacer(MESSAGE_INTERVAL.get(self.environment))

    def wait_time(self) -> float:
        return self._pacer.wait_time()

    def setup_client(self, client: WsClient) -> None:
        client.on(self.workload.delivery_event, self.probe.on_message)

    def on_start(self) -> None:
        super().on_start()
        self.join_room()
        self._pacer.stagger()

    def chat(self) -> None:
        """Publish the next probe to the room (``WS chat.message``, reply checked)."""
        send_chat_message(self, self.probe)
