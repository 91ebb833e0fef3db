"""The pure protocol core: bytes and text in, values and events out.

Nothing in this package touches a socket, a greenlet, an actor or the clock:
time is passed in by the caller. Modules:

- :mod:`wscore.protocol.codes`          error codes, close codes, reserved events
- :mod:`wscore.protocol.frames`         RFC 6455 framing (decoder, encoders, handshake keys)
- :mod:`wscore.protocol.envelope`       the JSON envelope of SPEC §3
- :mod:`wscore.protocol.session`        a session's state machine and its numbered stream
- :mod:`wscore.protocol.client_session` :class:`ClientSession`, one client session's protocol state

The package ``__init__`` imports nothing eagerly, so that :mod:`wscore.errors`
can depend on :mod:`wscore.protocol.codes` without a cycle (``client_session``
imports ``wscore.errors``); the classes re-exported here load on first access
(PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wscore.protocol.client_session import ClientSession

__all__ = ["ClientSession"]

_LAZY = {"ClientSession": "wscore.protocol.client_session"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wscore.protocol' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
