"""Client configuration: one frozen, validated, keyword-only value.

Every time is seconds (float), every bound names its unit. Derive variants
with :func:`attrs.evolve` (validators re-run)::

    cfg = WsClientConfig(request_timeout=5.0, backoff_cap=10.0)
    fast = attrs.evolve(cfg, backoff_base=0.05)
"""

from __future__ import annotations

import ssl
from typing import Any

import attrs

from wscore.errors import ConfigError

__all__ = ["WsClientConfig"]


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"WsClientConfig.{attribute.name} must be > 0, got {value!r}")


def _positive_or_none(instance: Any, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None:
        _positive(instance, attribute, value)


def _headers(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    items = value.items() if isinstance(value, dict) else value
    try:
        pairs = tuple((str(k), str(v)) for k, v in items)
    except (TypeError, ValueError):
        raise ConfigError("WsClientConfig.headers must be a mapping or (name, value) pairs") from None
    for name, text in pairs:
        if not name or any(ch in name + text for ch in "\r\n"):
            raise ConfigError(f"WsClientConfig.headers: invalid header {name!r}")
    return pairs


@attrs.frozen(kw_only=True)
class WsClientConfig:
    """Every knob of a :class:`~wscore.client.WsClient`.

    Groups: connecting (token refresh included), reconnecting (exponential backoff with full jitter),
    liveness, acknowledgements, bounds, requests/closing.
    """

    # -- connecting ---------------------------------------------------------------------
    #: One attempt (TCP connect + HTTP upgrade + ``sys.connected``) must finish within this.
    open_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Default for :meth:`WsClient.connect`: how long the *first* session may take to open,
    #: retries included.
    connect_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Send the token as ``?token=`` instead of ``Authorization: Bearer`` (SPEC §3 allows both;
    #: the header keeps it out of proxy and access logs).
    token_in_query: bool = False
    #: Extra headers for the upgrade request (e.g. ``Origin``).
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_headers)
    #: TLS context for ``wss://`` (None: the platform's default verifying context).
    ssl_context: ssl.SSLContext | None = None

    #: Refresh the token (``sys.auth`` with a token from ``token_provider``) this long before
    #: the server's announced ``expiresAt`` — capped at half the remaining lifetime, so
    #: short-lived tokens are refreshed halfway. Also absorbs moderate client/server clock skew.
    token_refresh_margin: float = attrs.field(default=30.0, validator=_positive)
    #: One refresh (``token_provider`` call + the server's answer to ``sys.auth``) must finish
    #: within this; a failed or timed-out refresh is retried with the reconnect backoff.
    token_refresh_timeout: float = attrs.field(default=10.0, validator=_positive)

    # -- reconnecting -------------------------------------------------------------------
    reconnect: bool = True
    #: Delay before attempt n (0-based) is uniform in [0, min(cap, base * 2**n)] ("full jitter").
    backoff_base: float = attrs.field(default=0.25, validator=_positive)
    backoff_cap: float = attrs.field(default=15.0, validator=_positive)
    #: Consecutive failed attempts before the client gives up and closes (None: never).
    max_reconnect_attempts: int | None = attrs.field(default=None, validator=_positive_or_none)

    # -- liveness (SPEC §3 heartbeat) ------------------------------------------------------
    #: Silence (no frame at all) after which the link is declared dead and dropped.
    #: None: derived from the server's announced heartbeat h as ``max(2h, h + 1)``.
    dead_link_timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: Silence after which the client probes with ``sys.ping`` (None: the heartbeat h).
    probe_after: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: Used until ``sys.connected`` announces the server's heartbeat.
    default_heartbeat: float = attrs.field(default=20.0, validator=_positive)

    # -- acknowledging the server's stream (SPEC §3 resume) -------------------------------
    #: Acknowledge after this many new numbered frames …
    ack_every_frames: int = attrs.field(default=64, validator=_positive)
    #: … or this long after the first unacknowledged one arrived, whichever comes first.
    ack_delay: float = attrs.field(default=0.2, validator=_positive)

    # -- bounds -------------------------------------------------------------------------
    #: Frames kept until the server acknowledges them (offline queue included).
    max_unacked_frames: int = attrs.field(default=1000, validator=_positive)
    #: Bytes of wire text those frames may hold.
    max_unacked_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    #: Largest message accepted from the server (RFC 6455 close 1009 beyond it).
    max_message_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    #: Received events waiting for their callbacks; beyond it the reader stops reading
    #: (TCP backpressure) until callbacks catch up.
    max_queued_events: int = attrs.field(default=10_000, validator=_positive)

    # -- requests and closing --------------------------------------------------------------
    #: Default ``timeout`` of :meth:`WsClient.request`.
    request_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: How long :meth:`WsClient.close` waits for the close handshake before cutting the socket.
    close_timeout: float = attrs.field(default=2.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.backoff_cap < self.backoff_base:
            raise ConfigError(
                f"WsClientConfig.backoff_cap ({self.backoff_cap}) must be >= "
                f"backoff_base ({self.backoff_base})"
            )
        if (
            self.dead_link_timeout is not None
            and self.probe_after is not None
            and self.probe_after >= self.dead_link_timeout
        ):
            raise ConfigError("WsClientConfig.probe_after must be < dead_link_timeout")
