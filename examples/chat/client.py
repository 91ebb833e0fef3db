"""A command-line chat client for examples/chat, built on wscore's bundled client.

    python examples/chat/client.py ws://127.0.0.1:8080/ws --room lobby

Type a line to send it to the room; ``/quit`` (or Ctrl-C) leaves. Kill the
network (or the server's connection) and the client reconnects and resumes by
itself: messages sent to the room meanwhile arrive once, in order.

The room is joined in the ``on_connect`` hook whenever the session is new —
the first connection, and after a lost session (the server restarted without
persistence, or the client was away longer than the session TTL): a new
session is in no room, and the example server refuses a message to a room the
sender is not in. Each (re)join prints ``… joined ROOM (new session)``.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import gevent
from gevent.fileobject import FileObjectThread

from wscore import ConnectionClosed, SessionLost, WsError
from wscore.client import SessionInfo, WsClient


def main() -> int:
    ap = argparse.ArgumentParser(description="wscore example chat client")
    ap.add_argument("url", nargs="?", default="ws://127.0.0.1:8080/ws")
    ap.add_argument("--room", default="lobby")
    ap.add_argument("--token", default=None)
    args = ap.parse_args()

    client = WsClient(args.url, token=args.token)
    room = args.room

    @client.on("chat.new_message")
    def show(payload: Any) -> None:
        print(f"[{room}] {payload.get('sender')}: {payload.get('text')}", flush=True)

    @client.on("sys.error")  # errors that answer no request, e.g. a refused chat.message
    def refused(payload: Any) -> None:
        print(f"… refused: {payload.get('message')} ({payload.get('code')})", flush=True)

    @client.on_connect
    def join(info: SessionInfo) -> None:
        if info.resumed:
            return  # the session, its rooms and its missed messages carried over
        # A new session is in no room: (re)join. The request runs in the client's
        # dispatcher, so events that arrive meanwhile wait for it, in order.
        try:
            client.request("room.join", {"roomId": room}, timeout=10)
        except SessionLost:
            return  # lost again: the next new session's on_connect joins
        except (WsError, ConnectionClosed, TimeoutError) as exc:
            if not client.closing:
                print(f"… cannot join {room}: {exc}", flush=True)
            return
        print(f"… joined {room} (new session)", flush=True)

    client.on_disconnect(lambda info: client.closing or print("… connection lost, reconnecting",
                                                               flush=True))
    client.on_resume(lambda info: print("… resumed, nothing lost", flush=True))
    client.on_session_lost(lambda err: print(f"… session lost: {err.message}; re-joining",
                                             flush=True))
    try:
        client.connect(timeout=10)
    except (WsError, ConnectionClosed, OSError) as exc:  # TimeoutError is an OSError
        print(f"chat: cannot connect to {args.url}: {exc}", file=sys.stderr)
        client.close()
        return 1
    print(f"connected; type to chat in {room}, /quit to leave", flush=True)
    stdin = FileObjectThread(sys.stdin, "r")

    def chat() -> None:
        for line in stdin:
            text = line.strip()
            if text == "/quit":
                return
            if text:
                client.send("chat.message", {"roomId": room, "text": text})

    # Ctrl-C ends the chat like /quit; a gevent signal handler, so no KeyboardInterrupt
    # surfaces in whichever greenlet happens to run.
    typing = gevent.spawn(chat)
    sigint = gevent.signal_handler(signal.SIGINT, typing.kill, block=False)
    try:
        typing.join()
    finally:
        sigint.cancel()
        client.close()
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
