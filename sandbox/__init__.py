"""wscore sandbox: a seeded, WebSocket-aware fault-injecting proxy.

Importing this package monkey-patches the standard library for gevent (as
importing ``wscore`` does), before any socket-using module is imported.

Main entry points::

    from wscore import sandbox
    from wscore.sandbox import Latency, ResetPeer

    with sandbox.proxy(("127.0.0.1", 8080), seed=7,
                       faults=[Latency(latency_seconds=0.05)]) as net:
        ws = websocket.create_connection(net.url("/ws"))
        net.cut_all()

    report = sandbox.run_scenario(app="examples.chat_fast.app:server",
                                  profile="chaos", clients=6, duration=5, seed=7)
    assert report.passed, report.format_text()

See :mod:`sandbox.faults` for the fault values, :mod:`sandbox.profiles` for
named profiles, :mod:`sandbox.cli` for ``wscore sandbox proxy|run``,
:mod:`sandbox.fault_proxy` / :mod:`sandbox.pumps` / :mod:`sandbox.stream_plan`
for the proxy (its pure core last), :mod:`sandbox.runner` for
``run_scenario``, :mod:`sandbox.workload` for what a run's clients do, and
:mod:`sandbox.ledger` / :mod:`sandbox.report` for what a run records and how
it is judged — by the guarantee policy of :mod:`sandbox.guarantees`, with the
probe messages of :mod:`sandbox.probe` (both shared with ``loadtests/``).
"""

from gevent import monkey

monkey.patch_all()

from wscore.sandbox.api import BlackholeWindow, ProxyHandle, proxy
from wscore.sandbox.fault_proxy import FaultProxy, ProxyError
from wscore.sandbox.faults import (
    Bandwidth,
    Blackhole,
    Direction,
    Fault,
    FaultRecord,
    Latency,
    LimitData,
    Refuse,
    RefuseMode,
    ResetPeer,
    Slicer,
    SlowClose,
    diff_fault_logs,
    same_fault_log,
)
from wscore.sandbox.ledger import Ledger, LedgerSummary
from wscore.sandbox.profiles import ProfileError, ProfileParams, build_profile, profile_names
from wscore.sandbox.report import Report
from wscore.sandbox.runner import ScenarioError, run_scenario

__all__ = [
    "Bandwidth",
    "Blackhole",
    "BlackholeWindow",
    "Direction",
    "Fault",
    "FaultProxy",
    "FaultRecord",
    "Latency",
    "Ledger",
    "LedgerSummary",
    "LimitData",
    "ProfileError",
    "ProfileParams",
    "ProxyError",
    "ProxyHandle",
    "Refuse",
    "RefuseMode",
    "Report",
    "ResetPeer",
    "ScenarioError",
    "Slicer",
    "SlowClose",
    "build_profile",
    "diff_fault_logs",
    "profile_names",
    "proxy",
    "run_scenario",
    "same_fault_log",
]
