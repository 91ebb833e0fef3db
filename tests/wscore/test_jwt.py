"""wscore.jwt.JwtAuthenticator: unit tests on real tokens, then end to end through a server."""

from __future__ import annotations

import sys
import time
from typing import Any
from urllib.parse import quote

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from wshelpers import RawClient

from wscore import AuthResult, ConfigError, ConnectionInfo, WsContext, WsServer
from wscore.jwt import JwtAuthenticator

SECRET = "test-secret-0123456789abcdef0123456789abcdef"  # ≥ 32 bytes: PyJWT warns on shorter HS256 keys
CONN = ConnectionInfo(remote_address=("127.0.0.1", 1), headers={}, query={}, path="/ws")


def hs256(claims: dict[str, Any], key: str = SECRET, **headers: Any) -> str:
    return jwt.encode(claims, key, algorithm="HS256", headers=headers or None)


def auth(authenticator: JwtAuthenticator, token: str) -> AuthResult:
    return authenticator.authenticate(CONN, token)


@pytest.fixture(scope="module")
def rsa_keys() -> tuple[bytes, bytes]:
    """(private PEM, public PEM) of a fresh 2048-bit RSA key."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


# -- unit: verdicts ------------------------------------------------------------------------------------
def test_hs256_token_gives_the_user_and_exp_plus_leeway() -> None:
    exp = int(time.time()) + 3600
    result = auth(JwtAuthenticator(key=SECRET, leeway_seconds=0), hs256({"sub": "alice", "exp": exp}))
    assert result == AuthResult.success(user_id="alice", expires_at=float(exp))
    assert isinstance(result.expires_at, float)
    leeway = auth(JwtAuthenticator(key=SECRET, leeway_seconds=30), hs256({"sub": "alice", "exp": exp}))
    assert leeway.expires_at == exp + 30.0


def test_token_without_exp_never_expires() -> None:
    result = auth(JwtAuthenticator(key=SECRET), hs256({"sub": "bob"}))
    assert result.ok and result.user_id == "bob" and result.expires_at is None


def test_rs256_with_a_generated_key(rsa_keys: tuple[bytes, bytes]) -> None:
    private_pem, public_pem = rsa_keys
    authenticator = JwtAuthenticator(key=public_pem, algorithms=("RS256",))
    token = jwt.encode({"sub": "carol", "exp": int(time.time()) + 60}, private_pem, algorithm="RS256")
    result = auth(authenticator, token)
    assert result.ok and result.user_id == "carol"
    # A private key PEM works too (only its public half is kept), as does a str PEM.
    assert auth(JwtAuthenticator(key=private_pem, algorithms=["RS256"]), token).ok
    assert auth(JwtAuthenticator(key=public_pem.decode(), algorithms="RS256"), token).ok


def test_rs256_refuses_another_keys_signature_and_hmac_tokens(rsa_keys: tuple[bytes, bytes]) -> None:
    _, public_pem = rsa_keys
    authenticator = JwtAuthenticator(key=public_pem, algorithms=("RS256",))
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = jwt.encode({"sub": "mallory"}, other, algorithm="RS256")
    assert auth(authenticator, forged) == AuthResult.failure(error="bad signature")
    # Algorithm confusion: an HS256 token "signed" with the public key as secret.
    confused = jwt.api_jws.PyJWS().encode(b'{"sub":"mallory"}', SECRET, algorithm="HS256")
    assert auth(authenticator, confused) == AuthResult.failure(error="algorithm not allowed")


def test_bad_signature_and_garbage_are_refused_without_leaking_the_key() -> None:
    authenticator = JwtAuthenticator(key=SECRET)
    cases = {
        hs256({"sub": "eve"}, key="another-secret-0123456789abcdef0123456789"): "bad signature",
        "not.a.jwt": "malformed token",
        "": "malformed token",
        "a" * 5000: "malformed token",
        jwt.encode({"sub": "eve"}, None, algorithm="none"): "algorithm not allowed",
    }
    for token, reason in cases.items():
        result = auth(authenticator, token)
        assert result == AuthResult.failure(error=reason), token[:40]
        assert SECRET not in result.error and SECRET not in repr(authenticator)


def test_expiry_respects_the_leeway() -> None:
    now = int(time.time())
    authenticator = JwtAuthenticator(key=SECRET, leeway_seconds=300)
    # Expired 100 s ago, within the 300 s leeway: accepted, and still valid for ~200 s.
    inside = auth(authenticator, hs256({"sub": "dan", "exp": now - 100}))
    assert inside.ok and inside.expires_at == now - 100 + 300.0
    assert auth(authenticator, hs256({"sub": "dan", "exp": now - 1000})) == AuthResult.failure(
        error="token expired")
    strict = JwtAuthenticator(key=SECRET, leeway_seconds=0)
    assert auth(strict, hs256({"sub": "dan", "exp": now - 100})).error == "token expired"
    # nbf in the future: inside the leeway it passes, beyond it the token is not valid yet.
    assert auth(authenticator, hs256({"sub": "dan", "nbf": now + 100})).ok
    assert auth(authenticator, hs256({"sub": "dan", "nbf": now + 1000})).error == "token not yet valid"


def test_issuer_and_audience_are_checked() -> None:
    authenticator = JwtAuthenticator(key=SECRET, issuer="https://id.example", audience="wscore")
    good = {"sub": "u1", "iss": "https://id.example", "aud": "wscore"}
    assert auth(authenticator, hs256(good)).ok
    assert auth(authenticator, hs256({**good, "aud": ["other", "wscore"]})).ok
    assert auth(authenticator, hs256({**good, "iss": "https://evil.example"})).error == "wrong issuer"
    assert auth(authenticator, hs256({**good, "aud": "other"})).error == "wrong audience"
    assert auth(authenticator, hs256({"sub": "u1", "aud": "wscore"})).error == "missing claim 'iss'"
    assert auth(authenticator, hs256({"sub": "u1", "iss": "https://id.example"})).error == (
        "missing claim 'aud'")
    # A token meant for some audience is refused by a server that expects none (PyJWT's rule).
    assert auth(JwtAuthenticator(key=SECRET), hs256({"sub": "u1", "aud": "x"})).error == "wrong audience"


def test_user_claim_must_be_present_and_usable() -> None:
    authenticator = JwtAuthenticator(key=SECRET)
    assert auth(authenticator, hs256({"name": "x"})).error == "missing claim 'sub'"
    custom = JwtAuthenticator(key=SECRET, user_claim="uid")
    assert auth(custom, hs256({"uid": 42})) == AuthResult.success(user_id="42")
    for bad in (True, None, "", {"id": 1}, [1]):
        assert auth(custom, hs256({"uid": bad})).error.startswith("missing claim"), bad


# -- unit: configuration -----------------------------------------------------------------------------------
def test_invalid_configuration_is_refused(rsa_keys: tuple[bytes, bytes]) -> None:
    _, public_pem = rsa_keys
    bad: list[dict[str, Any]] = [
        {"key": SECRET, "algorithms": ()},
        {"key": SECRET, "algorithms": ("none",)},
        {"key": SECRET, "algorithms": ("HS256", "RS256")},  # mixed families: algorithm confusion
        {"key": ""},
        {"key": public_pem, "algorithms": ("HS256",)},  # a public key is no HMAC secret
        {"key": "not a pem", "algorithms": ("RS256",)},
        {"key": SECRET, "leeway_seconds": -1},
        {"key": SECRET, "user_claim": ""},
    ]
    for kwargs in bad:
        with pytest.raises(ConfigError) as info:
            JwtAuthenticator(**kwargs)
        assert SECRET not in str(info.value) and "BEGIN" not in str(info.value)


def test_missing_pyjwt_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jwt", None)  # makes `import jwt` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'wscore\[jwt\]'"):
        JwtAuthenticator(key=SECRET)


# -- end to end: a real server ---------------------------------------------------------------------------
def whoami_app(server: WsServer) -> None:
    @server.on("whoami")
    def whoami(ctx: WsContext) -> Any:
        return {"user": ctx.user_id}


@pytest.fixture
def jwt_server(make_server: Any) -> WsServer:
    server: WsServer = make_server(require_auth=True, authenticator=JwtAuthenticator(key=SECRET),
                                   setup=whoami_app)
    return server


def assert_connected_as(client: RawClient, user: str) -> None:
    frame = client.recv()
    assert frame["e"] == "sys.connected"
    assert client.request("whoami")["p"] == {"user": user}


def test_good_token_in_the_query_connects(jwt_server: WsServer, clients: Any) -> None:
    token = hs256({"sub": "alice@example.com", "exp": int(time.time()) + 3600})
    client = clients(f"{jwt_server.url}?token={quote(token, safe='')}")
    assert_connected_as(client, "alice@example.com")


def test_good_token_in_the_authorization_header_connects(jwt_server: WsServer, clients: Any) -> None:
    token = hs256({"sub": "bob", "exp": int(time.time()) + 3600})
    client = clients(jwt_server.url, header=[f"Authorization: Bearer {token}"])
    assert_connected_as(client, "bob")


def test_missing_token_is_refused_with_1003_then_4003(jwt_server: WsServer, clients: Any) -> None:
    client = clients(jwt_server.url)
    frame = client.recv()
    assert frame["e"] == "sys.error" and frame["p"]["code"] == 1003
    assert client.recv_close() == 4003


@pytest.mark.parametrize(
    ("claims", "key", "reason"),
    [
        ({"sub": "eve"}, "wrong-secret-0123456789abcdef0123456789abcdef", "bad signature"),
        ({"sub": "eve", "exp": 1_000_000}, SECRET, "token expired"),
        ({"name": "eve"}, SECRET, "missing claim 'sub'"),
    ],
)
def test_bad_token_is_refused_with_1004_then_4004(
    jwt_server: WsServer, clients: Any, claims: dict[str, Any], key: str, reason: str
) -> None:
    token = hs256(claims, key=key)
    for client in (clients(f"{jwt_server.url}?token={quote(token, safe='')}"),
                   clients(jwt_server.url, header=[f"Authorization: Bearer {token}"])):
        frame = client.recv()
        assert frame["e"] == "sys.error"
        assert frame["p"]["code"] == 1004 and frame["p"]["message"] == reason
        assert SECRET not in str(frame)
        assert client.recv_close() == 4004
