"""Node-to-node messages over Redis pub/sub: hand-overs and inbox announcements.

Every node subscribes to ``<prefix>:n:<node_id>``: messages for it alone
("another node claimed session X, drop it", and "session X you hold has push n
in its inbox", published by the inbox script itself). Messages are JSON
objects; ``o`` names the sending node.

Pub/sub is best-effort: a message published while a node is reconnecting is
lost, and nothing reports it. Nothing that needs a guarantee relies on it:

* a lost hand-over only delays the old owner's 4000 close until its next
  write, which the fencing epoch refuses (STYLE §15), or its next lease
  renewal, refused the same way;
* a lost inbox announcement only delays that push: it stays in the session's
  inbox in Redis until the owner reads it — at its next announcement, its
  next lease renewal, or at once after the bus re-subscribes
  (``on_resubscribed``).

``broadcast`` does not come this way: it is a message to the everyone room
(:mod:`wscore.cluster.rooms`), numbered, stored and gap-filled like any room's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event

from wscore.cluster.errors import ClusterError
from wscore.cluster.writer import (
    CONNECTION_ERRORS,
    RedisConnection,
    RedisWriter,
    disconnect_quietly,
    keep_subscribed,
    open_connection,
    pubsub_replies,
    text,
)

__all__ = ["NodeBus"]

log = logging.getLogger("wscore.cluster.bus")

_READER_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, ClusterError)


class NodeBus:
    """The node's pub/sub reader for node messages, and the sender (through the writer)."""

    def __init__(
        self,
        url: str,
        writer: RedisWriter,
        *,
        node_id: str,
        on_message: Callable[[dict[str, Any]], None],
        on_resubscribed: Callable[[], None] | None = None,
        prefix: str = "wscore",
        socket_timeout: float = 1.0,
        connect_timeout: float = 0.5,
        ping_interval: float = 1.0,
        reconnect_min_delay: float = 0.05,
        reconnect_max_delay: float = 1.0,
    ) -> None:
        self.url = url
        self.writer = writer
        self.node_id = node_id
        self.on_message = on_message
        self.on_resubscribed = on_resubscribed
        self.prefix = prefix
        self.own_channel = f"{prefix}:n:{node_id}"
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.reconnect_min_delay = reconnect_min_delay
        self.reconnect_max_delay = reconnect_max_delay
        self._conn: RedisConnection | None = None
        self._greenlet: gevent.Greenlet[Any, Any] | None = None
        self._stopped = gevent.event.Event()
        self._subscribed = gevent.event.Event()
        self.received = 0

    # -- sending ------------------------------------------------------------------------------
    def channel_of(self, node_id: str) -> str:
        return f"{self.prefix}:n:{node_id}"

    def send_to_node(self, node_id: str, message: dict[str, Any]) -> gevent.event.AsyncResult:
        """Publish ``message`` to one node (raises ClusterError at once while Redis is down)."""
        return self.writer.submit("PUBLISH", self.channel_of(node_id),
                                  json.dumps({**message, "o": self.node_id}))

    # -- life -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._greenlet is not None:
            raise RuntimeError("bus already started")
        self._greenlet = gevent.spawn(self._run)

    def wait_subscribed(self, timeout: float | None = None) -> bool:
        """True once the first subscription is active (a node listens before it serves)."""
        return bool(self._subscribed.wait(timeout))

    def stop(self) -> None:
        self._stopped.set()
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)
            self._greenlet = None
        self._drop()

    def _run(self) -> None:
        keep_subscribed(connect=self._connect, read=self._read_loop, drop=self._drop,
                        stopped=self._stopped, min_delay=self.reconnect_min_delay,
                        max_delay=self.reconnect_max_delay, errors=_READER_ERRORS, logger=log,
                        what="node bus")

    def _connect(self) -> None:
        conn = open_connection(self.url, socket_timeout=self.socket_timeout,
                               connect_timeout=self.connect_timeout, name="wscore-bus")
        conn.connect()
        self._conn = conn
        conn.send_command("SUBSCRIBE", self.own_channel, check_health=False)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        disconnect_quietly(conn)

    def _read_loop(self) -> None:
        conn = self._conn
        assert conn is not None
        for reply in pubsub_replies(conn, stopped=self._stopped, ping_interval=self.ping_interval):
            kind = text(reply[0]).lower()
            if kind == "subscribe":  # its one channel: this connection listens now
                again = self._subscribed.is_set()
                self._subscribed.set()
                if again and self.on_resubscribed is not None:
                    try:  # messages published while away were lost: let the node catch up
                        self.on_resubscribed()
                    except Exception:
                        log.exception("node bus re-subscription callback failed")
            elif kind == "message":
                self._dispatch(text(reply[1]), text(reply[2]))

    def _dispatch(self, channel: str, payload: str) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            log.warning("node bus: not JSON on %s, ignored", channel)
            return
        if not isinstance(message, dict):
            return
        self.received += 1
        try:
            self.on_message(message)
        except Exception:
            log.exception("node bus callback failed")
