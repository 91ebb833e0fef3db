"""Server configuration: one frozen, validated, keyword-only value (SPEC §4).

``WsServerConfig.dev(**overrides)`` is relaxed for local work;
``WsServerConfig.prod(**overrides)`` has tight timeouts, forces auth and
cleans up fast. Derive variants with :func:`attrs.evolve` (validators re-run).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import attrs

from wscore.errors import ConfigError

__all__ = ["WsServerConfig"]


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ConfigError(f"{attribute.name} must be >= 0, got {value!r}")


def _port(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= 65535:
        raise ConfigError(f"port must be an integer in 0..65535, got {value!r}")


def _path(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(f"path must start with '/', got {value!r}")


_NODE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def redacted_url(url: str) -> str:
    """``url`` with its password, if it has one, shown as ``***``: what a log line or error may carry."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        password = None
        parts = None
    if parts is None:
        return url if "@" not in url and "pass" not in url.lower() else "<a URL with credentials>"
    if parts.query:
        # redis-py also takes ?password=… (and the like) in the query.
        query = "&".join(f"{k}=***" if "pass" in k.lower() else (f"{k}={v}" if v else k)
                         for k, v in parse_qsl(parts.query, keep_blank_values=True))
        parts = parts._replace(query=query)
    if password is None:
        if "@" in parts.netloc:
            return "<a URL with credentials>"
        return urlunsplit(parts)
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def _redis_url(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://")):
        shown = redacted_url(value) if isinstance(value, str) else value
        raise ConfigError(f"redis_url must look like redis://HOST:PORT/DB, got {shown!r}")


def _node_id(instance: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _NODE_ID.fullmatch(value):
        raise ConfigError(f"node_id must be 1-64 characters of A-Z a-z 0-9 . _ : -, got {value!r}")


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    items = value.items() if isinstance(value, dict) else value
    try:
        return tuple((str(k), str(v)) for k, v in items)
    except (TypeError, ValueError):
        raise ConfigError("cors_headers must be a mapping or (name, value) pairs") from None


def _origins(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


@attrs.frozen(kw_only=True)
class WsServerConfig:
    """Every knob of a :class:`~wscore.WsServer`. Times are seconds (float)."""

    # -- where ------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8080, validator=_port)
    path: str = attrs.field(default="/ws", validator=_path)
    # -- who --------------------------------------------------------------
    require_auth: bool = False
    #: Extra headers on every plain HTTP response (e.g. Access-Control-Allow-Origin).
    cors_headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_headers)
    #: Origins allowed to open a WebSocket (None: any). Others get HTTP 403.
    allowed_origins: tuple[str, ...] | None = attrs.field(default=None, converter=_origins)
    # -- liveness -----------------------------------------------------------
    ping_interval: float = attrs.field(default=20.0, validator=_positive)
    #: No frame at all from the client for this long → the connection is dropped.
    ping_timeout: float = attrs.field(default=60.0, validator=_positive)
    #: How long a detached session waits for its client before it ends.
    session_ttl: float = attrs.field(default=300.0, validator=_positive)
    #: Seconds a client has to finish the HTTP upgrade (slowloris guard).
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    # -- limits (SPEC §4) ----------------------------------------------------
    #: The replay buffer's bound in frames, per session.
    max_buffered_messages: int = attrs.field(default=1000, validator=_positive)
    #: The replay buffer's bound in bytes (UTF-8 characters of the encoded frames); the
    #: newest frame is always kept. A frame dropped unacknowledged to respect either
    #: bound ends resumability (1006).
    max_buffered_bytes: int = attrs.field(default=8 << 20, validator=_positive)
    #: Rooms one session may be in at once; a join beyond it fails with 1010.
    max_rooms_per_session: int = attrs.field(default=1000, validator=_positive)
    max_message_bytes: int = attrs.field(default=1 << 20, validator=_positive)
    #: The largest plain HTTP request body (forms, uploads) wscore's listener reads for a
    #: :meth:`~wscore.WsServer.mount`-ed app; larger ones get 413 before the app runs.
    #: Without a mounted app every body is refused (413). WebSocket upgrades take none.
    max_http_body_bytes: int = attrs.field(default=10 << 20, validator=_positive)
    #: Frames queued to one connection before it is cut as a slow consumer, if its socket
    #: is backed up too (its session keeps the replay buffer). The reader stops reading
    #: a client while half of it is queued (backpressure, SPEC §3 "Backpressure").
    max_queued_frames: int = attrs.field(default=1000, validator=_positive)
    max_connections: int = attrs.field(default=10_000, validator=_positive)
    #: Client frames per second per session (token bucket refill) and bucket size. Every
    #: frame but a well-formed sys.ack spends a token (SPEC §3 "Rate limit").
    rate_limit: float = attrs.field(default=100.0, validator=_positive)
    rate_burst: float = attrs.field(default=200.0, validator=_positive)
    #: Refused messages in a row (no accepted one between) before closing with 4010.
    rate_abuse_close_after: int = attrs.field(default=200, validator=_positive)
    #: Seconds stop() waits for connections to flush their close frames.
    shutdown_timeout: float = attrs.field(default=5.0, validator=_non_negative)
    # -- process ------------------------------------------------------------
    #: On start(), make the cyclic GC's full collections ~100x rarer (process-wide:
    #: ``gc.set_threshold(t0, t1, 1000)``). A server holds many long-lived objects
    #: (sessions, replay buffers); full collections scanning them showed up as
    #: 100+ ms latency tails (see docs/guarantees.md). False leaves the GC alone.
    gc_tuning: bool = True
    # -- beyond one process (SPEC §6, docs/scaling.md) -----------------------------
    #: ``redis://HOST:PORT/DB``: sessions, rooms and resumes live in Redis and span
    #: every node sharing it. None (the default): embedded, one process, in memory.
    redis_url: str | None = attrs.field(default=None, validator=_redis_url)
    #: This node's name in Redis (ownership, node-to-node messages). None: made at
    #: ``start()``, unique per process (``hostname-pid-random``).
    node_id: str | None = attrs.field(default=None, validator=_node_id)

    def __attrs_post_init__(self) -> None:
        if self.ping_timeout <= self.ping_interval:
            raise ConfigError(
                f"ping_timeout ({self.ping_timeout}) must exceed ping_interval ({self.ping_interval})"
            )

    @classmethod
    def dev(cls, **overrides: Any) -> WsServerConfig:
        """Relaxed defaults for local development: no auth, long TTLs, generous limits."""
        return cls._make(dict(require_auth=False, session_ttl=300.0, rate_limit=1000.0,
                              rate_burst=2000.0), overrides)

    @classmethod
    def prod(cls, **overrides: Any) -> WsServerConfig:
        """Production defaults: auth required, tight timeouts, fast clean-up."""
        return cls._make(
            dict(host="0.0.0.0", require_auth=True, ping_interval=15.0, ping_timeout=35.0,
                 session_ttl=60.0, handshake_timeout=5.0, max_message_bytes=256 * 1024,
                 max_buffered_bytes=2 << 20, max_rooms_per_session=100,
                 rate_limit=50.0, rate_burst=100.0, rate_abuse_close_after=100),
            overrides,
        )

    @classmethod
    def _make(cls, base: dict[str, Any], overrides: dict[str, Any]) -> WsServerConfig:
        fields = attrs.fields_dict(cls)
        unknown = sorted(set(overrides) - set(fields))
        if unknown:
            raise ConfigError(f"unknown WsServerConfig field(s): {', '.join(unknown)}")
        try:
            return cls(**{**base, **overrides})
        except TypeError as exc:
            raise ConfigError(str(exc)) from None
