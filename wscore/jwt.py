"""JWT authentication for the handshake (SPEC §2 ``WsAuthenticator``, §3 handshake).

An optional extra: ``pip install 'wscore[jwt]'`` brings PyJWT (with
``cryptography`` for RS256). Importing this module never needs PyJWT; building
a :class:`JwtAuthenticator` does, and says how to install it when it is missing.

    from wscore.jwt import JwtAuthenticator
    server = WsServer(config=WsServerConfig.prod(port=8080),
                      authenticator=JwtAuthenticator(key=SECRET, issuer="https://id.example"))

Contract of :meth:`JwtAuthenticator.authenticate`: it never raises and never
puts the key or the token in the result. A valid token gives
``AuthResult.success(user_id=<user_claim>, expires_at=<exp + leeway>)``; any
other token gives ``AuthResult.failure(error=<short reason>)`` — the reason is
sent to the client in the 1004 ``sys.error`` (SPEC §3), so it names *what*
was wrong (``"token expired"``, ``"bad signature"``, ``"wrong issuer"``…),
never a key or a claim's value.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from wscore.auth import AuthResult, ConnectionInfo, WsAuthenticator
from wscore.errors import ConfigError

__all__ = ["JwtAuthenticator"]

log = logging.getLogger("wscore.jwt")

_HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHMS = frozenset({"ES256", "ES384", "ES512", "EdDSA"})
_FAMILIES = (_HMAC_ALGORITHMS, _RSA_ALGORITHMS, _EC_ALGORITHMS)

_INSTALL_HINT = "wscore.jwt needs PyJWT: pip install 'wscore[jwt]'"


def _import_pyjwt() -> Any:
    # Lazy, so `import wscore.jwt` (and the docs, and type checking) work
    # without the extra installed; the error says exactly what to install.
    try:
        import jwt
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return jwt


class JwtAuthenticator(WsAuthenticator):
    """Verifies a JSON Web Token (RFC 7519) signed with a shared secret or a key pair.

    ``key`` is the HMAC secret (HS256) or the public key PEM (RS256, and the
    other asymmetric algorithms PyJWT knows; a private key PEM is accepted and
    only its public half is kept). ``algorithms`` are the ones a
    token may use; they must all be of one family, because accepting an HMAC
    algorithm with an RSA public key as its "secret" is the classic
    algorithm-confusion forgery. ``"none"`` is never accepted.

    ``issuer``/``audience``, when set, must match the token's ``iss``/``aud``
    (and the claim must be present); as PyJWT does, a token that names an
    audience is refused when no ``audience`` is configured. ``leeway_seconds`` absorbs clock skew
    between the issuer and this server for ``exp``, ``nbf`` and ``iat``.
    ``user_claim`` names the claim that becomes the session's ``user_id``.

    ``expires_at`` of a success is ``exp + leeway_seconds``: the moment the
    token stops being acceptable here. Reporting the bare ``exp`` would make the
    server's expiry timer (SPEC §3, 1005) end at once a connection whose token
    this authenticator has just accepted inside the leeway. A token without
    ``exp`` gives ``expires_at=None`` (no expiry).

    Raises :class:`ConfigError` for an invalid configuration (an unknown or
    mixed set of algorithms, a key that does not suit them, a negative leeway)
    and :class:`ImportError` when PyJWT is not installed.
    """

    def __init__(
        self,
        *,
        key: str | bytes,
        algorithms: Sequence[str] = ("HS256",),
        issuer: str | None = None,
        audience: str | Iterable[str] | None = None,
        leeway_seconds: float = 30.0,
        user_claim: str = "sub",
    ) -> None:
        jwt = _import_pyjwt()
        if isinstance(algorithms, str):
            # A bare "RS256" would otherwise be read as the algorithms R, S, 2, 5, 6.
            algorithms = (algorithms,)
        algs = tuple(algorithms)
        if not algs:
            raise ConfigError("algorithms: at least one algorithm is required")
        known = frozenset().union(*_FAMILIES)
        unknown = [a for a in algs if a not in known]
        if unknown:
            raise ConfigError(f"algorithms: unsupported {unknown!r}; choose from {sorted(known)}")
        if not any(set(algs) <= family for family in _FAMILIES):
            raise ConfigError(
                f"algorithms: {list(algs)!r} mix key families (HMAC and public-key algorithms "
                "must not share a key: that allows algorithm-confusion forgeries)"
            )
        if not key:
            raise ConfigError("key: an empty key would accept tokens anyone can sign")
        if leeway_seconds < 0:
            raise ConfigError("leeway_seconds must be >= 0")
        if not user_claim:
            raise ConfigError("user_claim must name a claim")
        # Prepare the key once (an RSA PEM is parsed here, not on every handshake)
        # and refuse a key that cannot verify the chosen algorithms, e.g. a PEM
        # public key given as an HMAC secret. The message never includes the key.
        try:
            prepared = jwt.algorithms.get_default_algorithms()[algs[0]].prepare_key(key)
        except Exception as exc:
            raise ConfigError(
                f"key: not usable with {algs[0]} ({type(exc).__name__}); give the HMAC secret "
                "for HS*, the public key PEM for RS*/PS*/ES*"
            ) from None
        if hasattr(prepared, "public_key"):
            # A private key was given: verification needs only its public half.
            prepared = prepared.public_key()
        self._jwt = jwt
        self._key: Any = prepared
        self.algorithms: tuple[str, ...] = algs
        self.issuer = issuer
        self.audience: str | list[str] | None = (
            audience if audience is None or isinstance(audience, str) else list(audience)
        )
        self.leeway_seconds = float(leeway_seconds)
        self.user_claim = user_claim

    def __repr__(self) -> str:
        # Never show the key.
        return (
            f"JwtAuthenticator(algorithms={self.algorithms!r}, issuer={self.issuer!r}, "
            f"audience={self.audience!r}, leeway_seconds={self.leeway_seconds!r}, "
            f"user_claim={self.user_claim!r})"
        )

    def authenticate(self, conn: ConnectionInfo, token: str) -> AuthResult:
        """Verify ``token``; never raises (see the module docstring for the result)."""
        try:
            claims = self._verify(token)
        except _Refused as refused:
            log.info("refused a token from %s: %s", conn.remote_address[0], refused.reason)
            return AuthResult.failure(error=refused.reason)
        user = claims.get(self.user_claim)
        # bool is an int subclass; a JSON true is not a user id.
        if isinstance(user, bool) or not isinstance(user, (str, int)) or user == "":
            log.info("refused a token from %s: no usable %r claim", conn.remote_address[0], self.user_claim)
            return AuthResult.failure(error=f"missing claim '{self.user_claim}'")
        exp = claims.get("exp")
        # PyJWT has already checked that a present exp is numeric.
        expires_at = None if exp is None else float(exp) + self.leeway_seconds
        return AuthResult.success(user_id=str(user), expires_at=expires_at)

    def _verify(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``; raises :class:`_Refused` with a short reason otherwise."""
        jwt = self._jwt
        options = {"require": [self.user_claim]}
        try:
            claims = jwt.decode(
                token, self._key, algorithms=list(self.algorithms), issuer=self.issuer,
                audience=self.audience, leeway=self.leeway_seconds, options=options,
            )
        except jwt.ExpiredSignatureError:
            raise _Refused("token expired") from None
        except jwt.ImmatureSignatureError:
            raise _Refused("token not yet valid") from None
        except jwt.InvalidSignatureError:
            raise _Refused("bad signature") from None
        except jwt.InvalidAlgorithmError:
            raise _Refused("algorithm not allowed") from None
        except jwt.InvalidIssuerError:
            raise _Refused("wrong issuer") from None
        except jwt.InvalidAudienceError:
            raise _Refused("wrong audience") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _Refused(f"missing claim '{exc.claim}'") from None
        except jwt.InvalidIssuedAtError:
            raise _Refused("invalid 'iat' claim") from None
        except jwt.DecodeError:
            raise _Refused("malformed token") from None
        except jwt.PyJWTError:
            raise _Refused("invalid token") from None
        except Exception:
            # A token is hostile input: whatever it trips in the library is a refusal.
            log.warning("token verification failed unexpectedly", exc_info=True)
            raise _Refused("invalid token") from None
        if not isinstance(claims, dict):
            raise _Refused("malformed token")
        return claims


class _Refused(Exception):
    """Internal: a token was refused, with the short reason the client may see."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
