"""RFC 6455 framing, sans I/O.

:class:`FrameDecoder` takes the bytes read from a socket and returns complete
events; the ``encode_*`` functions return the bytes to write. Limits are
enforced from the frame *header*, before a payload is buffered (SPEC §4
``max_message_bytes``), and UTF-8 is validated incrementally as the bytes
arrive, even inside an incomplete frame, so a bad text message fails fast
(RFC 6455 §8.1).

The decoder is role-aware: a server requires masked client frames (§5.1) and a
client requires unmasked server frames. Masking keys for outgoing client frames
are passed in by the caller (the core draws no randomness).
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import struct
from typing import Literal

import attrs

from wscore.errors import MessageTooBig, PeerProtocolError

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONTINUATION",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "BinaryMessage",
    "CloseReceived",
    "FrameDecoder",
    "FrameEvent",
    "PingReceived",
    "PongReceived",
    "TextMessage",
    "accept_key",
    "encode_close",
    "encode_frame",
    "mask_bytes",
    "parse_close_payload",
]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

Role = Literal["server", "client"]

#: A fragment of a fragmented message whose payload is under this many bytes is
#: counted in :attr:`FrameDecoder.small_fragments`: decoding costs per frame, so
#: a stream of tiny fragments costs CPU out of proportion to its bytes.
SMALL_FRAGMENT_BYTES = 1024


@attrs.frozen
class TextMessage:
    """A complete, UTF-8-valid text message."""

    text: str


@attrs.frozen
class BinaryMessage:
    """A complete binary message."""

    data: bytes


@attrs.frozen
class PingReceived:
    payload: bytes


@attrs.frozen
class PongReceived:
    payload: bytes


@attrs.frozen
class CloseReceived:
    """The peer's close frame; ``code`` is None when it carried no status (RFC 6455 §7.1.5)."""

    code: int | None
    reason: str


FrameEvent = TextMessage | BinaryMessage | PingReceived | PongReceived | CloseReceived


