"""The app under test: its config (read without importing it), fitting profiles to it, its process.

``wscore sandbox run`` never imports the user's module: :func:`probe_app_config`
reads the config in a throw-away subprocess (``python -m sandbox._config_probe
MODULE:ATTR``, i.e. ``wscore.cli.load_server`` without starting it) and
:class:`AppProcess` runs ``python -m wscore.cli run MODULE:ATTR`` on a free
loopback port, so the app's CPU is separate and a crash cannot take the runner
down. :func:`fit_profile_params` fits a named profile to the app's heartbeat
and session TTL, refusing a run too short for it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import IO

import attrs

from wscore.sandbox.profiles import ProfileError, ProfileParams, build_profile
from wscore.sandbox.retry import Backoff

__all__ = [
    "EXPECT_SESSION_LOSS_PROFILES",
    "AppConfig",
    "AppProcess",
    "ScenarioError",
    "fit_profile_params",
    "probe_app_config",
]

log = logging.getLogger("wscore.sandbox.runner")

#: Profiles whose outage is meant to end sessions (default ``expect_session_loss``).
EXPECT_SESSION_LOSS_PROFILES = frozenset({"ttl-exceeded"})


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


def wait_until_healthy(proc: subprocess.Popen[bytes], port: int, *, timeout: float, name: str) -> int | None:
    """Poll ``proc``'s ``GET /healthz`` on 127.0.0.1:``port`` until it answers 200 (``None``).

    Returns ``proc``'s exit code if it exits first; :class:`ScenarioError` naming
    ``name`` if neither happens within ``timeout`` seconds. Pauses back off
    (20 ms doubling to 250 ms): a process we do not control has no event to wait on.
    """
    url = f"http://127.0.0.1:{port}/healthz"
    deadline = time.monotonic() + timeout
    backoff = Backoff(base=0.02, cap=0.25)
    while True:
        code = proc.poll()
        if code is not None:
            return code
        try:
            with urllib.request.urlopen(url, timeout=1.0) as resp:
                if resp.status == 200:
                    return None
        except (OSError, urllib.error.URLError):
            pass
        if not backoff.pause(deadline):
            raise ScenarioError(f"{name} did not answer {url} within {timeout:g} s")


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
        done = subprocess.run([python, "-m", "wscore.sandbox._config_probe", target],
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
        code = wait_until_healthy(self.proc, self.port, timeout=timeout, name="the app")
        if code is not None:
            raise ScenarioError(f"the app exited with code {code} before answering /healthz: "
                                f"{self.log_tail()}")

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
