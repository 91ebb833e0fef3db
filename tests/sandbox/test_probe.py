"""wscore.sandbox.probe: the one probe format and the one order checker."""

from __future__ import annotations

import pytest

from wscore.sandbox.probe import Arrival, OrderCheck, Probe, ProbeSender, parse_probe


def test_text_round_trip_keeps_a_filler_with_spaces() -> None:
    probe = Probe("a1b2", 12, 11, 1_700_000_000_123_456_789, "any / filler with spaces")
    assert parse_probe(probe.text()) == probe
    assert parse_probe(Probe("0", 1, 0, 5).text()) == Probe("0", 1, 0, 5, "")


@pytest.mark.parametrize("text", [None, 5, "", "hello", "wsprobe1", "wsprobe1 s 1 0 5",
                                  "wsprobe1 s x 0 5 f", "wsprobe1 s 0 0 5 f", "wsprobe1 s 2 2 5 f",
                                  "wsprobe1 s 1 -1 5 f", "wsprobe2 s 1 0 5 f",
                                  "wsprobe1  1 0 5 f"])
def test_foreign_texts_are_not_probes(text: object) -> None:
    assert parse_probe(text) is None


def test_sender_numbers_and_chains_and_skips_refusals() -> None:
    sender = ProbeSender("u")
    first, second = sender.next(sent_ns=1), sender.next(sent_ns=2)
    assert [(p.seq, p.prev) for p in (first, second)] == [(1, 0), (2, 1)]
    sender.next(sent_ns=3)
    sender.refused()  # #3 was never published
    assert (sender.next(sent_ns=4).prev, sender.sent) == (2, 4)
    with pytest.raises(ValueError):
        ProbeSender("two words")


def arrivals(check: OrderCheck, probes: list[Probe]) -> list[Arrival]:
    return [check.observe(p) for p in probes]


def test_order_check_from_the_first_probe_seen() -> None:
    sender = ProbeSender("s")
    p1, p2, p3 = (sender.next(sent_ns=0) for _ in range(3))
    sender.next(sent_ns=0)
    sender.refused()
    p5, p6, p7 = (sender.next(sent_ns=0) for _ in range(3))
    check = OrderCheck(from_start=False)
    assert arrivals(check, [p2, p3, p5, p7, p6, p6, p1]) == [
        Arrival.FIRST, Arrival.IN_ORDER,
        Arrival.IN_ORDER,  # #4 was refused: no gap
        Arrival.GAP, Arrival.REORDER, Arrival.REPEAT,
        Arrival.REPEAT,  # before tracking started: counted as seen (joined late)
    ]


def test_order_check_from_start_expects_every_stream_to_begin_at_one() -> None:
    sender = ProbeSender("s")
    p1, p2, p3 = (sender.next(sent_ns=0) for _ in range(3))
    check = OrderCheck(from_start=True)
    assert arrivals(check, [p3, p1, p2, p2]) == [Arrival.GAP, Arrival.REORDER, Arrival.REORDER,
                                                 Arrival.REPEAT]
    other = OrderCheck(from_start=True)
    assert arrivals(other, [p1, Probe("t", 1, 0, 0), p2]) == [Arrival.IN_ORDER] * 3
