"""RFC 6455 codec: two peers wired back to back in memory, no sockets."""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from wscore.errors import MessageTooBig, PeerProtocolError
from wscore.protocol import frames as f

MASK = b"\x01\x02\x03\x04"


def client_frame(op: int, payload: bytes, *, fin: bool = True) -> bytes:
    return f.encode_frame(op, payload, fin=fin, mask_key=MASK)


def server() -> f.FrameDecoder:
    return f.FrameDecoder(role="server", max_message_bytes=1000)


def test_client_to_server_roundtrip_in_any_slicing() -> None:
    wire = client_frame(f.OP_TEXT, "héllo".encode()) + client_frame(f.OP_BINARY, b"\x00\xff")
    for step in (1, 2, 3, 7, len(wire)):
        dec = server()
        events: list[f.FrameEvent] = []
        for i in range(0, len(wire), step):
            events += dec.feed(wire[i : i + step])
        assert events == [f.TextMessage("héllo"), f.BinaryMessage(b"\x00\xff")]


def test_server_to_client_and_lengths() -> None:
    dec = f.FrameDecoder(role="client", max_message_bytes=1 << 20)
    for n in (0, 125, 126, 65535, 65536):
        payload = b"x" * n
        assert dec.feed(f.encode_frame(f.OP_BINARY, payload)) == [f.BinaryMessage(payload)]


def test_fragmented_text_with_interleaved_ping() -> None:
    dec = server()
    text = "€uro".encode()
    wire = (client_frame(f.OP_TEXT, text[:2], fin=False) + client_frame(f.OP_PING, b"p")
            + client_frame(f.OP_CONTINUATION, text[2:]))
    assert dec.feed(wire) == [f.PingReceived(b"p"), f.TextMessage("€uro")]


def test_size_limit_is_enforced_from_the_header() -> None:
    dec = f.FrameDecoder(role="server", max_message_bytes=10)
    header_only = client_frame(f.OP_TEXT, b"x" * 11)[:8]  # header + mask, no payload yet
    with pytest.raises(MessageTooBig) as info:
        dec.feed(header_only)
    assert info.value.close_code == 1009


def test_size_limit_counts_all_fragments() -> None:
    dec = f.FrameDecoder(role="server", max_message_bytes=10)
    dec.feed(client_frame(f.OP_TEXT, b"x" * 6, fin=False))
    with pytest.raises(MessageTooBig):
        dec.feed(client_frame(f.OP_CONTINUATION, b"x" * 6)[:8])


@pytest.mark.parametrize(
    ("wire", "close_code"),
    [
        (f.encode_frame(f.OP_TEXT, b"hi"), 1002),  # unmasked client frame
        (bytes([0x80 | 0x40 | f.OP_TEXT, 0x80]) + MASK, 1002),  # RSV1 without extension
        (client_frame(0x3, b""), 1002),  # reserved opcode
        (client_frame(f.OP_PING, b"x", fin=False), 1002),  # fragmented control
        (client_frame(f.OP_CONTINUATION, b"x"), 1002),  # continuation out of nowhere
        (client_frame(f.OP_TEXT, b"\xff\xfe"), 1007),  # invalid UTF-8
        (client_frame(f.OP_CLOSE, b"\x03"), 1002),  # 1-byte close body
        (client_frame(f.OP_CLOSE, struct.pack("!H", 1005)), 1002),  # reserved close code
    ],
)
def test_violations_name_their_close_code(wire: bytes, close_code: int) -> None:
    with pytest.raises(PeerProtocolError) as info:
        server().feed(wire)
    assert info.value.close_code == close_code


def test_invalid_utf8_fails_fast_on_first_fragment() -> None:
    dec = server()
    with pytest.raises(PeerProtocolError):
        dec.feed(client_frame(f.OP_TEXT, b"ok\xc0\xaf", fin=False))


def test_new_message_inside_fragmented_one_is_refused() -> None:
    dec = server()
    dec.feed(client_frame(f.OP_TEXT, b"a", fin=False))
    with pytest.raises(PeerProtocolError):
        dec.feed(client_frame(f.OP_TEXT, b"b"))


def test_close_frames_carry_code_and_reason() -> None:
    wire = f.encode_close(4003, "authRequired")
    assert wire[2:4] == struct.pack("!H", 4003)
    dec = f.FrameDecoder(role="client", max_message_bytes=100)
    assert dec.feed(wire) == [f.CloseReceived(4003, "authRequired")]
    assert f.FrameDecoder(role="client", max_message_bytes=1).feed(f.encode_close(None)) == [
        f.CloseReceived(None, "")
    ]


def test_close_reason_is_truncated_to_a_valid_control_frame() -> None:
    wire = f.encode_close(1000, "é" * 200)
    assert len(wire) <= 2 + 125
    (event,) = f.FrameDecoder(role="client", max_message_bytes=1000).feed(wire)
    assert isinstance(event, f.CloseReceived) and event.reason == "é" * 61


def test_accept_key_matches_rfc_example() -> None:
    # RFC 6455 §1.3
    assert f.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_mask_is_an_involution() -> None:
    data = bytes(range(256)) * 3
    assert f.mask_bytes(MASK, f.mask_bytes(MASK, data)) == data
    assert f.mask_bytes(MASK, b"") == b""


