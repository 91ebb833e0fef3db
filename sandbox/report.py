"""The verdict and report of ``wscore sandbox run`` (pure: values in, text/JSON out).

Verdict policy (exit code 1 when it fails, 0 when it passes):

* **Always a breach**: every breach of the delivery-guarantee policy
  (:mod:`sandbox.guarantees`, shared with the load tests) — a delivery lost
  *silently* (not explained by a session loss the client reported), a
  duplicate, an out-of-order or corrupted delivery, a gap or a re-sent frame
  in the server's numbered stream, a request answered twice (seen, or
  inferred from ``unmatched_replies`` beyond the requests that gave up), with
  a wrong reply, or never answered and never failed — and, for a run: a
  client stopped for good, the app process dying during the run, the drain
  not finishing (the network was healed, yet not everything arrived in time).
* **Session losses** (the server refused a resume with 1006 and the client
  reported it) are honest — nothing was skipped silently — but they mean the
  session did not survive. Whether that is a failure depends on what the run
  expects: ``expect_session_loss`` (default: true for the ``ttl-exceeded``
  profile only). Not expected → every lost session is a failure, named with the
  deliveries it took along. Expected → the run passes only if at least one
  session was reported lost and every loss is explained by a reported
  session loss.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from wscore.sandbox.guarantees import Evidence, breaches
from wscore.sandbox.ledger import LedgerSummary, Percentiles
from wscore.sandbox.timeline import Timeline

__all__ = ["FaultSummary", "Report", "RunInfo", "Verdict", "judge"]


@attrs.frozen(kw_only=True)
class RunInfo:
    """How the run was set up and how it went (not judged by the ledger)."""

    app: str
    profile: str
    seed: int
    clients: int
    rooms: int
    duration_seconds: float
    rate_per_client: float
    rpc_ratio: float
    heartbeat_seconds: float  # what profiles were fitted to (see the runner)
    app_ping_interval: float
    app_ping_timeout: float
    app_session_ttl: float
    profile_params: Mapping[str, Any]
    expect_session_loss: bool
    drain_seconds: float
    drained: bool
    app_exit_code: int | None  # None: the app was still running at the end (good)
    wall_seconds: float
    client_counters: Mapping[str, int]  # summed WsClient.stats() counters
    #: Clients that stopped for good by themselves before the end, by close reason.
    clients_stopped: Mapping[str, int] = attrs.field(factory=dict)
    app_log: str | None = None  # the app's output (warnings and up), if it wrote any
    workload: str = "wscore.sandbox.chat_workload:ChatWorkload"  # MODULE:CLASS of what clients did
    drain_problem: str | None = None  # why the drain did not finish, in one line


@attrs.frozen(kw_only=True)
class FaultSummary:
    """Faults the proxy injected, with a timestamp-free digest of the fault log."""

    counts: Mapping[str, int]
    records: int
    #: sha256 of sandbox.runner.replay_key(log) (the faults that fired, timestamp-free):
    #: the same seed and traffic give the same digest.
    digest: str
    connections: int
    log: Sequence[Mapping[str, Any]] = ()

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@attrs.frozen
class Verdict:
    passed: bool
    breaches: tuple[str, ...]
    notes: tuple[str, ...]


def judge(ledger: LedgerSummary, run: RunInfo) -> Verdict:
    """Apply the module's verdict policy."""
    notes: list[str] = []

    def named(examples: Sequence[tuple[int, int, int]]) -> str:
        shown = ", ".join(f"{s}/{q}→{r}" for s, q, r in examples[:5])
        return f" (sender/seq→receiver: {shown})" if shown else ""

    counters = run.client_counters
    evidence = Evidence(
        lost=ledger.lost_silently, duplicated=ledger.duplicated, reordered=ledger.out_of_order,
        corrupted=ledger.corrupted, stream_gaps=counters.get("gaps", 0),
        stream_duplicates=counters.get("duplicates_dropped", 0),
        stray_replies=ledger.rpc_duplicate_replies + counters.get("stray_replies", 0),
        wrong_replies=ledger.rpc_wrong_reply, unanswered=ledger.rpc_unanswered)
    detail = {
        "lost": f"{ledger.lost_silently} deliveries lost silently"
                f"{named(ledger.silent_loss_examples)}",
        "duplicated": f"{ledger.duplicated} duplicate deliveries; a frame ran up to "
                      f"{ledger.max_handler_runs_per_frame} times"
                      f"{named(ledger.duplicate_examples)}",
        "reordered": f"{ledger.out_of_order} deliveries out of order"
                     f"{named(ledger.reorder_examples)}",
        "corrupted": f"{ledger.corrupted} corrupted or misrouted deliveries "
                     f"({'; '.join(ledger.corrupted_examples[:3])})",
        "stream_gaps": f"clients saw {evidence.stream_gaps} gaps in the server's numbered stream",
        "stream_duplicates": f"the server sent {evidence.stream_duplicates} frames again that "
                             "clients already had (dropped by the clients; a resume replays only "
                             "what follows last_seq)",
        "stray_replies": f"{evidence.stray_replies} replies no request accounts for (requests "
                         f"answered twice; {counters.get('unmatched_replies', 0)} unmatched "
                         f"replies, {counters.get('requests_given_up', 0)} requests gave up)",
        "wrong_replies": f"{ledger.rpc_wrong_reply} RPCs got a reply that is not theirs",
        "unanswered": f"{ledger.rpc_unanswered} RPCs never answered and never failed",
    }
    breaches_found = [detail[name] for name in breaches(evidence)]
    if run.clients_stopped:
        breaches_found.append(f"{sum(run.clients_stopped.values())} clients stopped for good before "
                        "the end: " + "; ".join(f"{reason} ×{n}"
                                                 for reason, n in run.clients_stopped.items()))
    if run.app_exit_code is not None:
        breaches_found.append(
            f"the app process died during the run (exit code {run.app_exit_code})")
    if not run.drained:
        breaches_found.append(f"not drained: the network was healed but the traffic did not "
                              f"settle within {run.drain_seconds:.1f} s"
                              + (f": {run.drain_problem}" if run.drain_problem else ""))

    lost_with = ledger.lost_with_session_loss
    if run.expect_session_loss:
        if ledger.sessions_lost == 0:
            breaches_found.append("expected sessions to be lost (outage longer than session_ttl) "
                            "but none was reported lost")
        else:
            notes.append(f"{ledger.sessions_lost} sessions lost as expected, reported to "
                         f"{ledger.clients_with_session_loss} clients; {lost_with} deliveries "
                         f"lost with them, none skipped silently"
                         if not ledger.lost_silently else
                         f"{ledger.sessions_lost} sessions lost as expected")
    elif ledger.sessions_lost:
        breaches_found.append(
            f"{ledger.sessions_lost} sessions lost on {ledger.clients_with_session_loss} clients "
            f"(resume refused, 1006): {ledger.lost_with_receiver_session_loss} deliveries lost with "
            f"the receivers' sessions, {ledger.lost_with_sender_session_loss} with the senders'; "
            f"{ledger.rpc_failed_session_lost} RPCs failed with 1006")
    if ledger.server_errors:
        notes.append("server errors not answering a request: " + ", ".join(
            f"{code} ×{n}" for code, n in ledger.server_errors.items()))
    if ledger.chat_refused_by_client or ledger.rpc_refused_by_client:
        notes.append(f"the client refused {ledger.chat_refused_by_client} sends and "
                     f"{ledger.rpc_refused_by_client} requests (buffer full or client closed); "
                     "not sent, not counted")
    if ledger.unrecovered_disconnects:
        notes.append(f"{ledger.unrecovered_disconnects} clients were disconnected at the end")
    return Verdict(not breaches_found, tuple(breaches_found), tuple(notes))


