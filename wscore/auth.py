"""Authentication: :class:`WsAuthenticator` and :class:`AuthResult` (SPEC §2, §3).

The token comes from ``?token=`` (URL-decoded) or ``Authorization: Bearer``.
``authenticate`` runs in the connection's own greenlet, so it may block on
cooperative I/O (a database, an HTTP call) without stalling other connections.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

__all__ = ["AuthResult", "ConnectionInfo", "WsAuthenticator", "token_from"]


@attrs.frozen
class ConnectionInfo:
    """What an authenticator may look at: the peer and its upgrade request.

    ``headers`` is not every request header: only ``wscore.transport.KEPT_HEADERS``
    (Authorization, Origin, Host, User-Agent, the X-Forwarded-* / Forwarded
    family, X-Real-Ip, Sec-Websocket-Protocol, Accept-Language, Cookie), within
    16 KiB together, are kept after the handshake
    (SPEC §3 "Handshake limits"). ``query`` holds secrets (token, session id): never log it.
    """

    remote_address: tuple[str, int]
    headers: Mapping[str, str]
    query: Mapping[str, str]
    path: str


@attrs.frozen
class AuthResult:
    """The verdict on a token. Build with :meth:`success` or :meth:`failure`."""

    ok: bool
    user_id: str | None = None
    #: Epoch seconds after which the token is no longer valid (None: never).
    expires_at: float | None = None
    error: str = ""

    @classmethod
    def success(cls, user_id: str, expires_at: float | None = None) -> AuthResult:
        return cls(ok=True, user_id=str(user_id), expires_at=expires_at)

    @classmethod
    def failure(cls, error: str = "authentication failed") -> AuthResult:
        return cls(ok=False, error=error)


class WsAuthenticator:
    """Override :meth:`authenticate`. Raising counts as a refusal (logged, never sent)."""

    def authenticate(self, conn: ConnectionInfo, token: str) -> AuthResult:
        raise NotImplementedError


def token_from(query: Mapping[str, str], headers: Mapping[str, str]) -> str | None:
    """The handshake's token: ``?token=`` first, then ``Authorization: Bearer``."""
    token = query.get("token")
    if token:
        return token
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None
