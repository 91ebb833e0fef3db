"""``wscore loadtest``: a locust scenario run headless against an app or a URL, with a summary.

    wscore loadtest SCENARIO --users N --spawn-rate R --duration T
                    [--app MODULE:ATTR | --host URL] [--profile NAME] [--seed K]
                    [-- LOCUST_OPTIONS …]

``SCENARIO`` is one of ``loadtests/`` (``chat``, ``rpc``, ``reconnect_storm``)
or the path of a locustfile. ``--app`` starts the app on a free loopback port
(``wscore run``, in its own process, like ``wscore sandbox run``); ``--host``
points at a running server (``ws://HOST:PORT/PATH``). ``--profile`` puts the
sandbox's fault proxy in front of either (for ``--app``, fitted to its
heartbeat and session TTL; for ``--host``, to the proxy command's defaults,
5 s and 30 s); ``reconnect_storm`` through the proxy also gets its control
API, so it storms every ``--storm-interval``. Anything after ``--`` goes to
locust as is (``--rooms 8``, ``--csv out`` …).

Locust runs as ``python -m locust … --headless --only-summary`` (so a terminal
shows the live progress line, :mod:`loadtests.progress`, rather than a table
every 2 s), then one summary line is printed. Exit status: locust's — 1 when
a request failed, a delivery guarantee broke, or nobody connected
(:mod:`loadtests.counters`) — or 2 for a usage or setup mistake (one line on
stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["SCENARIOS", "build_parser", "main", "parse_duration"]

HERE = Path(__file__).resolve().parent
#: The bundled scenarios, by name.
SCENARIOS = {"chat": HERE / "chat.py", "rpc": HERE / "rpc.py",
             "reconnect_storm": HERE / "reconnect_storm.py"}


class UsageError(Exception):
    """A mistake on the command line or in the set-up; one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse_duration(text: str) -> float:
    """``30``, ``30s``, ``2m``, ``1h`` or ``1m30s`` → seconds (> 0)."""
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text.strip())
    if not text.strip() or parts is None:
        raise argparse.ArgumentTypeError(f"expected a duration like 30, 30s, 2m or 1h, got {text!r}")
    h, m, s = (float(g) if g else 0.0 for g in parts.groups())
    seconds = h * 3600 + m * 60 + s
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"the duration must be > 0, got {text!r}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    from wscore.sandbox.argtypes import positive_float, positive_int
    from wscore.sandbox.profiles import profile_names

    p = _Parser(prog="wscore loadtest",
                description="Run a locust scenario headless against an app or a URL, optionally "
                            "through the fault proxy, and summarise. Exit 0: no failure and every "
                            "guarantee held; 1: a failure, a broken guarantee or nobody connected; "
                            "2: usage error. Options after -- go to locust.")
    p.add_argument("scenario", metavar="SCENARIO",
                   help=f"{', '.join(SCENARIOS)}, or the path of a locustfile")
    p.add_argument("--users", "-u", type=positive_int, required=True, metavar="N")
    p.add_argument("--spawn-rate", "-r", type=positive_float, required=True, metavar="R",
                   help="users started per second")
    p.add_argument("--duration", "-t", type=parse_duration, required=True, metavar="T",
                   help="run time: 30, 30s, 2m, 1h")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--app", metavar="MODULE:ATTR", help="start this WsServer and load it")
    target.add_argument("--host", metavar="URL", help="load a running server, ws://HOST:PORT/PATH")
    p.add_argument("--profile", choices=profile_names(), metavar="NAME",
                   help=f"put the fault proxy in front: {', '.join(profile_names())}")
    p.add_argument("--seed", type=int, default=0, metavar="K", help="the proxy's seed (default 0)")
    return p


def _scenario_file(name: str) -> Path:
    if name in SCENARIOS:
        return SCENARIOS[name]
    path = Path(name)
    if path.suffix == ".py" and path.is_file():
        return path.resolve()
    raise UsageError(f"unknown scenario {name!r}: {', '.join(SCENARIOS)} or a locustfile path")


