"""``wscore sandbox …`` command line.

``main(argv)`` takes the arguments after ``sandbox`` (``argv[0]`` is the
sub-command) and returns an exit code: 0 on success, 2 on a user mistake
(one line on stderr, never a traceback).

Sub-commands are registered by *registrar* functions, each adding one
sub-parser whose ``handler`` default is ``Callable[[argparse.Namespace], int]``.
To add ``run``, write ``register_run_command(subparsers)`` in its own module
and append it to :data:`COMMAND_REGISTRARS`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import gevent
import gevent.event

from wscore.sandbox.control import ControlServer
from wscore.sandbox.fault_proxy import FaultProxy, ProxyError, format_address, parse_address
from wscore.sandbox.faults import (
    Bandwidth,
    Blackhole,
    Direction,
    Fault,
    Latency,
    LimitData,
    Refuse,
    ResetPeer,
    Slicer,
    SlowClose,
)
from wscore.sandbox.profiles import (
    ProfileError,
    ProfileParams,
    build_profile,
    load_profile_file,
    profile_names,
)
from wscore.sandbox.run_command import register_run_command

__all__ = [
    "COMMAND_REGISTRARS",
    "Registrar",
    "UsageError",
    "build_parser",
    "faults_from_args",
    "main",
    "register_proxy_command",
]

log = logging.getLogger("wscore.sandbox.cli")

SubParsers = "argparse._SubParsersAction[argparse.ArgumentParser]"
Registrar = Callable[[Any], None]
Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A user mistake on the command line; reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _range(text: str) -> tuple[float, float]:
    """``"5"`` or ``"5-15"`` → (5.0, 15.0)."""
    low, sep, high = text.partition("-")
    try:
        return (float(low), float(high if sep else low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or LOW-HIGH, got {text!r}") from None


def _int_range(text: str) -> tuple[int, int]:
    low, high = _range(text)
    if low != int(low) or high != int(high):
        raise argparse.ArgumentTypeError(f"expected integers, got {text!r}")
    return (int(low), int(high))


def _address(text: str) -> tuple[str, int]:
    try:
        return parse_address(text)
    except ProxyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register_proxy_command(subparsers: Any) -> None:
    """Add ``proxy`` (the fault proxy) to ``subparsers``."""
    p = subparsers.add_parser("proxy", help="run the fault-injecting proxy",
                              description="Run a seeded, WebSocket-aware fault proxy.")
    p.add_argument("--listen", type=_address, default=("127.0.0.1", 9000), metavar="HOST:PORT")
    p.add_argument("--upstream", type=_address, required=True, metavar="HOST:PORT")
    p.add_argument("--seed", type=int, default=0)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--profile", help=f"named profile: {', '.join(profile_names())}")
    src.add_argument("--profile-file", metavar="PATH", help="JSON or TOML profile file")
    p.add_argument("--heartbeat-seconds", type=float, default=5.0,
                   help="app heartbeat, for profiles (default 5)")
    p.add_argument("--session-ttl-seconds", type=float, default=30.0,
                   help="app session TTL, for profiles (default 30)")
    p.add_argument("--control", type=_address, metavar="HOST:PORT",
                   help="serve the HTTP control API here (loopback)")
    p.add_argument("--fault-log", metavar="PATH", help="append fault records as JSON lines")
    p.add_argument("-v", "--verbose", action="store_true", help="log every fault")
    f = p.add_argument_group("faults (added to the profile's)")
    f.add_argument("--direction", choices=[d.value for d in Direction], default="both",
                   help="direction of the faults given by flags (default both)")
    f.add_argument("--latency-ms", type=float)
    f.add_argument("--jitter-ms", type=float, default=0.0)
    f.add_argument("--bandwidth", type=int, metavar="BYTES_PER_S")
    f.add_argument("--slice-bytes", type=int, metavar="K", help="sliced writes of 1..K bytes")
    f.add_argument("--slice-delay-ms", type=float, default=0.0)
    f.add_argument("--reset-after-frames", type=_int_range, metavar="N[-M]")
    f.add_argument("--reset-after-seconds", type=_range, metavar="S[-T]")
    f.add_argument("--reset-mid-frame", type=float, default=0.0, metavar="P",
                   help="probability a frame-triggered reset lands mid-frame")
    f.add_argument("--reset-probability", type=float, default=1.0, metavar="P")
    f.add_argument("--blackhole-after-seconds", type=_range, metavar="S[-T]")
    f.add_argument("--blackhole-after-frames", type=_int_range, metavar="N[-M]")
    f.add_argument("--blackhole-seconds", type=_range, default=(1.0, 1.0), metavar="S[-T]")
    f.add_argument("--blackhole-repeat", action="store_true")
    f.add_argument("--limit-bytes", type=int, metavar="N")
    f.add_argument("--limit-frames", type=int, metavar="N")
    f.add_argument("--refuse-probability", type=float, metavar="P")
    f.add_argument("--slow-close-ms", type=float)
    p.set_defaults(handler=_run_proxy)


COMMAND_REGISTRARS: list[Registrar] = [register_proxy_command, register_run_command]


def build_parser(registrars: Sequence[Registrar] | None = None) -> argparse.ArgumentParser:
    """The ``wscore sandbox`` parser with one sub-command per registrar."""
    parser = _Parser(prog="wscore sandbox", description="wscore network sandbox")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND",
                                       parser_class=_Parser)
    subparsers.required = True
    for registrar in COMMAND_REGISTRARS if registrars is None else registrars:
        registrar(subparsers)
    return parser


def faults_from_args(args: argparse.Namespace) -> tuple[Fault, ...]:
    """Faults described by ``proxy``'s fault flags. Raises :class:`UsageError`."""
    d = Direction(args.direction)
    out: list[Fault] = []
    try:
        if args.latency_ms is not None:
            out.append(Latency(latency_seconds=args.latency_ms / 1000,
                               jitter_seconds=args.jitter_ms / 1000, direction=d))
        if args.bandwidth is not None:
            out.append(Bandwidth(rate_bytes_per_second=args.bandwidth, direction=d))
        if args.slice_bytes is not None:
            out.append(Slicer(max_slice_bytes=args.slice_bytes,
                              slice_delay_seconds=args.slice_delay_ms / 1000, direction=d))
        if args.reset_after_frames is not None or args.reset_after_seconds is not None:
            out.append(ResetPeer(direction=d, after_frames=args.reset_after_frames,
                                 after_seconds=args.reset_after_seconds,
                                 mid_frame_probability=args.reset_mid_frame,
                                 probability=args.reset_probability))
        if args.blackhole_after_seconds is not None or args.blackhole_after_frames is not None:
            out.append(Blackhole(direction=d, after_seconds=args.blackhole_after_seconds,
                                 after_frames=args.blackhole_after_frames,
                                 duration_seconds=args.blackhole_seconds,
                                 repeat=args.blackhole_repeat))
        if args.limit_bytes is not None or args.limit_frames is not None:
            out.append(LimitData(direction=d, max_bytes=args.limit_bytes,
                                 max_frames=args.limit_frames))
        if args.refuse_probability is not None:
            out.append(Refuse(probability=args.refuse_probability))
        if args.slow_close_ms is not None:
            out.append(SlowClose(direction=d, delay_seconds=args.slow_close_ms / 1000))
    except (TypeError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    return tuple(out)


def _run_proxy(args: argparse.Namespace) -> int:
    try:
        params = ProfileParams(heartbeat_seconds=args.heartbeat_seconds,
                               session_ttl_seconds=args.session_ttl_seconds)
        if args.profile_file:
            faults = load_profile_file(args.profile_file, params)
        elif args.profile:
            faults = build_profile(args.profile, params)
        else:
            faults = ()
    except ProfileError as exc:
        raise UsageError(str(exc)) from None
    faults += faults_from_args(args)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    proxy = FaultProxy(upstream=args.upstream, listen=args.listen, faults=faults,
                       seed=args.seed, fault_log_path=args.fault_log)
    control: ControlServer | None = None
    try:
        proxy.start()
        if args.control:
            control = ControlServer(proxy, args.control)
            control.start()
    except ProxyError as exc:
        proxy.stop()
        raise UsageError(str(exc)) from None
    stop = gevent.event.Event()
    handlers = [gevent.signal_handler(sig, stop.set) for sig in (2, 15)]  # SIGINT, SIGTERM
    print(f"sandbox proxy {format_address(proxy.address)} -> {format_address(proxy.upstream)}"
          f" seed={args.seed} faults={len(faults)}"
          + (f" control={control.url}" if control else ""), flush=True)
    try:
        stop.wait()
    finally:
        for handler in handlers:
            handler.cancel()
        if control:
            control.stop()
        proxy.stop()
    stats = proxy.stats()
    print(f"sandbox proxy stopped: {stats['connections']['accepted']} connections, "
          f"faults {stats['faults_injected']}", flush=True)
    return 0


def main(argv: Sequence[str]) -> int:
    """Run ``wscore sandbox <argv…>``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
        handler: Handler = args.handler
        return handler(args)
    except UsageError as exc:
        print(f"wscore sandbox: error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help / --version
        return exc.code if isinstance(exc.code, int) else 0
