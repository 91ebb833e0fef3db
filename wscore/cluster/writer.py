"""One batching (auto-pipelining) Redis writer per node.

Every greenlet's commands go down ONE connection. :meth:`RedisWriter.submit`
queues a command and returns a gevent ``AsyncResult`` at once; the writer
greenlet takes everything queued since it last looked (so all commands queued
during one loop turn) and sends it as one pipeline; a reader greenlet reads the
replies in order and resolves each caller's future, so Redis works on one
batch while the next is packed (at most ``max_in_flight`` batches unanswered).
Measured on this kind of machine, one un-pipelined redis-py command costs
117–178 µs of node CPU and a pipelined one about 10 µs; that is the whole
reason for this module.

Contracts:

- **Never blocks a caller.** ``submit`` raises :class:`WriterQueueFull` when
  ``max_queued`` commands wait already, and :class:`RedisUnavailable` while the
  writer is down; it never waits for room or for a connection.
- **Every future resolves.** With the reply, with the command's own error
  (``redis.ResponseError``, or a script's refusal), or with
  :class:`RedisUnavailable` when the connection breaks before the reply came
  (then the command may or may not have run: the caller must treat its effect
  as unknown) or the writer is stopped. A short ``socket_timeout`` bounds how
  long a reply may take, so a paused Redis is a lost connection, not a hang.
- **No retry loop inside redis-py.** redis-py's default retry blocked a
  greenlet 1.8–3.4 s; the connection here has retries off. The writer greenlet
  reconnects on its own with exponential backoff (``reconnect_min_delay`` …
  ``reconnect_max_delay``) and reports each change through ``on_state(up)``.
  An idle connection is checked every ``idle_check_interval`` seconds for
  EOF (no round trip), so a Redis that went away is noticed while idle too.
- **Scripts survive restarts.** Registered scripts are ``SCRIPT LOAD``-ed on
  every (re)connect before the writer reports up, so ``EVALSHA`` finds them; a
  ``NOSCRIPT`` reply (someone ran ``SCRIPT FLUSH``) makes the writer re-send
  that command as ``EVAL`` ahead of everything queued since.

The process must be gevent monkey-patched (as wscore's server is) so the
socket waits yield to other greenlets. Callbacks (``on_state``) run in the
writer greenlet and must not block.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, cast

import gevent
import gevent.event
import gevent.select
import redis
import redis.exceptions
from redis.backoff import NoBackoff
from redis.retry import Retry

from wscore.cluster.errors import RedisUnavailable, WriterQueueFull
from wscore.cluster.scripts import Script
from wscore.config import redacted_url

__all__ = ["RedisConnection", "RedisWriter", "open_connection", "text", "wait_result"]

log = logging.getLogger("wscore.cluster.writer")

_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # redis-py without the hiredis extra: its own packer
    _hiredis_pack = None

#: What a broken or unreachable connection raises inside redis-py (and the OS).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)


class RedisConnection(Protocol):
    """The part of ``redis.Connection`` this package uses (redis-py leaves it untyped)."""

    def connect(self) -> None: ...
    def disconnect(self) -> None: ...
    def pack_commands(self, commands: Sequence[Sequence[Any]]) -> list[bytes]: ...
    def send_packed_command(self, command: list[bytes], check_health: bool = ...) -> None: ...
    def send_command(self, *args: Any, check_health: bool = ...) -> None: ...
    def read_response(self) -> Any: ...
    def can_read(self, timeout: float = ...) -> bool: ...


def open_connection(
    url: str, *, socket_timeout: float, connect_timeout: float, name: str | None = None
) -> RedisConnection:
    """A single redis-py connection to ``url`` with retries off and short timeouts (not yet connected)."""
    from redis.connection import parse_url

    kwargs: dict[str, Any] = cast(Callable[[str], dict[str, Any]], parse_url)(url)
    kwargs.pop("connection_class", None)
    if kwargs.pop("path", None) is not None:
        raise ValueError(f"unix socket URLs are not supported here: {redacted_url(url)}")
    make = cast(Callable[..., RedisConnection], redis.Connection)
    return make(
        **kwargs,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        retry_on_timeout=False,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
        client_name=name,
        protocol=2,  # flat RESP2 replies, as the scripts give; pub/sub messages as plain arrays
    )


def _pack(conn: RedisConnection, batch: list[_Command]) -> list[bytes]:
    # hiredis packs a command in C; redis-py's own packer costs ~25 µs of Python per command
    if _hiredis_pack is not None:
        return [b"".join([_hiredis_pack(c.args) for c in batch])]
    return conn.pack_commands([c.args for c in batch])


class _Command:
    __slots__ = ("args", "result", "script")

    def __init__(self, args: tuple[Any, ...], script: Script | None) -> None:
        self.args = args
        self.script = script
        self.result: gevent.event.AsyncResult = gevent.event.AsyncResult()


class RedisWriter:
    """The node's one batching connection to Redis; see the module docstring for the contracts."""

    def __init__(
        self,
        url: str,
        *,
        max_queued: int = 100_000,
        max_batch: int = 2_000,
        max_in_flight: int = 4,
        socket_timeout: float = 1.0,
        connect_timeout: float = 0.5,
        reconnect_min_delay: float = 0.05,
        reconnect_max_delay: float = 1.0,
        idle_check_interval: float = 0.25,
        on_state: Callable[[bool], None] | None = None,
        name: str = "wscore-writer",
    ) -> None:
        if max_queued < 1 or max_batch < 1:
            raise ValueError("max_queued and max_batch must be at least 1")
        self.url = url
        self.max_queued = max_queued
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.socket_timeout = socket_timeout
        self.connect_timeout = connect_timeout
        self.reconnect_min_delay = reconnect_min_delay
        self.reconnect_max_delay = reconnect_max_delay
        self.idle_check_interval = idle_check_interval
        self.on_state = on_state
        self.name = name
        self._scripts: dict[str, Script] = {}
        self._queue: collections.deque[_Command] = collections.deque()
        self._retry: collections.deque[_Command] = collections.deque()
        self._in_flight: collections.deque[list[_Command]] = collections.deque()
        self._reply_wake = gevent.event.Event()
        self._reader: gevent.Greenlet[Any, Any] | None = None
        self._reader_error: BaseException | None = None
        self._wake = gevent.event.Event()
        self._stopped = gevent.event.Event()
        self._conn: RedisConnection | None = None
        self._greenlet: gevent.Greenlet[Any, Any] | None = None
        self._up = False
        # statistics (a cheap stats())
        self._batches = 0
        self._commands = 0
        self._largest_batch = 0
        self._connects = 0
        self._failed_unavailable = 0

    # -- life -------------------------------------------------------------------------------
    def register(self, *scripts: Script) -> None:
        """Have ``scripts`` loaded on every (re)connect (call before :meth:`start` or any time)."""
        for script in scripts:
            if script.sha in self._scripts:
                continue
            self._scripts[script.sha] = script
            if self._up:
                # queued ahead of any EVALSHA of it that follows
                self.submit("SCRIPT", "LOAD", script.source)

    def start(self) -> None:
        """Connect once, synchronously, then start the writer greenlet.

        Raises :class:`RedisUnavailable` (and starts nothing) when Redis cannot be
        reached now: an unusable Redis at start is a configuration error (SPEC §6).
        """
        if self._greenlet is not None:
            raise RuntimeError("writer already started")
        try:
            self._connect()
        except CONNECTION_ERRORS as exc:
            raise RedisUnavailable(f"Redis at {redacted_url(self.url)} is unreachable: {exc}") from exc
        self._set_up(True)
        self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """Stop the writer: queued and in-flight futures fail with :class:`RedisUnavailable`."""
        self._stopped.set()
        self._wake.set()
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=5)
            self._greenlet = None
        self._drop_connection()
        self._fail_all(RedisUnavailable("the Redis writer was stopped"), [])
        if self._up:
            self._set_up(False)

    @property
    def up(self) -> bool:
        """True while the writer holds a working connection."""
        return self._up

    def stats(self) -> dict[str, int | bool]:
        return {
            "up": self._up,
            "queued": len(self._queue),
            "in_flight_batches": len(self._in_flight),
            "batches": self._batches,
            "commands": self._commands,
            "largest_batch": self._largest_batch,
            "connects": self._connects,
            "failed_unavailable": self._failed_unavailable,
        }

    # -- commands ---------------------------------------------------------------------------
    def submit(self, *args: Any) -> gevent.event.AsyncResult:
        """Queue one command (``"SET", key, value``); its reply arrives on the returned future."""
        return self._enqueue(_Command(args, None))

    def submit_script(
        self, script: Script, keys: Sequence[Any], args: Sequence[Any]
    ) -> gevent.event.AsyncResult:
        """Queue ``EVALSHA`` of a :meth:`register`-ed script (``EVAL`` if Redis lost it)."""
        if script.sha not in self._scripts:
            raise ValueError(f"script {script.name} is not registered with this writer")
        return self._enqueue(_Command(("EVALSHA", script.sha, len(keys), *keys, *args), script))

    def execute(self, *args: Any, timeout: float | None = None) -> Any:
        """:meth:`submit` and wait for the reply (raises the command's error or RedisUnavailable)."""
        return wait_result(self.submit(*args), timeout)

    def _enqueue(self, command: _Command) -> gevent.event.AsyncResult:
        if not self._up:
            self._failed_unavailable += 1
            raise RedisUnavailable(f"Redis at {redacted_url(self.url)} is down (the writer is reconnecting)")
        if len(self._queue) >= self.max_queued:
            raise WriterQueueFull(f"the Redis writer already holds {self.max_queued} queued commands")
        self._queue.append(command)
        self._wake.set()
        return command.result

    # -- the writer greenlets ----------------------------------------------------------------
    # The sender packs and sends batches; a reader greenlet (one per connection) reads the
    # replies of the batches in flight, in order. Redis works on one batch while this
    # process packs the next (at most ``max_in_flight`` batches sent and unanswered).
    def _run(self) -> None:
        while not self._stopped.is_set():
            if self._conn is None:
                self._reconnect()
                continue
            if self._reader_error is not None:
                self._lost(self._reader_error, [])
                continue
            if (not self._queue and not self._retry) or len(self._in_flight) >= self.max_in_flight:
                self._wake.clear()
                idle = not self._in_flight
                if not self._wake.wait(self.idle_check_interval) and idle and self._peer_closed():
                    self._lost(redis.exceptions.ConnectionError("Redis closed the idle connection"), [])
                continue
            batch = self._take_batch()
            try:
                self._send(batch)
            except CONNECTION_ERRORS as exc:
                self._lost(exc, batch)

    def _peer_closed(self) -> bool:
        """True if the idle connection is readable: with nothing asked, that is EOF or an error."""
        sock = getattr(self._conn, "_sock", None)
        if sock is None:
            return True
        try:
            readable, _, _ = gevent.select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def _take_batch(self) -> list[_Command]:
        source = self._retry if self._retry else self._queue  # NOSCRIPT re-sends go first
        count = min(len(source), self.max_batch)
        return [source.popleft() for _ in range(count)]

    def _send(self, batch: list[_Command]) -> None:
        conn = self._conn
        assert conn is not None
        conn.send_packed_command(_pack(conn, batch), check_health=False)
        self._in_flight.append(batch)
        self._reply_wake.set()
        self._batches += 1
        self._commands += len(batch)
        self._largest_batch = max(self._largest_batch, len(batch))

    def _read_replies(self, conn: RedisConnection) -> None:
        """The reader greenlet of one connection: resolve the in-flight batches' futures in order."""
        try:
            while True:
                while not self._in_flight:
                    self._reply_wake.clear()
                    self._reply_wake.wait()
                batch = self._in_flight[0]
                for command in batch:  # exactly one reply per command sent, in order
                    self._read_reply(conn, command)
                self._in_flight.popleft()
                self._wake.set()
        except CONNECTION_ERRORS as exc:
            if conn is self._conn:
                self._reader_error = exc
                self._wake.set()

    def _read_reply(self, conn: RedisConnection, command: _Command) -> None:
        try:
            reply = conn.read_response()
        except redis.exceptions.NoScriptError as exc:
            if command.script is None:
                command.result.set_exception(exc)
                return
            # Someone flushed the script cache: re-send as EVAL, in order, ahead of the queue.
            log.warning("Redis lost script %s (SCRIPT FLUSH?); re-sending as EVAL", command.script.name)
            retry = _Command(("EVAL", command.script.source, *command.args[2:]), command.script)
            retry.result = command.result
            self._retry.append(retry)
            self._wake.set()
        except redis.exceptions.ResponseError as exc:
            command.result.set_exception(exc)
        else:
            command.result.set(reply)

    def _lost(self, exc: BaseException, batch: list[_Command]) -> None:
        log.warning("Redis connection to %s lost: %s", redacted_url(self.url), exc)
        self._drop_connection()
        self._fail_all(RedisUnavailable(f"connection to Redis lost: {exc}"), batch)
        self._set_up(False)

    def _fail_all(self, error: RedisUnavailable, batch: list[_Command]) -> None:
        pending = list(batch)
        for sent in self._in_flight:
            pending.extend(sent)
        pending.extend(self._retry)
        pending.extend(self._queue)
        self._in_flight.clear()
        self._retry.clear()
        self._queue.clear()
        for command in pending:
            if not command.result.ready():
                command.result.set_exception(error)

    def _reconnect(self) -> None:
        delay = self.reconnect_min_delay
        while not self._stopped.is_set():
            if self._stopped.wait(delay):
                return
            try:
                self._connect()
            except CONNECTION_ERRORS as exc:
                log.debug("Redis reconnect to %s failed: %s", redacted_url(self.url), exc)
                delay = min(delay * 2, self.reconnect_max_delay)
                continue
            log.info("Redis connection to %s restored", redacted_url(self.url))
            self._set_up(True)
            return

    def _connect(self) -> None:
        conn = open_connection(
            self.url,
            socket_timeout=self.socket_timeout,
            connect_timeout=self.connect_timeout,
            name=self.name,
        )
        try:
            conn.connect()
            scripts = list(self._scripts.values())
            if scripts:
                conn.send_packed_command(
                    conn.pack_commands([("SCRIPT", "LOAD", s.source) for s in scripts]),
                    check_health=False,
                )
                for script in scripts:
                    sha = conn.read_response()
                    if (sha.decode() if isinstance(sha, bytes) else sha) != script.sha:
                        raise RuntimeError(f"Redis hashed script {script.name} differently")
        except BaseException:
            conn.disconnect()
            raise
        self._conn = conn
        self._reader_error = None
        self._reader = gevent.spawn(self._read_replies, conn)
        self._connects += 1

    def _drop_connection(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None and reader is not gevent.getcurrent():
            reader.kill(block=True, timeout=5)
        conn, self._conn = self._conn, None
        disconnect_quietly(conn)

    def _set_up(self, up: bool) -> None:
        self._up = up
        report_state(self.on_state, up)


def pubsub_replies(conn: Any, *, stopped: gevent.event.Event, ping_interval: float) -> Iterator[list[Any]]:
    """The pub/sub replies (lists) read from ``conn`` until ``stopped`` is set.

    A silent connection is checked: after ``ping_interval`` seconds with nothing
    to read it is sent a PING, and two PINGs unanswered raise
    ``redis.exceptions.TimeoutError`` (a half-open TCP connection would
    otherwise look subscribed forever). Any reply counts as an answer; a
    "+PONG" (not a list) is not yielded.
    """
    unanswered_pings = 0
    while not stopped.is_set():
        if not conn.can_read(timeout=ping_interval):
            if unanswered_pings >= 2:
                raise redis.exceptions.TimeoutError("Redis did not answer two pings")
            conn.send_command("PING", check_health=False)
            unanswered_pings += 1
            continue
        reply = conn.read_response()
        unanswered_pings = 0  # whatever it read, the connection is alive
        if isinstance(reply, list):
            yield reply


def disconnect_quietly(conn: RedisConnection | None) -> None:
    """Close ``conn`` (if any), ignoring that the connection is already broken."""
    if conn is not None:
        try:
            conn.disconnect()
        except CONNECTION_ERRORS:
            pass


def keep_subscribed(*, connect: Callable[[], None], read: Callable[[], None], drop: Callable[[], None],
                    stopped: gevent.event.Event, min_delay: float, max_delay: float,
                    errors: tuple[type[BaseException], ...], logger: logging.Logger, what: str) -> None:
    """Hold a pub/sub connection until ``stopped``: ``connect``, ``read`` until it fails, ``drop``, again.

    A failed connect is dropped and retried after a delay doubling from
    ``min_delay`` to ``max_delay`` (reset by a connect that works); a lost
    connection (``read`` raising one of ``errors``) is logged at warning and
    reconnected after ``min_delay``. Never raises what ``errors`` covers.
    """
    delay = min_delay
    while not stopped.is_set():
        try:
            connect()
        except CONNECTION_ERRORS as exc:
            logger.debug("%s connect failed: %s", what, exc)
            drop()
            if stopped.wait(delay):
                return
            delay = min(delay * 2, max_delay)
            continue
        delay = min_delay
        try:
            read()
        except errors as exc:
            logger.warning("%s lost its connection: %s", what, exc)
        drop()
        if stopped.wait(min_delay):
            return


def report_state(callback: Callable[[bool], None] | None, up: bool) -> None:
    """Tell ``callback`` (an ``on_state`` hook) whether the connection is ``up``; its failure is logged."""
    if callback is not None:
        try:
            callback(up)
        except Exception:
            log.exception("on_state callback failed")


def text(value: Any) -> str:
    """A Redis reply as text (redis-py returns bytes unless told to decode)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def wait_result(result: gevent.event.AsyncResult, timeout: float | None = None) -> Any:
    """Wait for a writer future; a ``timeout`` that passes raises :class:`RedisUnavailable`."""
    try:
        return result.get(timeout=timeout)
    except gevent.Timeout as exc:
        raise RedisUnavailable(f"no reply from Redis within {timeout} s") from exc
