"""A command-line chat client for examples/chat, built on wscore's bundled client.

    python examples/chat/client.py ws://127.0.0.1:8080/ws --room lobby

Type a line to send it to the room; ``/quit`` leaves. Kill the network (or
the server's connection) and the client reconnects and resumes by itself:
messages sent to the room meanwhile arrive once, in order.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from gevent.fileobject import FileObjectThread

from wscore import WsError
from wscore.client import WsClient


def main() -> int:
    ap = argparse.ArgumentParser(description="wscore example chat client")
    ap.add_argument("url", nargs="?", default="ws://127.0.0.1:8080/ws")
    ap.add_argument("--room", default="lobby")
    ap.add_argument("--token", default=None)
    args = ap.parse_args()

    client = WsClient(args.url, token=args.token)

    @client.on("chat.new_message")
    def show(payload: Any) -> None:
        print(f"[{args.room}] {payload.get('sender')}: {payload.get('text')}", flush=True)

    client.on_disconnect(lambda info: client.closing or print("… connection lost, reconnecting",
                                                               flush=True))
    client.on_resume(lambda info: print("… resumed, nothing lost", flush=True))
    client.on_session_lost(lambda err: print(f"… session lost: {err}", flush=True))
    try:
        client.connect(timeout=10)
        client.request("room.join", {"roomId": args.room}, timeout=10)
    except (WsError, OSError) as exc:
        print(f"chat: cannot join {args.url}: {exc}", file=sys.stderr)
        client.close()
        return 1
    print(f"joined {args.room}; type to chat, /quit to leave", flush=True)
    stdin = FileObjectThread(sys.stdin, "r")
    try:
        for line in stdin:
            text = line.strip()
            if text == "/quit":
                break
            if text:
                client.send("chat.message", {"roomId": args.room, "text": text})
    except KeyboardInterrupt:
        pass
    finally:
        client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
