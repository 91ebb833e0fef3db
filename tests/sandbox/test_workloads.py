"""``wscore sandbox run --workload MODULE:CLASS``: the sandbox on apps that are not the chat example.

Each run is the real command (``python -m wscore.cli sandbox run``) in a subprocess, as a
user would type it: the app in its own process, the proxy, the bundled clients, the ledger.
Assertions are on the verdict and the counts, never on timings.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest

from wscore.sandbox import cli
from wscore.sandbox.ledger import Ledger
from wscore.sandbox.workload import WorkloadError, load_workload

ROOT = pathlib.Path(__file__).resolve().parents[2]
COUNTER = ["--app", "examples.counter.app:server",
           "--workload", "examples.counter.workload:CounterWorkload"]
QUICKSTART = ["--app", "examples.quickstart.app:server",
              "--workload", "examples.quickstart.workload:QuickstartWorkload"]

pytestmark = pytest.mark.timeout(120)


def sandbox_run(*args: str, tmp: pathlib.Path | None = None) -> tuple[int, str, str, dict[str, Any]]:
    """``wscore sandbox run ARGS`` from the repository root; (exit code, stdout, stderr, JSON)."""
    json_args = ["--json", str(tmp / "report.json")] if tmp is not None else []
    done = subprocess.run([sys.executable, "-m", "wscore.cli", "sandbox", "run", *args, *json_args],
                          cwd=ROOT, capture_output=True, text=True, timeout=110, check=False)
    report = json.loads((tmp / "report.json").read_text()) if tmp is not None and done.returncode < 2 \
        else {}
    return done.returncode, done.stdout, done.stderr, report


def test_the_counter_app_keeps_every_guarantee_through_resets(tmp_path: pathlib.Path) -> None:
    code, out, err, report = sandbox_run(
        *COUNTER, "--profile", "flaky-mobile", "--clients", "4", "--rooms", "2", "--duration", "4",
        "--reset-every", "1", "--seed", "5", tmp=tmp_path)
    assert code == 0, out + err
    assert "VERDICT: PASS" in out and "workload examples.counter.workload:CounterWorkload" in out
    ledger = report["ledger"]
    assert ledger["delivered"] == ledger["deliveries_expected"] > 0
    assert ledger["lost"] == ledger["duplicated"] == ledger["out_of_order"] == 0
    assert ledger["corrupted"] == 0
    assert ledger["rpc_answered"] == ledger["rpc_sent"] > 0
    assert ledger["resumes"] > 0 and ledger["sessions_lost"] == 0
    assert report["run"]["workload"] == "examples.counter.workload:CounterWorkload"


def test_the_readme_quickstart_app_resumes_with_nothing_lost(tmp_path: pathlib.Path) -> None:
    code, out, err, report = sandbox_run(
        *QUICKSTART, "--profile", "flaky-mobile", "--clients", "4", "--duration", "4",
        "--reset-every", "1", "--seed", "2", tmp=tmp_path)
    assert code == 0, out + err
    ledger = report["ledger"]
    assert ledger["delivered"] == ledger["deliveries_expected"] > 0
    assert ledger["lost"] == ledger["duplicated"] == ledger["out_of_order"] == 0
    assert ledger["rpc_answered"] == ledger["rpc_sent"]
    assert ledger["resumes"] > 0 and ledger["sessions_lost"] == 0


def test_the_quickstart_app_without_a_matching_workload_exits_2_naming_what_is_missing() -> None:
    # The default (chat) workload needs echo, which the quick-start app lacks.
    code, out, err, _ = sandbox_run("--app", "examples.quickstart.app:server", "--profile", "clean",
                                    "--clients", "2", "--duration", "1")
    assert code == 2 and out == ""
    line = err.strip()
    assert "\n" not in line and line.startswith("wscore sandbox: error:")
    assert "'echo'" in line and "1008 handlerNotFound" in line
    assert "'room.join'" not in line and "'chat.message'" not in line  # those it answers


def test_every_missing_event_is_named_in_one_line() -> None:
    code, _, err, _ = sandbox_run("--app", "examples.quickstart.app:server",
                                  "--workload", "examples.counter.workload:CounterWorkload",
                                  "--profile", "clean", "--clients", "2", "--duration", "1")
    assert code == 2
    line = err.strip()
    assert "\n" not in line
    for event in ("counter.watch", "counter.add", "counter.get"):
        assert f"{event!r} with 1008 handlerNotFound" in line, line
    assert "the CounterWorkload needs counter.watch, counter.add, counter.get" in line


@pytest.mark.parametrize(("target", "needle"), [
    ("nocolon", "MODULE:CLASS"),
    ("no_such_module_xyz:W", "cannot import workload module"),
    ("examples.counter.workload:Nope", "no attribute"),
    ("examples.counter.app:server", "not a subclass of sandbox.workload.Workload"),
    ("wscore.sandbox.workload:Workload", "sets no delivery_event"),
])
def test_a_bad_workload_is_a_one_line_exit_2(target: str, needle: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(WorkloadError, match=needle):
        load_workload(target)
    assert cli.main(["run", "--app", "examples.counter.app:server", "--workload", target,
                     "--profile", "clean"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err


def test_a_delivery_its_workload_rejects_is_corrupted_not_lost() -> None:
    ledger = Ledger()
    ledger.add_client(0, "room-0")
    ledger.add_client(1, "room-0")
    text = "wsprobe1 0 1 0 123 filler"
    ledger.chat_sent(0, 1, text, time=0.0, epoch=0)
    ledger.chat_received(1, text, time=0.1)
    ledger.delivery_malformed(1, text, "a change of counter 'x' reached a watcher of 'room-0'")
    summary = ledger.summarize()
    assert summary.delivered == 1 and summary.lost == 0
    assert summary.corrupted == 1
    assert "reached a watcher" in summary.corrupted_examples[0]
