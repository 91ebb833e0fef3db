"""wscore.http_reader on a real socket pair: heads and bodies come out whole however the bytes arrive."""

from __future__ import annotations

import socket
import time

import gevent
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wscore.http_reader import (
    MIN_BODY_RATE,
    BodyStalled,
    ConnectionReader,
    HeadAbandoned,
    HeadTimedOut,
    HeadTooLarge,
)

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    return ours, theirs


def send_in_pieces(sock: socket.socket, data: bytes, cuts: list[int]) -> gevent.Greenlet:
    """Send ``data`` cut at ``cuts`` (positions), one piece per send, yielding between them."""
    def run() -> None:
        last = 0
        for cut in [*sorted(set(c for c in cuts if 0 < c < len(data))), len(data)]:
            sock.sendall(data[last:cut])
            last = cut
            gevent.sleep(0)  # another greenlet's turn: the reader sees the pieces apart
    return gevent.spawn(run)


@PROPERTY
@given(bodies=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
       cuts=st.lists(st.integers(0, 2000), max_size=12))
def test_pipelined_requests_split_anywhere_read_back_exactly(bodies: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(b"POST /%d HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (i, len(b), b)
                      for i, b in enumerate(bodies))
    ours, theirs = pair()
    sender = send_in_pieces(theirs, stream, cuts)
    reader = ConnectionReader(ours)
    deadline = time.monotonic() + 10
    for i, body in enumerate(bodies):
        head = reader.read_head(deadline=deadline, max_line=8192, max_header_bytes=65536)
        assert head == b"POST /%d HTTP/1.1\r\nContent-Length: %d" % (i, len(body))
        reader.start_body(grace=5.0)
        assert reader.read(len(body)) == body
        reader.end_body()
    sender.join()
    theirs.close()
    with pytest.raises(HeadAbandoned):
        reader.read_head(deadline=deadline, max_line=8192, max_header_bytes=65536)
    assert reader.closed
    ours.close()


@PROPERTY
@given(lines=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=6),
       cuts=st.lists(st.integers(0, 400), max_size=8))
def test_readline_returns_each_line_with_its_newline(lines: list[bytes], cuts: list[int]) -> None:
    data = b"".join(line + b"\n" for line in lines) + b"tail"
    ours, theirs = pair()
    sender = send_in_pieces(theirs, data, cuts)
    reader = ConnectionReader(ours)
    reader.start_body(grace=5.0)
    got = [reader.readline() for _ in lines]
    assert got == [line + b"\n" for line in lines]
    sender.join()
    theirs.close()
    assert reader.readline() == b"tail" and reader.readline() == b""
    ours.close()


def test_a_head_over_its_bounds_is_refused_before_it_ends() -> None:
    ours, theirs = pair()
    theirs.sendall(b"GET /" + b"a" * 100)
    with pytest.raises(HeadTooLarge) as too_long:
        ConnectionReader(ours).read_head(deadline=time.monotonic() + 5, max_line=64, max_header_bytes=1024)
    assert too_long.value.status.startswith("414")
    ours2, theirs2 = pair()
    theirs2.sendall(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200)
    with pytest.raises(HeadTooLarge) as too_big:
        ConnectionReader(ours2).read_head(deadline=time.monotonic() + 5, max_line=64, max_header_bytes=512)
    assert too_big.value.status.startswith("431")
    for s in (ours, theirs, ours2, theirs2):
        s.close()


def test_a_partial_head_times_out_and_silence_is_abandoned() -> None:
    ours, theirs = pair()
    theirs.sendall(b"GET / HT")
    with pytest.raises(HeadTimedOut):
        ConnectionReader(ours).read_head(deadline=time.monotonic() + 0.2, max_line=64, max_header_bytes=512)
    quiet, other = pair()
    with pytest.raises(HeadAbandoned):
        ConnectionReader(quiet).read_head(deadline=time.monotonic() + 0.2, max_line=64, max_header_bytes=512)
    for s in (ours, theirs, quiet, other):
        s.close()


def test_a_body_below_the_minimum_rate_stalls_after_its_grace() -> None:
    ours, theirs = pair()
    theirs.sendall(b"x" * 10)  # then nothing: far below MIN_BODY_RATE
    reader = ConnectionReader(ours)
    reader.start_body(grace=0.3)
    started = time.monotonic()
    with pytest.raises(BodyStalled):
        reader.read(1000)
    # Due at grace + (bytes so far + 1) / rate: just over the grace.
    assert 0.3 <= time.monotonic() - started < 0.3 + 11 / MIN_BODY_RATE + 2.0
    assert reader.closed
    ours.close()
    theirs.close()
