"""``wscore loadtest``: the real command, against an app it starts or a URL, on a pipe and a terminal."""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from processes import run_under_a_terminal

from wscore.loadtests.cli import parse_duration

ROOT = Path(__file__).resolve().parents[2]
WSCORE = [sys.executable, "-m", "wscore.cli", "loadtest"]
FAST_APP = "examples.chat_fast.app:server"

pytestmark = pytest.mark.timeout(120)


def loadtest(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WSCORE, *args], cwd=cwd, capture_output=True, text=True, timeout=100,
                          check=False)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_scenario_against_an_app_it_starts_passes_with_a_summary() -> None:
    done = loadtest("rpc", "--users", "2", "--spawn-rate", "2", "--duration", "2s", "--app", FAST_APP,
                    "--", "--rpc-rate", "50")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("wscore loadtest rpc: 2 users, 2 s — ") and summary.endswith("PASS")
    ws = re.search(r"WS ([\d,]+)", summary)
    assert ws and int(ws.group(1).replace(",", "")) > 0
    assert " 0 failures" in summary


def test_through_the_proxy_storms_cut_and_everyone_resumes() -> None:
    done = loadtest("reconnect_storm", "-u", "4", "-r", "4", "-t", "4", "--app", FAST_APP,
                    "--profile", "clean", "--", "--storm-interval", "1", "--drop-interval", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    counters = next(line for line in done.stderr.splitlines() if "wscore counters:" in line)
    storms = int(re.search(r"storms=(\d+)", counters).group(1))  # type: ignore[union-attr]
    resumes = int(re.search(r"resumes=(\d+)", counters).group(1))  # type: ignore[union-attr]
    assert storms >= 1 and resumes >= 4, counters
    assert "sessions_lost=0" in counters and "PASS" in done.stdout


def test_nobody_connected_fails() -> None:
    done = loadtest("chat", "-u", "2", "-r", "2", "-t", "3", "--host",
                    f"ws://127.0.0.1:{closed_port()}/ws")
    assert done.returncode == 1
    assert "load test failed: nobody connected" in done.stderr
    assert done.stdout.strip().splitlines()[-1].endswith("FAIL (exit 1)")


@pytest.mark.parametrize(("args", "needle"), [
    (["chat", "-u", "2", "-r", "2", "-t", "3"], "one of the arguments --app --host is required"),
    (["nope", "-u", "2", "-r", "2", "-t", "3", "--host", "ws://127.0.0.1:1/ws"], "unknown scenario"),
    (["chat", "-u", "2", "-r", "2", "-t", "soon", "--host", "ws://x/ws"], "expected a duration"),
    (["chat", "-u", "0", "-r", "2", "-t", "3", "--host", "ws://x/ws"], "positive integer"),
    (["chat", "-u", "2", "-r", "2", "-t", "3", "--host", "http://x/ws", "--profile", "clean"],
     "ws://HOST:PORT/PATH"),
    (["chat", "-u", "2", "-r", "2", "-t", "3", "--app", "no_such_module_q:server"], "no_such_module_q"),
])
def test_usage_errors_are_one_line_exit_2(args: list[str], needle: str) -> None:
    done = loadtest(*args)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert "\n" not in err and err.startswith("wscore loadtest: error:") and needle in err, err


def test_durations() -> None:
    assert parse_duration("30") == parse_duration("30s") == 30
    assert parse_duration("2m") == 120 and parse_duration("1h") == 3600
    assert parse_duration("1m30s") == 90
    for bad in ("", "0", "-1", "abc", "5x"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)


def test_on_a_terminal_the_load_test_shows_a_live_progress_line() -> None:
    code, raw = run_under_a_terminal([*WSCORE, "chat", "-u", "3", "-r", "3", "-t", "3", "--app", FAST_APP,
                                      "--", "--message-interval", "0.2", "--rooms", "1"],
                                     timeout=90, stderr_too=False)
    assert code == 0, raw[-3000:]
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", raw)
    assert re.search(r"wscore loadtest · 3 users [\d.]+ s of 3 s \([\d.]+ s left\) · deliveries [\d,]+ · "
                     r"faults \d+ · resumes \d+ · losses so far 0", out), out[-3000:]


def test_in_a_pipe_the_load_test_shows_no_progress_line() -> None:
    done = loadtest("rpc", "-u", "2", "-r", "2", "-t", "2", "--app", FAST_APP)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "losses so far" not in done.stdout + done.stderr and "\x1b[" not in done.stdout
