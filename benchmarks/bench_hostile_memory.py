"""Server memory under hostile-input attacks (issue 8): fragments, headers, replay, rooms.

    python benchmarks/bench_hostile_memory.py [--conns 10] [--src PATH]

Starts a dev server (``max_message_bytes`` 1 MiB) in its own process and
prints its RSS before and after each attack, as JSON lines:

* ``fragments``: each connection sends an almost-``max_message_bytes`` text
  message as 2-byte fragments and never sends the final one (the server must
  hold the partial message; it should cost about its size, not 30x it);
* ``headers``: each connection sends an upgrade request with ~5.4 MB of headers
  (90 lines of 60 KB, each under the per-line caps) and stays connected;
* ``slowloris``: 300 connections drip their upgrade request one byte a second
  (``handshake_timeout`` 3 s); prints how many are still open after 12 s;
* ``headers_under_cap``: 20x as many connections send 60 KB of headers (under
  the 64 KiB cap, so accepted) and stay connected with their sessions.

* ``unacked_replay``: each connection sends 300 echo requests of 100 KB,
  reads nothing, acknowledges nothing and drops its TCP connection: the
  session keeps its replay buffer for ``session_ttl`` (bounded by
  ``max_buffered_bytes`` since issue 8; before, by frame count only);
* ``rooms``: one client asks to join 9,000 distinct rooms (bounded by
  ``max_rooms_per_session`` since issue 8).

``--src`` runs the server from another checkout (e.g. an unfixed tree from
``git archive``) to measure "before" against "after".
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.procs import free_port, rss_kib, wait_until_up

_SERVER = """
import sys
from gevent import monkey; monkey.patch_all()
from wscore import WsServer, WsServerConfig
cfg = WsServerConfig.dev(host="127.0.0.1", port=int(sys.argv[1]), max_connections=100_000,
                         handshake_timeout=3.0)
server = WsServer(config=cfg)
server.on("echo", lambda ctx: ctx.payload)
def join(ctx):
    server.rooms.join(ctx.payload, ctx.session)
    return True