@attrs.frozen(kw_only=True)
class Report:
    """Everything ``sandbox run`` found; ``exit_code`` is 0 (passed) or 1 (a guarantee broke)."""

    run: RunInfo
    ledger: LedgerSummary
    faults: FaultSummary
    verdict: Verdict
    #: The run over time, for the HTML report (not part of the JSON report).
    timeline: Timeline | None = None

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    @property
    def exit_code(self) -> int:
        return 0 if self.verdict.passed else 1

    def to_dict(self, *, include_fault_log: bool = True) -> dict[str, Any]:
        faults = attrs.asdict(self.faults, recurse=True)
        faults["total"] = self.faults.total
        if not include_fault_log:
            faults.pop("log")
        else:
            faults["log"] = [dict(r) for r in self.faults.log]
        return {
            "passed": self.passed,
            "exit_code": self.exit_code,
            "verdict": {"breaches": list(self.verdict.breaches), "notes": list(self.verdict.notes)},
            "run": attrs.asdict(self.run, recurse=True),
            "ledger": self.ledger.to_dict(),
            "faults": faults,
        }

    def to_json(self, *, include_fault_log: bool = True) -> str:
        return json.dumps(self.to_dict(include_fault_log=include_fault_log), indent=2,
                          sort_keys=True, default=str)

    def format_text(self) -> str:
        """The plain-text report ``wscore sandbox run`` prints."""
        r, g, f = self.run, self.ledger, self.faults
        lines = [
            f"wscore sandbox run — app {r.app}, profile {r.profile}, seed {r.seed}",
            f"  workload {r.workload}",
            f"  {r.clients} clients in {r.rooms} rooms, {r.duration_seconds:g} s at "
            f"{r.rate_per_client:g} msg/s/client (RPC ratio {r.rpc_ratio:g}); "
            f"drain {r.drain_seconds:.1f} s; wall {r.wall_seconds:.1f} s; session loss "
            f"{'expected' if r.expect_session_loss else 'not expected'}",
            f"  app: ping_interval {r.app_ping_interval:g} s, ping_timeout {r.app_ping_timeout:g} s,"
            f" session_ttl {r.app_session_ttl:g} s → profile heartbeat {r.heartbeat_seconds:g} s",
            "",
        ]
        rows: list[tuple[str, str | None]] = [
            ("PUBLISHED MESSAGES", None),
            ("sent", f"{g.chat_sent}"),
            ("deliveries expected", f"{g.deliveries_expected}"),
            ("delivered", f"{g.delivered}"),
            ("lost silently (guarantee)", f"{g.lost_silently}"),
            ("lost with a reported session loss", f"{g.lost_with_session_loss}"
             + (f"  (receiver {g.lost_with_receiver_session_loss}, sender "
                f"{g.lost_with_sender_session_loss})" if g.lost_with_session_loss else "")),
            ("duplicated", f"{g.duplicated}"),
            ("out of order", f"{g.out_of_order}"),
            ("corrupted / misrouted", f"{g.corrupted}"),
            ("handler runs per client frame (max)", f"{g.max_handler_runs_per_frame}"),
            ("delivery latency p50 / p99 / max", _pct(g.delivery_latency_seconds)),
            ("RPCS", None),
            ("sent", f"{g.rpc_sent}"),
            ("answered", f"{g.rpc_answered}"),
            ("failed with an error", f"{g.rpc_failed}"
             + (f"  ({', '.join(f'{k} ×{v}' for k, v in g.rpc_failed_by_code.items())})"
                if g.rpc_failed else "")),
            ("never answered", f"{g.rpc_unanswered}"),
            ("wrong / duplicated replies", f"{g.rpc_wrong_reply} / {g.rpc_duplicate_replies}"),
            ("CONNECTIONS", None),
            ("disconnects", f"{g.disconnects}"),
            ("reconnects", f"{g.reconnects}"),
            ("resumes", f"{g.resumes}"),
            ("sessions lost", f"{g.sessions_lost}"
             + (f"  (on {g.clients_with_session_loss} clients)" if g.sessions_lost else "")),
            ("failed connection attempts", f"{r.client_counters.get('failed_attempts', 0)}"),
            ("recovery (disconnect → resumed) p50 / p99 / max", _pct(g.recovery_seconds)),
        ]
        if g.session_loss_recovery_seconds.count:
            rows.append(("new session after a loss p50 / p99 / max",
                         _pct(g.session_loss_recovery_seconds)))
        rows.append(("FAULTS INJECTED (proxy)", None))
        rows.append(("total", f"{f.total} over {f.connections} connections"))
        rows += [(name, f"{n}") for name, n in sorted(f.counts.items())]
        rows.append(("fault log digest (fired faults)", f"{f.digest[:16]} ({f.records} records)"))
        width = max(len(k) for k, _ in rows) + 2
        for key, value in rows:
            lines.append(key if value is None else f"  {key:<{width}}{value}")
        lines.append("")
        if self.verdict.passed:
            lines.append("VERDICT: PASS — no message lost silently, duplicated or reordered")
        else:
            lines.append("VERDICT: FAIL")
            lines += [f"  ✗ {b}" for b in self.verdict.breaches]
        lines += [f"  · {n}" for n in self.verdict.notes]
        if r.app_log:
            lines.append(f"  · app output: {r.app_log}")
        return "\n".join(lines)


def _pct(p: Percentiles) -> str:
    if not p.count:
        return "n/a"
    return f"{_ms(p.p50)} / {_ms(p.p99)} / {_ms(p.max)}  (n={p.count})"


def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"
