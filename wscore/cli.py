"""The ``wscore`` command.

    wscore run MODULE:ATTR [--host H] [--port P] [--log-level L] [--redis URL] [--workers N]
    wscore client URL [...]            interactive line client
    wscore sandbox proxy|run ...       the flaky-network sandbox

User mistakes get one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import attrs

from wscore import workers
from wscore.errors import ConfigError
from wscore.server import WsServer

__all__ = ["load_server", "main"]

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (the usage itself is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class TargetError(Exception):
    """The MODULE:ATTR target cannot be used (message is the one line to show)."""


def load_server(target: str) -> WsServer:
    """Import ``MODULE:ATTR`` (current directory on the path) and return the WsServer there."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise TargetError(f"target must look like MODULE:ATTR (e.g. examples.chat.app:server), "
                          f"got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise TargetError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:
        raise TargetError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attr!r}") from None
    if not isinstance(obj, WsServer):
        raise TargetError(f"{target} is a {type(obj).__name__}, not a wscore.WsServer")
    return obj


def _run(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    server = load_server(args.target)
    overrides = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.redis is not None:
        overrides["redis_url"] = args.redis
    if overrides:
        server.config = attrs.evolve(server.config, **overrides)
    # -- workers (wscore/workers.py): a worker serves the supervisor's socket; N > 1 supervises
    if args.workers != 1 and args.worker_fds is None:
        return workers.supervise(server.config, workers=args.workers, argv=argv, redis_flag=args.redis)
    if args.worker_fds is not None:
        return workers.run_worker(server, args.worker_fds)
    server.start()
    logging.getLogger("wscore.cli").info(
        "serving %s on %s (healthz: http://%s:%d/healthz)", args.target, server.url,
        server.url.split("//", 1)[1].split(":", 1)[0], server.port)
    server.serve_forever()
    return 0


def loadtest_main(argv: Sequence[str]) -> int:
    """``wscore loadtest SCENARIO …``: a locust scenario headless, summarised (``loadtests.cli``)."""
    from wscore.loadtests.cli import main as loadtest_cli

    return loadtest_cli(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["loadtest"]:
        return loadtest_main(argv[1:])
    if argv[:1] == ["sandbox"]:
        from wscore.sandbox.cli import main as sandbox_main

        return sandbox_main(argv[1:])
    if argv[:1] == ["client"]:
        from wscore.client.cli import main as client_main

        return client_main(argv[1:])
    parser = _Parser(
        prog="wscore", description="wscore: a real-time event platform whose sessions outlive "
        "their connections.", epilog="`wscore COMMAND --help` describes each command.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")
    run = sub.add_parser("run", help="serve a WsServer object (MODULE:ATTR) until Ctrl-C/SIGTERM",
                         description="Serve the WsServer object MODULE:ATTR (the current "
                         "directory is on the path) until Ctrl-C or SIGTERM.")
    run.add_argument("target", help="MODULE:ATTR, e.g. examples.chat.app:server")
    run.add_argument("--host", default=None, help="interface to bind (default: the app's config)")
    run.add_argument("--port", type=int, default=None,
                     help="port to bind, 0 for any free one (default: the app's config)")
    run.add_argument("--log-level", default="INFO", type=str.upper, choices=_LOG_LEVELS,
                     help="log level (default: INFO)")
    run.add_argument("--redis", default=None, metavar="URL",
                     help="redis://HOST:PORT/DB: sessions and rooms in Redis, shared by every node")
    workers.add_arguments(run)  # --workers N (its own --redis is skipped: defined above)
    sub.add_parser("client", help="interactive line client: wscore client URL", add_help=False)
    sub.add_parser("sandbox", help="flaky-network sandbox: wscore sandbox proxy|run ...",
                   add_help=False)
    sub.add_parser("loadtest", help="a locust scenario, headless, with a summary: "
                   "wscore loadtest SCENARIO ...", add_help=False)
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run(args, argv)
    except (TargetError, ConfigError) as exc:
        print(f"wscore: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
