"""The sandbox ledger and verdict, on hand-written timelines (no sockets, no clock)."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest

from wscore.sandbox.ledger import Ledger, LedgerSummary, content_digest, percentiles
from wscore.sandbox.probe import Probe
from wscore.sandbox.report import FaultSummary, Report, RunInfo, judge


def chat_text(sender: int, seq: int, filler: str) -> str:
    """The probe text the runner sends as message ``seq`` of client ``sender``."""
    return Probe(str(sender), seq, seq - 1, 1_700_000_000_000_000_000, filler).text()


def room_of_three() -> Ledger:
    ledger = Ledger()
    for client in (0, 1, 2):
        ledger.add_client(client, "r")
    return ledger


def send(ledger: Ledger, sender: int, seq: int, t: float, epoch: int = 0) -> str:
    text = chat_text(sender, seq, f"filler {sender}-{seq}")
    ledger.chat_sent(sender, seq, text, time=t, epoch=epoch)
    return text


def deliver(ledger: Ledger, text: str, receivers: tuple[int, ...], t: float) -> None:
    for receiver in receivers:
        ledger.chat_received(receiver, text, time=t)


def run_info(**overrides: Any) -> RunInfo:
    base: dict[str, Any] = dict(
        app="a:b", profile="clean", seed=1, clients=3, rooms=1, duration_seconds=1.0,
        rate_per_client=1.0, rpc_ratio=0.0, heartbeat_seconds=6.0, app_ping_interval=2.0,
        app_ping_timeout=6.0, app_session_ttl=20.0, profile_params={},
        expect_session_loss=False, drain_seconds=0.1, drained=True, app_exit_code=None,
        wall_seconds=2.0, client_counters={"gaps": 0})
    base.update(overrides)
    return RunInfo(**base)


# -- texts -------------------------------------------------------------------------------------

def test_content_digest_tells_texts_apart() -> None:
    text = chat_text(12, 345, "any / filler")
    assert content_digest(text) == content_digest(text) != content_digest(text + "x")


@pytest.mark.parametrize("text", [None, 5, "", "hello", "wsprobe1 ", "wsprobe1 x 1 0 5 f",
                                  chat_text(1, 1, "f").replace("wsprobe1", "wsprobe2")])
def test_foreign_texts_are_corrupted_receipts(text: object) -> None:
    ledger = room_of_three()
    ledger.chat_received(1, text, time=1.0)
    assert ledger.summarize().corrupted == 1


def test_percentiles_nearest_rank() -> None:
    p = percentiles([0.5, 0.1, 0.3, 0.2, 0.4])
    assert (p.count, p.p50, p.p99, p.max) == (5, 0.3, 0.5, 0.5)
    assert percentiles([]).p50 is None


# -- chat accounting ----------------------------------------------------------------------------

def test_everything_delivered_once_in_order() -> None:
    ledger = room_of_three()
    for seq in (1, 2, 3):
        deliver(ledger, send(ledger, 0, seq, t=seq), (1, 2), t=seq + 0.25)
    s = ledger.summarize()
    assert (s.chat_sent, s.deliveries_expected, s.delivered) == (3, 6, 6)
    assert (s.lost, s.duplicated, s.out_of_order, s.corrupted) == (0, 0, 0, 0)
    assert s.max_handler_runs_per_frame == 1
    assert s.delivery_latency_seconds.p99 == 0.25
    assert judge(s, run_info()).passed


def test_missing_delivery_is_a_silent_loss() -> None:
    ledger = room_of_three()
    texts = [send(ledger, 0, seq, t=seq) for seq in (1, 2, 3)]
    deliver(ledger, texts[0], (1, 2), t=1.1)
    deliver(ledger, texts[1], (2,), t=2.1)  # client 1 never gets 0/2
    deliver(ledger, texts[2], (1, 2), t=3.1)
    s = ledger.summarize()
    assert (s.lost_silently, s.lost_with_session_loss, s.delivered) == (1, 0, 5)
    assert s.silent_loss_examples == ((0, 2, 1),)
    verdict = judge(s, run_info())
    assert not verdict.passed
    assert "1 deliveries lost silently (sender/seq→receiver: 0/2→1)" in verdict.breaches[0]


def test_undelivered_tail_without_session_loss_is_silent() -> None:
    ledger = room_of_three()
    deliver(ledger, send(ledger, 0, 1, t=1), (1, 2), t=1.1)
    send(ledger, 0, 2, t=2)
    assert ledger.summarize().lost_silently == 2


def test_duplicate_delivery_counts_handler_runs() -> None:
    ledger = room_of_three()
    text = send(ledger, 0, 1, t=1)
    deliver(ledger, text, (1, 2), t=1.1)
    deliver(ledger, text, (1,), t=1.2)
    deliver(ledger, text, (1,), t=1.3)
    s = ledger.summarize()
    assert (s.duplicated, s.max_handler_runs_per_frame, s.frames_run_more_than_once) == (2, 3, 1)
    assert s.duplicate_examples[0] == (0, 1, 1)
    assert s.delivered == 2  # duplicates are not deliveries
    assert any("duplicate" in b for b in judge(s, run_info()).breaches)


def test_out_of_order_per_sender_per_receiver() -> None:
    ledger = room_of_three()
    a, b = send(ledger, 0, 1, t=1), send(ledger, 0, 2, t=2)
    c = send(ledger, 1, 1, t=1.5)
    deliver(ledger, b, (1,), t=2.1)
    deliver(ledger, a, (1,), t=2.2)  # reordered at client 1
    deliver(ledger, a, (2,), t=1.1)
    deliver(ledger, b, (2,), t=2.1)
    deliver(ledger, c, (2, 0), t=2.5)  # interleaving senders is not a reorder
    s = ledger.summarize()
    assert (s.out_of_order, s.reorder_examples) == (1, ((0, 1, 1),))
    assert s.lost == 0


def test_corrupted_unknown_and_misrouted_receipts() -> None:
    ledger = room_of_three()
    ledger.add_client(3, "other")
    text = send(ledger, 0, 1, t=1)
    ledger.chat_received(1, text[:-1] + "#", time=1.1)  # digest mismatch
    ledger.chat_received(1, chat_text(2, 9, "x"), time=1.1)  # never sent
    ledger.chat_received(1, {"not": "text"}, time=1.1)
    ledger.chat_received(3, text, time=1.1)  # client 3 is in another room
    deliver(ledger, text, (2,), t=1.1)
    s = ledger.summarize()
    assert s.corrupted == 4
    assert s.lost_silently == 1  # client 1 never got the genuine 0/1
    assert not judge(s, run_info()).passed


# -- session-loss attribution -------------------------------------------------------------------

def test_receiver_session_loss_explains_the_gap_until_it_rejoined() -> None:
    ledger = room_of_three()
    texts = {seq: send(ledger, 0, seq, t=seq) for seq in range(1, 8)}
    for seq in (1, 2):
        deliver(ledger, texts[seq], (1, 2), t=seq + 0.1)
    ledger.disconnected(1, time=2.5)
    ledger.session_lost(1, time=4.6)  # receiver 1's session is gone: 3, 4 never reach it
    ledger.connected(1, time=4.6, resumed=False)
    ledger.rejoined(1, time=4.8)
    for seq in (3, 4, 5, 6, 7):
        deliver(ledger, texts[seq], (2,), t=seq + 0.1)
    for seq in (6,):  # 5 (sent after the re-join) is missing: that is silent again
        deliver(ledger, texts[seq], (1,), t=seq + 0.1)
    s = ledger.summarize()
    assert s.lost_with_receiver_session_loss == 2  # 0/3, 0/4
    assert (s.lost_silently, s.silent_loss_examples) == (2, ((0, 5, 1), (0, 7, 1)))
    assert (s.sessions_lost, s.clients_with_session_loss) == (1, 1)
    assert s.session_loss_recovery_seconds.p50 == pytest.approx(2.1)
    assert s.recovery_seconds.count == 0


def test_receiver_loss_does_not_excuse_gaps_inside_one_session() -> None:
    ledger = room_of_three()
    texts = {seq: send(ledger, 0, seq, t=seq) for seq in range(1, 5)}
    deliver(ledger, texts[1], (1, 2), t=1.1)
    deliver(ledger, texts[3], (1, 2), t=3.1)  # 0/2 skipped *before* the loss
    deliver(ledger, texts[2], (2,), t=2.1)
    ledger.session_lost(1, time=3.5)
    ledger.rejoined(1, time=3.6)
    deliver(ledger, texts[4], (1, 2), t=4.1)
    s = ledger.summarize()
    assert (s.lost_silently, s.lost_with_session_loss) == (1, 0)


def test_sender_session_loss_explains_its_dropped_unacknowledged_tail() -> None:
    ledger = room_of_three()
    deliver(ledger, send(ledger, 0, 1, t=1), (1, 2), t=1.1)
    send(ledger, 0, 2, t=2)  # queued while offline, dropped with the lost session
    send(ledger, 0, 3, t=3)
    ledger.session_lost(0, time=4)
    deliver(ledger, send(ledger, 0, 4, t=5, epoch=1), (1, 2), t=5.1)
    s = ledger.summarize()
    assert (s.lost_with_sender_session_loss, s.lost_silently) == (4, 0)


def test_sender_loss_does_not_excuse_a_message_lost_before_a_later_delivery() -> None:
    ledger = room_of_three()
    deliver(ledger, send(ledger, 0, 1, t=1), (1, 2), t=1.1)
    send(ledger, 0, 2, t=2)  # lost although 0/3, of the same session, arrived
    deliver(ledger, send(ledger, 0, 3, t=3), (1, 2), t=3.1)
    ledger.session_lost(0, time=4)
    assert ledger.summarize().lost_silently == 2


# -- connections and rpc ------------------------------------------------------------------------

def test_connection_events_give_resumes_and_recovery_times() -> None:
    ledger = room_of_three()
    for client in (0, 1):
        ledger.connected(client, time=0.0, resumed=False)
    ledger.disconnected(0, time=1.0)
    ledger.connected(0, time=1.2, resumed=True)
    ledger.disconnected(0, time=2.0)
    ledger.connected(0, time=2.5, resumed=True)
    ledger.disconnected(1, time=3.0)  # never came back
    s = ledger.summarize()
    assert (s.disconnects, s.reconnects, s.resumes, s.unrecovered_disconnects) == (3, 2, 2, 1)
    assert (s.recovery_seconds.p50, s.recovery_seconds.max) == (pytest.approx(0.2), 0.5)


def test_rpc_outcomes() -> None:
    ledger = room_of_three()
    for rpc_id in range(1, 7):
        ledger.rpc_sent(0, rpc_id, time=rpc_id)
    ledger.rpc_answered(0, 1, time=1.1, correct=True)
    ledger.rpc_answered(0, 2, time=2.1, correct=True)
    ledger.rpc_answered(0, 2, time=2.2, correct=True)  # answered twice
    ledger.rpc_answered(0, 3, time=3.1, correct=False)
    ledger.rpc_failed(0, 4, time=4.1, code=1006, name="SESSION_NOT_FOUND")
    ledger.rpc_failed(0, 5, time=5.1, code=1010, name="RATE_LIMIT_EXCEEDED")
    ledger.rpc_refused(0)  # 6 stays unanswered
    s = ledger.summarize()
    assert (s.rpc_sent, s.rpc_answered, s.rpc_wrong_reply, s.rpc_duplicate_replies) == (6, 2, 1, 1)
    assert (s.rpc_failed, s.rpc_failed_session_lost, s.rpc_unanswered) == (2, 1, 1)
    assert s.rpc_failed_by_code == {"1006 SESSION_NOT_FOUND": 1, "1010 RATE_LIMIT_EXCEEDED": 1}
    breaches = " | ".join(judge(s, run_info()).breaches)
    assert "1 replies no request accounts for" in breaches
    assert "1 RPCs got a reply that is not theirs" in breaches
    assert "1 RPCs never answered and never failed" in breaches


# -- verdict policy -----------------------------------------------------------------------------

def lost_session_summary() -> LedgerSummary:
    ledger = room_of_three()
    deliver(ledger, send(ledger, 0, 1, t=1), (1, 2), t=1.1)
    send(ledger, 0, 2, t=2)
    ledger.session_lost(1, time=3)
    ledger.session_lost(2, time=3)
    ledger.rejoined(1, time=3.1)
    ledger.rejoined(2, time=3.1)
    return ledger.summarize()


def test_session_loss_fails_a_run_that_does_not_expect_it() -> None:
    s = lost_session_summary()
    assert (s.lost_silently, s.lost_with_receiver_session_loss) == (0, 2)
    verdict = judge(s, run_info())
    assert not verdict.passed
    assert verdict.breaches[0].startswith("2 sessions lost on 2 clients")


def test_session_loss_passes_when_expected_and_all_reported() -> None:
    verdict = judge(lost_session_summary(), run_info(expect_session_loss=True))
    assert verdict.passed, verdict
    assert "none skipped silently" in verdict.notes[0]


def test_expected_session_loss_that_never_happens_fails() -> None:
    ledger = room_of_three()
    deliver(ledger, send(ledger, 0, 1, t=1), (1, 2), t=1.1)
    verdict = judge(ledger.summarize(), run_info(expect_session_loss=True))
    assert not verdict.passed
    assert "none was reported lost" in verdict.breaches[0]


@pytest.mark.parametrize(("overrides", "needle"), [
    ({"drained": False}, "not drained"),
    ({"app_exit_code": -9}, "app process died"),
    ({"client_counters": {"gaps": 3}}, "3 gaps"),
])
def test_run_level_breaches(overrides: dict[str, Any], needle: str) -> None:
    ledger = room_of_three()
    verdict = judge(ledger.summarize(), run_info(**overrides))
    assert not verdict.passed
    assert needle in verdict.breaches[0]


def test_report_text_and_json() -> None:
    summary = lost_session_summary()
    run = run_info()
    faults = FaultSummary(counts={"reset_peer": 2}, records=2, digest="ab" * 32, connections=4,
                          log=[{"fault": "reset_peer"}])
    report = Report(run=run, ledger=summary, faults=faults, verdict=judge(summary, run))
    assert report.exit_code == 1
    text = report.format_text()
    assert "lost with a reported session loss" in text and "VERDICT: FAIL" in text
    data = json.loads(report.to_json())
    assert data["exit_code"] == 1 and data["ledger"]["lost"] == 2
    assert data["faults"]["total"] == 2 and data["faults"]["log"] == [{"fault": "reset_peer"}]
    assert "log" not in report.to_dict(include_fault_log=False)["faults"]
    assert set(data["ledger"]) >= {a.name for a in attrs.fields(LedgerSummary)}


def test_unmatched_replies_breach_only_beyond_the_requests_that_gave_up() -> None:
    s = room_of_three().summarize()
    late = {"unmatched_replies": 2, "requests_given_up": 2, "stray_replies": 0}
    assert judge(s, run_info(client_counters=late)).passed  # late replies to timed-out requests
    twice = {"unmatched_replies": 3, "requests_given_up": 2, "stray_replies": 1}
    verdict = judge(s, run_info(client_counters=twice))
    assert not verdict.passed
    assert any("1 replies no request accounts for" in b for b in verdict.breaches)


def test_a_frame_the_server_sent_twice_is_a_breach_even_though_the_client_dropped_it() -> None:
    verdict = judge(room_of_three().summarize(),
                    run_info(client_counters={"duplicates_dropped": 1}))
    assert [b for b in verdict.breaches if "frames again" in b]
