"""The delivery ledger of ``wscore sandbox run``: what was sent, what arrived, what broke.

Pure: no clock, no I/O, no gevent — every record carries the ``time`` the
runner observed (seconds, one monotonic clock for all clients, since the
runner drives every client in one process), so the ledger is unit-tested
with hand-written timelines.

Model (kept deliberately simple, see the runner): every client joins one
room before sending starts and never leaves; a chat message from ``sender``
is expected once by every *other* client of the sender's room; senders number
their messages 1, 2, 3 … (``seq``, the ledger's own counter, not the wire
``s``) and put ``(sender, seq)`` and a filler into the text, so every
receipt is identified and its content digest checked.

Session epochs. A client's *epoch* is the number of session losses it had
seen: ``chat_sent(epoch=…)`` takes the sender's count at the moment the frame
was handed to the client (``WsClient.stats().sessions_lost`` — the client
drops the unacknowledged frames of a lost session, so those frames belong to
the old epoch); a receiver's epoch is counted here from :meth:`Ledger.session_lost`
calls, which the runner makes from the client's callback stream, so they are
ordered exactly with the receipts.

Classification of a missing delivery of message *m* (sender S, receiver R):

1. **lost with R's reported session loss** — R lost its session at loss *k*,
   *m* lies strictly between the last ``seq`` from S that R received before
   loss *k* and the first it received after it (per-sender order makes the
   receipts a subsequence of S's stream), and *m* was sent no later than R
   re-joined its room after that loss (until then R was legitimately not a
   member);
2. **lost with S's reported session loss** — S lost the session *m* was sent
   in, and *m* comes after the last message of that epoch that reached
   anyone (the client dropped S's unacknowledged suffix, SPEC §3);
3. otherwise **lost silently** — a breach of the resume guarantee.

Also counted: duplicates and out-of-order receipts as
:class:`sandbox.probe.OrderCheck` tells them (``REPEAT``: the same
``(sender, seq)`` twice at one receiver — the handler ran more than once or a
replay was not de-duplicated; ``REORDER``: a ``seq`` arriving after a later
one of its sender), corrupted receipts (digest mismatch, unknown
``(sender, seq)``, unparseable text), and RPC outcomes. Which of it breaks a
guarantee is :mod:`sandbox.guarantees`' to say.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from wscore.sandbox.probe import Arrival, OrderCheck, Probe, parse_probe

__all__ = [
    "ChatSent",
    "Ledger",
    "LedgerSummary",
    "Percentiles",
    "content_digest",
    "percentiles",
]

#: How many example (sender, seq, receiver) triples a summary names per problem.
_EXAMPLES = 10


def _key(text: object) -> tuple[int, int, int] | None:
    """``(sender, seq, prev)`` of a sandbox probe text (the sender token is a client index)."""
    probe = parse_probe(text)
    if probe is None or not probe.sender.isdigit():
        return None
    return int(probe.sender), probe.seq, probe.prev


def content_digest(text: str) -> str:
    """A short content digest (SHA-256, 16 hex digits) of a chat text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@attrs.frozen
class Percentiles:
    """Nearest-rank percentiles of a sample (seconds); all None when empty."""

    count: int
    p50: float | None
    p99: float | None
    max: float | None


def percentiles(values: Iterable[float]) -> Percentiles:
    """p50/p99/max by the nearest-rank method (exact sample values, no interpolation)."""
    data = sorted(values)
    if not data:
        return Percentiles(0, None, None, None)

    def rank(p: float) -> float:
        return round(data[max(0, math.ceil(p / 100 * len(data)) - 1)], 6)

    return Percentiles(len(data), rank(50), rank(99), round(data[-1], 6))


@attrs.frozen
class ChatSent:
    """One chat message handed to a client: ``epoch`` = the sender's session losses so far."""

    sender: int
    seq: int
    room: str
    digest: str
    time: float
    epoch: int


@attrs.frozen
class _Receipt:
    receiver: int
    sender: int
    seq: int
    prev: int
    digest: str
    time: float
    epoch: int


