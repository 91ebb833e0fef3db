"""What a handler sees: :class:`WsContext` and the :class:`WsSession` view.

A context lives for one client frame. Its sending methods never block: frames
go onto the session's numbered stream (or to the router, for rooms) as
messages. A payload that is not sendable JSON (not serialisable, NaN or
Infinity, a lone surrogate) raises ``TypeError``/``ValueError`` in the caller
before anything is numbered; uncaught in a handler, that request gets 1011
(SPEC §3 "Invalid JSON values").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from wscore.errors import WsError
from wscore.protocol.codes import RESERVED_ROOM_PREFIX, ErrorCode
from wscore.protocol.envelope import EncodedFrame, Envelope, encode_envelope, encode_reply

__all__ = ["WsContext", "WsSession", "check_room_id"]

T = TypeVar("T")


def check_room_id(room_id: str) -> None:
    """Refuse the server's own room ids (``sys.*``) with ``WsError`` 1009.

    Room ids usually come from a client's payload, so this is the client's
    error, answered like any invalid field; the everyone room (``broadcast``,
    with Redis) is reached only through ``server.broadcast``.
    """
    if isinstance(room_id, str) and room_id.startswith(RESERVED_ROOM_PREFIX):
        raise WsError(ErrorCode.VALIDATION_FAILED,
                      f"room ids starting with {RESERVED_ROOM_PREFIX!r} are reserved",
                      {"room": room_id[:200]})


class WsSession:
    """A handler's view of its session. It survives reconnects.

    ``data`` is the session's own dict of variables: read and write it from
    that session's handlers (they run one at a time, so no lock is needed).
    """

    __slots__ = ("_ref", "_rooms", "data", "id", "user_id")

    def __init__(self, session_id: str, user_id: str | None, ref: Any) -> None:
        self.id = session_id
        self.user_id = user_id
        self.data: dict[str, Any] = {}
        self._rooms: set[str] = set()
        self._ref = ref

    @property
    def rooms(self) -> frozenset[str]:
        """The rooms this session is in (a snapshot)."""
        return frozenset(self._rooms)

    def __repr__(self) -> str:
        # Never print the id: it is the secret that lets a client resume (SPEC §3).
        return f"<WsSession user={self.user_id!r} rooms={len(self._rooms)}>"


class WsContext:
    """The request a handler is answering, and how to answer it.

    * ``payload``, ``event``, ``user_id``, ``session``, ``correlation_id``
    * :meth:`reply` — the ``ack`` to this request (at most once; the handler's
      return value is the reply when :meth:`reply` was not called)
    * :meth:`emit` — an event to this session
    * :meth:`broadcast_to_room` — an event to a room's members
    * :meth:`bind` — build a value from the payload; failure → 1009
    """

    __slots__ = ("_now_ms", "_push", "_route_room", "envelope", "replied", "session")

    def __init__(
        self,
        envelope: Envelope,
        session: WsSession,
        *,
        push: Callable[[EncodedFrame], None],
        route_room: Callable[[str, EncodedFrame, str, Any, str | None], None],
        now_ms: Callable[[], int],
    ) -> None:
        self.envelope = envelope
        self.session = session
        self.replied = False
        self._push = push
        self._route_room = route_room
        self._now_ms = now_ms

    @property
    def payload(self) -> Any:
        return self.envelope.payload

    @property
    def event(self) -> str:
        return self.envelope.event

    @property
    def user_id(self) -> str | None:
        return self.session.user_id

    @property
    def correlation_id(self) -> str | int | float | None:
        return self.envelope.correlation_id

    def reply(self, payload: Any) -> None:
        """Send the ``ack`` for this request now (carrying its ``c``)."""
        if self.replied:
            raise RuntimeError("this request was already replied to")
        self.replied = True
        self._push(encode_reply(payload, self.envelope.correlation_id, now_ms=self._now_ms()))

    def emit(self, event: str, payload: Any = None) -> None:
        """Send ``event`` to this session (numbered, replayed after a reconnect)."""
        self._push(encode_envelope(event, payload, now_ms=self._now_ms()))

    def broadcast_to_room(
        self, room_id: str, event: str, payload: Any = None, include_self: bool = False
    ) -> None:
        """Send ``event`` to every member of ``room_id`` (not this session unless ``include_self``).

        The frame is encoded once here, for all recipients.
        """
        check_room_id(room_id)
        frame = encode_envelope(event, payload, now_ms=self._now_ms())
        self._route_room(room_id, frame, event, payload, None if include_self else self.session.id)

    def bind(self, factory: Callable[[Any], T]) -> T:
        """``factory(payload)``; any failure becomes ``validationFailed`` (1009)."""
        try:
            return factory(self.payload)
        except WsError:
            raise
        except KeyError as exc:
            raise WsError(
                ErrorCode.VALIDATION_FAILED, f"missing field {exc.args[0]!r}",
                {"fields": [str(exc.args[0])]},
            ) from None
        except Exception as exc:
            raise WsError(
                ErrorCode.VALIDATION_FAILED, f"payload rejected: {type(exc).__name__}: {exc}"[:200],
            ) from None
