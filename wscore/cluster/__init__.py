"""wscore's Redis layer (SPEC §6, issue 10): the I/O building blocks for sessions beyond one process.

:class:`wscore.WsServer` composes them when ``redis_url`` is set
(docs/scaling.md). Layering: this package may use gevent and redis-py, and
``wscore.protocol`` / ``wscore.errors``; never ``actors``, ``wscore.server`` or
``wscore.client``.

- :mod:`~wscore.cluster.writer`: one batching writer per node (:class:`RedisWriter`).
- :mod:`~wscore.cluster.session_log`: the fenced per-session log (:class:`SessionLog`).
- :mod:`~wscore.cluster.rooms`: room messages with a per-room seq across nodes.
- :mod:`~wscore.cluster.generation`: detecting a Redis that lost its data.
- :mod:`~wscore.cluster.bus`: node-to-node messages (hand-overs, inbox announcements).
- :mod:`~wscore.cluster.node`: one node's parts composed, and the sessions' store.
- :mod:`~wscore.cluster.errors`: the exceptions.

Needs the optional extra: ``pip install 'wscore[redis]'``.
"""

from wscore.cluster.errors import (
    ClusterError,
    Fenced,
    RedisDataLost,
    RedisUnavailable,
    SequenceRefused,
    SessionMissing,
    WriterQueueFull,
)
from wscore.cluster.generation import Generation
from wscore.cluster.rooms import RoomGap, RoomPublisher, RoomsLayout, RoomSubscriber
from wscore.cluster.session_log import AppendResult, Claim, LogLimits, SessionLog, SessionRecord
from wscore.cluster.writer import RedisWriter

__all__ = [
    "AppendResult",
    "Claim",
    "ClusterError",
    "Fenced",
    "Generation",
    "LogLimits",
    "RedisDataLost",
    "RedisUnavailable",
    "RedisWriter",
    "RoomGap",
    "RoomPublisher",
    "RoomSubscriber",
    "RoomsLayout",
    "SequenceRefused",
    "SessionLog",
    "SessionMissing",
    "SessionRecord",
    "WriterQueueFull",
]
