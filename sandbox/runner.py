"""``wscore sandbox run``: an app, the fault proxy and N bundled clients, judged by a ledger.

    report = sandbox.run_scenario(app="examples.chat_fast.app:server", profile="chaos",
                                  clients=6, duration=5, seed=7)
    assert report.passed, report.format_text()

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
   every run), each joins room ``i % rooms`` with ``room.join``.
5. **Faults on**: the named profile is installed (``set_faults``), so its
   schedule (``partition_after_seconds`` …) counts from the start of sending.
6. **Send** for ``duration`` seconds: every client, paced by its own seeded RNG,
   sends ``chat.message`` texts that carry ``(sender, seq)`` and a filler
   (see :mod:`sandbox.ledger`) or ``echo`` requests with unique payloads.
7. **Heal**: faults off (``set_faults(())``, proxy-wide blackhole ended).
8. **Drain**, bounded by ``drain_timeout``: every client completes a *barrier*
   ``echo`` round trip (so all its earlier frames ran: a session runs its
   frames one at a time, in order) and re-joins its room if its session was
   lost; then every client sends a last chat message, the *fence*, and the
   runner waits until every receiver has the fence of every other member of
   its room — per-sender FIFO means everything sent before it has arrived or
   never will; finally outstanding RPCs are given the remaining time.
9. **Judge** (:func:`sandbox.report.judge`), close clients, stop proxy and app.

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
import itertools
import json
import logging
import math
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import IO, Any

import attrs
import gevent
import gevent.event
import gevent.pool

from sandbox.api import ProxyHandle, proxy
from sandbox.faults import FaultRecord, Trigger, fault_log_key
from sandbox.ledger import Ledger, chat_text, parse_chat_text
from sandbox.profiles import ProfileError, ProfileParams, build_profile, profile_names
from sandbox.report import FaultSummary, Report, RunInfo, judge
from wscore.client import ConnectionClosed, SendBufferFull, SessionInfo, WsClient, WsClientConfig
from wscore.errors import WsError

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

#: Profiles whose outage is meant to end sessions (default ``expect_session_loss``).
EXPECT_SESSION_LOSS_PROFILES = frozenset({"ttl-exceeded"})

#: Client settings of the runner's clients (see the module docstring).
RUNNER_CLIENT_CONFIG = WsClientConfig(backoff_base=0.1, backoff_cap=2.0, open_timeout=5.0,
                                      connect_timeout=15.0)

_FENCE = "fence"
_FILLER = "abcdefghijklmnopqrstuvwxyz0123456789 "


class ScenarioError(Exception):
    """The scenario cannot run as asked (bad target, profile misfit, app did not start).

    One-line message; the CLI prints it and exits 2.
    """


@attrs.frozen(kw_only=True)
class AppConfig:
    """The app settings the runner needs (read by the config probe)."""

    path: str
    ping_interval: float
    ping_timeout: float
    session_ttl: float
    require_auth: bool = False
    rate_limit: float = math.inf
    max_buffered_messages: int = 1000

    @property
    def client_dead_after(self) -> float:
        """The bundled client's default dead-link timeout for this app's heartbeat."""
        h = self.ping_interval
        return max(2 * h, h + 1.0)

    @property
    def heartbeat_seconds(self) -> float:
        """Time for both ends to notice a silent link (what profiles call the heartbeat)."""
        return max(self.ping_timeout, self.client_dead_after)


def fit_profile_params(profile: str, app: AppConfig, *, duration: float,
                       reset_every_seconds: float | None = None,
                       partition_after_seconds: float | None = None) -> ProfileParams:
    """ProfileParams fitted to ``app``; raises :class:`ScenarioError` when the run cannot fit.

    ``partition`` lasts halfway between the heartbeat and the TTL, ``ttl-exceeded``
    ``1.5 × ttl + heartbeat`` (see :mod:`sandbox.profiles`); both must end
    before sending stops.
    """
    after = partition_after_seconds if partition_after_seconds is not None else min(
        2.0, duration / 4)
    try:
        params = ProfileParams(heartbeat_seconds=app.heartbeat_seconds,
                               session_ttl_seconds=app.session_ttl,
                               reset_every_seconds=reset_every_seconds or 10.0,
                               partition_after_seconds=after)
        build_profile(profile, params)
    except ProfileError as exc:
        raise ScenarioError(f"profile {profile!r} does not fit this app: {exc}") from None
    outage = {"partition": params.resolved_partition_seconds(),
              "ttl-exceeded": params.session_ttl_seconds * 1.5 + params.heartbeat_seconds}.get(profile)
    if outage is not None:
        # The clients must also notice the end of the outage and reconnect while sending.
        needed = after + outage + app.client_dead_after
        if duration < needed:
            raise ScenarioError(
                f"profile {profile!r} needs --duration >= {math.ceil(needed)} s for this app "
                f"(outage {outage:g} s after {after:g} s; heartbeat {app.heartbeat_seconds:g} s, "
                f"session_ttl {app.session_ttl:g} s); an app with a shorter heartbeat and TTL, "
                f"e.g. examples.chat_fast.app:server, fits a shorter run")
    return params


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


def _subprocess_env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    # The app is found like `wscore run` finds it: from the current directory.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (os.getcwd(), (extra or {}).get("PYTHONPATH"), env.get("PYTHONPATH")) if p)
    env.update({k: v for k, v in (extra or {}).items() if k != "PYTHONPATH"})
    return env


def probe_app_config(target: str, *, python: str = sys.executable,
                     env: Mapping[str, str] | None = None, timeout: float = 60.0) -> AppConfig:
    """Read ``target``'s config via ``python -m sandbox._config_probe`` (never imported here)."""
    try:
        done = subprocess.run([python, "-m", "sandbox._config_probe", target],
                              capture_output=True, text=True, timeout=timeout,
                              env=_subprocess_env(env), check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ScenarioError(f"cannot read the config of {target}: {exc}") from None
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise ScenarioError(lines[-1] if lines else f"cannot load {target} "
                            f"(exit code {done.returncode})")
    data = json.loads(done.stdout.strip().splitlines()[-1])
    return AppConfig(**data)


class AppProcess:
    """The app under test in its own process: ``wscore run TARGET`` on 127.0.0.1:<free port>."""

    def __init__(self, target: str, *, python: str = sys.executable,
                 env: Mapping[str, str] | None = None, start_timeout: float = 30.0) -> None:
        self.target = target
        self.port = _free_port()
        self._log_file: IO[bytes] = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="wscore-sandbox-app-", suffix=".log", delete=False)
        self.log_path = self._log_file.name
        self.log_removed = False
        cmd = [python, "-m", "wscore.cli", "run", target, "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "WARNING"]
        self.proc = subprocess.Popen(cmd, stdout=self._log_file, stderr=subprocess.STDOUT,
                                     env=_subprocess_env(env))
        try:
            self._wait_healthy(start_timeout)
        except BaseException:
            self.stop()
            raise

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def _wait_healthy(self, timeout: float) -> None:
        url = f"http://127.0.0.1:{self.port}/healthz"
        deadline = time.monotonic() + timeout
        pause = 0.02
        while True:
            code = self.proc.poll()
            if code is not None:
                raise ScenarioError(f"the app exited with code {code} before answering /healthz: "
                                    f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1.0) as resp:
                    if resp.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() >= deadline:
                raise ScenarioError(f"the app did not answer {url} within {timeout:g} s")
            # Polling a process we do not control: there is no event to wait on.
            gevent.sleep(pause)
            pause = min(pause * 2, 0.25)

    def log_tail(self, lines: int = 3) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as fh:
                tail = fh.read().strip().splitlines()[-lines:]
        except OSError:
            return "(no output)"
        return " | ".join(tail) or "(no output)"

    def exit_code(self) -> int | None:
        """None while the app runs."""
        return self.proc.poll()

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("the app ignored SIGTERM for %g s; killing it", timeout)
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()
        # An app that said nothing (warnings and up) leaves no file behind.
        if not self.log_removed and os.path.getsize(self.log_path) == 0:
            os.unlink(self.log_path)
            self.log_removed = True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Driver:
    """The clients of one run and their callbacks; records everything in a :class:`Ledger`."""

    def __init__(self, *, net: ProxyHandle, app: AppConfig, clients: int, rooms: int, seed: int,
                 client_config: WsClientConfig) -> None:
        self.net = net
        self.seed = seed
        self.ledger = Ledger()
        self.t0 = time.monotonic()
        self.clients: list[WsClient] = []
        self.rooms = [f"room-{i % rooms}" for i in range(clients)]
        self.next_seq = [1] * clients
        self.rpc_ids = itertools.count(1)
        self.rpcs = gevent.pool.Group()
        self.rejoins_done = [0] * clients
        self.rejoined = [gevent.event.Event() for _ in range(clients)]
        self.loss_wakeup = [gevent.event.Event() for _ in range(clients)]
        self.rejoiners = gevent.pool.Group()
        self.fences: set[tuple[int, int]] = set()
        self.fences_needed = sum(
            len([j for j in range(clients) if self.rooms[j] == self.rooms[i]]) - 1
            for i in range(clients))
        self.fenced = gevent.event.Event()
        self.stopping = False
        for i in range(clients):
            self.ledger.add_client(i, self.rooms[i])
            client = WsClient(net.url(app.path), config=client_config,
                              rng=random.Random(f"{seed}/backoff/{i}"))
            self._wire(i, client)
            self.clients.append(client)

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- callbacks (run in each client's dispatcher, in arrival order) ------------------------
    def _wire(self, i: int, client: WsClient) -> None:
        ledger = self.ledger

        def on_message(payload: Any) -> None:
            text = payload.get("text") if isinstance(payload, dict) else None
            ledger.chat_received(i, text, time=self.now())
            key = parse_chat_text(text)
            if key is not None and isinstance(text, str) and text.endswith("/" + _FENCE):
                self.fences.add((i, key[0]))
                if len(self.fences) >= self.fences_needed:
                    self.fenced.set()

        def on_error(payload: Any) -> None:
            p = payload if isinstance(payload, dict) else {}
            ledger.server_error(i, time=self.now(), code=int(p.get("code", 0)),
                                name=str(p.get("name", "?")))

        def on_connect(info: SessionInfo) -> None:
            ledger.connected(i, time=self.now(), resumed=info.resumed)

        def on_disconnect(_reason: ConnectionClosed) -> None:
            if not self.stopping:
                ledger.disconnected(i, time=self.now())

        def on_session_lost(_error: WsError) -> None:
            ledger.session_lost(i, time=self.now())
            self.loss_wakeup[i].set()

        client.on("chat.new_message", on_message)
        client.on("sys.error", on_error)
        client.on_connect(on_connect)
        client.on_disconnect(on_disconnect)
        client.on_session_lost(on_session_lost)
        self.rejoiners.spawn(self._rejoiner, i, client)

    def _rejoiner(self, i: int, client: WsClient) -> None:
        """Re-join the room after every session loss (a new session is in no room)."""
        while True:
            self.loss_wakeup[i].wait()
            self.loss_wakeup[i].clear()
            target = client.stats().sessions_lost
            while True:
                try:
                    client.request("room.join", {"roomId": self.rooms[i]})
                    break
                except WsError as exc:
                    log.info("client %d: re-join failed (%s); retrying", i, exc)
                except TimeoutError:
                    log.info("client %d: re-join timed out; retrying", i)
                except ConnectionClosed:
                    return
            self.ledger.rejoined(i, time=self.now())
            self.rejoins_done[i] = target
            self.rejoined[i].set()

    # -- phases -----------------------------------------------------------------------------
    def connect_and_join(self, timeout: float) -> None:
        for i, client in enumerate(self.clients):
            try:
                client.connect(timeout=timeout)
                client.request("room.join", {"roomId": self.rooms[i]}, timeout=timeout)
            except (WsError, ConnectionClosed, TimeoutError) as exc:
                raise ScenarioError(f"client {i} could not connect and join through a clean "
                                    f"proxy: {type(exc).__name__}: {exc}") from None

    def send_phase(self, *, duration: float, rate: float, rpc_ratio: float,
                   rpc_timeout: float) -> None:
        start = time.monotonic()
        senders = gevent.pool.Group()
        for i in range(len(self.clients)):
            senders.spawn(self._sender, i, start, duration, rate, rpc_ratio, rpc_timeout)
        senders.join()

    def _sender(self, i: int, start: float, duration: float, rate: float, rpc_ratio: float,
                rpc_timeout: float) -> None:
        rng = random.Random(f"{self.seed}/traffic/{i}")
        at = start
        while True:
            # Every draw happens on every tick, whatever the outcome: the schedule replays.
            at += rng.uniform(0.5, 1.5) / rate
            is_rpc = rng.random() < rpc_ratio
            filler = "".join(rng.choices(_FILLER, k=rng.randint(8, 160)))
            if at >= start + duration:
                return
            gevent.sleep(max(0.0, at - time.monotonic()))  # pacing, not synchronisation
            if is_rpc:
                self.rpcs.spawn(self._rpc, i, filler, rpc_timeout)
            else:
                self._chat(i, filler)

    def _chat(self, i: int, filler: str) -> bool:
        client = self.clients[i]
        seq = self.next_seq[i]
        text = chat_text(i, seq, filler)
        # Read before send(): frames enqueued from now on belong to this session epoch.
        epoch = client.stats().sessions_lost
        try:
            client.send("chat.message", {"roomId": self.rooms[i], "text": text})
        except (SendBufferFull, ConnectionClosed) as exc:
            log.info("client %d: send refused: %s", i, exc)
            self.ledger.chat_refused(i)
            return False
        self.next_seq[i] = seq + 1
        self.ledger.chat_sent(i, seq, text, time=self.now(), epoch=epoch)
        return True

    def _rpc(self, i: int, filler: str, timeout: float) -> None:
        client = self.clients[i]
        rpc_id = next(self.rpc_ids)
        payload = {"rpc": f"{i}/{rpc_id}", "data": filler}
        self.ledger.rpc_sent(i, rpc_id, time=self.now())
        try:
            reply = client.request("echo", payload, timeout=timeout)
        except SendBufferFull:
            self.ledger.rpc_refused(i)
            return
        except WsError as exc:
            self.ledger.rpc_failed(i, rpc_id, time=self.now(), code=int(exc.code),
                                   name=exc.code.name)
            return
        except (TimeoutError, ConnectionClosed):
            return  # counted as unanswered by the ledger
        self.ledger.rpc_answered(i, rpc_id, time=self.now(), correct=reply == payload)

    def drain(self, deadline: float) -> bool:
        """Barrier, fences, outstanding RPCs (module docstring, phase 8); False on timeout."""
        barriers = [gevent.spawn(self._barrier, i, deadline) for i in range(len(self.clients))]
        gevent.joinall(barriers)
        results = [bool(g.value) for g in barriers]
        if not all(results):
            log.warning("drain: %d of %d clients passed the barrier", sum(results),
                        len(self.clients))
            return False
        for i in range(len(self.clients)):
            self._chat(i, _FENCE)
        if self.fences_needed and not self.fenced.wait(max(0.0, deadline - time.monotonic())):
            log.warning("drain: %d of %d fences arrived", len(self.fences), self.fences_needed)
            return False
        self.rpcs.join(timeout=max(0.0, deadline - time.monotonic()))
        return len(self.rpcs) == 0

    def _barrier(self, i: int, deadline: float) -> bool:
        client = self.clients[i]
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                client.request("echo", {"barrier": i}, timeout=left)
            except WsError as exc:
                log.info("client %d: barrier failed (%s); retrying", i, exc)
                continue
            except (TimeoutError, ConnectionClosed):
                return False
            break
        # Every session loss must have been followed by a completed re-join.
        while self.rejoins_done[i] < client.stats().sessions_lost:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.rejoined[i].clear()
            self.rejoined[i].wait(left)
        return True

    def clients_stopped(self) -> dict[str, int]:
        """Clients that stopped for good on their own (e.g. close 4000), by reason."""
        reasons: dict[str, int] = {}
        for client in self.clients:
            reason = client.close_reason
            if reason is not None:
                key = f"{type(reason).__name__}: {reason}"
                reasons[key] = reasons.get(key, 0) + 1
        return reasons

    def client_counters(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for client in self.clients:
            for key, value in attrs.asdict(client.stats()).items():
                total[key] = total.get(key, 0) + int(value)
        return total

    def close(self) -> None:
        self.stopping = True
        self.rpcs.kill(block=False)
        self.rejoiners.kill(block=False)
        closers = gevent.pool.Group()
        for client in self.clients:
            closers.spawn(client.close)
        closers.join(timeout=10)


def run_scenario(*, app: str, profile: str, clients: int = 10, duration: float = 10.0,
                 seed: int = 0, rooms: int | None = None, rate: float = 2.0,
                 rpc_ratio: float = 0.2, expect_session_loss: bool | None = None,
                 drain_timeout: float | None = None, reset_every_seconds: float | None = None,
                 partition_after_seconds: float | None = None,
                 client_config: WsClientConfig | None = None,
                 app_env: Mapping[str, str] | None = None, python: str = sys.executable,
                 fault_log_path: str | None = None) -> Report:
    """Run ``app`` (``MODULE:ATTR``) behind the sandbox proxy with ``profile``; return the report.

    ``clients`` bundled clients in ``rooms`` rooms (default ``max(1, clients // 5)``)
    send ``rate`` messages per second each for ``duration`` seconds, a
    ``rpc_ratio`` share of them ``echo`` requests. ``expect_session_loss``
    defaults to True for ``ttl-exceeded`` only (see :mod:`sandbox.report`).
    ``drain_timeout`` bounds the drain after the network is healed (default:
    the client's dead-link timeout + its backoff cap + 10 s). ``app_env`` adds
    environment variables for the app's processes (``PYTHONPATH`` is prepended).

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

    process = AppProcess(app, python=python, env=app_env)
    log.info("app %s running on %s:%d (log %s)", app, *process.address, process.log_path)
    try:
        with proxy(process.address, seed=seed, fault_log_path=fault_log_path) as net:
            driver = _Driver(net=net, app=app_config, clients=clients, rooms=n_rooms, seed=seed,
                             client_config=cfg)
            try:
                driver.connect_and_join(timeout=cfg.connect_timeout)
                net.set_faults(faults)
                log.info("faults on: %s (%d faults)", profile, len(faults))
                driver.send_phase(duration=duration, rate=rate, rpc_ratio=rpc_ratio,
                                  rpc_timeout=duration + drain_budget + 60.0)
                net.set_faults(())
                net.proxy.end_blackhole()
                log.info("faults off; draining (up to %.1f s)", drain_budget)
                heal = time.monotonic()
                drained = driver.drain(heal + drain_budget)
                drain_seconds = time.monotonic() - heal
                counters = driver.client_counters()
                stopped = driver.clients_stopped()
                app_exit = process.exit_code()
            finally:
                driver.close()
            fault_log = net.fault_log
            stats = net.stats()
    finally:
        process.stop()
    summary = driver.ledger.summarize()
    key = json.dumps(replay_key(fault_log), default=str).encode()
    run = RunInfo(
        app=app, profile=profile, seed=seed, clients=clients, rooms=n_rooms,
        duration_seconds=duration, rate_per_client=rate, rpc_ratio=rpc_ratio,
        heartbeat_seconds=app_config.heartbeat_seconds,
        app_ping_interval=app_config.ping_interval, app_ping_timeout=app_config.ping_timeout,
        app_session_ttl=app_config.session_ttl, profile_params=attrs.asdict(params),
        expect_session_loss=expect_loss, drain_seconds=round(drain_seconds, 3), drained=drained,
        app_exit_code=app_exit, wall_seconds=round(time.monotonic() - wall0, 3),
        client_counters=counters, clients_stopped=stopped,
        app_log=None if process.log_removed else process.log_path)
    faults_summary = FaultSummary(
        counts=dict(stats["faults_injected"]), records=len(fault_log),
        digest=hashlib.sha256(key).hexdigest(), connections=int(stats["connections"]["accepted"]),
        log=[rec.to_dict() for rec in fault_log])
    return Report(run=run, ledger=summary, faults=faults_summary, verdict=judge(summary, run))
