"""What a person watching or reading a ``sandbox run`` sees: the live line, the HTML timeline.

* The progress line appears on a terminal (the command run under a pseudo-terminal)
  and nowhere else (stdout a pipe: not a byte of it).
* ``--html`` writes a self-contained page; headless Chromium (Debian's ``chromium``,
  installed by the Makefile set-up) loads it from a file with the network off, runs its
  script, and the chart's SVG elements are in the DOM it dumps.
"""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from processes import run_under_a_terminal

from wscore.sandbox.progress import ProgressSnapshot, format_progress

ROOT = pathlib.Path(__file__).resolve().parents[2]
COUNTER_RUN = [sys.executable, "-m", "wscore.cli", "sandbox", "run",
               "--app", "examples.counter.app:server",
               "--workload", "examples.counter.workload:CounterWorkload",
               "--clients", "4", "--duration", "3", "--seed", "8"]

pytestmark = pytest.mark.timeout(120)


def test_the_progress_line_names_what_a_watcher_needs() -> None:
    line = format_progress(ProgressSnapshot(title="sandbox run chaos", phase="sending", elapsed=12.34,
                                            total=20, deliveries=1234, faults=56, resumes=12,
                                            losses=0))
    assert line == ("sandbox run chaos · sending 12.3 s of 20 s (7.7 s left) · deliveries 1,234 · "
                    "faults 56 · resumes 12 · losses so far 0")
    assert "sessions lost 2" in format_progress(ProgressSnapshot(
        title="t", phase="draining", elapsed=1, sessions_lost=2))


def test_on_a_terminal_the_run_shows_a_live_progress_line() -> None:
    code, out = run_under_a_terminal([*COUNTER_RUN, "--profile", "flaky-mobile", "--reset-every", "1"])
    assert code == 0, out[-3000:]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert re.search(r"sandbox run flaky-mobile · sending \d+\.\d s of 3 s \(\d+\.\d s left\) · "
                     r"deliveries [\d,]+ · faults [\d,]+ · resumes [\d,]+ · losses so far 0", plain), plain
    assert "VERDICT: PASS" in plain


def test_in_a_pipe_there_is_no_progress_line(tmp_path: pathlib.Path) -> None:
    report = tmp_path / "r.json"
    done = subprocess.run([*COUNTER_RUN, "--profile", "clean", "--json", str(report)], cwd=ROOT,
                          capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    for text in (done.stdout, done.stderr, report.read_text()):
        assert "losses so far" not in text and "\x1b[" not in text
    assert done.stdout.startswith("wscore sandbox run — ")


CHROMIUM = shutil.which("chromium")


def chromium(*args: str, profile: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args],
        capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make` (apt-get)")
def test_the_html_report_draws_its_timeline_in_a_browser(tmp_path: pathlib.Path) -> None:
    page = tmp_path / "run.html"
    done = subprocess.run([*COUNTER_RUN, "--profile", "chaos", "--reset-every", "1",
                           "--html", str(page)], cwd=ROOT, capture_output=True, text=True,
                          timeout=100, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    source = page.read_text()
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", source)
    assert "http://" not in source.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in source

    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "chromium")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # The script ran: the chart exists only in the DOM, not in the file.
    assert '<svg id="timeline"' in html and '<svg id="timeline"' not in source
    assert re.search(r'<div id="chart" data-drawn="\d+ deliveries"', html)
    assert len(re.findall(r'<circle class="delivery"', html)) > 10        # latency over time
    assert re.search(r'class="fault-(window|instant) ', html)             # faults marked
    assert re.search(r'<rect class="event resume"', html)                 # resumes marked
    assert re.search(r'<rect class="phase send"', html) and re.search(r'<rect class="phase drain"', html)
    assert "PASS" in html


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is installed by `make` (apt-get)")
def test_a_loss_is_flagged_on_the_chart(tmp_path: pathlib.Path) -> None:
    from wscore.sandbox.html_report import render_html
    from wscore.sandbox.ledger import Ledger
    from wscore.sandbox.report import FaultSummary, Report, RunInfo, judge
    from wscore.sandbox.timeline import build_timeline

    ledger = Ledger()
    for i in range(2):
        ledger.add_client(i, "room-0")
    for seq in (1, 2, 3):
        ledger.chat_sent(0, seq, f"wsprobe1 0 {seq} {seq - 1} 1 f", time=seq * 0.5, epoch=0)
    ledger.chat_received(1, "wsprobe1 0 1 0 1 f", time=0.6)
    ledger.chat_received(1, "wsprobe1 0 3 2 1 f", time=1.6)   # 2 never came: lost silently
    summary = ledger.summarize()
    deliveries, losses = ledger.timeline_points()
    run = RunInfo(app="a:b", profile="clean", seed=0, clients=2, rooms=1, duration_seconds=2,
                  rate_per_client=1, rpc_ratio=0, heartbeat_seconds=1, app_ping_interval=1,
                  app_ping_timeout=1, app_session_ttl=1, profile_params={},
                  expect_session_loss=False, drain_seconds=0.1, drained=True, app_exit_code=None,
                  wall_seconds=2.5, client_counters={})
    report = Report(run=run, ledger=summary, verdict=judge(summary, run),
                    faults=FaultSummary(counts={}, records=0, digest="0" * 64, connections=2),
                    timeline=build_timeline(deliveries=deliveries, losses=losses, events=[],
                                            fault_log=[], fault_offset=0, send_start=0,
                                            send_end=2, drain_end=2.1))
    page = tmp_path / "lost.html"
    page.write_text(render_html(report))
    html = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "chromium").stdout
    assert len(re.findall(r'<g class="loss silent"', html)) == 1
    assert "LOST SILENTLY: 0/2 → 1" in html and "FAIL" in html
