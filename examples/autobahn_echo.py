"""A raw WebSocket echo app served by wscore's transport, for Autobahn|Testsuite.

This is *not* a wscore protocol app: it bypasses the JSON envelope, the actors
and the sessions and runs the RFC 6455 layer exactly as :class:`wscore.WsServer`
wires it (gevent-websocket's HTTP upgrade, then wscore's own framing in
:mod:`wscore.protocol.frames` on the raw socket, via
:class:`wscore.transport.TransportServer`). Every text message is echoed back as
text and every binary message as binary — the testsuite's convention.

    python -m examples.autobahn_echo --port 9001
    wstest -m fuzzingclient -s fuzzingclient.json   # its "servers" url: ws://127.0.0.1:9001/

``--port 0`` binds a free port; the first line on stdout is always
``autobahn_echo listening on ws://HOST:PORT/`` so a script can read the port
(see ``benchmarks/run_autobahn.sh`` and docs/conformance.md).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Mapping
from typing import Any

import gevent
import gevent.event

# Importing any wscore module makes the process gevent-ready (monkey-patched).
from wscore.errors import ConnectionClosed, PeerProtocolError
from wscore.transport import TransportServer, WsTransport

__all__ = ["echo", "main"]

log = logging.getLogger("wscore.examples.autobahn_echo")

#: Case 9.x sends messages of up to 16 MiB; leave room above that.
DEFAULT_MAX_MESSAGE_BYTES = 20 * 1024 * 1024


def echo(transport: WsTransport) -> None:
    """Echo every message back with its own type until the connection ends."""
    try:
        for message in transport.read_messages():
            if isinstance(message, str):
                transport.send_text(message)
            else:
                transport.send_binary(message)
    except (ConnectionClosed, PeerProtocolError) as exc:
        # The transport already answered with the right close code; nothing to add.
        log.debug("connection ended: %s", exc)


def _no_gate(environ: Mapping[str, Any]) -> tuple[str, str] | None:
    return None


def _http(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("426 Upgrade Required", [("Content-Type", "text/plain"), ("Upgrade", "websocket")])
    return [b"WebSocket echo endpoint only\n"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001, help="0 binds a free port")
    parser.add_argument("--path", default="/")
    parser.add_argument("--max-message-bytes", type=int, default=DEFAULT_MAX_MESSAGE_BYTES)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging to stderr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")

    server = TransportServer(
        host=args.host, port=args.port, path=args.path, http_app=_http, on_websocket=echo,
        gate=_no_gate, handshake_timeout=10.0, max_message_bytes=args.max_message_bytes,
    )
    server.start()
    host, port = server.address
    print(f"autobahn_echo listening on ws://{host}:{port}{args.path}", flush=True)

    stop = gevent.event.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(sig, stop.set)
    stop.wait()
    server.stop(timeout=1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
