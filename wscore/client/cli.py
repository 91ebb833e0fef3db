"""``wscore client URL`` (also ``python -m wscore.client URL``) — an interactive line client.

Every received event is printed as one line ``event.name <json payload>``.
Input lines::

    event.name {"json": "payload"}     send (fire and forget); the payload may be omitted
    ?event.name {"json": "payload"}    request: print the reply (or the error)
    /help                              list these commands (never sent)
    /quit                              close and exit (so does end of input)

A line starting with ``/`` is a command, never an event. User mistakes (a bad
URL, an unreachable or refusing server) end the program with a one-line
``error: …`` on stderr and a non-zero status; a bad input line only prints a
one-line error and the session goes on.

The first connection must open within ``--connect-timeout`` (5 s): a server
that is down is reported at once instead of after the library's 30 s. Once
connected, the client reconnects and resumes by itself after every drop, as
:class:`WsClient` does. ``--verbose`` shows the client's INFO log (each failed
attempt, each lost link) on stderr.

Exit status: 0 after ``/quit`` or end of input, 1 when the connection could
not be made or ended for good, 2 for bad arguments, 130 after Ctrl-C (which
closes the connection cleanly and prints nothing more).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from typing import Any, TextIO

import gevent
import gevent.event
from gevent.fileobject import FileObjectThread

from wscore.client.client import SessionInfo, WsClient
from wscore.client.config import WsClientConfig
from wscore.errors import ConfigError, ConnectionClosed, UsageError, WsError

__all__ = ["main", "parse_line"]

_PROG = "wscore client"

_HELP = """\
commands:
  event.name {"json":"payload"}   send an event (the payload may be omitted)
  ?event.name {"json":"payload"}  send a request and print the reply as `< reply`
  /help                           this list
  /quit                           close and exit (so do end of input and Ctrl-C)
received events print as `event.name {payload}`; lines starting with # are the client's own"""


def parse_line(line: str) -> tuple[bool, str, Any] | None:
    """Parse one input line into ``(is_request, event, payload)``; None for a blank line.

    Raises ``ValueError`` with a one-line message for a malformed line.
    """
    line = line.strip()
    if not line:
        return None
    is_request = line.startswith("?")
    if is_request:
        line = line[1:].lstrip()
    event, _, rest = line.partition(" ")
    if not event:
        raise ValueError("missing event name")
    rest = rest.strip()
    if not rest:
        return is_request, event, None
    try:
        payload = json.loads(rest)
    except json.JSONDecodeError as exc:
        raise ValueError(f"payload is not JSON ({exc.msg} at column {exc.colno})") from None
    return is_request, event, payload


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Interactive wscore client: prints received events, sends typed lines.",
        epilog='Input: `event.name {"json":"payload"}` sends, `?event.name {...}` requests, '
        "`/help` lists the commands, `/quit` exits.",
    )
    parser.add_argument("url", help="server URL, e.g. ws://127.0.0.1:8080/ws")
    parser.add_argument("--token", default=None, help="auth token (sent as Authorization: Bearer)")
    parser.add_argument(
        "--timeout", type=float, default=10.0,
        help="seconds to wait for a reply, and for each later reconnection attempt (default 10)"
    )
    parser.add_argument(
        "--connect-timeout", type=float, default=5.0,
        help="seconds the first connection may take before giving up (default 5)"
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true",
        help="log the client's attempts and reconnects (INFO) on stderr"
    )
    parser.add_argument(
        "--no-reconnect", action="store_true", help="exit instead of reconnecting when cut"
    )
    return parser