@attrs.frozen(kw_only=True)
class LedgerSummary:
    """What :meth:`Ledger.summarize` found. Counts of deliveries unless named otherwise."""

    clients: int
    rooms: int
    # -- chat -------------------------------------------------------------------------------
    chat_sent: int
    chat_refused_by_client: int  # send() raised (e.g. SendBufferFull): never sent, caller told
    deliveries_expected: int
    delivered: int  # distinct (message, receiver) pairs that arrived
    lost_silently: int
    lost_with_receiver_session_loss: int
    lost_with_sender_session_loss: int
    duplicated: int
    out_of_order: int
    corrupted: int
    max_handler_runs_per_frame: int  # max copies of one message at one receiver (1 = exactly once)
    frames_run_more_than_once: int
    # -- rpc --------------------------------------------------------------------------------
    rpc_sent: int
    rpc_answered: int
    rpc_wrong_reply: int
    rpc_duplicate_replies: int
    rpc_failed: int  # answered with a WsError (any code)
    rpc_failed_session_lost: int  # of which 1006: the session was lost meanwhile
    rpc_failed_by_code: dict[str, int]
    rpc_unanswered: int  # neither a reply nor an error
    rpc_refused_by_client: int
    # -- connections ------------------------------------------------------------------------
    disconnects: int
    reconnects: int
    resumes: int
    sessions_lost: int
    clients_with_session_loss: int
    unrecovered_disconnects: int  # a link lost and no connect after it
    recovery_seconds: Percentiles  # disconnect → resumed
    session_loss_recovery_seconds: Percentiles  # disconnect → new session after a loss
    delivery_latency_seconds: Percentiles  # chat send → first receipt
    server_errors: dict[str, int]  # unsolicited sys.error by code
    # -- examples (for the report: the losses named) -----------------------------------------
    silent_loss_examples: tuple[tuple[int, int, int], ...]  # (sender, seq, receiver)
    duplicate_examples: tuple[tuple[int, int, int], ...]
    reorder_examples: tuple[tuple[int, int, int], ...]
    corrupted_examples: tuple[str, ...]

    @property
    def lost_with_session_loss(self) -> int:
        return self.lost_with_receiver_session_loss + self.lost_with_sender_session_loss

    @property
    def lost(self) -> int:
        return self.lost_silently + self.lost_with_session_loss

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=True)
        out["lost"] = self.lost
        out["lost_with_session_loss"] = self.lost_with_session_loss
        for key in ("silent_loss_examples", "duplicate_examples", "reorder_examples"):
            out[key] = [{"sender": s, "seq": q, "receiver": r} for s, q, r in out[key]]
        out["corrupted_examples"] = list(out["corrupted_examples"])
        return out


@attrs.define
class _Rpc:
    client: int
    sent_at: float
    replies: int = 0
    wrong: int = 0
    error_code: int | None = None
    error_name: str | None = None


@attrs.define
class _ClientLog:
    room: str
    losses: int = 0  # session losses seen in the callback stream (the receiver epoch)
    loss_times: list[float] = attrs.Factory(list)
    rejoin_times: list[float | None] = attrs.Factory(list)  # per loss: when the room was re-joined
    connects: int = 0
    resumes: int = 0
    disconnects: int = 0
    down_since: float | None = None
    lost_since_down: bool = False
    recoveries: list[float] = attrs.Factory(list)
    loss_recoveries: list[float] = attrs.Factory(list)


