"""``sandbox run`` end to end: a real app process, the proxy, bundled clients, the ledger.

Assertions are on guarantees and on seeded fault decisions, never on timings.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from wscore import sandbox
from wscore.client import WsClientConfig
from wscore.sandbox import cli
from wscore.sandbox.report import Report
from wscore.sandbox.runner import AppConfig, ScenarioError, fit_profile_params

HERE = pathlib.Path(__file__).resolve().parent
TEST_APPS = {"PYTHONPATH": str(HERE)}  # sbx_apps.py lives next to this file
FAST_APP = "examples.chat_fast.app:server"

pytestmark = pytest.mark.timeout(90)


def assert_guarantees_held(report: Report) -> None:
    g = report.ledger
    assert report.passed, report.format_text()
    assert (g.lost, g.duplicated, g.out_of_order, g.corrupted) == (0, 0, 0, 0)
    assert g.delivered == g.deliveries_expected > 0
    assert g.max_handler_runs_per_frame == 1
    assert g.rpc_answered == g.rpc_sent and g.rpc_unanswered == 0
    assert g.sessions_lost == 0


def test_clean_run_through_the_cli_writes_json(tmp_path: pathlib.Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    code = cli.main(["run", "--app", FAST_APP, "--profile", "clean", "--clients", "4",
                     "--duration", "2", "--seed", "3", "--rate", "4", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "VERDICT: PASS" in printed and "lost silently (guarantee)" in printed
    data: dict[str, Any] = json.loads(out.read_text())
    assert data["passed"] is True and data["exit_code"] == 0
    ledger = data["ledger"]
    assert ledger["lost"] == ledger["duplicated"] == ledger["out_of_order"] == 0
    assert ledger["delivered"] == ledger["deliveries_expected"] > 0
    assert data["faults"]["total"] == 0 and data["run"]["drained"] is True


def test_chaos_run_resumes_and_keeps_every_guarantee() -> None:
    report = sandbox.run_scenario(app=FAST_APP, profile="chaos", clients=6, duration=5,
                                  seed=11, rate=3, reset_every_seconds=1.0)
    assert_guarantees_held(report)
    # reset_every_seconds=1: every connection is reset 0.5–1.5 s after the faults start.
    assert report.faults.counts.get("reset_peer", 0) >= 6
    assert report.ledger.resumes >= 6
    assert report.ledger.recovery_seconds.count == report.ledger.resumes


def test_same_seed_same_fired_faults() -> None:
    def run() -> Report:
        return sandbox.run_scenario(app=FAST_APP, profile="flaky-mobile", clients=4, duration=3,
                                    seed=21, reset_every_seconds=1.0)

    first, second = run(), run()
    assert first.faults.counts.get("reset_peer", 0) >= 4
    assert first.faults.digest == second.faults.digest, (first.faults.log, second.faults.log)


def test_ttl_exceeded_reports_lost_sessions_and_passes() -> None:
    report = sandbox.run_scenario(app="sbx_apps:short_ttl", profile="ttl-exceeded", clients=4,
                                  duration=7, seed=5, partition_after_seconds=0.5,
                                  app_env=TEST_APPS)
    g = report.ledger
    assert report.passed, report.format_text()
    assert report.run.expect_session_loss
    assert g.sessions_lost >= 1 and g.lost_silently == 0
    assert g.lost_with_session_loss > 0
    assert (g.duplicated, g.out_of_order, g.rpc_unanswered) == (0, 0, 0)


def test_broken_resume_app_fails_with_the_losses_named() -> None:
    report = sandbox.run_scenario(app="examples.broken_resume.app:server", profile="flaky-mobile",
                                  clients=4, duration=4, seed=7, reset_every_seconds=1.0)
    g = report.ledger
    assert report.exit_code == 1
    assert g.sessions_lost >= 4 and g.resumes == 0
    assert g.lost_silently == 0  # the server reports the losses: they are named, not silent
    assert g.lost_with_session_loss > 0
    assert any(f"{g.sessions_lost} sessions lost" in b for b in report.verdict.breaches)
    assert "VERDICT: FAIL" in report.format_text()


@pytest.mark.parametrize(("argv", "needle"), [
    (["run", "--profile", "clean"], "--app"),
    (["run", "--app", FAST_APP, "--profile", "nope"], "invalid choice"),
    (["run", "--app", FAST_APP, "--profile", "clean", "--clients", "0"], "positive integer"),
    (["run", "--app", FAST_APP, "--profile", "clean", "--rpc-ratio", "2"], "[0, 1]"),
    (["run", "--app", FAST_APP, "--profile", "clean", "--clients", "1"], "at least 2"),
    (["run", "--app", FAST_APP, "--profile", "clean", "--json", "/nonexistent/dir/r.json"],
     "cannot write --json"),
    (["run", "--app", "no_such_module:server", "--profile", "clean"], "no_such_module"),
    (["run", "--app", "examples.chat.app:nothing", "--profile", "clean"], "no attribute"),
    (["run", "--app", "examples.chat.app:server", "--profile", "partition", "--duration", "60"],
     "needs --duration >="),
])
def test_usage_errors_are_one_line_exit_2(argv: list[str], needle: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("wscore sandbox: error:") and "\n" not in err
    assert needle in err


def test_profiles_are_fitted_to_the_app() -> None:
    fast = AppConfig(path="/ws", ping_interval=2.0, ping_timeout=6.0, session_ttl=20.0)
    assert fast.heartbeat_seconds == 6.0
    params = fit_profile_params("partition", fast, duration=40)
    assert fast.heartbeat_seconds < params.resolved_partition_seconds() < fast.session_ttl
    with pytest.raises(ScenarioError, match="needs --duration >= 42 s"):
        fit_profile_params("ttl-exceeded", fast, duration=30)
    tight = AppConfig(path="/ws", ping_interval=2.0, ping_timeout=6.0, session_ttl=5.0)
    with pytest.raises(ScenarioError, match="does not fit"):
        fit_profile_params("partition", tight, duration=60)


#: Clients that give up on a connection attempt after 1 s: during a partition of
#: several seconds each leaves abandoned attempts that the network delivers later.
ABANDONING_CLIENTS = WsClientConfig(backoff_base=0.1, backoff_cap=0.5, open_timeout=1.0,
                                    connect_timeout=15.0)


def test_partition_longer_than_the_heartbeat_loses_nothing() -> None:
    # Regression: attempts held by the partition and delivered after it healed used
    # to take the session over from the live reconnect (close 4000, client stopped).
    report = sandbox.run_scenario(app="sbx_apps:short_heartbeat", profile="partition", clients=20,
                                  duration=8, seed=7, partition_after_seconds=0.5,
                                  app_env=TEST_APPS, client_config=ABANDONING_CLIENTS)
    assert report.passed, report.format_text()
    assert_guarantees_held(report)
    assert report.ledger.resumes >= 20 and report.ledger.sessions_lost == 0


def test_an_app_without_the_workloads_events_is_a_one_line_exit_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # Regression: the drain's barrier retried the 1008 at once, spinning a core for the
    # whole drain timeout, then said only "not drained".
    monkeypatch.setenv("PYTHONPATH", str(HERE))
    assert cli.main(["run", "--app", "sbx_apps:no_echo", "--profile", "clean", "--clients", "2",
                     "--duration", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "'echo'" in err and "1008 handlerNotFound" in err, err