def test_events_before_a_violation_are_kept_by_feed_until_error() -> None:
    # RFC 6455 §7.1.7 fails the connection *at* the bad frame: what came before is still answered.
    dec = server()
    wire = client_frame(f.OP_TEXT, b"first") + client_frame(f.OP_PING, b"p") + client_frame(0x3, b"")
    events, error = dec.feed_until_error(wire)
    assert events == [f.TextMessage("first"), f.PingReceived(b"p")]
    assert error is not None and error.close_code == 1002 and dec.error is error
    # Broken for good: the same verdict again, whatever follows.
    assert dec.feed_until_error(client_frame(f.OP_TEXT, b"more")) == ([], error)
    with pytest.raises(PeerProtocolError) as info:
        dec.feed(b"")
    assert info.value is error
    with pytest.raises(PeerProtocolError):
        server().feed(wire)  # plain feed: raises, the earlier events are not returned


def test_invalid_utf8_fails_fast_inside_an_incomplete_frame() -> None:
    # Autobahn 6.4.3: the bad bytes arrive in the middle of one frame's payload.
    wire = client_frame(f.OP_TEXT, "κόσμε".encode() + b"\xf4\x90\x80\x80" + b"edited")
    dec = server()
    cut = 2 + 4 + len("κόσμε".encode())
    assert dec.feed(wire[:cut]) == []  # valid so far: wait for more
    with pytest.raises(PeerProtocolError) as info:
        dec.feed(wire[cut : cut + 4])  # the frame is still incomplete
    assert info.value.close_code == 1007


def test_text_split_inside_a_character_across_reads_and_fragments() -> None:
    text = "a€😀".encode()
    wire = client_frame(f.OP_TEXT, text[:2], fin=False) + client_frame(f.OP_CONTINUATION, text[2:])
    dec = server()
    events = [e for i in range(len(wire)) for e in dec.feed(wire[i : i + 1])]
    assert events == [f.TextMessage("a€😀")] and dec.buffered_bytes == 0


def _tiny_fragments(op: int, payload: bytes, size: int = 2) -> list[bytes]:
    """``payload`` as a message of ``size``-byte fragments (the last one has FIN)."""
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)]
    return [client_frame(op if i == 0 else f.OP_CONTINUATION, p, fin=i == len(pieces) - 1)
            for i, p in enumerate(pieces)]


@pytest.mark.parametrize(("op", "event"), [(f.OP_TEXT, f.TextMessage), (f.OP_BINARY, f.BinaryMessage)])
def test_a_message_in_tiny_fragments_costs_about_its_size(op: int, event: type) -> None:
    # Issue 8: 2-byte fragments used to cost ~34x the message (one object per fragment).
    size = 64 * 1024
    payload = (b"ab" if op == f.OP_TEXT else b"\x00\xff") * (size // 2)
    wire = _tiny_fragments(op, payload)
    dec = f.FrameDecoder(role="server", max_message_bytes=size)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        peak_held = 0
        for i in range(0, len(wire) - 1, 1000):  # many tiny frames per read, as a recv returns them
            assert dec.feed(b"".join(wire[i : min(i + 1000, len(wire) - 1)])) == []
            assert dec.buffered_bytes <= size + 64
            peak_held = max(peak_held, tracemalloc.get_traced_memory()[0] - base)
    finally:
        tracemalloc.stop()
    assert peak_held <= 1.5 * size + 16 * 1024, f"assembly held {peak_held} bytes for {size}"
    (done,) = dec.feed(wire[-1])
    assert done == event(payload.decode() if op == f.OP_TEXT else payload)
    assert dec.buffered_bytes == 0


def test_a_fragmented_message_past_the_limit_is_refused_before_its_fragment_is_kept() -> None:
    dec = f.FrameDecoder(role="server", max_message_bytes=100)
    wire = _tiny_fragments(f.OP_BINARY, b"x" * 200)
    with pytest.raises(MessageTooBig):
        for frame in wire:
            dec.feed(frame)
            assert dec.buffered_bytes <= 100
    assert dec.buffered_bytes == 0


def test_text_fragments_are_still_validated_as_they_arrive() -> None:
    dec = server()
    with pytest.raises(PeerProtocolError) as info:
        dec.feed(client_frame(f.OP_TEXT, b"ok", fin=False) + client_frame(f.OP_CONTINUATION, b"\xff",
                                                                           fin=False))
    assert info.value.close_code == 1007


def test_a_large_frame_arriving_in_pieces_inside_a_fragmented_message() -> None:
    dec = f.FrameDecoder(role="server", max_message_bytes=1 << 20)
    text = ("é" * 40_000).encode()
    wire = client_frame(f.OP_TEXT, text[:3], fin=False) + client_frame(f.OP_CONTINUATION, text[3:])
    events: list[f.FrameEvent] = []
    for i in range(0, len(wire), 4093):  # splits characters and the mask cycle
        events += dec.feed(wire[i : i + 4093])
    assert events == [f.TextMessage(text.decode())]


def test_small_fragments_are_counted_for_the_caller() -> None:
    dec = server()
    dec.feed(b"".join(_tiny_fragments(f.OP_TEXT, b"abcdef")))  # 3 fragments of 2 bytes
    dec.feed(client_frame(f.OP_TEXT, b"whole"))  # a single-frame message is not a fragment
    assert dec.small_fragments == 3
    big = f.FrameDecoder(role="server", max_message_bytes=1 << 20)
    big.feed(b"".join(_tiny_fragments(f.OP_BINARY, b"x" * 4096, size=f.SMALL_FRAGMENT_BYTES)))
    assert big.small_fragments == 0
