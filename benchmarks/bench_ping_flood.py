"""Server CPU taken by one client flooding RFC 6455 pings or tiny fragments (issue 8).

    python benchmarks/bench_ping_flood.py [--duration 5] [--kind ping|fragments] [--src PATH]

Starts a dev server (``rate_limit`` 1000/s, ``rate_burst`` 2000) in its own
process; one client sends masked ping frames (``--kind fragments``: one
endless text message as 2-byte fragments) as fast as it can and reads
whatever comes back (pongs, a close). When the server closes the connection
the client reconnects and floods again, so the figure covers the whole run.
Prints one JSON line: server CPU seconds per wall second, pings sent, pongs
received, closes seen and their codes.

``--src`` runs the server from another checkout (e.g. an unfixed tree from
``git archive``) to measure "before" against "after".
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench_hostile_memory import ROOT, ZERO_MASK, free_port, start_dev_server, upgrade


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--kind", choices=("ping", "fragments"), default="ping")
    ap.add_argument("--src", default=ROOT, help="checkout whose wscore the server runs")
    args = ap.parse_args()
    port = free_port()
    server = start_dev_server(port, os.path.abspath(args.src))
    ping = bytes([0x89, 0x80 | 4]) + ZERO_MASK + b"ping"
    fragment = bytes([0x00, 0x80 | 2]) + ZERO_MASK + b"ab"  # continuation, not final
    burst = ping * 1000 if args.kind == "ping" else fragment * 1000
    first = b"" if args.kind == "ping" else bytes([0x01, 0x80 | 2]) + ZERO_MASK + b"ab"
    counts = {"frames": 0, "pongs": 0, "closes": 0}
    codes: dict[str, int] = {}
    try:
        time.sleep(0.5)
        cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
        end = t0 + args.duration
        while time.monotonic() < end:
            sock, _, rest = upgrade(port)
            done = threading.Event()

            def reader(sock: socket.socket = sock, done: threading.Event = done, buf: bytes = rest) -> None:
                try:
                    while chunk := sock.recv(65536):
                        buf += chunk
                        while len(buf) >= 2:
                            n, hdr = buf[1] & 0x7F, 2
                            if n >= 126:
                                hdr = 4 if n == 126 else 10
                                if len(buf) < hdr:
                                    break
                                n = int.from_bytes(buf[2:hdr], "big")
                            if len(buf) < hdr + n:
                                break
                            op, payload, buf = buf[0] & 0x0F, buf[hdr:hdr + n], buf[hdr + n:]
                            if op == 0xA:
                                counts["pongs"] += 1
                            elif op == 0x8:
                                code = str(struct.unpack("!H", payload[:2])[0]) if n >= 2 else "none"
                                codes[code] = codes.get(code, 0) + 1
                                counts["closes"] += 1
                except OSError:
                    pass
                finally:
                    done.set()

            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            try:
                sock.sendall(first)
                while time.monotonic() < end and not done.is_set():
                    sock.sendall(burst)
                    counts["frames"] += 1000
            except OSError:
                pass
            sock.close()
            done.wait(timeout=5)
        wall = time.monotonic() - t0
        cpu = cpu_seconds(server.pid) - cpu0
        print(json.dumps({"kind": args.kind, "duration_s": round(wall, 2),
                          "server_cpu_s_per_s": round(cpu / wall, 3), **counts, "close_codes": codes}))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
