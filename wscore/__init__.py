"""wscore: a real-time event platform where sessions outlive connections.

Importing wscore makes the process gevent-ready (``gevent.monkey.patch_all()``),
so plain scripts, gevent code and locust users can all use it directly.

The exception tree and :class:`ErrorCode` load with the package; every other
public name loads on first access (PEP 562), so ``import wscore.client`` or
``import wscore.errors`` never pulls in the server, its actors (pykka) or
gevent-websocket, while ``from wscore import WsServer`` works as it always did.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from gevent import monkey as _monkey

if not _monkey.is_module_patched("socket"):
    _monkey.patch_all()

from wscore.errors import (
    ConfigError,
    ConnectionClosed,
    SendBufferFull,
    SessionLost,
    UsageError,
    WsError,
    WsException,
)
from wscore.protocol.codes import ErrorCode

if TYPE_CHECKING:
    from wscore.auth import AuthResult, ConnectionInfo, WsAuthenticator
    from wscore.behaviours import (
        RoomHandle,
        RoomMessage,
        WsActorController,
        WsController,
        WsRoomBehaviour,
    )
    from wscore.client import WsClient
    from wscore.config import WsServerConfig
    from wscore.context import WsContext, WsSession
    from wscore.server import WsServer

__version__ = "0.1.0"

__all__ = [
    "AuthResult",
    "ConfigError",
    "ConnectionClosed",
    "ConnectionInfo",
    "ErrorCode",
    "RoomHandle",
    "RoomMessage",
    "SendBufferFull",
    "SessionLost",
    "UsageError",
    "WsActorController",
    "WsAuthenticator",
    "WsClient",
    "WsContext",
    "WsController",
    "WsError",
    "WsException",
    "WsRoomBehaviour",
    "WsServer",
    "WsServerConfig",
    "WsSession",
]

#: Public names loaded on first access, and the module each one lives in.
_LAZY = {
    "AuthResult": "wscore.auth",
    "ConnectionInfo": "wscore.auth",
    "WsAuthenticator": "wscore.auth",
    "RoomHandle": "wscore.behaviours",
    "RoomMessage": "wscore.behaviours",
    "WsActorController": "wscore.behaviours",
    "WsController": "wscore.behaviours",
    "WsRoomBehaviour": "wscore.behaviours",
    "WsClient": "wscore.client",
    "WsServerConfig": "wscore.config",
    "WsContext": "wscore.context",
    "WsSession": "wscore.context",
    "WsServer": "wscore.server",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wscore' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