def accept_key(client_key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    digest = hashlib.sha1(client_key.encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def mask_bytes(mask: bytes, payload: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` (RFC 6455 §5.3), at C speed.

    Python's big integers do the XOR in one call, which is ~100x faster than a
    per-byte loop (the hotspot of stock gevent-websocket).
    """
    n = len(payload)
    if not n:
        return b""
    key = (mask * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def encode_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask_key: bytes | None = None
) -> bytes:
    """One frame. Servers pass no ``mask_key``; clients must pass 4 random bytes."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    mask_bit = 0x80 if mask_key is not None else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 0x10000:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if mask_key is None:
        return header + payload
    return header + mask_key + mask_bytes(mask_key, payload)


def encode_close(code: int | None, reason: str = "", *, mask_key: bytes | None = None) -> bytes:
    """A close frame *with* its status code on the wire (RFC 6455 §5.5.1).

    The reason is truncated so the control frame stays within 125 bytes.
    """
    if code is None:
        return encode_frame(OP_CLOSE, b"", mask_key=mask_key)
    body = struct.pack("!H", code) + reason.encode("utf-8")[:123]
    # Truncation may have cut a multi-byte character: drop the broken tail.
    body = body[:2] + body[2:].decode("utf-8", "ignore").encode("utf-8")
    return encode_frame(OP_CLOSE, body, mask_key=mask_key)


def _close_code_is_valid(code: int) -> bool:
    # RFC 6455 §7.4.1/§7.4.2: 1004-1006 and 1015 must never be sent; 1012-1014
    # are registered by IANA since; 3000-4999 are for libraries/applications.
    if 1000 <= code <= 1014:
        return code not in (1004, 1005, 1006)
    return 3000 <= code <= 4999


def parse_close_payload(payload: bytes) -> CloseReceived:
    """Decode a close frame body; raise :class:`PeerProtocolError` if it is malformed."""
    if not payload:
        return CloseReceived(None, "")
    if len(payload) < 2:
        raise PeerProtocolError("close frame with a 1-byte body")
    (code,) = struct.unpack("!H", payload[:2])
    if not _close_code_is_valid(code):
        raise PeerProtocolError(f"invalid close code {code}")
    try:
        reason = payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise PeerProtocolError("close reason is not UTF-8", close_code=1007) from None
    return CloseReceived(code, reason)


class FrameDecoder:
    """Incremental RFC 6455 decoder: ``feed(bytes)`` → list of complete events.

    Raises :class:`PeerProtocolError` (or :class:`MessageTooBig`) on the first
    violation; the decoder is then unusable (every later call raises the same
    error) and the connection must be closed with the error's ``close_code``.
    :meth:`feed_until_error` is the variant for a server that wants to act on
    the events a peer sent *before* its violation (RFC 6455 §7.1.7 fails the
    connection at the violation, not earlier).

    Text is validated as it arrives, even inside an incomplete frame, so a
    message with invalid UTF-8 fails as soon as the bad bytes are read (RFC
    6455 §8.1 "fail fast"), not when its last fragment completes.
    """

    def __init__(self, *, role: Role, max_message_bytes: int) -> None:
        self._expect_mask = role == "server"
        self._max = max_message_bytes
        self._buf = bytearray()
        self._msg_opcode: int | None = None  # opcode of the fragmented message in progress
        # The payload of the message's completed frames, accumulated in place: a
        # message sent as many tiny fragments costs about its size, not one
        # Python object per fragment (issue 8 measured 34x with a list of parts).
        self._msg_buf = bytearray()
        # Text is validated as it arrives; the decoded pieces are discarded and
        # the message is decoded once, whole, from _msg_buf when it completes.
        self._utf8 = codecs.getincrementaldecoder("utf-8")()
        # The incomplete text frame at the head of the buffer: whether it has
        # been started (its header checked, the message state updated) and how
        # many of its payload bytes were already UTF-8-validated.
        self._head_started = False
        self._head_done = 0
        self._error: PeerProtocolError | None = None
        #: Frames of fragmented messages with a payload under :data:`SMALL_FRAGMENT_BYTES`
        #: decoded so far; the caller may reset it (e.g. to rate-limit them per connection).
        self.small_fragments = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held for incomplete frames and messages (for memory accounting).

        Bounded by ``max_message_bytes`` plus at most one ``feed`` of unparsed
        input: a data frame is refused from its header when it would take the
        message past the limit, before its payload is buffered.
        """
        return len(self._buf) + len(self._msg_buf)

    @property
    def error(self) -> PeerProtocolError | None:
        """The violation that ended this decoder, if any."""
        return self._error

    def feed(self, data: bytes) -> list[FrameEvent]:
        """Consume ``data``; return every event it completes, in order.

        Raises :class:`PeerProtocolError` at the first violation; events that
        preceded it in the same ``data`` are then lost (see :meth:`feed_until_error`).
        """
        events, error = self.feed_until_error(data)
        if error is not None:
            raise error
        return events

    def feed_until_error(self, data: bytes) -> tuple[list[FrameEvent], PeerProtocolError | None]:
        """Consume ``data``; return the events it completes and the violation that stopped it.

        Never raises :class:`PeerProtocolError`: the error is returned after
        the complete events that preceded it on the wire (so a server can
        still answer them, then close with ``error.close_code``). Once an error
        was returned, every later call returns ``([], error)``.
        """
        if self._error is not None:
            return [], self._error
        events: list[FrameEvent] = []
        try:
            self._decode(data, events)
        except PeerProtocolError as exc:
            self._error = exc
            # Drop what we held: the decoder is finished and must not pin memory.
            self._buf = bytearray()
            self._msg_buf = bytearray()
            return events, exc
        return events, None

    def _decode(self, data: bytes, events: list[FrameEvent]) -> None:
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        expect_mask = self._expect_mask
        try:
            while True:
                if end - pos < 2:
                    break
                b0 = buf[pos]
                b1 = buf[pos + 1]
                fin = b0 & 0x80
                opcode = b0 & 0x0F
                masked = b1 & 0x80
                length = b1 & 0x7F
                control = opcode & 0x08
                # A started head frame was checked when it was started: checking it
                # again would see its own message as "in progress" and refuse it.
                check = not (pos == 0 and self._head_started)
                # Fast path first (a text or binary frame outside a fragmented message,
                # the common case); _check_header names whatever else is wrong.
                if check and not (
                    (b0 & 0x7F) in (OP_TEXT, OP_BINARY) and self._msg_opcode is None
                    and bool(masked) == expect_mask
                ):
                    self._check_header(b0, b1)  # fail fast: 2 bytes are enough for most rules
                hdr = 2
                if length == 126:
                    if end - pos < 4:
                        break
                    (length,) = struct.unpack_from("!H", buf, pos + 2)
                    hdr = 4
                elif length == 127:
                    if end - pos < 10:
                        break
                    (length,) = struct.unpack_from("!Q", buf, pos + 2)
                    if length >> 63:
                        raise PeerProtocolError("64-bit length with the top bit set")
                    hdr = 10
                if check and not control:
                    # Enforce the size limit from the header, before buffering the payload (SPEC §4).
                    total = len(self._msg_buf) + length
                    if total > self._max:
                        raise MessageTooBig(total, self._max)
                if masked:
                    hdr += 4
                if end - pos < hdr + length:
                    # Incomplete: validate the text received so far (fail fast, §8.1).
                    avail = end - pos - hdr
                    if (
                        not control
                        and avail > self._head_done
                        and (opcode == OP_TEXT or (opcode == OP_CONTINUATION and self._msg_opcode == OP_TEXT))
                    ):
                        if not self._head_started:
                            self._start_data_frame(opcode)
                            self._head_started = True
                        chunk = self._payload(buf, pos, hdr, masked, self._head_done, avail)
                        self._head_done = avail
                        self._decode_text(chunk, final=False)
                    break
                if masked:
                    payload = mask_bytes(bytes(buf[pos + hdr - 4 : pos + hdr]),
                                         bytes(buf[pos + hdr : pos + hdr + length]))
                else:
                    payload = bytes(buf[pos + hdr : pos + hdr + length])
                pos += hdr + length
                if control:
                    if opcode == OP_PING:
                        events.append(PingReceived(payload))
                    elif opcode == OP_PONG:
                        events.append(PongReceived(payload))
                    else:  # OP_CLOSE: _check_header refused the reserved control opcodes
                        events.append(parse_close_payload(payload))
                    continue
                if fin and opcode and not self._head_started:
                    # A whole message in one frame: no incremental state to keep.
                    if opcode == OP_TEXT:
                        try:
                            events.append(TextMessage(payload.decode("utf-8")))
                        except UnicodeDecodeError:
                            raise PeerProtocolError(
                                "invalid UTF-8 in a text message", close_code=1007) from None
                    else:
                        events.append(BinaryMessage(payload))
                    continue
                if length < SMALL_FRAGMENT_BYTES:
                    self.small_fragments += 1
                if not self._head_started:
                    self._start_data_frame(opcode)
                validated = self._head_done
                self._head_started = False
                self._head_done = 0
                event = self._end_data_frame(bool(fin), payload, validated)
                if event is not None:
                    events.append(event)
        finally:
            if pos:
                del buf[:pos]

    def _check_header(self, b0: int, b1: int) -> None:
        """Refuse a frame from its first two bytes, before any payload is buffered."""
        opcode = b0 & 0x0F
        if b0 & 0x70:
            raise PeerProtocolError("reserved bits set without a negotiated extension")
        if bool(b1 & 0x80) != self._expect_mask:
            raise PeerProtocolError(
                "client frames must be masked" if self._expect_mask else "server frames must not be masked"
            )
        if opcode & 0x08:
            if opcode not in (OP_CLOSE, OP_PING, OP_PONG):
                raise PeerProtocolError(f"reserved control opcode {opcode:#x}")
            if not b0 & 0x80:
                raise PeerProtocolError("fragmented control frame")
            if b1 & 0x7F > 125:
                raise PeerProtocolError("control frame longer than 125 bytes")
        elif opcode not in (OP_CONTINUATION, OP_TEXT, OP_BINARY):
            raise PeerProtocolError(f"reserved opcode {opcode:#x}")
        elif opcode == OP_CONTINUATION:
            if self._msg_opcode is None:
                raise PeerProtocolError("continuation frame without a message in progress")
        elif self._msg_opcode is not None:
            raise PeerProtocolError("new data frame before the fragmented message ended")

    @staticmethod
    def _payload(buf: bytearray, pos: int, hdr: int, masked: int, start: int, stop: int) -> bytes:
        """Payload bytes ``[start, stop)`` of the frame at ``pos``, unmasked."""
        raw = bytes(buf[pos + hdr + start : pos + hdr + stop])
        if not masked:
            return raw
        mask = bytes(buf[pos + hdr - 4 : pos + hdr])
        # The mask cycles over the whole payload (§5.3): realign it for a slice.
        k = start & 3
        return mask_bytes(mask[k:] + mask[:k], raw)

    def _start_data_frame(self, opcode: int) -> None:
        if opcode != OP_CONTINUATION:
            self._msg_opcode = opcode
            self._utf8.reset()

    def _decode_text(self, chunk: bytes | memoryview, *, final: bool) -> None:
        """Validate the next ``chunk`` of the text message (the decoded text is not kept)."""
        try:
            self._utf8.decode(chunk, final)
        except UnicodeDecodeError:
            raise PeerProtocolError("invalid UTF-8 in a text message", close_code=1007) from None

    def _end_data_frame(self, fin: bool, payload: bytes, validated: int) -> FrameEvent | None:
        """Finish a data frame; its first ``validated`` payload bytes were already UTF-8-checked."""
        msg_opcode = self._msg_opcode
        if msg_opcode == OP_TEXT:
            self._decode_text(memoryview(payload)[validated:], final=fin)
        msg = self._msg_buf
        if not fin:
            msg += payload
            return None
        self._msg_opcode = None
        self._msg_buf = bytearray()
        whole: bytes | bytearray = payload  # one frame: no copy into the buffer
        if msg:
            msg += payload
            whole = msg
        if msg_opcode == OP_TEXT:
            # Already validated piece by piece, so this cannot fail.
            return TextMessage(whole.decode("utf-8"))
        return BinaryMessage(bytes(whole))
