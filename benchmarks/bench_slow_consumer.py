"""Server memory with one client that never reads while a room streams at it.

    python benchmarks/bench_slow_consumer.py --duration 60 --rate 200 --payload 1024

Starts ``benchmarks.bench_app`` in its own process, connects one *non-reading*
subscriber (tiny receive buffer) and N chatty subscribers that read, then
publishes ``--rate`` messages/s of ``--payload`` bytes into their room. Prints
the server's RSS every 5 s, and the bound implied by the configuration:
``max_queued_frames`` + ``max_buffered_messages`` frames of the slow session,
plus the kernel's socket send buffer.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

from gevent import monkey

monkey.patch_all()

import gevent

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0])
from benchmarks.bench_server import RawConn, free_port, healthz, rss_kib, start_server
from wscore.protocol import frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--payload", type=int, default=1024)
    ap.add_argument("--readers", type=int, default=50)
    args = ap.parse_args()

    port = free_port()
    server = start_server(port)
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        # Handshake by hand on the small-buffer socket, then never read again.
        sock.sendall(b"GET /ws HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        join = '{"v":"1.0","e":"room.join","p":{"roomId":"r1"},"c":"j"}'
        sock.sendall(frames.encode_frame(frames.OP_TEXT, join.encode(), mask_key=os.urandom(4)))

        readers = [RawConn(port) for _ in range(args.readers)]
        received = [0]

        def read(c: RawConn) -> None:
            c.send_text(join)
            try:
                while True:
                    c.recv_text()
                    received[0] += 1
            except (ConnectionError, OSError):
                pass

        workers = [gevent.spawn(read, c) for c in readers]
        publisher = RawConn(port)
        publisher.recv_text()
        pad = "x" * args.payload
        start = time.monotonic()
        base = rss_kib(server.pid)
        peak = base
        cut_at = None
        n = 0
        next_report = 5.0
        print(json.dumps({"t": 0, "rss_kib": base}))
        while (elapsed := time.monotonic() - start) < args.duration:
            n += 1
            publisher.send_text(f'{{"v":"1.0","e":"bench.publish","p":{{"roomId":"r1","n":{n},'
                                f'"pad":"{pad}"}}}}')
            target = start + n / args.rate
            gevent.sleep(max(0.0, target - time.monotonic()))  # pacing, not synchronisation
            if elapsed >= next_report:
                rss = rss_kib(server.pid)
                peak = max(peak, rss)
                conns = healthz(port)["connections"]
                if cut_at is None and conns < args.readers + 2:
                    cut_at = round(elapsed, 1)
                print(json.dumps({"t": round(elapsed), "rss_kib": rss, "connections": conns,
                                  "delivered_to_readers": received[0]}), flush=True)
                next_report += 5.0
        frame_kib = (args.payload + 120) / 1024
        print(json.dumps({
            "published": n, "rss_kib_start": base, "rss_kib_peak": peak,
            "slow_consumer_dropped_at_s": cut_at,
            "bound_kib_slow_session": round((1000 + 1000) * frame_kib),  # prod defaults
            "note": "bound = (max_queued_frames + max_buffered_messages) frames + kernel sndbuf",
        }))
        for w in workers:
            w.kill()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
