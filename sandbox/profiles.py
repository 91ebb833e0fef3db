"""Named fault profiles, as data.

A profile is a function of :class:`ProfileParams` (what the runner knows about
the app: its heartbeat and session TTL) returning a tuple of faults.  Build
one with :func:`build_profile`::

    faults = build_profile("partition", ProfileParams(heartbeat_seconds=2,
                                                      session_ttl_seconds=20))

Profiles: ``clean``, ``flaky-mobile``, ``partition``, ``chaos``,
``ttl-exceeded``, ``node-restarts`` (a clean network; the runner kills and
restarts app nodes, see :mod:`sandbox.nodes`).  A profile *file* (JSON or TOML, see :func:`load_profile_file`)
may name a ``base`` profile, override ``params`` and add ``faults``.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from wscore.sandbox.faults import (
    Blackhole,
    Direction,
    Fault,
    Latency,
    LimitData,
    Refuse,
    RefuseMode,
    ResetPeer,
    Slicer,
    faults_from_list,
)

__all__ = [
    "PROFILES",
    "ProfileError",
    "ProfileParams",
    "build_profile",
    "load_profile_file",
    "profile_names",
]


class ProfileError(ValueError):
    """Unknown profile, bad parameters or an unreadable profile file (one-line message)."""


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is None:
        return
    if not (math.isfinite(value) and value > 0):
        raise ProfileError(f"{attribute.name} must be a finite number > 0, got {value!r}")


@attrs.frozen(kw_only=True)
class ProfileParams:
    """What profiles need to know about the app under test.

    ``heartbeat_seconds``: how long the app takes to notice a silent peer
    (ping interval + ping timeout).  ``session_ttl_seconds``: how long a
    detached session waits for its client.  ``reset_every_seconds``: the mean
    time between resets for ``flaky-mobile``/``chaos``.
    ``partition_after_seconds``: when (after proxy start) a partition or an
    outage starts.  ``partition_seconds``: how long ``partition`` lasts;
    default halfway between heartbeat and TTL, so the app sees the connection
    die but the session survives.
    """

    heartbeat_seconds: float = attrs.field(default=5.0, validator=_positive)
    session_ttl_seconds: float = attrs.field(default=30.0, validator=_positive)
    reset_every_seconds: float = attrs.field(default=10.0, validator=_positive)
    partition_after_seconds: float = attrs.field(default=2.0, validator=_positive)
    partition_seconds: float | None = attrs.field(default=None, validator=_positive)

    def resolved_partition_seconds(self) -> float:
        if self.partition_seconds is not None:
            return self.partition_seconds
        return (self.heartbeat_seconds + self.session_ttl_seconds) / 2


def _clean(_p: ProfileParams) -> tuple[Fault, ...]:
    return ()


def _flaky_mobile(p: ProfileParams) -> tuple[Fault, ...]:
    # Mobile links: high, variable RTT split over both legs; a radio handover
    # (reset) every ~reset_every_seconds; short dead spots of 1-3 s.
    every = p.reset_every_seconds
    return (
        Latency(latency_seconds=0.0875, jitter_seconds=0.0625, direction=Direction.BOTH),
        ResetPeer(direction=Direction.DOWN, after_seconds=(every * 0.5, every * 1.5)),
        Blackhole(direction=Direction.DOWN, after_seconds=(every * 0.3, every),
                  duration_seconds=(1.0, 3.0), repeat=True, probability=0.5),
    )


def _partition(p: ProfileParams) -> tuple[Fault, ...]:
    duration = p.resolved_partition_seconds()
    if not p.heartbeat_seconds < duration < p.session_ttl_seconds:
        raise ProfileError(
            f"partition_seconds ({duration}) must be between heartbeat_seconds "
            f"({p.heartbeat_seconds}) and session_ttl_seconds ({p.session_ttl_seconds})")
    return (
        Blackhole(all_connections=True, after_seconds=p.partition_after_seconds,
                  duration_seconds=duration),
    )


def _chaos(p: ProfileParams) -> tuple[Fault, ...]:
    every = p.reset_every_seconds
    short = max(0.2, min(2.0, p.heartbeat_seconds / 2))
    return (
        Latency(latency_seconds=0.05, jitter_seconds=0.05),
        Slicer(max_slice_bytes=7, direction=Direction.DOWN, probability=0.5),
        Slicer(max_slice_bytes=5, direction=Direction.UP, probability=0.5),
        ResetPeer(direction=Direction.DOWN, after_frames=(5, 60), mid_frame_probability=0.5,
                  probability=0.5),
        ResetPeer(direction=Direction.UP, after_frames=(3, 40), probability=0.3),
        ResetPeer(direction=Direction.UP, after_seconds=(every * 0.5, every * 1.5)),
        Blackhole(direction=Direction.DOWN, after_frames=(10, 80), duration_seconds=(0.2, short),
                  repeat=True, probability=0.4),
        LimitData(direction=Direction.DOWN, max_bytes=64 * 1024, probability=0.3),
        Refuse(probability=0.1),
        Refuse(after_seconds=(every * 0.5, every * 2), duration_seconds=(0.5, 2.0), repeat=True),
    )


def _ttl_exceeded(p: ProfileParams) -> tuple[Fault, ...]:
    # An outage strictly longer than the TTL: every live connection is held
    # and new ones are refused, so no client can resume in time.
    outage = p.session_ttl_seconds * 1.5 + p.heartbeat_seconds
    return (
        Blackhole(all_connections=True, after_seconds=p.partition_after_seconds,
                  duration_seconds=outage),
        Refuse(after_seconds=p.partition_after_seconds, duration_seconds=outage,
               mode=RefuseMode.RESET),
    )


PROFILES: Mapping[str, Callable[[ProfileParams], tuple[Fault, ...]]] = {
    "clean": _clean,
    "flaky-mobile": _flaky_mobile,
    "partition": _partition,
    "chaos": _chaos,
    "ttl-exceeded": _ttl_exceeded,
    # The network stays clean; the runner restarts nodes (sandbox.nodes, needs --nodes >= 2).
    "node-restarts": _clean,
}


def profile_names() -> list[str]:
    return sorted(PROFILES)


def build_profile(name: str, params: ProfileParams | None = None) -> tuple[Fault, ...]:
    """The faults of profile ``name``; raises :class:`ProfileError` if unknown."""
    factory = PROFILES.get(name)
    if factory is None:
        raise ProfileError(f"unknown profile {name!r}; known: {', '.join(profile_names())}")
    return factory(params or ProfileParams())


def load_profile_file(path: str | Path,
                      params: ProfileParams | None = None) -> tuple[Fault, ...]:
    """Load faults from a JSON or TOML (by suffix ``.toml``) file.

    Shape (TOML shown)::

        base = "flaky-mobile"          # optional named profile to start from
        [params]                       # optional ProfileParams overrides
        heartbeat_seconds = 2
        [[faults]]                     # extra faults, fault_to_dict() shape
        type = "latency"
        direction = "down"
        latency_seconds = 0.1

    Raises :class:`ProfileError` with a one-line message on any problem.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read profile file {path}: {exc.strerror}") from None
    data: Any
    try:
        if path.suffix == ".toml":
            if sys.version_info >= (3, 11):
                import tomllib
                data = tomllib.loads(text)
            else:  # pragma: no cover - Python 3.10
                raise ProfileError("TOML profile files need Python >= 3.11; use JSON")
        else:
            data = json.loads(text)
    except ValueError as exc:
        if isinstance(exc, ProfileError):
            raise
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ProfileError(f"{path}: cannot parse: {msg}") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: top level must be an object/table")
    unknown = sorted(set(data) - {"base", "params", "faults"})
    if unknown:
        raise ProfileError(f"{path}: unknown key(s) {', '.join(unknown)}")
    raw_params = data.get("params", {})
    if not isinstance(raw_params, dict):
        raise ProfileError(f"{path}: params must be an object/table")
    try:
        merged = attrs.evolve(params or ProfileParams(), **raw_params)
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{path}: bad params: {exc}") from None
    base = data.get("base")
    faults: tuple[Fault, ...] = ()
    if base is not None:
        if not isinstance(base, str):
            raise ProfileError(f"{path}: base must be a profile name")
        faults = build_profile(base, merged)
    try:
        extra = faults_from_list(data.get("faults", []))
    except ValueError as exc:
        raise ProfileError(f"{path}: {exc}") from None
    return faults + extra
