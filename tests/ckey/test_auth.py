from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from ckey.auth import AuthError, TokenVerifier, load_or_create_signing_key, mint_local_token
from ckey.config import AuthMode, Settings, SettingsError, load_settings
from ckey.models import Role


def test_local_tokens_round_trip(settings: Settings) -> None:
    token = mint_local_token(settings, "alice@contoso.com", [Role.OPERATOR, Role.APPROVER])
    principal = TokenVerifier(settings).verify(token)
    assert principal.user == "alice@contoso.com"
    assert principal.roles == {Role.OPERATOR, Role.APPROVER}
    assert principal.has(Role.VIEWER) and not principal.has(Role.ADMIN)
    assert (settings.signing_key_path.stat().st_mode & 0o777) == 0o600


def test_local_tokens_are_refused_when_expired_or_foreign(settings: Settings, tmp_path: Any) -> None:
    verifier = TokenVerifier(settings)
    expired = mint_local_token(settings, "alice", [Role.OPERATOR], ttl=timedelta(seconds=-1))
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(expired)
    other_stack = load_settings(data_dir=tmp_path / "other", _env_file=None)
    with pytest.raises(AuthError, match=r"^token signature does not verify$"):
        verifier.verify(mint_local_token(other_stack, "alice", [Role.ADMIN]))


@pytest.mark.parametrize(
    "token",
    ["not-a-jwt", "a.b.c", "eyJhbGciOiJFZERTQSJ9.!!!.x", "eyJhbGciOiJFZERTQSJ9.e30", "x" * 300, "...."],
)
def test_a_malformed_token_is_named_so_without_decoder_internals(settings: Settings, token: str) -> None:
    with pytest.raises(AuthError) as exc:
        TokenVerifier(settings).verify(token)
    assert str(exc.value) == "malformed token"


