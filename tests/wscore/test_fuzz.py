"""Hostile input (issue #4): property tests on the pure protocol core, then on a live server.

Deterministic: every property runs derandomized (a fixed sequence of examples
per test), with no deadline (timings of a loaded CI machine must not matter).
The live-server properties share one server for the module; they send one
frame at a time and wait for its answer, so no assertion depends on timing.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from typing import Any

import pykka
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from wshelpers import RawClient

from wscore import WsContext, WsError, WsServer, WsServerConfig
from wscore.errors import PeerProtocolError
from wscore.protocol import frames as f
from wscore.protocol.envelope import Envelope, decode_envelope

CORE = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
LIVE = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
MAX_MESSAGE = 4096

# -- strategies -----------------------------------------------------------------------------------------
# Text a WebSocket text frame can carry: any code point but lone surrogates.
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
json_scalars = (st.none() | st.booleans() | st.integers()
                | st.floats(allow_nan=False, allow_infinity=False) | texts)
json_values = st.recursive(
    json_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(texts, kids, max_size=4),
    max_leaves=12,
)
non_str_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
_MISSING = object()


@st.composite
def envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """Objects shaped like envelopes, each field valid (mostly), invalid or missing.

    Valid ones never use ``sys.*`` events (``sys.auth`` may close the connection)
    nor a valid ``s`` (a numbered frame may be dropped as a duplicate): every
    envelope drawn here is answered by exactly one frame.
    """

    def field(valid: st.SearchStrategy[Any], invalid: st.SearchStrategy[Any]) -> Any:
        kind = draw(st.integers(0, 9))
        return draw(valid) if kind < 6 else draw(invalid) if kind < 9 else _MISSING

    obj = {
        "v": field(st.sampled_from(["1.0", "1.7", "1"]), st.sampled_from(["2.0", "", "x", 1.0, None, [1]])),
        "e": field(st.sampled_from(["echo", "echo", "no.such.event"]) | texts.filter(bool),
                   non_str_scalars | st.just("")),
        "p": field(st.fixed_dictionaries({"text": texts}), json_values),
        "c": field(texts.filter(lambda c: not c.startswith("final"))
                   | st.integers(min_value=-(2**53), max_value=2**53),
                   st.booleans() | st.lists(st.integers(), max_size=2)),
        "t": field(st.integers(min_value=0), texts | st.booleans()),
        # A valid "s" is never drawn (see above); only missing or invalid ones.
        "s": field(st.just(_MISSING), st.integers(max_value=0) | st.booleans() | texts | non_str_scalars),
    }
    obj = {k: v for k, v in obj.items() if v is not _MISSING}
    if isinstance(obj.get("e"), str) and obj["e"].startswith("sys."):
        obj["e"] = "x" + obj["e"]
    return obj


def _answerable_text(text: str) -> bool:
    """False for text the live server may rightly leave unanswered (see envelopes())."""
    try:
        env = decode_envelope(text)
    except WsError:
        return True
    return not env.is_system and env.seq is None


wire_texts = (st.builds(json.dumps, envelopes())
              | st.builds(json.dumps, json_values)
              | texts).filter(_answerable_text)


def slicings(data_len: int) -> st.SearchStrategy[list[int]]:
    """Sorted cut points in ``0..data_len``: how the bytes are split into reads."""
    if data_len == 0:
        return st.just([])
    return st.lists(st.integers(min_value=0, max_value=data_len), max_size=12).map(sorted)


def chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in [*cuts, len(data)]:
        yield data[start:cut]
        start = cut


# -- the pure core: FrameDecoder ---------------------------------------------------------------------------
def feed_in_chunks(decoder: f.FrameDecoder, data: bytes, cuts: list[int]
                   ) -> tuple[list[f.FrameEvent], PeerProtocolError | None]:
    """Events until the first violation, and the violation; any other exception escapes."""
    events: list[f.FrameEvent] = []
    for chunk in chunks(data, cuts):
        got, error = decoder.feed_until_error(chunk)
        events += got
        if error is not None:
            # Once broken, the decoder keeps refusing, with the same error.
            with pytest.raises(PeerProtocolError) as again:
                decoder.feed(b"\x81\x80\x00\x00\x00\x00")
            assert again.value is error
            return events, error
    return events, None


def feed_raising(decoder: f.FrameDecoder, data: bytes, cuts: list[int]) -> PeerProtocolError | None:
    """``feed`` chunk by chunk: it may raise PeerProtocolError and nothing else."""
    try:
        for chunk in chunks(data, cuts):
            decoder.feed(chunk)
    except PeerProtocolError as exc:
        return exc
    return None


def verdict(error: PeerProtocolError | None) -> tuple[type, int] | None:
    return None if error is None else (type(error), error.close_code)


def decoder_for(role: str, max_message_bytes: int = 300) -> f.FrameDecoder:
    return f.FrameDecoder(role=role, max_message_bytes=max_message_bytes)  # type: ignore[arg-type]


def check_any_slicing(role: str, data: bytes, cuts: list[int]) -> PeerProtocolError | None:
    """Feed ``data`` sliced at ``cuts``, both ways; return the violation, if any.

    ``feed`` raises PeerProtocolError or nothing; ``feed_until_error`` gives the
    same verdict, and neither its events nor its verdict depend on the slicing.
    """
    events, error = feed_in_chunks(decoder_for(role), data, cuts)
    assert verdict(feed_raising(decoder_for(role), data, cuts)) == verdict(error)
    whole_events, whole_error = decoder_for(role).feed_until_error(data)
    assert whole_events == events
    assert verdict(whole_error) == verdict(error)
    return error


@CORE
@given(data=st.binary(max_size=600), role=st.sampled_from(["server", "client"]), cut_data=st.data())
def test_decoder_on_random_bytes_only_ever_raises_peer_protocol_error(
    data: bytes, role: str, cut_data: st.DataObject
) -> None:
    error = check_any_slicing(role, data, cut_data.draw(slicings(len(data))))
    if error is not None:
        assert error.close_code in (1002, 1007, 1009)


@st.composite
def raw_frames(draw: st.DrawFn, *, client_like: bool = False) -> bytes:
    """Frames with plausible headers and hostile details: any opcode, RSV bits, fin,
    masking, payloads valid or not, truncated frames, headers announcing huge lengths.

    ``client_like`` frames are always masked and mostly well-formed, so the
    violations that remain are the subtle ones (bad UTF-8, close codes, sizes,
    fragmentation order) rather than a missing mask.
    """
    out = b""
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        fin = draw(st.booleans())
        rsv = draw(st.sampled_from([0] * (12 if client_like else 3) + [0x10, 0x20, 0x40]))
        opcode = draw(st.sampled_from([0, 0, 1, 1, 2, 8, 9, 10, 3, 0xB]))
        if opcode == 1 and draw(st.booleans()):
            payload = draw(texts).encode()
            cut = draw(st.integers(min_value=0, max_value=len(payload)))
            payload = payload[:cut]  # may end inside a character
        elif opcode == 8 and draw(st.booleans()):
            payload = struct.pack("!H", draw(st.integers(0, 65535))) + draw(st.binary(max_size=10))
        else:
            payload = draw(st.binary(max_size=140))
        random_mask = st.binary(min_size=4, max_size=4)
        mask = draw(random_mask if client_like else st.sampled_from([None, b"\0\0\0\0"]) | random_mask)
        if draw(st.integers(0, 9)) == 0:
            # A header that announces more than any limit (64-bit length, maybe with the top bit).
            length = draw(st.integers(min_value=MAX_MESSAGE + 1, max_value=2**64 - 1))
            head = bytes([0x80 * fin | rsv | opcode, 0x80 * (mask is not None) | 127])
            out += head + struct.pack("!Q", length) + (mask or b"")
            continue
        frame = bytearray(f.encode_frame(opcode, payload, fin=fin, mask_key=mask))
        frame[0] |= rsv
        if draw(st.integers(0, 9)) == 0:
            frame = frame[: draw(st.integers(0, len(frame)))]  # truncated
        out += bytes(frame)
    return out


@CORE
@given(wire=raw_frames(), role=st.sampled_from(["server", "client"]), cut_data=st.data())
def test_decoder_on_hostile_frames_only_ever_raises_peer_protocol_error(
    wire: bytes, role: str, cut_data: st.DataObject
) -> None:
    check_any_slicing(role, wire, cut_data.draw(slicings(len(wire))))


messages = st.lists(  # (is_text, payload)
    st.one_of(texts.map(lambda t: (True, t.encode())), st.binary(max_size=300).map(lambda b: (False, b))),
    max_size=6,
)


@st.composite
def encoded_stream(draw: st.DrawFn, *, masked: bool) -> tuple[bytes, list[f.FrameEvent]]:
    """Messages fragmented at random points (text may split inside a character),
    pings interleaved between fragments, each frame masked with a random key."""
    wire = b""
    expected: list[f.FrameEvent] = []

    def mask() -> bytes | None:
        return draw(st.binary(min_size=4, max_size=4)) if masked else None

    for is_text, payload in draw(messages):
        cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
        parts = list(chunks(payload, cuts))
        for i, part in enumerate(parts):
            opcode = (f.OP_TEXT if is_text else f.OP_BINARY) if i == 0 else f.OP_CONTINUATION
            wire += f.encode_frame(opcode, part, fin=i == len(parts) - 1, mask_key=mask())
            if i < len(parts) - 1 and draw(st.booleans()):
                ping = draw(st.binary(max_size=125))
                wire += f.encode_frame(f.OP_PING, ping, mask_key=mask())
                expected.append(f.PingReceived(ping))
        expected.append(f.TextMessage(payload.decode()) if is_text else f.BinaryMessage(payload))
    return wire, expected


@CORE
@given(stream=encoded_stream(masked=True), cut_data=st.data())
def test_client_frames_round_trip_under_any_slicing(
    stream: tuple[bytes, list[f.FrameEvent]], cut_data: st.DataObject
) -> None:
    wire, expected = stream
    decoder = f.FrameDecoder(role="server", max_message_bytes=MAX_MESSAGE)
    events, error = feed_in_chunks(decoder, wire, cut_data.draw(slicings(len(wire))))
    assert error is None
    assert events == expected
    assert decoder.buffered_bytes == 0


@CORE
@given(stream=encoded_stream(masked=False), cut_data=st.data())
def test_server_frames_round_trip_under_any_slicing(
    stream: tuple[bytes, list[f.FrameEvent]], cut_data: st.DataObject
) -> None:
    wire, expected = stream
    decoder = f.FrameDecoder(role="client", max_message_bytes=MAX_MESSAGE)
    assert feed_in_chunks(decoder, wire, cut_data.draw(slicings(len(wire)))) == (expected, None)


# -- the pure core: decode_envelope -----------------------------------------------------------------------
def check_decode(text: str | bytes) -> Envelope | WsError:
    try:
        return decode_envelope(text)
    except WsError as err:
        assert err.code == 1001, err
        return err


@CORE
@given(text=st.text(max_size=200) | st.builds(json.dumps, json_values) | st.builds(json.dumps, envelopes()))
def test_decode_envelope_returns_an_envelope_or_a_1001(text: str) -> None:
    result = check_decode(text)
    if isinstance(result, Envelope):
        assert isinstance(result.event, str) and result.event
        assert result.seq is None or (isinstance(result.seq, int) and result.seq >= 1)


@CORE
@given(data=st.binary(max_size=200))
def test_decode_envelope_on_random_bytes_returns_an_envelope_or_a_1001(data: bytes) -> None:
    check_decode(data)


@pytest.mark.parametrize("text", ["[" * 100_000, '{"a":' * 100_000, "1e999999", '"\\ud800"', "\x00"])
def test_decode_envelope_on_pathological_json(text: str) -> None:
    check_decode(text)


# -- a live server ------------------------------------------------------------------------------
ECHO_SCHEMA = {"text": lambda v: isinstance(v, str)}


@pytest.fixture(autouse=True)
def _no_actor_leaks() -> Iterator[None]:
    """Overrides the root fixture of that name: here one server (and its actors)
    serves the whole module; ``live_server`` stops them all at the end."""
    yield


@pytest.fixture(scope="module")
def live_server() -> Iterator[WsServer]:
    config = WsServerConfig.dev(host="127.0.0.1", port=0, max_message_bytes=MAX_MESSAGE)
    server = WsServer(config=config)

    @server.on("echo", schema=ECHO_SCHEMA)
    def echo(ctx: WsContext) -> Any:
        return {"ok": True}  # not the payload: any JSON a client sent must not be needed back

    server.start()
    yield server
    server.stop()
    pykka.ActorRegistry.stop_all(block=True, timeout=5)


@pytest.fixture
def client(live_server: WsServer) -> Iterator[RawClient]:
    peer = RawClient(live_server.url)
    assert peer.recv()["e"] == "sys.connected"
    yield peer
    peer.close()


def expected_answer(text: str) -> tuple[str, int | None, Any]:
    """What the live server must answer to ``text``: (event, error code, correlation id)."""
    try:
        env = decode_envelope(text)
    except WsError as err:
        return "sys.error", 1001, getattr(err, "correlation_id", None)
    if env.event != "echo":
        return "sys.error", 1008, env.correlation_id
    payload = env.payload
    if isinstance(payload, dict) and isinstance(payload.get("text"), str):
        return "ack", None, env.correlation_id
    return "sys.error", 1009, env.correlation_id


def same_json_number(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b)
    return bool(a == b)


def test_live_server_answers_every_hostile_text_frame_and_stays_open(client: RawClient) -> None:
    counts: dict[int | str, int] = {}

    @LIVE
    @given(text=wire_texts)
    def one_frame(text: str) -> None:
        event, code, c = expected_answer(text)
        client.send_raw(text)
        answer = client.recv()
        assert answer["e"] == event, (text, answer)
        assert answer["v"] == "1.0" and isinstance(answer["t"], int)
        if code is not None:
            assert answer["p"]["code"] == code, (text, answer)
        assert same_json_number(answer.get("c"), c), (text, answer)
        counts[code or "ack"] = counts.get(code or "ack", 0) + 1

    one_frame()
    # The connection is still open and serves normal requests, with nothing left unread.
    reply = client.request("echo", {"text": "still here"}, c="final")
    assert reply["e"] == "ack" and reply["p"] == {"ok": True}
    assert client.skipped == []
    assert counts.get(1001, 0) > 0 and counts.get(1008, 0) + counts.get(1009, 0) > 0


def test_live_server_refuses_binary_frames_but_stays_open(client: RawClient) -> None:
    @LIVE
    @given(data=st.binary(max_size=200))
    def one_frame(data: bytes) -> None:
        client.ws.send_binary(data)
        answer = client.recv()
        assert answer["e"] == "sys.error" and answer["p"]["code"] == 1001

    one_frame()
    assert client.request("echo", {"text": "ok"}, c="final")["e"] == "ack"


@st.composite
def oversized_frames(draw: st.DrawFn) -> bytes:
    """A masked data frame header announcing more than ``max_message_bytes`` (close 1009)."""
    length = draw(st.integers(min_value=MAX_MESSAGE + 1, max_value=2**63 - 1))
    opcode = draw(st.sampled_from([f.OP_TEXT, f.OP_BINARY]))
    size = (struct.pack("!BH", 0x80 | 126, length) if length < 0x10000
            else struct.pack("!BQ", 0x80 | 127, length))
    return bytes([0x80 | opcode]) + size + draw(st.binary(min_size=4, max_size=4))


def expected_close(data: bytes) -> tuple[bool, int | None]:
    """Whether the server must close on ``data``, and the status code of its close frame.

    Computed by the same pure decoder the server runs: a close frame among the
    peer's complete frames is echoed (RFC 6455 §5.5.1, None: no status code);
    otherwise the first violation names the code.
    """
    events, error = f.FrameDecoder(role="server", max_message_bytes=MAX_MESSAGE).feed_until_error(data)
    for event in events:
        if isinstance(event, f.CloseReceived):
            return True, event.code
    return (False, None) if error is None else (True, error.close_code)


def test_live_server_closes_on_random_bytes_and_others_are_unaffected(live_server: WsServer) -> None:
    bystander = RawClient(live_server.url)
    assert bystander.recv()["e"] == "sys.connected"
    codes: dict[int | None, int] = {}

    @LIVE
    @given(data=raw_frames(client_like=True) | oversized_frames() | st.binary(min_size=1, max_size=2048))
    def one_connection(data: bytes) -> None:
        closes, expected = expected_close(data)
        # Bytes that are a valid (possibly incomplete) frame stream do not end the
        # connection: the server would wait for more. Only hostile streams count here.
        assume(closes)
        victim = RawClient(live_server.url)
        try:
            assert victim.recv()["e"] == "sys.connected"
            victim.ws.sock.sendall(data)
            code = victim.recv_close()
            assert code == expected, (data[:16], code, expected)
            codes[expected] = codes.get(expected, 0) + 1
        finally:
            victim.close()
        assert bystander.request("echo", {"text": "unaffected"})["e"] == "ack"

    one_connection()
    assert codes.get(1002, 0) > 0
    assert bystander.request("echo", {"text": "still fine"}, c="final")["e"] == "ack"
    bystander.close()