def main(argv: list[str] | None = None, *, stdin: TextIO | None = None,
         stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the interactive client; returns the process exit status (see module doc)."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed its one-line usage error
        return int(exc.code or 0)
    for name in ("timeout", "connect_timeout"):
        if not getattr(args, name) > 0:
            print(f"error: --{name.replace('_', '-')} must be > 0", file=err)
            return 2
    try:
        config = WsClientConfig(
            connect_timeout=args.connect_timeout,
            open_timeout=args.timeout,
            request_timeout=args.timeout,
            reconnect=not args.no_reconnect,
        )
        client = WsClient(args.url, token=args.token, config=config)
    except ConfigError as exc:
        print(f"error: {exc}", file=err)
        return 2

    def show(line: str) -> None:
        out.write(line + "\n")
        out.flush()

    @client.on_any
    def _print_event(event: str, payload: Any) -> None:
        show(f"{event} {_dump(payload)}")

    @client.on_connect
    def _connected(info: SessionInfo) -> None:
        show(f"# connected ({'resumed session' if info.resumed else 'new session'}, "
             f"heartbeat {info.heartbeat:g} s)")

    @client.on_disconnect
    def _disconnected(reason: ConnectionClosed) -> None:
        if not client.closing:
            show(f"# disconnected ({reason.reason or reason.code}); reconnecting")

    @client.on_session_lost
    def _lost(error: WsError) -> None:
        show(f"# session lost ({error.message}); a new session was started")

    client_log = logging.getLogger("wscore.client")
    log_level = client_log.level
    log_handler = _verbose_log(err) if args.verbose else None
    # Ctrl-C is the user's way out: close cleanly, no KeyboardInterrupt from some greenlet.
    interrupted = gevent.event.Event()
    try:
        sigint: Any = gevent.signal_handler(signal.SIGINT, interrupted.set)
    except (ValueError, OSError):  # not the main thread (embedded): keep Python's default
        sigint = None
    try:
        return _run(client, stdin, show, err, interrupted)
    finally:
        if sigint is not None:
            sigint.cancel()
        if log_handler is not None:
            client_log.removeHandler(log_handler)
            client_log.setLevel(log_level)


def _run(client: WsClient, stdin: TextIO | None, show: Any, err: TextIO,
         interrupted: gevent.event.Event) -> int:
    def connect() -> BaseException | None:
        try:
            client.connect()
        except (WsError, ConnectionClosed, TimeoutError, OSError) as exc:
            return exc  # returned, not raised: a failed greenlet would print a traceback
        return None

    connecting = gevent.spawn(connect)
    gevent.wait([connecting, interrupted], count=1)
    if not connecting.ready():  # Ctrl-C while connecting
        connecting.kill()
        client.close()
        return 130
    failure = connecting.get()
    if failure is not None:
        print(f"error: cannot connect to {client.url}: {_one_line(failure)}", file=err)
        client.close()
        return 1

    source = stdin if stdin is not None else FileObjectThread(sys.stdin, "r")
    reader = gevent.spawn(_input_loop, client, source, show, err)
    # Whichever ends first: the user's input (EOF, /quit), the client (terminal close), Ctrl-C.
    ended = gevent.spawn(client.wait_closed)
    gevent.wait([reader, ended, interrupted], count=1)
    reader.kill()
    ended.kill()
    if interrupted.is_set():
        client.close()
        return 130
    status = 0
    reason = client.close_reason
    if reason is not None:
        print(f"error: connection ended: {_one_line(reason)}", file=err)
        status = 1
    client.close()
    return status


def _verbose_log(err: TextIO) -> logging.Handler:
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter("# %(message)s"))
    logger = logging.getLogger("wscore.client")
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    return handler


def _input_loop(client: WsClient, source: Any, show: Any, err: TextIO) -> None:
    while True:
        line = source.readline()
        command = line.strip()
        if not line or command == "/quit":
            return  # end of input
        if command.startswith("/"):  # a command, never an event
            if command == "/help":
                show(_HELP)
            else:
                print(f"error: unknown command {command.split()[0]} (/help lists them)", file=err)
            continue
        try:
            parsed = parse_line(line)
            if parsed is None:
                continue
            is_request, event, payload = parsed
            if is_request:
                show(f"< {_dump(client.request(event, payload))}")
            else:
                client.send(event, payload)
        except (ValueError, TypeError, UsageError, WsError, TimeoutError) as exc:
            print(f"error: {_one_line(exc)}", file=err)
        except ConnectionClosed:
            return


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]
