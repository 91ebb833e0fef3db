"""The bundled Python client (SPEC §2): reconnects by itself and resumes its session.

::

    from wscore.client import WsClient, WsClientConfig

    client = WsClient("ws://localhost:8080/ws", token=None,
                      config=WsClientConfig(request_timeout=5.0))
    client.on("chat.new_message", print)
    client.connect()
    print(client.request("room.join", {"roomId": "lobby"}))
    client.close()

Modules: :mod:`~wscore.client.client` (the I/O layer and :class:`WsClient`),
:mod:`~wscore.client.resume` (pure resume bookkeeping and backoff),
:mod:`~wscore.client.config` (:class:`WsClientConfig`),
:mod:`~wscore.client.cli` (``python -m wscore.client URL``).
"""

from wscore.client.client import ClientStats, SessionInfo, WsClient
from wscore.client.config import WsClientConfig
from wscore.errors import ConnectionClosed, SendBufferFull, WsError

__all__ = [
    "ClientStats",
    "ConnectionClosed",
    "SessionInfo",
    "SendBufferFull",
    "WsClient",
    "WsClientConfig",
    "WsError",
]
