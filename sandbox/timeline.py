"""What a ``sandbox run`` looked like over time: deliveries, fault windows, resumes and losses.

Pure (values in, values out). Every time is in seconds on the run's clock (the
driver's: 0 when the clients were created), so one chart can put the delivery
latencies, the faults the proxy injected (its log counts from the proxy's start:
shifted by ``fault_offset``), the clients' resumes and session losses, and any
missing delivery on one axis. :mod:`sandbox.html_report` draws it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from wscore.sandbox.faults import FaultRecord, Trigger

__all__ = ["FaultMark", "Timeline", "build_timeline"]

#: Faults installed per connection that act continuously (not an event in time).
_CONTINUOUS = frozenset({"latency", "bandwidth", "slicer", "slow_close"})


@attrs.frozen
class FaultMark:
    """A fault that fired: at ``start``, lasting until ``end`` (None: an instant, e.g. a reset)."""

    start: float
    end: float | None
    fault: str
    connection: int  # -1: proxy-wide


@attrs.frozen(kw_only=True)
class Timeline:
    send_start: float
    send_end: float  # the network was healed here and the drain began
    drain_end: float
    #: (receipt time, latency), at most ``max_points`` of them, evenly thinned, in time order.
    deliveries: tuple[tuple[float, float], ...]
    deliveries_total: int
    faults: tuple[FaultMark, ...]
    #: (time, client, "disconnect" | "resume" | "new_session" | "session_lost").
    events: tuple[tuple[float, int, str], ...]
    #: Missing deliveries: (send time, sender, seq, receiver, silent) — silent = a breach.
    losses: tuple[tuple[float, int, int, int, bool], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "send_start": self.send_start, "send_end": self.send_end, "drain_end": self.drain_end,
            "deliveries": [[round(t, 4), round(lat, 5)] for t, lat in self.deliveries],
            "deliveries_total": self.deliveries_total,
            "faults": [attrs.asdict(f) for f in self.faults],
            "events": [list(e) for e in self.events],
            "losses": [list(x) for x in self.losses],
        }


def _thin(points: Sequence[tuple[float, float]], max_points: int) -> tuple[tuple[float, float], ...]:
    if len(points) <= max_points:
        return tuple(points)
    step = len(points) / max_points
    return tuple(points[int(i * step)] for i in range(max_points))


def fault_marks(records: Iterable[FaultRecord], offset: float) -> list[FaultMark]:
    """The faults that fired, on the run's clock (``offset`` = proxy start − run start)."""
    marks = []
    for rec in records:
        if rec.trigger == Trigger.CONNECTION.value and rec.fault in _CONTINUOUS:
            continue  # installed on a connection, acting all along: not an event
        start = rec.time_seconds + offset
        duration = rec.params.get("duration_seconds")
        end = start + float(duration) if isinstance(duration, (int, float)) else None
        marks.append(FaultMark(round(start, 4), None if end is None else round(end, 4), rec.fault,
                               rec.connection))
    return marks


def build_timeline(*, deliveries: Sequence[tuple[float, float]],
                   losses: Sequence[tuple[float, int, int, int, bool]],
                   events: Sequence[tuple[float, int, str]], fault_log: Iterable[FaultRecord],
                   fault_offset: float, send_start: float, send_end: float, drain_end: float,
                   max_points: int = 5000) -> Timeline:
    """Assemble a :class:`Timeline` (deliveries thinned to ``max_points`` for drawing)."""
    return Timeline(send_start=send_start, send_end=send_end, drain_end=drain_end,
                    deliveries=_thin(sorted(deliveries), max_points),
                    deliveries_total=len(deliveries),
                    faults=tuple(fault_marks(fault_log, fault_offset)),
                    events=tuple(sorted(events)), losses=tuple(sorted(losses)))
