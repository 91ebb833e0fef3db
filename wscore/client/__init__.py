"""The bundled Python client (SPEC §2): reconnects by itself and resumes its session.

::

    from wscore.client import WsClient, WsClientConfig

    client = WsClient("ws://localhost:8080/ws", token=None,
                      config=WsClientConfig(request_timeout=5.0))
    client.on("chat.new_message", print)
    client.connect()
    print(client.request("room.join", {"roomId": "lobby"}))
    client.close()

Modules: :mod:`~wscore.client.client` (:class:`WsClient`, the facade, and its runner,
which carries out the decisions of the pure :class:`wscore.protocol.ClientSession`),
:mod:`~wscore.client.link` (socket I/O: connect, upgrade, writer),
:mod:`~wscore.client.dispatch` (callbacks), :mod:`~wscore.client.token` (tokens and
their in-band refresh), :mod:`~wscore.client.config` (:class:`WsClientConfig`),
:mod:`~wscore.client.cli` (``python -m wscore.client URL``).

Importing this package loads gevent and the protocol core, never the server,
its actors or gevent-websocket.
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
