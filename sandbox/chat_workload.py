"""The chat workload: the built-in :class:`~sandbox.workload.Workload` of the sandbox and load tests.

For the chat example's events (``examples.chat.app``, ``examples.chat_fast.app``):

=================== ======================== =========================================
request             payload                  reply
=================== ======================== =========================================
``room.join``       ``{roomId}``             ``{"joined": roomId}``
``chat.message``    ``{roomId, text}``       ``{"status": "sent"}``; the rest of the
                                             room gets ``chat.new_message`` ``{text, …}``
``echo``            anything                 the payload itself
``session.set``     ``{key, value}``         ``{"ok": True}``
``session.get``     none                     ``{"data": {key: value, …}}``
=================== ======================== =========================================
"""

from __future__ import annotations

from typing import Any, ClassVar

from wscore.sandbox.workload import Request, Workload, reply_equals

__all__ = ["ChatWorkload"]


class ChatWorkload(Workload):
    """Chat in one room, echo, and a session variable that must survive every reconnect."""

    delivery_event: ClassVar[str] = "chat.new_message"
    requests: ClassVar[tuple[str, ...]] = ("room.join", "chat.message", "echo")

    def join(self) -> Request:
        return Request("room.join", {"roomId": self.room}, reply_equals({"joined": self.room}))

    def publish(self, text: str) -> Request:
        return Request("chat.message", {"roomId": self.room, "text": text},
                       reply_equals({"status": "sent"}))

    def delivered_text(self, payload: Any) -> str | None:
        text = payload.get("text") if isinstance(payload, dict) else None
        return text if isinstance(text, str) else None

    def echo(self, payload: Any) -> Request:
        return Request("echo", payload, reply_equals(payload))

    def session_write(self, key: str, value: Any) -> Request:
        """``session.set``: store ``value`` under ``key`` in the session's variables."""
        return Request("session.set", {"key": key, "value": value}, reply_equals({"ok": True}))

    def session_read(self, key: str, value: Any) -> Request:
        """``session.get``, whose reply must show ``key`` holding ``value``."""

        def check(reply: Any) -> str | None:
            data = reply.get("data") if isinstance(reply, dict) else None
            got = data.get(key) if isinstance(data, dict) else None
            return None if got == value else f"session {key} is {got!r}, {value!r} was set"

        return Request("session.get", None, check)
