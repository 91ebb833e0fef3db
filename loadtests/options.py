"""The scenarios' command-line options, declared once: ``--rooms``, ``--message-interval`` …

Every option is declared here, once, so any set of scenario files can be
loaded together (``locust -f a.py,b.py``) without argparse conflicts; each is
also read from an environment variable ``LOCUST_<NAME>`` and, in library use
without parsed options, falls back to that variable and then to its default.
:func:`add_options` is the ``init_command_line_parser`` listener;
:func:`loadtests.hooks.install` registers it (importing this module registers
nothing).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import urllib.parse
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

import attrs
from locust.env import Environment

from wscore.sandbox.argtypes import non_negative_float, non_negative_int, positive_float, positive_int

__all__ = [
    "DROP_INTERVAL",
    "ECHO_BYTES",
    "MESSAGE_INTERVAL",
    "OPTIONS",
    "PROXY_CONTROL",
    "REQUEST_TIMEOUT",
    "ROOMS",
    "RPC_RATE",
    "STORM_INTERVAL",
    "Option",
    "add_options",
    "loopback_http_url",
]

T = TypeVar("T")


def loopback_http_url(text: str) -> str:
    """``text`` without a trailing slash if it is ``http://`` on a loopback host; "" stays "".

    Raises ``argparse.ArgumentTypeError`` (a ``ValueError``… for argparse) otherwise: the
    sandbox proxy's control API has no authentication, so it is only ever used locally.
    """
    if not text:
        return ""
    parts = urllib.parse.urlsplit(text)
    host = parts.hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if parts.scheme != "http" or not loopback:
        raise argparse.ArgumentTypeError(f"must be http://<loopback host>:<port>, got {text!r}")
    return text.rstrip("/")



@attrs.frozen
class Option(Generic[T]):
    """A custom locust command-line option, its ``LOCUST_*`` variable and its default."""

    flag: str
    parse: Callable[[str], T]
    default: T
    help: str

    @property
    def dest(self) -> str:
        """The attribute name in locust's parsed options (``--echo-bytes`` → ``echo_bytes``)."""
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env_var(self) -> str:
        return "LOCUST_" + self.dest.upper()

    def get(self, environment: Environment) -> T:
        """The value for this run: parsed options, else ``$LOCUST_<NAME>``, else the default.

        Raises ``ValueError`` (``argparse.ArgumentTypeError``) for an invalid variable.
        """
        parsed = environment.parsed_options
        value = getattr(parsed, self.dest, None) if parsed is not None else None
        if value is not None:
            # The web UI hands custom options back as strings: parse them again.
            return self.parse(value) if isinstance(value, str) else cast(T, value)
        raw = os.environ.get(self.env_var)
        return self.parse(raw) if raw else self.default


ROOMS = Option("--rooms", positive_int, 4,
               "chat, reconnect_storm: rooms the users are spread over (round robin)")
MESSAGE_INTERVAL = Option("--message-interval", positive_float, 1.0,
                          "chat, reconnect_storm: seconds between one user's tasks (constant pacing)")
ECHO_BYTES = Option("--echo-bytes", non_negative_int, 64, "rpc: filler bytes in each echo payload")
RPC_RATE = Option("--rpc-rate", non_negative_float, 500.0,
                  "rpc: most tasks per second per user, to stay under the server's per-session "
                  "rate_limit (dev: 1000 messages/s); 0: no cap")
DROP_INTERVAL = Option("--drop-interval", non_negative_float, 5.0,
                       "reconnect_storm: mean seconds between one user's own abrupt drops (0: never)")
PROXY_CONTROL = Option("--proxy-control", loopback_http_url, "",
                       "reconnect_storm: control API URL of a sandbox proxy (loopback, e.g. "
                       "http://127.0.0.1:9001): cut every connection at once every --storm-interval")
STORM_INTERVAL = Option("--storm-interval", positive_float, 10.0,
                        "reconnect_storm: seconds between proxy-wide cuts (with --proxy-control)")
REQUEST_TIMEOUT = Option("--ws-request-timeout", positive_float, 10.0,
                         "all: seconds a request waits for its reply before it is a failure")

OPTIONS: tuple[Option[Any], ...] = (
    ROOMS, MESSAGE_INTERVAL, ECHO_BYTES, RPC_RATE, DROP_INTERVAL, PROXY_CONTROL, STORM_INTERVAL,
    REQUEST_TIMEOUT,
)


def add_options(parser: Any, **_: Any) -> None:
    """The ``init_command_line_parser`` listener: add every option to locust's parser."""
    group = parser.add_argument_group("wscore scenarios (loadtests/)")
    for opt in OPTIONS:
        group.add_argument(opt.flag, type=opt.parse, default=opt.default, env_var=opt.env_var,
                           help=f"{opt.help} (default {opt.default!r}; env {opt.env_var})")


