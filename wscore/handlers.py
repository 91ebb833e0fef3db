"""Handler registrations and payload schemas (no I/O).

A schema maps field names to predicates: ``{'text': lambda v: isinstance(v, str)}``.
A missing field is checked as ``None``; a predicate that raises counts as a
failure. Failures become ``validationFailed`` (1009) naming every bad field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from wscore.errors import WsError
from wscore.protocol.codes import ErrorCode

__all__ = ["Handler", "HandlerSpec", "Schema", "check_schema"]

Handler = Callable[[Any], Any]
Schema = Mapping[str, Callable[[Any], bool]]


@attrs.frozen
class HandlerSpec:
    """One registered event: the function, its schema, and the actor that runs it (if any)."""

    event: str
    fn: Handler
    schema: Schema | None = None
    #: pykka ActorRef of the handler actor for actor-based handler classes; None runs the
    #: handler inside the session's own actor.
    actor_ref: Any = None


def check_schema(schema: Schema, payload: Any) -> None:
    """Raise ``WsError(VALIDATION_FAILED)`` unless every predicate accepts its field."""
    if not isinstance(payload, dict):
        raise WsError(
            ErrorCode.VALIDATION_FAILED, "payload must be a JSON object",
            {"fields": sorted(schema), "reason": "payload is not an object"},
        )
    bad: list[str] = []
    for field, predicate in schema.items():
        try:
            ok = bool(predicate(payload.get(field)))
        except Exception:
            ok = False
        if not ok:
            bad.append(field)
    if bad:
        raise WsError(
            ErrorCode.VALIDATION_FAILED, f"invalid field(s): {', '.join(bad)}", {"fields": bad}
        )