class Ledger:
    """Records a run's traffic and connection events; :meth:`summarize` judges it.

    Not thread-safe (one gevent hub). Recording methods never raise on odd
    input from the network: what does not parse is counted as corrupted.
    """

    _SESSION_LOST_CODE = 1006

    def __init__(self) -> None:
        self._clients: dict[int, _ClientLog] = {}
        self._sent: dict[tuple[int, int], ChatSent] = {}
        self._sent_order: dict[int, list[ChatSent]] = defaultdict(list)
        self._receipts: list[_Receipt] = []
        self._corrupted: list[str] = []
        self._chat_refused = 0
        self._rpcs: dict[tuple[int, int], _Rpc] = {}
        self._rpc_refused = 0
        self._server_errors: Counter[str] = Counter()
        # Live view (the progress line): order checked as receipts come in.
        self._live_checks: dict[int, OrderCheck] = defaultdict(lambda: OrderCheck(from_start=True))
        self._live_gaps = 0
        #: Connection events in time order: (time, client, "disconnect"|"resume"|"new_session"|
        #: "session_lost").
        self.events: list[tuple[float, int, str]] = []
        # Set by summarize(): what the timeline draws.
        self._delivery_points: list[tuple[float, float]] = []
        self._loss_points: list[tuple[float, int, int, int, bool]] = []

    # -- membership -------------------------------------------------------------------------
    def add_client(self, client: int, room: str) -> None:
        """Declare ``client`` and the room it joins before sending starts."""
        if client in self._clients:
            raise ValueError(f"client {client} already added")
        self._clients[client] = _ClientLog(room=room)

    def room_of(self, client: int) -> str:
        return self._clients[client].room

    def members(self, room: str) -> list[int]:
        return sorted(c for c, log in self._clients.items() if log.room == room)

    # -- chat -------------------------------------------------------------------------------
    def chat_sent(self, sender: int, seq: int, text: str, *, time: float, epoch: int) -> None:
        """``sender`` handed message ``seq`` (text ``text``) to its client in session ``epoch``."""
        if (sender, seq) in self._sent:
            raise ValueError(f"message {sender}/{seq} recorded twice")
        msg = ChatSent(sender, seq, self._clients[sender].room, content_digest(text), time, epoch)
        self._sent[(sender, seq)] = msg
        self._sent_order[sender].append(msg)

    def chat_refused(self, sender: int) -> None:
        """``send()`` raised: the message was never sent (the caller was told)."""
        self._chat_refused += 1

    def chat_received(self, receiver: int, text: object, *, time: float) -> None:
        """``receiver``'s ``chat.new_message`` callback got ``text``."""
        key = _key(text)
        if key is None:
            self._corrupted.append(f"client {receiver}: unparseable text {str(text)[:40]!r}")
            return
        assert isinstance(text, str)
        sent = self._sent.get(key[:2])
        digest = content_digest(text)
        if sent is None:
            self._corrupted.append(f"client {receiver}: unknown message {key[0]}/{key[1]}")
            return
        if sent.digest != digest:
            self._corrupted.append(f"client {receiver}: digest mismatch for {key[0]}/{key[1]}")
            return
        epoch = self._clients[receiver].losses
        self._receipts.append(_Receipt(receiver, key[0], key[1], key[2], digest, time, epoch))
        if self._live_checks[receiver].observe(Probe(str(key[0]), key[1], key[2], 0)) is Arrival.GAP:
            self._live_gaps += 1

    def delivery_malformed(self, receiver: int, text: object, problem: str) -> None:
        """``receiver`` got a delivery of probe ``text`` that its workload says is wrong
        (:meth:`~sandbox.workload.Workload.check_delivery`): a corrupted delivery."""
        key = _key(text)
        which = f"{key[0]}/{key[1]}" if key else repr(str(text)[:40])
        self._corrupted.append(f"client {receiver}: delivery of {which}: {problem}")

    # -- rpc --------------------------------------------------------------------------------
    def rpc_sent(self, client: int, rpc_id: int, *, time: float) -> None:
        self._rpcs[(client, rpc_id)] = _Rpc(client, time)

    def rpc_refused(self, client: int) -> None:
        """``request()`` raised before sending (e.g. SendBufferFull)."""
        self._rpc_refused += 1

    def rpc_answered(self, client: int, rpc_id: int, *, time: float, correct: bool) -> None:
        """A reply arrived; ``correct`` = it is the reply this request should get."""
        rpc = self._rpcs[(client, rpc_id)]
        rpc.replies += 1
        if not correct:
            rpc.wrong += 1

    def rpc_failed(self, client: int, rpc_id: int, *, time: float, code: int, name: str) -> None:
        """The request raised ``WsError(code)`` (1006: the session was lost meanwhile)."""
        rpc = self._rpcs[(client, rpc_id)]
        rpc.error_code, rpc.error_name = code, name

    def server_error(self, client: int, *, time: float, code: int, name: str) -> None:
        """An unsolicited ``sys.error`` (it answers no request) reached ``client``."""
        self._server_errors[f"{code} {name}"] += 1

    # -- connection events ------------------------------------------------------------------
    def connected(self, client: int, *, time: float, resumed: bool) -> None:
        log = self._clients[client]
        log.connects += 1
        if resumed:
            log.resumes += 1
        if log.connects > 1:
            self.events.append((time, client, "resume" if resumed else "new_session"))
        if log.down_since is not None:
            (log.recoveries if resumed else log.loss_recoveries).append(time - log.down_since)
            log.down_since = None

    def disconnected(self, client: int, *, time: float) -> None:
        log = self._clients[client]
        log.disconnects += 1
        log.down_since = time
        self.events.append((time, client, "disconnect"))

    def session_lost(self, client: int, *, time: float) -> None:
        """``on_session_lost`` ran: ``client``'s following receipts belong to a new epoch."""
        log = self._clients[client]
        log.losses += 1
        self.events.append((time, client, "session_lost"))
        log.loss_times.append(time)
        log.rejoin_times.append(None)

    def rejoined(self, client: int, *, time: float) -> None:
        """``client`` is a member of its room again after its latest session loss(es)."""
        log = self._clients[client]
        log.rejoin_times = [time if t is None else t for t in log.rejoin_times]

    # -- live view and timeline -------------------------------------------------------------
    def live_counts(self) -> dict[str, int]:
        """Counts so far, cheap (for a progress line): ``sent``, ``deliveries`` (receipts),
        ``gaps`` (receipts that skipped a sender's message), ``resumes``, ``sessions_lost``."""
        logs = self._clients.values()
        return {"sent": len(self._sent), "deliveries": len(self._receipts), "gaps": self._live_gaps,
                "resumes": sum(log.resumes for log in logs),
                "sessions_lost": sum(log.losses for log in logs)}

    def timeline_points(self) -> tuple[list[tuple[float, float]],
                                       list[tuple[float, int, int, int, bool]]]:
        """As of the last :meth:`summarize`: deliveries ``(receipt time, latency)`` and missing
        deliveries ``(send time, sender, seq, receiver, silent)``, in time order."""
        return sorted(self._delivery_points), sorted(self._loss_points)

    # -- judging ----------------------------------------------------------------------------
    def summarize(self) -> LedgerSummary:
        """Count and classify everything recorded so far (see the module docstring)."""
        copies: Counter[tuple[int, int, int]] = Counter()  # (receiver, sender, seq)
        first: dict[tuple[int, int, int], _Receipt] = {}
        by_pair: dict[tuple[int, int], list[_Receipt]] = defaultdict(list)
        duplicate_examples: list[tuple[int, int, int]] = []
        reorder_examples: list[tuple[int, int, int]] = []
        out_of_order = 0
        # Every client joined before anyone sent: each sender's stream starts at 1.
        checks: dict[int, OrderCheck] = defaultdict(lambda: OrderCheck(from_start=True))
        for rec in self._receipts:
            key = (rec.receiver, rec.sender, rec.seq)
            copies[key] += 1
            arrival = checks[rec.receiver].observe(Probe(str(rec.sender), rec.seq, rec.prev, 0))
            if arrival is Arrival.REPEAT:
                if len(duplicate_examples) < _EXAMPLES:
                    duplicate_examples.append((rec.sender, rec.seq, rec.receiver))
                continue
            first[key] = rec
            by_pair[(rec.receiver, rec.sender)].append(rec)
            if arrival is Arrival.REORDER:
                out_of_order += 1
                if len(reorder_examples) < _EXAMPLES:
                    reorder_examples.append((rec.sender, rec.seq, rec.receiver))
        duplicated = sum(n - 1 for n in copies.values())
        # Receipts by a receiver that is not in the sender's room are corrupted deliveries.
        corrupted = list(self._corrupted)
        for receiver, sender, seq in first:
            if self._clients[receiver].room != self._sent[(sender, seq)].room or receiver == sender:
                corrupted.append(f"client {receiver}: got {sender}/{seq} meant for another room")

        reached_anyone: set[tuple[int, int]] = {(s, q) for (_r, s, q) in first}
        sender_cut = self._sender_cutoffs(reached_anyone)

        expected = delivered = silent = by_receiver_loss = by_sender_loss = 0
        silent_examples: list[tuple[int, int, int]] = []
        latencies: list[float] = []
        points: list[tuple[float, float]] = []
        losses: list[tuple[float, int, int, int, bool]] = []
        for sender, msgs in self._sent_order.items():
            room = self._clients[sender].room
            receivers = [c for c in self.members(room) if c != sender]
            for receiver in receivers:
                pair = (receiver, sender)
                windows = self._loss_windows(receiver, by_pair.get(pair, []))
                for msg in msgs:
                    expected += 1
                    got = first.get((receiver, sender, msg.seq))
                    if got is not None:
                        delivered += 1
                        latencies.append(got.time - msg.time)
                        points.append((got.time, got.time - msg.time))
                        continue
                    if any(lo < msg.seq < hi and (rejoin is None or msg.time <= rejoin)
                           for lo, hi, rejoin in windows):
                        by_receiver_loss += 1
                    elif msg.epoch < len(sender_cut.get(sender, ())) and \
                            msg.seq > sender_cut[sender][msg.epoch]:
                        by_sender_loss += 1
                    else:
                        silent += 1
                        losses.append((msg.time, sender, msg.seq, receiver, True))
                        if len(silent_examples) < _EXAMPLES:
                            silent_examples.append((sender, msg.seq, receiver))
                        continue
                    losses.append((msg.time, sender, msg.seq, receiver, False))

        self._delivery_points, self._loss_points = points, losses
        rpcs = list(self._rpcs.values())
        failed = [r for r in rpcs if r.error_code is not None]
        failed_by_code = Counter(f"{r.error_code} {r.error_name}" for r in failed)
        logs = list(self._clients.values())
        return LedgerSummary(
            clients=len(self._clients),
            rooms=len({log.room for log in logs}),
            chat_sent=len(self._sent),
            chat_refused_by_client=self._chat_refused,
            deliveries_expected=expected,
            delivered=delivered,
            lost_silently=silent,
            lost_with_receiver_session_loss=by_receiver_loss,
            lost_with_sender_session_loss=by_sender_loss,
            duplicated=duplicated,
            out_of_order=out_of_order,
            corrupted=len(corrupted),
            max_handler_runs_per_frame=max(copies.values(), default=0),
            frames_run_more_than_once=len({(s, q) for (_r, s, q), n in copies.items() if n > 1}),
            rpc_sent=len(rpcs),
            rpc_answered=sum(1 for r in rpcs if r.replies and not r.wrong),
            rpc_wrong_reply=sum(1 for r in rpcs if r.wrong),
            rpc_duplicate_replies=sum(max(0, r.replies - 1) for r in rpcs),
            rpc_failed=len(failed),
            rpc_failed_session_lost=sum(1 for r in failed if r.error_code == self._SESSION_LOST_CODE),
            rpc_failed_by_code=dict(sorted(failed_by_code.items())),
            rpc_unanswered=sum(1 for r in rpcs if not r.replies and r.error_code is None),
            rpc_refused_by_client=self._rpc_refused,
            disconnects=sum(log.disconnects for log in logs),
            reconnects=sum(max(0, log.connects - 1) for log in logs),
            resumes=sum(log.resumes for log in logs),
            sessions_lost=sum(log.losses for log in logs),
            clients_with_session_loss=sum(1 for log in logs if log.losses),
            unrecovered_disconnects=sum(1 for log in logs if log.down_since is not None),
            recovery_seconds=percentiles(t for log in logs for t in log.recoveries),
            session_loss_recovery_seconds=percentiles(t for log in logs for t in log.loss_recoveries),
            delivery_latency_seconds=percentiles(latencies),
            server_errors=dict(sorted(self._server_errors.items())),
            silent_loss_examples=tuple(silent_examples),
            duplicate_examples=tuple(duplicate_examples),
            reorder_examples=tuple(reorder_examples),
            corrupted_examples=tuple(corrupted[:_EXAMPLES]),
        )

    def _loss_windows(self, receiver: int,
                      receipts: Sequence[_Receipt]) -> list[tuple[int, float, float | None]]:
        """Per session loss *k* of ``receiver``: (last seq before, first seq after, rejoin time)."""
        log = self._clients[receiver]
        windows: list[tuple[int, float, float | None]] = []
        for k in range(1, log.losses + 1):
            before = [r.seq for r in receipts if r.epoch < k]
            after = [r.seq for r in receipts if r.epoch >= k]
            windows.append((max(before, default=0), min(after, default=math.inf),
                            log.rejoin_times[k - 1]))
        return windows

    def _sender_cutoffs(self, reached: set[tuple[int, int]]) -> dict[int, list[int]]:
        """Per sender, per *lost* epoch: the last seq of that epoch that reached anyone."""
        cut: dict[int, list[int]] = {}
        for sender, log in self._clients.items():
            epochs = [0] * log.losses
            for msg in self._sent_order.get(sender, ()):
                if msg.epoch < log.losses and (sender, msg.seq) in reached:
                    epochs[msg.epoch] = max(epochs[msg.epoch], msg.seq)
            cut[sender] = epochs
        return cut
