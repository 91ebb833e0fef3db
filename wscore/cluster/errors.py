"""The Redis layer's exceptions, part of wscore's one tree (``wscore.errors``).

Split by *why* the operation did not happen::

    WsException
    └── ClusterError                 base of everything wscore.cluster raises on purpose
        ├── RedisUnavailable         the writer is down, or the connection broke while the
        │                            command was in flight (its outcome is then unknown)
        ├── WriterQueueFull          the writer's bounded queue is full: back off, never block
        ├── Fenced                   the session's epoch moved on: another node owns it now,
        │                            the caller must stop writing for it
        ├── SequenceRefused          an append whose ``seq`` is not the log's last + 1
        ├── SessionMissing           no such session in Redis (never made, ended, expired)
        └── RedisDataLost            the deployment's generation key is gone or changed:
                                     Redis restarted empty or was flushed (SPEC §6)

A caller answering a client maps ``SessionMissing`` and ``RedisDataLost`` on a
resume to 1006 (``sessionNotFound``), never to a replay with a gap.

One is a contract error (``WsError``) because application code meets it:
:class:`PushNotStored`, raised by ``send_to_session``/``send_to_user`` with
Redis when the push could not be stored (in a handler, the request that made
it gets 1011, never a silent "sent").
"""

from __future__ import annotations

from wscore.errors import WsError, WsException
from wscore.protocol.codes import ErrorCode

__all__ = [
    "ClusterError",
    "Fenced",
    "PushNotStored",
    "RedisDataLost",
    "RedisUnavailable",
    "SequenceRefused",
    "SessionMissing",
    "WriterQueueFull",
]


class ClusterError(WsException):
    """Base class of the Redis layer's deliberate exceptions."""


class RedisUnavailable(ClusterError):
    """Redis cannot be reached; a command that was in flight may or may not have run."""


class WriterQueueFull(ClusterError):
    """The writer holds ``max_queued`` commands already; the new one was not queued."""


class Fenced(ClusterError):
    """The epoch given is not the session's current one: another owner claimed it."""


class SequenceRefused(ClusterError):
    """An append's ``seq`` is not the log's last + 1 (a reused or skipped ``s``)."""


class SessionMissing(ClusterError):
    """The session has no record in Redis (never created, ended, or its TTL ran out)."""


class RedisDataLost(ClusterError):
    """Redis lost its data (restarted without persistence, or flushed) since this node started."""


class PushNotStored(WsError):
    """A push could not be stored in Redis (unavailable, or the writer's queue full): nothing was sent.

    Its message is for clients (a handler's request gets it as 1011): it names
    no host; the cause is chained (``__cause__``) and logged by the node.
    """

    def __init__(self) -> None:
        super().__init__(ErrorCode.INTERNAL_ERROR, "the push was not stored (Redis is unavailable)")