@pytest.fixture
def oidc_provider() -> Iterator[tuple[str, rsa.RSAPrivateKey]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [jwk | {"kid": "k1", "use": "sig", "alg": "RS256"}]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/discovery/keys", key
    finally:
        server.shutdown()


def _oidc_token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = datetime.now(UTC)
    base = {
        "iss": "https://login.example.com/tenant/v2.0",
        "aud": "api://ckey",
        "sub": "abc",
        "exp": now + timedelta(hours=1),
    }
    return jwt.encode(base | claims, key, algorithm="RS256", headers={"kid": "k1"})


def test_oidc_tokens_are_checked_against_issuer_audience_and_jwks(
    oidc_provider: tuple[str, rsa.RSAPrivateKey], tmp_path: Any
) -> None:
    jwks_url, key = oidc_provider
    settings = load_settings(
        data_dir=tmp_path,
        auth_mode=AuthMode.OIDC,
        oidc_issuer="https://login.example.com/tenant/v2.0",
        oidc_jwks_url=jwks_url,
        audience="api://ckey",
        _env_file=None,
    )
    verifier = TokenVerifier(settings)
    principal = verifier.verify(
        _oidc_token(key, preferred_username="carol@contoso.com", roles=["ckey.Approver", "Something.Else"])
    )
    assert (principal.user, principal.roles) == ("carol@contoso.com", frozenset({Role.APPROVER}))
    with pytest.raises(AuthError, match=r"(?i)audience"):
        verifier.verify(_oidc_token(key, aud="api://other"))
    with pytest.raises(AuthError, match=r"(?i)issuer"):
        verifier.verify(_oidc_token(key, iss="https://evil.example.com"))
    # A token signed by the local stack's key is not an OIDC token.
    local = load_settings(data_dir=tmp_path / "local", _env_file=None)
    with pytest.raises(AuthError):
        verifier.verify(mint_local_token(local, "mallory", [Role.ADMIN]))


# Roles match exactly (issue 8, finding 10) -------------------------------------------------------------------------


def _local_token(settings: Settings, roles: object) -> str:
    """A token signed with the local stack's key carrying any roles claim, as a hostile issuer could write it."""
    now = datetime.now(UTC)
    claims = {
        "iss": settings.local_issuer,
        "aud": settings.audience,
        "sub": "mallory",
        settings.roles_claim: roles,
        "exp": now + timedelta(minutes=5),
    }
    return jwt.encode(claims, load_or_create_signing_key(settings.signing_key_path), algorithm="EdDSA")


@pytest.mark.parametrize(
    "claim",
    [
        ["Evil.Admin"],
        ["foo.admin"],
        ["other-app.ckey.admin"],
        ["ADMIN"],
        ["Admin"],
        ["ckey.ADMIN"],
        [" admin"],
        ["admin\n"],
        ["ckey.admin.x"],
        "Evil.Admin",
        [["admin"]],
        [{"admin": True}],
        {"admin": True},
    ],
)
def test_only_exact_role_names_grant_a_role(settings: Settings, claim: object) -> None:
    principal = TokenVerifier(settings).verify(_local_token(settings, claim))
    assert principal.roles == frozenset()
    assert not principal.has(Role.VIEWER) and not principal.has(Role.ADMIN)


def test_default_role_names(settings: Settings) -> None:
    verifier = TokenVerifier(settings)
    for role in Role:
        for name in (role.value, f"ckey.{role.value}", f"ckey.{role.value.capitalize()}"):
            assert verifier.verify(_local_token(settings, [name])).roles == {role}, name
    assert verifier.verify(_local_token(settings, "operator")).roles == {Role.OPERATOR}


def test_configured_role_names_replace_the_defaults_of_their_role(tmp_path: Any) -> None:
    settings = load_settings(
        data_dir=tmp_path, role_names={"admin": ["CustomerKey.Administrators"], "viewer": []}, _env_file=None
    )
    verifier = TokenVerifier(settings)
    assert verifier.verify(_local_token(settings, ["CustomerKey.Administrators"])).roles == {Role.ADMIN}
    assert verifier.verify(_local_token(settings, ["customerkey.administrators"])).roles == frozenset()
    assert verifier.verify(_local_token(settings, ["admin", "ckey.admin", "viewer"])).roles == frozenset()
    # Roles left out keep their defaults.
    assert verifier.verify(_local_token(settings, ["ckey.operator"])).roles == {Role.OPERATOR}
    # The local stack mints the configured name, so its own tokens keep working.
    minted = mint_local_token(settings, "root", [Role.ADMIN, Role.OPERATOR])
    assert verifier.verify(minted).roles == {Role.ADMIN, Role.OPERATOR}


def test_role_names_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("CKEY_ROLE_NAMES", json.dumps({"approver": ["Purge.Signers"]}))
    settings = load_settings(data_dir=tmp_path, _env_file=None)
    assert settings.role_names[Role.APPROVER] == ["Purge.Signers"]
    assert settings.role_names[Role.ADMIN] == ["admin", "ckey.admin", "ckey.Admin"]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ({"admin": ["operator"]}, "names two roles"),
        ({"admin": [""]}, "non-empty"),
        ({"admin": [" ckey.admin"]}, "unpadded"),
        ({"root": ["x"]}, "CKEY_ROLE_NAMES"),
    ],
)
def test_invalid_role_names_are_refused(tmp_path: Any, names: dict[str, list[str]], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(data_dir=tmp_path, role_names=names, _env_file=None)


# Files of the signing key (issue 8, finding 10) --------------------------------------------------------------------


def test_the_signing_key_lives_in_a_private_directory(settings: Settings) -> None:
    mint_local_token(settings, "alice", [Role.OPERATOR])
    assert (settings.signing_key_path.stat().st_mode & 0o777) == 0o600
    assert (settings.signing_key_path.parent.stat().st_mode & 0o777) == 0o700


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_signing_key_open_to_others_is_refused(settings: Settings, mode: int) -> None:
    mint_local_token(settings, "alice", [Role.OPERATOR])
    settings.signing_key_path.chmod(mode)
    with pytest.raises(AuthError, match="open to others"):
        TokenVerifier(settings)
    with pytest.raises(AuthError, match="chmod 600"):
        mint_local_token(settings, "mallory", [Role.ADMIN])
