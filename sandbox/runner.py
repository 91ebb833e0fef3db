"""``wscore sandbox run``: an app, the fault proxy and N bundled clients, judged by a ledger.

    report = sandbox.run_scenario(app="examples.chat_fast.app:server", profile="chaos",
                                  clients=6, duration=5, seed=7)
    assert report.passed, report.format_text()

This module strings the phases together; each job has its module:
:mod:`sandbox.app` (the app's config, process and profile fitting),
:mod:`sandbox.driver` (the clients and what they do, from a
:class:`~sandbox.workload.Workload`: :class:`~sandbox.chat_workload.ChatWorkload`),
:mod:`sandbox.drain` (barrier and fences), :mod:`sandbox.ledger` and
:mod:`sandbox.report` (what was recorded and the verdict, whose guarantee
policy is :mod:`sandbox.guarantees`).

Phases (all clients live in this process, in gevent; the app does not):

1. **Probe** the app's config in a throw-away subprocess
   (``python -m sandbox._config_probe MODULE:ATTR``, i.e. ``wscore.cli.load_server``
   without starting it): ``path``, ``ping_interval``, ``ping_timeout``,
   ``session_ttl``. The runner never imports the user's module itself.
2. **Start the app** in its own process (``python -m wscore.cli run MODULE:ATTR
   --host 127.0.0.1 --port <free>``) so its CPU is separate and a crash cannot
   take the runner down; wait for ``GET /healthz``.
3. **Proxy** (``sandbox.proxy``) in front, *clean* at first.
4. **Connect and join**: clients connect one after another (so the proxy's
   connection indexes, hence the per-connection fault RNGs, are the same on
   every run), each joins room ``i % rooms`` with its workload's ``join()``
   (``--workload MODULE:CLASS``, the chat one by default); client 0 first
   checks that the app answers every request of the workload (what is
   missing: one line, exit 2).
5. **Faults on**: the named profile is installed (``set_faults``), so its
   schedule (``partition_after_seconds`` …) counts from the start of sending.
6. **Send** for ``duration`` seconds: every client, paced by its own seeded RNG,
   publishes probe texts (:mod:`sandbox.probe`) or makes its workload's RPCs
   with unique tokens (``chat.message`` and ``echo`` for chat).
7. **Heal**: faults off (``set_faults(())``, proxy-wide blackhole ended).
8. **Drain**, bounded by ``drain_timeout`` (:mod:`sandbox.drain`): barrier
   round trips, re-joins, fences, outstanding RPCs.
9. **Judge** (:func:`sandbox.report.judge`), close clients, stop proxy and app;
   the report carries the run's :class:`~sandbox.timeline.Timeline` (``--html``).

On a terminal (``progress_stream`` a TTY) a live progress line shows the
phases (:mod:`sandbox.progress`).

Fitting profiles to the app. ``heartbeat_seconds`` given to the profiles is
the time for *both* sides to notice a silent link: ``max(ping_timeout, client
dead-link timeout)`` where the client's is ``max(2h, h + 1)`` for the announced
heartbeat ``h = ping_interval``. ``session_ttl_seconds`` is the app's
``session_ttl``. ``partition`` and ``ttl-exceeded`` need the whole outage
inside the sending phase; a run too short for the app is refused with a usage
error naming the minimum duration (``examples.chat_fast.app:server`` has a
2 s heartbeat and a 20 s TTL for such runs; ``examples.chat.app:server``'s
20 s/60 s heartbeat and 300 s TTL would need minutes).

The runner's clients use ``WsClientConfig(backoff_base=0.1, backoff_cap=2.0)``
(see :data:`RUNNER_CLIENT_CONFIG`) so recovery times measure the network and
the server rather than a 15 s backoff cap; pass ``client_config`` to change it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import attrs

from wscore.client import WsClientConfig
from wscore.sandbox.api import proxy
from wscore.sandbox.app import (
    EXPECT_SESSION_LOSS_PROFILES,
    AppConfig,
    AppProcess,
    ScenarioError,
    fit_profile_params,
    probe_app_config,
)
from wscore.sandbox.drain import drain
from wscore.sandbox.driver import Driver
from wscore.sandbox.faults import FaultRecord, Trigger, fault_log_key
from wscore.sandbox.nodes import (
    NodeCluster,
    check_nodes_args,
    node_addresses,
    node_restarts_for,
    start_app_nodes,
)
from wscore.sandbox.profiles import build_profile, profile_names
from wscore.sandbox.progress import LiveLine, ProgressSnapshot
from wscore.sandbox.report import FaultSummary, Report, RunInfo, judge
from wscore.sandbox.timeline import build_timeline
from wscore.sandbox.workload import DEFAULT_WORKLOAD, Workload, WorkloadError, load_workload

__all__ = [
    "EXPECT_SESSION_LOSS_PROFILES",
    "RUNNER_CLIENT_CONFIG",
    "AppConfig",
    "AppProcess",
    "ScenarioError",
    "fit_profile_params",
    "probe_app_config",
    "replay_key",
    "run_scenario",
]

log = logging.getLogger("wscore.sandbox.runner")

#: Client settings of the runner's clients (see the module docstring).
RUNNER_CLIENT_CONFIG = WsClientConfig(backoff_base=0.1, backoff_cap=2.0, open_timeout=5.0,
                                      connect_timeout=15.0)


def replay_key(records: Sequence[FaultRecord]) -> list[tuple[Any, ...]]:
    """The part of a run's fault log that must replay exactly: the faults that *fired*.

    :func:`sandbox.faults.fault_log_key` of the records whose trigger is not
    ``connection``. Install records of continuous faults (latency, slicer …,
    trigger ``connection``) say only that connection *k* existed while the
    profile was on — a pure function of the seed and *k* — but whether a
    client reconnecting at the very moment the runner heals the network gets
    one is a race, and the frame index at which the profile was switched on
    for live connections depends on how many heartbeat pings had flowed. So
    they are left out of the digest (the full log is in the JSON report).
    """
    return fault_log_key(r for r in records if r.trigger != Trigger.CONNECTION.value)


def run_scenario(*, app: str, profile: str, clients: int = 10, duration: float = 10.0,
                 seed: int = 0, rooms: int | None = None, rate: float = 2.0,
                 rpc_ratio: float = 0.2, expect_session_loss: bool | None = None,
                 drain_timeout: float | None = None, reset_every_seconds: float | None = None,
                 partition_after_seconds: float | None = None,
                 client_config: WsClientConfig | None = None,
                 app_env: Mapping[str, str] | None = None, python: str = sys.executable,
                 fault_log_path: str | None = None,
                 workload: str | type[Workload] = DEFAULT_WORKLOAD,
                 progress_stream: TextIO | None = None,
                 nodes: int = 1, redis_url: str | None = None) -> Report:
    """Run ``app`` (``MODULE:ATTR``) behind the sandbox proxy with ``profile``; return the report.

    ``clients`` bundled clients in ``rooms`` rooms (default ``max(1, clients // 5)``)
    send ``rate`` messages per second each for ``duration`` seconds, a
    ``rpc_ratio`` share of them ``echo`` requests. ``expect_session_loss``
    defaults to True for ``ttl-exceeded`` only (see :mod:`sandbox.report`).
    ``drain_timeout`` bounds the drain after the network is healed (default:
    the client's dead-link timeout + its backoff cap + 10 s). ``app_env`` adds
    environment variables for the app's processes (``PYTHONPATH`` is prepended).
    ``workload`` is what each client does: a :class:`~sandbox.workload.Workload`
    subclass or its ``MODULE:CLASS`` (default: the chat workload); before any
    traffic the app must answer each of its requests. ``progress_stream``: draw
    the live progress line (:mod:`sandbox.progress`) there — only if it is a TTY.
    ``nodes``/``redis_url``: run that many app nodes sharing that Redis, the
    proxy balancing across them; profile ``node-restarts`` restarts them
    (:mod:`sandbox.nodes`).

    Raises :class:`ScenarioError` (one line) when the run cannot start;
    a run that starts always returns a :class:`Report` — its ``exit_code`` says
    whether a guarantee broke.
    """
    if profile not in profile_names():
        raise ScenarioError(f"unknown profile {profile!r}; known: {', '.join(profile_names())}")
    if clients < 2:
        raise ScenarioError("--clients must be at least 2 (someone has to receive)")
    if not (math.isfinite(duration) and duration > 0):
        raise ScenarioError(f"--duration must be > 0, got {duration!r}")
    if not (math.isfinite(rate) and rate > 0):
        raise ScenarioError(f"--rate must be > 0, got {rate!r}")
    if not 0.0 <= rpc_ratio <= 1.0:
        raise ScenarioError(f"--rpc-ratio must be within [0, 1], got {rpc_ratio!r}")
    n_rooms = rooms if rooms is not None else max(1, clients // 5)
    if not 1 <= n_rooms <= clients:
        raise ScenarioError(f"--rooms must be within 1..{clients}, got {n_rooms}")
    try:
        workload_class = load_workload(workload) if isinstance(workload, str) else workload
    except WorkloadError as exc:
        raise ScenarioError(str(exc)) from None
    check_nodes_args(profile, nodes, redis_url)
    wall0 = time.monotonic()
    app_config = probe_app_config(app, python=python, env=app_env)
    if app_config.require_auth:
        raise ScenarioError(f"{app} requires auth; sandbox run drives anonymous clients")
    params = fit_profile_params(profile, app_config, duration=duration,
                                reset_every_seconds=reset_every_seconds,
                                partition_after_seconds=partition_after_seconds)
    expect_loss = (profile in EXPECT_SESSION_LOSS_PROFILES if expect_session_loss is None
                   else expect_session_loss)
    cfg = client_config or RUNNER_CLIENT_CONFIG
    drain_budget = (drain_timeout if drain_timeout is not None
                    else app_config.client_dead_after + cfg.backoff_cap + 10.0)
    faults = build_profile(profile, params)

    process: AppProcess | NodeCluster = (  # several nodes (sandbox.nodes) or one app process
        start_app_nodes(app, nodes=nodes, redis_url=redis_url, python=python, env=app_env)
        if nodes > 1 or redis_url else AppProcess(app, python=python, env=app_env))
    log.info("app %s running on %s:%d (log %s)", app, *process.address, process.log_path)
    try:
        with proxy(process.address, seed=seed, fault_log_path=fault_log_path,
                   upstreams=node_addresses(process)) as net:
            workloads = [workload_class(i, n_rooms) for i in range(clients)]
            driver = Driver(net=net, app=app_config, workloads=workloads, seed=seed,
                            client_config=cfg)
            phase: dict[str, Any] = {"name": "connecting", "since": time.monotonic(), "total": None}

            def enter(name: str, total: float | None) -> float:
                phase.update(name=name, since=time.monotonic(), total=total)
                return driver.now()

            def snapshot() -> ProgressSnapshot:
                live = driver.ledger.live_counts()
                return ProgressSnapshot(
                    title=f"sandbox run {profile}", phase=phase["name"],
                    elapsed=time.monotonic() - phase["since"], total=phase["total"],
                    deliveries=live["deliveries"], resumes=live["resumes"], losses=live["gaps"],
                    sessions_lost=live["sessions_lost"],
                    faults=sum(net.stats()["faults_injected"].values()))

            line = LiveLine(snapshot, stream=progress_stream) if progress_stream else None
            try:
                if line:
                    line.start()
                driver.connect_and_join(timeout=cfg.connect_timeout)
                net.set_faults(faults)
                log.info("faults on: %s (%d faults)", profile, len(faults))
                send_start = enter("sending", duration)
                restarts = node_restarts_for(profile, process, net.proxy, seed=seed, duration=duration,
                                             after=params.partition_after_seconds)
                driver.send_phase(duration=duration, rate=rate, rpc_ratio=rpc_ratio,
                                  rpc_timeout=duration + drain_budget + 60.0)
                if restarts is not None:
                    restarts.stop()  # every node up again before the drain
                net.set_faults(())
                net.proxy.end_blackhole()
                log.info("faults off; draining (up to %.1f s)", drain_budget)
                send_end = enter("draining", drain_budget)
                heal = time.monotonic()
                drained = drain(driver, heal + drain_budget)
                drain_seconds = time.monotonic() - heal
                drain_end = driver.now()
                counters = driver.client_counters()
                stopped = driver.clients_stopped()
                app_exit = process.exit_code()
            finally:
                if line:
                    line.stop()
                driver.close()
            fault_log = net.fault_log
            stats = net.stats()
    finally:
        process.stop()
    summary = driver.ledger.summarize()
    deliveries, losses = driver.ledger.timeline_points()
    timeline = build_timeline(deliveries=deliveries, losses=losses, events=driver.ledger.events,
                              fault_log=fault_log, fault_offset=net.proxy.started_at - driver.t0,
                              send_start=send_start, send_end=send_end, drain_end=drain_end)
    key = json.dumps(replay_key(fault_log), default=str).encode()
    run = RunInfo(
        app=app, workload=f"{workload_class.__module__}:{workload_class.__qualname__}",
        profile=profile, seed=seed, clients=clients, rooms=n_rooms,
        duration_seconds=duration, rate_per_client=rate, rpc_ratio=rpc_ratio,
        heartbeat_seconds=app_config.heartbeat_seconds,
        app_ping_interval=app_config.ping_interval, app_ping_timeout=app_config.ping_timeout,
        app_session_ttl=app_config.session_ttl, profile_params=attrs.asdict(params),
        expect_session_loss=expect_loss, drain_seconds=round(drain_seconds, 3), drained=drained.drained,
        drain_problem=drained.problem,
        app_exit_code=app_exit, wall_seconds=round(time.monotonic() - wall0, 3),
        client_counters=counters, clients_stopped=stopped,
        app_log=None if process.log_removed else process.log_path)
    faults_summary = FaultSummary(
        counts=dict(stats["faults_injected"]), records=len(fault_log),
        digest=hashlib.sha256(key).hexdigest(), connections=int(stats["connections"]["accepted"]),
        log=[rec.to_dict() for rec in fault_log])
    return Report(run=run, ledger=summary, faults=faults_summary, verdict=judge(summary, run),
                  timeline=timeline)