server.on("room.join", join)
server.serve_forever()
"""

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
ZERO_MASK = b"\0\0\0\0"  # a zero mask leaves the payload as is (the server unmasks anyway)


ATTACK_NAMES = ["fragments", "headers", "headers_under_cap", "slowloris", "unacked_replay", "rooms"]


def start_dev_server(port: int, src: str) -> subprocess.Popen[bytes]:
    """A dev-config wscore server in its own process, running the code under ``src``."""
    env = {**os.environ, "PYTHONPATH": src}
    proc = subprocess.Popen([sys.executable, "-c", _SERVER, str(port)], cwd=src, env=env)
    wait_until_up(proc, port)
    return proc


def upgrade(port: int, extra: bytes = b"") -> tuple[socket.socket, bytes, bytes]:
    """Connect and send an upgrade request; return the socket, the status line, what followed the head."""
    sock = socket.create_connection(("127.0.0.1", port))
    data = b""
    try:
        sock.sendall(UPGRADE + extra + b"\r\n")
    except OSError:
        pass  # refused before we finished sending: read the answer
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head.split(b"\r\n", 1)[0], rest


def frame(opcode: int, payload: bytes, *, fin: bool) -> bytes:
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + ZERO_MASK + payload


def settle(pid: int) -> int:
    time.sleep(1.5)  # let the server finish reading what was sent (a measurement, not a sync)
    return rss_kib(pid)


def attack_fragments(port: int, pid: int, conns: int, size: int) -> dict[str, object]:
    before = settle(pid)
    first = frame(0x1, b"ab", fin=False)
    rest = frame(0x0, b"ab", fin=False) * (size // 2 - 1)
    socks = []
    for _ in range(conns):
        sock, _, _ = upgrade(port)
        sock.sendall(first + rest)
        socks.append(sock)
    after = settle(pid)
    for sock in socks:
        sock.close()
    return {"attack": "fragments", "conns": conns, "message_bytes": size, "rss_before_kib": before,
            "rss_after_kib": after,
            "per_conn_kib": round((after - before) / conns), "per_conn_x_message":
            round((after - before) * 1024 / conns / size, 1)}


def attack_headers(port: int, pid: int, conns: int) -> dict[str, object]:
    before = settle(pid)
    extra = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 60_000) for i in range(90))
    socks = []
    statuses = set()
    for _ in range(conns):
        sock, status, _ = upgrade(port, extra)
        statuses.add(status.decode("latin-1"))
        socks.append(sock)
    after = settle(pid)
    for sock in socks:
        sock.close()
    return {"attack": "headers", "conns": conns, "header_bytes": len(extra),
            "responses": sorted(statuses), "rss_before_kib": before, "rss_after_kib": after,
            "per_conn_kib": round((after - before) / conns)}


def attack_slowloris(port: int, pid: int, conns: int, seconds: float = 12.0) -> dict[str, object]:
    """Connections dripping their upgrade request one byte a second (handshake_timeout is 3 s)."""
    request = UPGRADE + b"\r\n"
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(conns)]
    for sock in socks:
        sock.setblocking(False)
    open_ = set(range(conns))
    start = time.monotonic()
    sent = 0
    cut_at: list[float] = []
    while time.monotonic() - start < seconds and open_:
        for i in list(open_):
            try:
                if socks[i].recv(4096) is not None:  # an answer (408) or EOF: cut
                    open_.discard(i)
                    cut_at.append(time.monotonic() - start)
                    continue
            except BlockingIOError:
                pass
            except OSError:
                open_.discard(i)
                cut_at.append(time.monotonic() - start)
                continue
            try:
                socks[i].send(request[sent : sent + 1])
            except OSError:
                pass
        sent += 1
        time.sleep(1.0)  # the drip's pace
    for sock in socks:
        sock.close()
    return {"attack": "slowloris", "conns": conns, "handshake_timeout_s": 3.0,
            "bytes_dripped_each": sent, "still_open_after_s": {str(seconds): len(open_)},
            "cut_between_s": [round(min(cut_at), 1), round(max(cut_at), 1)] if cut_at else None}


def attack_headers_under_cap(port: int, pid: int, conns: int) -> dict[str, object]:
    """Headers just under the 64 KiB cap: accepted, but the session must not keep them."""
    before = settle(pid)
    socks = []
    statuses = set()
    for n in range(conns):
        # Distinct values per connection: nothing can be shared between sessions.
        extra = b"".join(b"X-Pad-%d: %s\r\n" % (i, (b"%08d" % n) * 625) for i in range(12))
        sock, status, _ = upgrade(port, extra)
        statuses.add(status.decode("latin-1"))
        socks.append(sock)
    after = settle(pid)
    for sock in socks:
        sock.close()
    return {"attack": "headers_under_cap", "conns": conns, "header_bytes": 12 * 5000,
            "responses": sorted(statuses), "rss_before_kib": before, "rss_after_kib": after,
            "per_conn_kib": round((after - before) / conns)}


def send_text(sock: socket.socket, text: str) -> None:
    payload = text.encode()
    n = len(payload)
    if n < 126:
        head = bytes([0x81, 0x80 | n])
    elif n < 65536:
        head = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    sock.sendall(head + ZERO_MASK + payload)


def attack_unacked_replay(port: int, pid: int, conns: int) -> dict[str, object]:
    before = settle(pid)
    pad = "r" * 100_000
    for _ in range(conns):
        sock, _, _ = upgrade(port)
        sock.settimeout(2.0)
        try:
            for i in range(300):
                send_text(sock, json.dumps({"v": "1.0", "e": "echo", "p": pad, "c": i}))
        except OSError:
            pass  # the server stopped reading (backpressure): what it took is what counts
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        sock.close()  # RST: the session is detached and keeps its replay for the TTL
    after = settle(pid)
    return {"attack": "unacked_replay", "conns": conns, "frame_bytes": len(pad),
            "rss_before_kib": before, "rss_after_kib": after,
            "per_session_kib": round((after - before) / conns)}


def attack_rooms(port: int, pid: int, rooms: int) -> dict[str, object]:
    before = settle(pid)
    sock, _, _ = upgrade(port)
    sock.settimeout(30)
    reader = sock.makefile("rb")
    acks = refused = 0
    for start in range(0, rooms, 200):  # in batches, reading the answers of each
        batch = range(start, min(start + 200, rooms))
        for i in batch:
            send_text(sock, json.dumps({"v": "1.0", "e": "room.join", "p": f"room-{i}", "c": i}))
        answered = 0
        while answered < len(batch):
            chunk = reader.read1(65536)
            if not chunk:
                break
            ok, no = chunk.count(b'"e":"ack"'), chunk.count(b'"code":1010')
            acks, refused, answered = acks + ok, refused + no, answered + ok + no
    after = settle(pid)
    sock.close()
    return {"attack": "rooms", "asked": rooms, "joined": acks, "refused_1010": refused,
            "rss_before_kib": before, "rss_after_kib": after,
            "delta_kib": after - before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conns", type=int, default=10)
    ap.add_argument("--src", default=ROOT, help="checkout whose wscore the server runs")
    ap.add_argument("--only", nargs="*", choices=ATTACK_NAMES, help="run only these attacks")
    args = ap.parse_args()
    attacks = [lambda port, pid: attack_fragments(port, pid, args.conns, (1 << 20) - 4096),
               lambda port, pid: attack_headers(port, pid, args.conns),
               lambda port, pid: attack_headers_under_cap(port, pid, args.conns * 20),
               lambda port, pid: attack_slowloris(port, pid, 300),
               lambda port, pid: attack_unacked_replay(port, pid, 3),
               lambda port, pid: attack_rooms(port, pid, 9000)]
    if args.only:
        attacks = [a for a, name in zip(attacks, ATTACK_NAMES, strict=True) if name in args.only]
    for attack in attacks:  # a fresh server each: freed memory is not returned to the OS
        port = free_port()
        server = start_dev_server(port, os.path.abspath(args.src))
        try:
            print(json.dumps(attack(port, server.pid)), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
