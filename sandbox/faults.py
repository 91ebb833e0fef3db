"""Fault definitions for the sandbox proxy, and the fault log.

Faults are values: frozen, keyword-only attrs classes validated on
construction.  They are named after Toxiproxy's toxics (``latency``,
``bandwidth``, ``slicer``, ``reset_peer``, ``blackhole``, ``limit_data``,
``refuse``, ``slow_close``) and are composable: a proxy runs any sequence of
them at once.

Directions: ``up`` is client → server (masked WebSocket frames), ``down`` is
server → client.  A fault with ``Direction.BOTH`` is installed independently
in each direction (so a ``reset_peer`` on ``both`` makes two draws and the
earlier one wins).

Randomness contract: a fault never draws from a global RNG.  The proxy hands
every (connection, direction, fault) its own ``random.Random`` derived from
the proxy seed, so the same seed with the same traffic yields the same fault
log (:func:`same_fault_log`).  ``probability`` on every per-connection fault
is the chance that the fault is active at all on a given connection and
direction; it is drawn once when the fault is installed.

Ranges (``after_frames``, ``after_seconds``, ``duration_seconds`` …) accept a
single number or a ``(low, high)`` pair; a value is drawn uniformly from the
closed range.  Frame indexes count WebSocket frames (RFC 6455 §5.2) in one
direction starting at 1; the HTTP upgrade is frame 0.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, TypeAlias

import attrs

__all__ = [
    "Bandwidth",
    "Blackhole",
    "Direction",
    "Fault",
    "FaultRecord",
    "Latency",
    "LimitData",
    "Refuse",
    "RefuseMode",
    "ResetPeer",
    "Slicer",
    "SlowClose",
    "Trigger",
    "diff_fault_logs",
    "fault_from_dict",
    "fault_log_key",
    "fault_to_dict",
    "faults_from_list",
    "same_fault_log",
]


class Direction(enum.Enum):
    """Which way a fault acts: ``up`` = client → server, ``down`` = server → client."""

    UP = "up"
    DOWN = "down"
    BOTH = "both"

    def covers(self, other: Direction) -> bool:
        """True when this direction includes ``other`` (``UP`` or ``DOWN``)."""
        return self is Direction.BOTH or self is other


class RefuseMode(enum.Enum):
    """How a refused connection is treated.

    ``reset``: accept, then immediately reset (SO_LINGER 0) — a crashed server.
    ``hold``: accept at TCP level but forward nothing until the window ends —
    a server that is up but not answering (connection attempts hang).
    """

    RESET = "reset"
    HOLD = "hold"


class Trigger(enum.Enum):
    """What decided that a fault fired; frame/byte triggers replay exactly."""

    CONNECTION = "connection"  # installed on a connection (continuous faults)
    FRAMES = "frames"
    BYTES = "bytes"
    TIME = "time"  # a drawn delay; the drawn value is in the record's params
    MANUAL = "manual"  # control API / test handle


FloatRange = tuple[float, float]
IntRange = tuple[int, int]


def _float_range(value: float | Sequence[float]) -> FloatRange:
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    items = tuple(value)
    if len(items) != 2:
        raise ValueError(f"a range needs exactly two values, got {items!r}")
    return (float(items[0]), float(items[1]))


def _opt_float_range(value: float | Sequence[float] | None) -> FloatRange | None:
    return None if value is None else _float_range(value)


def _opt_int_range(value: int | Sequence[int] | None) -> IntRange | None:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    items = tuple(value)
    if len(items) != 2:
        raise ValueError(f"a range needs exactly two values, got {items!r}")
    return (int(items[0]), int(items[1]))


def _direction(value: Direction | str) -> Direction:
    return value if isinstance(value, Direction) else Direction(value)


def _refuse_mode(value: RefuseMode | str) -> RefuseMode:
    return value if isinstance(value, RefuseMode) else RefuseMode(value)


def _check_range(name: str, rng: tuple[float, float] | None, *, minimum: float) -> None:
    if rng is None:
        return
    low, high = rng
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} must be finite, got {rng!r}")
    if low < minimum or high < low:
        raise ValueError(f"{name} must satisfy {minimum} <= low <= high, got {rng!r}")


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within [0, 1], got {value!r}")


def _check_non_negative(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


@attrs.frozen(kw_only=True)
class Latency:
    """Delay every frame by ``latency_seconds`` ± ``jitter_seconds`` (uniform).

    The delay is drawn per frame (the HTTP upgrade counts as one); data is
    pipelined, so latency does not cap throughput, and order is preserved
    (a frame never overtakes an earlier one even if it drew less delay).
    """

    name: ClassVar[str] = "latency"
    latency_seconds: float
    jitter_seconds: float = 0.0
    direction: Direction = attrs.field(default=Direction.BOTH, converter=_direction)
    probability: float = 1.0

    def __attrs_post_init__(self) -> None:
        _check_non_negative("latency_seconds", self.latency_seconds)
        _check_non_negative("jitter_seconds", self.jitter_seconds)
        _check_probability("probability", self.probability)


@attrs.frozen(kw_only=True)
class Bandwidth:
    """Cap the forwarding rate at ``rate_bytes_per_second`` (token bucket)."""

    name: ClassVar[str] = "bandwidth"
    rate_bytes_per_second: int
    direction: Direction = attrs.field(default=Direction.BOTH, converter=_direction)
    probability: float = 1.0

    def __attrs_post_init__(self) -> None:
        if self.rate_bytes_per_second < 1:
            raise ValueError("rate_bytes_per_second must be >= 1")
        _check_probability("probability", self.probability)


@attrs.frozen(kw_only=True)
class Slicer:
    """Forward data as many small TCP writes of ``min..max_slice_bytes`` each.

    Frames arrive intact (TCP is a byte stream) but a peer sees them split at
    arbitrary points, which exercises its partial-read paths.
    """

    name: ClassVar[str] = "slicer"
    max_slice_bytes: int
    min_slice_bytes: int = 1
    slice_delay_seconds: float = 0.0
    direction: Direction = attrs.field(default=Direction.BOTH, converter=_direction)
    probability: float = 1.0

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.min_slice_bytes <= self.max_slice_bytes:
            raise ValueError("need 1 <= min_slice_bytes <= max_slice_bytes")
        _check_non_negative("slice_delay_seconds", self.slice_delay_seconds)
        _check_probability("probability", self.probability)


@attrs.frozen(kw_only=True)
class ResetPeer:
    """Reset the connection (RST to both peers, SO_LINGER 0).

    Exactly one schedule: ``after_frames`` (reset once frame *k* of this
    direction has been forwarded, *k* drawn from the range) or
    ``after_seconds`` (a drawn delay after the connection opened).  With
    ``mid_frame_probability`` the frame-triggered reset lands strictly inside
    frame *k* instead of right after it.  ``direction=UP`` with
    ``mid_frame_probability=0`` is "the server got the request, the reply
    never comes back".
    """

    name: ClassVar[str] = "reset_peer"
    direction: Direction = attrs.field(default=Direction.BOTH, converter=_direction)
    probability: float = 1.0
    after_frames: IntRange | None = attrs.field(default=None, converter=_opt_int_range)
    after_seconds: FloatRange | None = attrs.field(default=None, converter=_opt_float_range)
    mid_frame_probability: float = 0.0

    def __attrs_post_init__(self) -> None:
        _check_probability("probability", self.probability)
        _check_probability("mid_frame_probability", self.mid_frame_probability)
        if (self.after_frames is None) == (self.after_seconds is None):
            raise ValueError("reset_peer needs exactly one of after_frames, after_seconds")
        _check_range("after_frames", self.after_frames, minimum=1)
        _check_range("after_seconds", self.after_seconds, minimum=0)


@attrs.frozen(kw_only=True)
class Blackhole:
    """Stop forwarding in both directions, keeping both sockets open.

    Data is held, not dropped (like a TCP path that stops delivering and later
    heals), so it arrives after the blackhole ends unless a peer gave up.
    Schedule: ``after_frames`` (counted in ``direction``) or ``after_seconds``;
    ``duration_seconds`` is drawn per occurrence.  ``repeat`` schedules the
    next occurrence after each one.  ``all_connections=True`` makes it a
    proxy-wide partition (time-scheduled only): every live connection and any
    new one is held for the window.
    """

    name: ClassVar[str] = "blackhole"
    duration_seconds: FloatRange = attrs.field(converter=_float_range)
    direction: Direction = attrs.field(default=Direction.BOTH, converter=_direction)
    probability: float = 1.0
    after_frames: IntRange | None = attrs.field(default=None, converter=_opt_int_range)
    after_seconds: FloatRange | None = attrs.field(default=None, converter=_opt_float_range)
    repeat: bool = False
    all_connections: bool = False

    def __attrs_post_init__(self) -> None:
        _check_probability("probability", self.probability)
        _check_range("duration_seconds", self.duration_seconds, minimum=0)
        if (self.after_frames is None) == (self.after_seconds is None):
            raise ValueError("blackhole needs exactly one of after_frames, after_seconds")
        if self.all_connections and self.after_seconds is None:
            raise ValueError("blackhole with all_connections needs after_seconds")
        _check_range("after_frames", self.after_frames, minimum=1)
        _check_range("after_seconds", self.after_seconds, minimum=0)


@attrs.frozen(kw_only=True)
class LimitData:
    """Cut the connection once ``max_bytes`` bytes or ``max_frames`` frames
    (of this direction) have been forwarded; ``reset`` chooses RST over FIN."""

    name: ClassVar[str] = "limit_data"
    max_bytes: int | None = None
    max_frames: int | None = None
    reset: bool = False
    direction: Direction = attrs.field(default=Direction.BOTH, converter=_direction)
    probability: float = 1.0

    def __attrs_post_init__(self) -> None:
        _check_probability("probability", self.probability)
        if (self.max_bytes is None) == (self.max_frames is None):
            raise ValueError("limit_data needs exactly one of max_bytes, max_frames")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError("max_frames must be >= 1")


@attrs.frozen(kw_only=True)
class Refuse:
    """Refuse new connections (the server looks down).

    ``probability``: chance that any one new connection is refused (drawn from
    that connection's RNG, so it replays by connection index).
    ``after_seconds`` + ``duration_seconds``: a time window after proxy start
    (re-drawn after each window when ``repeat``).  Either or both may be set.
    """

    name: ClassVar[str] = "refuse"
    probability: float = 0.0
    after_seconds: FloatRange | None = attrs.field(default=None, converter=_opt_float_range)
    duration_seconds: FloatRange = attrs.field(default=(1.0, 1.0), converter=_float_range)
    repeat: bool = False
    mode: RefuseMode = attrs.field(default=RefuseMode.RESET, converter=_refuse_mode)

    def __attrs_post_init__(self) -> None:
        _check_probability("probability", self.probability)
        _check_range("after_seconds", self.after_seconds, minimum=0)
        _check_range("duration_seconds", self.duration_seconds, minimum=0)
        if self.probability == 0.0 and self.after_seconds is None:
            raise ValueError("refuse needs probability > 0 or after_seconds")


@attrs.frozen(kw_only=True)
class SlowClose:
    """Delay forwarding a close: both a WebSocket close frame (opcode 0x8) and
    the TCP FIN are held for a drawn ``delay_seconds`` before going on."""

    name: ClassVar[str] = "slow_close"
    delay_seconds: FloatRange = attrs.field(converter=_float_range)
    direction: Direction = attrs.field(default=Direction.BOTH, converter=_direction)
    probability: float = 1.0

    def __attrs_post_init__(self) -> None:
        _check_probability("probability", self.probability)
        _check_range("delay_seconds", self.delay_seconds, minimum=0)


Fault: TypeAlias = (
    Latency | Bandwidth | Slicer | ResetPeer | Blackhole | LimitData | Refuse | SlowClose
)

_FAULT_TYPES: dict[str, type[Any]] = {
    cls.name: cls
    for cls in (Latency, Bandwidth, Slicer, ResetPeer, Blackhole, LimitData, Refuse, SlowClose)
}


def fault_to_dict(fault: Fault) -> dict[str, Any]:
    """A JSON-ready dict ``{"type": <toxic name>, <field>: <value>, …}``."""

    def convert(_inst: Any, _field: Any, value: Any) -> Any:
        if isinstance(value, enum.Enum):
            return value.value
        if isinstance(value, tuple):
            return list(value)
        return value

    data = attrs.asdict(fault, value_serializer=convert)
    return {"type": fault.name, **data}


def fault_from_dict(data: Mapping[str, Any]) -> Fault:
    """Build a fault from :func:`fault_to_dict`'s shape.

    Raises ``ValueError`` (one line) on an unknown type, an unknown field or
    an invalid value.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"a fault must be an object, got {type(data).__name__}")
    kind = data.get("type")
    cls = _FAULT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown fault type {kind!r}; known: {', '.join(sorted(_FAULT_TYPES))}")
    fields = {f.name for f in attrs.fields(cls)}
    kwargs = {k: v for k, v in data.items() if k != "type"}
    unknown = sorted(set(kwargs) - fields)
    if unknown:
        raise ValueError(f"{kind}: unknown field(s) {', '.join(unknown)}")
    try:
        fault: Fault = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{kind}: {exc}") from None
    return fault