def _split_url(url: str) -> tuple[tuple[str, int], str]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise UsageError(f"--host must look like ws://HOST:PORT/PATH, got {url!r}")
    if parts.scheme == "wss":
        raise UsageError("--profile puts a plain-TCP proxy in front: use a ws:// --host")
    return (parts.hostname, parts.port or 80), parts.path or "/"


@contextmanager
def _target(args: argparse.Namespace, stack: ExitStack) -> Iterator[tuple[str, str | None]]:
    """(the URL locust loads, the proxy's control URL or None), for the run's lifetime."""
    from wscore.sandbox.api import proxy
    from wscore.sandbox.app import AppProcess, ScenarioError, fit_profile_params, probe_app_config
    from wscore.sandbox.profiles import ProfileParams

    try:
        if args.app:
            config = probe_app_config(args.app)
            app = AppProcess(args.app)
            stack.callback(app.stop)
            upstream, path = app.address, config.path
            params = (fit_profile_params(args.profile, config, duration=args.duration)
                      if args.profile else None)
        else:
            if not args.profile:
                yield args.host, None
                return
            upstream, path = _split_url(args.host)
            params = ProfileParams(heartbeat_seconds=5.0, session_ttl_seconds=30.0)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    if not args.profile:
        yield f"ws://{upstream[0]}:{upstream[1]}{path}", None
        return
    control = Path(args.scenario).stem == "reconnect_storm"
    net = stack.enter_context(proxy(upstream, seed=args.seed, profile=args.profile,
                                    profile_params=params, control=control))
    yield net.url(path), net.control_url if control else None


def _summary(json_path: Path, scenario: str, args: argparse.Namespace, code: int) -> str:
    try:
        stats: list[dict[str, Any]] = json.loads(json_path.read_text())
    except (OSError, ValueError):
        stats = []
    requests = sum(int(s.get("num_requests", 0)) for s in stats)
    failures = sum(int(s.get("num_failures", 0)) for s in stats)
    by_type: dict[str, int] = {}
    for s in stats:
        by_type[str(s.get("method"))] = by_type.get(str(s.get("method")), 0) + int(s.get("num_requests", 0))
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(by_type.items()))
    verdict = "PASS" if code == 0 else f"FAIL (exit {code})"
    return (f"wscore loadtest {scenario}: {args.users} users, {args.duration:g} s"
            f"{', profile ' + args.profile if args.profile else ''} — {requests:,} entries "
            f"({kinds or 'none'}), {failures:,} failures — {verdict}")


def run(args: argparse.Namespace, locust_args: Sequence[str]) -> int:
    file = _scenario_file(args.scenario)
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="wscore-loadtest-") as tmp:
        with _target(args, stack) as (url, control_url):
            json_path = Path(tmp) / "stats.json"
            cmd = [sys.executable, "-m", "locust", "-f", str(file), "--host", url, "--headless",
                   "--only-summary", "-u", str(args.users), "-r", f"{args.spawn_rate:g}",
                   "-t", f"{max(1, round(args.duration))}s", "--json-file", str(json_path.with_suffix("")),
                   *(["--proxy-control", control_url] if control_url else []), *locust_args]
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), env.get("PYTHONPATH")) if p)
            proc = subprocess.Popen(cmd, env=env)
            try:
                code = proc.wait()
            except KeyboardInterrupt:
                code = proc.wait()  # locust got the same SIGINT and stops by itself
                return 130
        # CLI output, not logging: the summary is what the command is for.
        print(_summary(json_path, file.stem, args, code), flush=True)
    return code


def main(argv: Sequence[str]) -> int:
    """Run ``wscore loadtest <argv…>``; returns the exit code."""
    argv = list(argv)
    locust_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, locust_args = argv[:cut], argv[cut + 1:]
    try:
        import locust  # noqa: F401
    except ImportError:
        print("wscore loadtest: error: locust is not installed: pip install 'wscore[load]'",
              file=sys.stderr)
        return 2
    try:
        args = build_parser().parse_args(argv)
        return run(args, locust_args)
    except UsageError as exc:
        print(f"wscore loadtest: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
