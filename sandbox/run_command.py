"""``wscore sandbox run``: the command-line face of :func:`sandbox.runner.run_scenario`.

    wscore sandbox run --app MODULE:ATTR --profile NAME --clients N --duration S --seed K
                       [--workload MODULE:CLASS] [--json PATH] [--html PATH] [--rooms R]
                       [--rate MSGS_PER_S_PER_CLIENT] [--rpc-ratio X]
                       [--expect-session-loss | --no-expect-session-loss]
                       [--drain-timeout S] [--reset-every S] [--fault-log PATH] [-v]
                       [--nodes N --redis URL]

Prints the plain-text report on stdout; ``--json`` also writes the full report
(fault log included), ``--html`` a self-contained page with the run's timeline
chart (:mod:`sandbox.html_report`). On a terminal (stdout a TTY) a live progress
line shows the run meanwhile (:mod:`sandbox.progress`); never in a pipe or log.
Exit status: 0 when every guarantee held, 1 when one broke (see :mod:`sandbox.report`),
2 for a usage or setup mistake (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from wscore.sandbox.argtypes import fraction, positive_float, positive_int
from wscore.sandbox.profiles import profile_names
from wscore.sandbox.workload import DEFAULT_WORKLOAD

__all__ = ["register_run_command"]


def register_run_command(subparsers: Any) -> None:
    """Add ``run`` (app + proxy + clients + ledger) to ``subparsers``."""
    p = subparsers.add_parser(
        "run", help="run an app behind the fault proxy with bundled clients and judge delivery",
        description="Start the app, put the fault proxy in front, drive N bundled clients "
                    "through it and report what was lost, duplicated or reordered. "
                    "Exit 0: guarantees held; 1: a guarantee broke; 2: usage error.")
    p.add_argument("--app", required=True, metavar="MODULE:ATTR",
                   help="the WsServer to test, e.g. examples.chat_fast.app:server")
    p.add_argument("--workload", default=DEFAULT_WORKLOAD, metavar="MODULE:CLASS",
                   help="what each client does: a sandbox.workload.Workload subclass "
                        f"(default {DEFAULT_WORKLOAD})")
    p.add_argument("--profile", required=True, choices=profile_names(), metavar="NAME",
                   help=f"network profile: {', '.join(profile_names())}")
    p.add_argument("--clients", type=positive_int, default=10, metavar="N")
    p.add_argument("--duration", type=positive_float, default=10.0, metavar="S",
                   help="seconds of sending (default 10)")
    p.add_argument("--seed", type=int, default=0, metavar="K")
    p.add_argument("--rooms", type=positive_int, metavar="R",
                   help="rooms (default clients // 5, at least 1)")
    p.add_argument("--rate", type=positive_float, default=2.0, metavar="MSGS_PER_S",
                   help="messages per second per client (default 2)")
    p.add_argument("--rpc-ratio", type=fraction, default=0.2, metavar="X",
                   help="share of messages that are echo RPCs (default 0.2)")
    p.add_argument("--expect-session-loss", action=argparse.BooleanOptionalAction, default=None,
                   help="pass only if sessions are lost, all losses reported "
                        "(default: on for ttl-exceeded only)")
    p.add_argument("--drain-timeout", type=positive_float, metavar="S",
                   help="max seconds to settle after the network is healed")
    p.add_argument("--reset-every", type=positive_float, metavar="S",
                   help="mean seconds between resets for flaky-mobile/chaos (default 10)")
    p.add_argument("--json", metavar="PATH", help="write the full report as JSON")
    p.add_argument("--html", metavar="PATH",
                   help="write a self-contained HTML report with the run's timeline chart")
    p.add_argument("--fault-log", metavar="PATH", help="append fault records as JSON lines")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    p.add_argument("--nodes", type=positive_int, default=1, metavar="N",
                   help="app nodes behind the proxy, balanced per connection (N > 1 needs --redis)")
    p.add_argument("--redis", metavar="URL", help="Redis the nodes share (wscore run --redis URL)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from wscore.sandbox.cli import UsageError
    from wscore.sandbox.runner import ScenarioError, run_scenario

    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.verbose:
        # The report names every problem; the clients' own warnings (session lost …)
        # would only repeat it, interleaved.
        logging.getLogger("wscore.client").setLevel(logging.CRITICAL)
    for flag, path in (("--json", args.json), ("--html", args.html)):
        if not path:
            continue
        # Checked before a run of minutes, without creating the file.
        target = os.path.abspath(path)
        writable = (os.access(target, os.W_OK) if os.path.exists(target)
                    else os.access(os.path.dirname(target), os.W_OK))
        if os.path.isdir(target) or not writable:
            raise UsageError(f"cannot write {flag} {path}")
    try:
        report = run_scenario(
            app=args.app, profile=args.profile, clients=args.clients, duration=args.duration,
            seed=args.seed, rooms=args.rooms, rate=args.rate, rpc_ratio=args.rpc_ratio,
            expect_session_loss=args.expect_session_loss, drain_timeout=args.drain_timeout,
            reset_every_seconds=args.reset_every, fault_log_path=args.fault_log,
            workload=args.workload, progress_stream=sys.stdout,
            nodes=args.nodes, redis_url=args.redis)
    except ScenarioError as exc:
        raise UsageError(str(exc)) from None
    # CLI output, not logging: the report is what the command is for.
    sys.stdout.write(report.format_text() + "\n")
    sys.stdout.flush()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(report.to_json() + "\n")
    if args.html:
        from wscore.sandbox.html_report import render_html

        with open(args.html, "w", encoding="utf-8") as fh:
            fh.write(render_html(report))
    return report.exit_code