def faults_from_list(items: Iterable[Mapping[str, Any]]) -> tuple[Fault, ...]:
    """Parse a list of fault dicts (see :func:`fault_from_dict`)."""
    if isinstance(items, (str, bytes, Mapping)):
        raise ValueError("faults must be a list of objects")
    return tuple(fault_from_dict(item) for item in items)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@attrs.frozen(kw_only=True)
class FaultRecord:
    """One injected fault.

    ``time_seconds`` is monotonic time since proxy start; ``connection`` is the
    accept index (-1 for proxy-wide events); ``direction`` is ``up``, ``down``
    or ``both``; ``frame`` is the frame index in that direction where the fault
    acted (0 before any WebSocket frame).  ``trigger`` says what decided it;
    for ``time``/``manual`` triggers ``frame`` depends on timing.
    """

    time_seconds: float
    connection: int
    direction: str
    fault: str
    frame: int
    trigger: str
    params: Mapping[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (one line of the JSON-lines fault log)."""
        return {
            "time_seconds": round(self.time_seconds, 6),
            "connection": self.connection,
            "direction": self.direction,
            "fault": self.fault,
            "frame": self.frame,
            "trigger": self.trigger,
            "params": dict(self.params),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRecord:
        return cls(
            time_seconds=float(data["time_seconds"]),
            connection=int(data["connection"]),
            direction=str(data["direction"]),
            fault=str(data["fault"]),
            frame=int(data["frame"]),
            trigger=str(data["trigger"]),
            params=dict(data.get("params", {})),
        )


_TIMING_DEPENDENT = frozenset({Trigger.TIME.value, Trigger.MANUAL.value})


def fault_log_key(records: Iterable[FaultRecord]) -> list[tuple[Any, ...]]:
    """A canonical, timestamp-free form of a fault log.

    Records are grouped by (connection, direction) keeping their order within
    the group — the interleaving of different connections depends on
    scheduling, the order within one does not.  The frame index of
    time-triggered and manual records is dropped for the same reason.
    """
    keyed: list[tuple[Any, ...]] = []
    seq: dict[tuple[int, str], int] = {}
    for rec in records:
        group = (rec.connection, rec.direction)
        n = seq.get(group, 0)
        seq[group] = n + 1
        frame = None if rec.trigger in _TIMING_DEPENDENT else rec.frame
        keyed.append((rec.connection, rec.direction, n, rec.fault, rec.trigger, frame,
                      _freeze(rec.params)))
    keyed.sort(key=lambda k: (k[0], k[1], k[2]))
    return keyed


def same_fault_log(a: Iterable[FaultRecord], b: Iterable[FaultRecord]) -> bool:
    """True when two fault logs are equal ignoring timestamps (see :func:`fault_log_key`)."""
    return fault_log_key(a) == fault_log_key(b)


def diff_fault_logs(a: Iterable[FaultRecord], b: Iterable[FaultRecord]) -> list[str]:
    """Human-readable differences between two logs' canonical forms (empty if same)."""
    ka, kb = fault_log_key(a), fault_log_key(b)
    out: list[str] = []
    for i in range(max(len(ka), len(kb))):
        left = ka[i] if i < len(ka) else None
        right = kb[i] if i < len(kb) else None
        if left != right:
            out.append(f"#{i}: {left!r} != {right!r}")
    return out
