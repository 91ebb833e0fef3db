"""The sandbox workload for the README's quick-start app (``examples/quickstart/app.py``).

    wscore sandbox run --app examples.quickstart.app:server \\
        --workload examples.quickstart.workload:QuickstartWorkload \\
        --profile flaky-mobile --clients 6 --duration 20 --reset-every 3

The app has two events: ``room.join`` {roomId} → ``{"joined": roomId}`` and
``chat.message`` {roomId, text} → ``{"status": "sent"}``, broadcast as
``chat.new_message`` {text, sender} to the rest of the room. It has no
``echo``, so this workload's RPC and drain barrier are a re-join of the
client's own room: a request the app answers with a reply that can be checked
(``{"joined": room}``) and that changes nothing (joining a room one is in is
a no-op).
"""

from __future__ import annotations

from typing import Any, ClassVar

from wscore.sandbox.workload import Request, Workload, reply_equals

__all__ = ["QuickstartWorkload"]


class QuickstartWorkload(Workload):
    """Chat in one room of the quick-start app; re-joins serve as RPCs and as the barrier."""

    delivery_event: ClassVar[str] = "chat.new_message"
    requests: ClassVar[tuple[str, ...]] = ("room.join", "chat.message")

    def join(self) -> Request:
        return Request("room.join", {"roomId": self.room}, reply_equals({"joined": self.room}))

    def publish(self, text: str) -> Request:
        return Request("chat.message", {"roomId": self.room, "text": text},
                       reply_equals({"status": "sent"}))

    def delivered_text(self, payload: Any) -> str | None:
        text = payload.get("text") if isinstance(payload, dict) else None
        return text if isinstance(text, str) else None

    def check_delivery(self, payload: Any) -> str | None:
        # The app names the sender (anonymous clients: "anon").
        return None if payload.get("sender") == "anon" else f"sender is {payload.get('sender')!r}"

    def rpc(self, token: str, filler: str) -> Request:
        return self.join()

    def barrier(self) -> Request:
        return self.join()
