"""wscore: a real-time event platform where sessions outlive connections.

Importing wscore makes the process gevent-ready (``gevent.monkey.patch_all()``),
so plain scripts, gevent code and locust users can all use it directly.
"""

from gevent import monkey as _monkey

if not _monkey.is_module_patched("socket"):
    _monkey.patch_all()

from wscore.auth import AuthResult, ConnectionInfo, WsAuthenticator
from wscore.behaviours import (
    RoomHandle,
    RoomMessage,
    WsActorController,
    WsController,
    WsRoomBehaviour,
)
from wscore.config import WsServerConfig
from wscore.context import WsContext, WsSession
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


def __getattr__(name: str) -> object:
    # The client is imported lazily so a server process does not pay for it.
    if name == "WsClient":
        from wscore.client import WsClient

        return WsClient
    raise AttributeError(f"module 'wscore' has no attribute {name!r}")
