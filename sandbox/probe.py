"""The numbered-message probe: one text format and one order checker for every tool.

``wscore sandbox run`` and the load tests (``loadtests/``) both measure
delivery by sending *probe texts* — numbered messages a receiver can identify
and put in order without asking anyone — and both check their arrival with
:class:`OrderCheck`. The format (:data:`PROBE_TAG` ``1``)::

    wsprobe1 <sender> <seq> <prev> <sent_ns> <filler>

* ``sender``: a token naming the sender (no spaces): the client index in a
  sandbox run, a random hex id per locust user (users live in several processes);
* ``seq``: the sender's message number, 1, 2, 3 …;
* ``prev``: the number of the sender's previous message that was (or may have
  been) published — a message the server *refused* is skipped
  (:meth:`ProbeSender.refused`), so a receiver does not take a refusal for a
  loss; without refusals ``prev == seq - 1``;
* ``sent_ns``: the sender's wall-clock send time (``time.time_ns()``; wall clock
  because sender and receiver may be different processes on one host), for
  delivery latency;
* ``filler``: free text (may contain spaces) to vary the message size.

Pure: no clock (``sent_ns`` is passed in), no I/O.
"""

from __future__ import annotations

import enum

import attrs

__all__ = ["PROBE_TAG", "Arrival", "OrderCheck", "Probe", "ProbeSender", "parse_probe"]

#: The first word of every probe text (the format's version is in it).
PROBE_TAG = "wsprobe1"


@attrs.frozen
class Probe:
    """One probe message (see the module docstring for the fields)."""

    sender: str
    seq: int
    prev: int
    sent_ns: int
    filler: str = ""

    def text(self) -> str:
        return f"{PROBE_TAG} {self.sender} {self.seq} {self.prev} {self.sent_ns} {self.filler}"


def parse_probe(text: object) -> Probe | None:
    """The probe in ``text``, or None when ``text`` is not one (other chatter, garbage)."""
    if not isinstance(text, str) or not text.startswith(PROBE_TAG + " "):
        return None
    parts = text.split(" ", 5)
    if len(parts) != 6 or not parts[1] or not all(p.isdigit() for p in parts[2:5]):
        return None
    seq, prev, sent_ns = int(parts[2]), int(parts[3]), int(parts[4])
    if seq < 1 or prev >= seq:
        return None
    return Probe(parts[1], seq, prev, sent_ns, parts[5])


class ProbeSender:
    """Numbers one sender's probes (1, 2, 3 …) and chains each to the previous published one."""

    def __init__(self, sender: str) -> None:
        if not sender or " " in sender:
            raise ValueError(f"a probe sender is a token without spaces, got {sender!r}")
        self.sender = sender
        self.sent = 0
        self._prev = 0  # the last number that was or may have been published
        self._prev_before_last = 0

    def next(self, *, sent_ns: int, filler: str = "") -> Probe:
        """The next probe; it counts as published unless :meth:`refused` follows."""
        self.sent += 1
        probe = Probe(self.sender, self.sent, self._prev, sent_ns, filler)
        self._prev_before_last, self._prev = self._prev, self.sent
        return probe

    def refused(self) -> None:
        """The server refused the last probe (``sys.error``): it was not published.

        Not for a timeout (the frame stays queued and still runs once) nor a lost
        session (whether it ran is unknown; the session loss is reported itself).
        """
        self._prev = self._prev_before_last


class Arrival(enum.Enum):
    """How a probe arrived, relative to what its receiver had from the same sender."""

    FIRST = "first"  # the first probe of this sender seen (tracking starts here)
    IN_ORDER = "in_order"  # the next one after the last seen
    GAP = "gap"  # later than the next one: published probes in between are missing (so far)
    REPEAT = "repeat"  # seen already: a duplicate delivery
    REORDER = "reorder"  # one of the missing ones, arriving after a later one


@attrs.define
class _Stream:
    high: int
    holes: set[int] = attrs.Factory(set)


class OrderCheck:
    """Per receiver: every sender's probes in arrival order, judged one by one.

    ``from_start=True``: this receiver was there before anyone sent, so each
    sender's stream starts at 1 (a first probe numbered 5 is a gap: 1 … 4 are
    missing). ``False``: tracking starts at the first probe seen from each
    sender (a receiver that joined mid-stream). Memory: the numbers currently
    missing per sender, not everything received.
    """

    def __init__(self, *, from_start: bool) -> None:
        self._from_start = from_start
        self._streams: dict[str, _Stream] = {}

    def observe(self, probe: Probe) -> Arrival:
        stream = self._streams.get(probe.sender)
        if stream is None:
            if not self._from_start:
                self._streams[probe.sender] = _Stream(probe.seq)
                return Arrival.FIRST
            stream = self._streams[probe.sender] = _Stream(0)
        seq = probe.seq
        if seq <= stream.high:
            if seq in stream.holes:
                stream.holes.discard(seq)
                return Arrival.REORDER
            return Arrival.REPEAT
        skipped = probe.prev > stream.high
        if skipped:
            # Published probes after `high` and up to `prev` are missing; refused ones
            # (skipped by the chain) are not, and never arrive.
            stream.holes.update(range(stream.high + 1, seq))
        stream.high = seq
        return Arrival.GAP if skipped else Arrival.IN_ORDER
