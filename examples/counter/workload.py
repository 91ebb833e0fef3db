"""The sandbox workload of the counter app (``examples/counter/app.py``): a non-chat workload.

    wscore sandbox run --app examples.counter.app:server \\
        --workload examples.counter.workload:CounterWorkload \\
        --profile flaky-mobile --clients 6 --duration 10 --reset-every 2

Each client watches one counter (its :attr:`~sandbox.workload.Workload.room`
names it), adds 1 to it with the probe text as the ``note`` — so every
``counter.changed`` the other watchers get is identified, checked and put in
order by the ledger — and reads it with ``counter.get`` carrying a unique
``ref`` as its RPC and drain barrier. What a delivery must look like besides
its note: it names the client's own counter (else it was misrouted), says
``by`` 1 and carries an integer value.
"""

from __future__ import annotations

from typing import Any, ClassVar

from wscore.sandbox.workload import Request, Workload

__all__ = ["CounterWorkload"]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class CounterWorkload(Workload):
    """Watch one counter, add to it (probe text as note), read it back."""

    delivery_event: ClassVar[str] = "counter.changed"
    requests: ClassVar[tuple[str, ...]] = ("counter.watch", "counter.add", "counter.get")

    def _reply(self, reply: Any, **expected: Any) -> str | None:
        if not isinstance(reply, dict) or reply.get("counter") != self.room:
            return f"expected a reply about counter {self.room!r}, got {reply!r}"
        if not _is_int(reply.get("value")):
            return f"expected an integer value, got {reply!r}"
        for key, want in expected.items():
            if reply.get(key) != want:
                return f"expected {key}={want!r}, got {reply!r}"
        return None

    def join(self) -> Request:
        return Request("counter.watch", {"counter": self.room}, self._reply)

    def publish(self, text: str) -> Request:
        return Request("counter.add", {"counter": self.room, "by": 1, "note": text}, self._reply)

    def delivered_text(self, payload: Any) -> str | None:
        note = payload.get("note") if isinstance(payload, dict) else None
        return note if isinstance(note, str) else None

    def check_delivery(self, payload: Any) -> str | None:
        if payload.get("counter") != self.room:
            return f"a change of counter {payload.get('counter')!r} reached a watcher of {self.room!r}"
        if payload.get("by") != 1 or not _is_int(payload.get("value")):
            return f"malformed change {payload!r}"
        return None

    def rpc(self, token: str, filler: str) -> Request:
        return Request("counter.get", {"counter": self.room, "ref": token},
                       lambda reply: self._reply(reply, ref=token))

    def barrier(self) -> Request:
        return self.rpc(f"barrier/{self.index}", "")
