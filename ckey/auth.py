"""Bearer-token authentication and roles.

Production validates OpenID Connect access tokens (issuer, audience, signature against the provider's JWKS). The
local stack validates tokens signed by an Ed25519 key generated in the data dir, which ``ckey token`` mints.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ckey.config import AuthMode, Settings, ensure_private_dir
from ckey.models import Role


class AuthError(Exception):
    """The token is missing, malformed, expired, or not from a trusted issuer."""


@dataclass(frozen=True)
class Principal:
    """The authenticated caller."""

    user: str
    roles: frozenset[Role]

    def has(self, role: Role) -> bool:
        """Whether the caller holds ``role``: ``admin`` holds every role, and every role may view."""
        if role is Role.VIEWER:
            return bool(self.roles)
        return role in self.roles or Role.ADMIN in self.roles


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The local stack's token-signing key, created (mode 0600, in a 0700 directory) on first use.

    Raises:
        AuthError: the key is not Ed25519, or others than its owner may read or change it (anyone who can read it
            can mint an admin token: it is refused, as ``ssh`` refuses such a private key).
    """
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise AuthError(f"{path} is open to others (mode {mode:04o}); chmod 600 it, or remove it to make a new one")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise AuthError(f"{path} is not an Ed25519 private key")
        return key
    ensure_private_dir(path.parent)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def mint_local_token(settings: Settings, user: str, roles: list[Role], ttl: timedelta | None = None) -> str:
    """A token for the local stack, signed with the key in the data dir."""
    key = load_or_create_signing_key(settings.signing_key_path)
    now = datetime.now(UTC)
    claims = {
        "iss": settings.local_issuer,
        "aud": settings.audience,
        "sub": user,
        settings.user_claim: user,
        # The first configured claim value of each role, so the stack's own verifier grants it back.
        settings.roles_claim: [next(iter(settings.role_names.get(role, [])), role.value) for role in roles],
        "iat": now,
        "nbf": now,
        "exp": now + (ttl or timedelta(minutes=settings.token_ttl_minutes)),
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm="EdDSA")


def token_error(exc: jwt.PyJWTError) -> str:
    """What was wrong with a token, in words a caller can act on, never the decoder's internals.

    PyJWT's messages describe its own parsing ("Not enough segments", "Invalid header padding", "Invalid payload
    string: ..."); a 401 names the kind of fault instead. Order matters: a bad signature is a ``DecodeError`` too.
    """
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "token expired"
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "token not valid yet"
    if isinstance(exc, jwt.InvalidAudienceError):
        return "token for another audience"
    if isinstance(exc, jwt.InvalidIssuerError):
        return "token from an issuer ckey does not trust"
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"token without the {exc.claim!r} claim"
    if isinstance(exc, jwt.InvalidSignatureError):
        return "token signature does not verify"
    if isinstance(exc, jwt.InvalidAlgorithmError):
        return "token signed with an algorithm ckey does not accept"
    if isinstance(exc, jwt.PyJWKClientConnectionError):
        return "the identity provider's signing keys could not be fetched"
    if isinstance(exc, jwt.PyJWKClientError):
        return "no signing key of the identity provider matches the token"
    if isinstance(exc, jwt.DecodeError):
        return "malformed token"
    return "invalid token"


class TokenVerifier:
    """Validates bearer tokens according to the settings and turns them into a :class:`Principal`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._local_key: Ed25519PublicKey | None = None
        self._jwks: jwt.PyJWKClient | None = None
        self._role_of = {name: role for role, names in settings.role_names.items() for name in names}
        if settings.auth_mode is AuthMode.LOCAL:
            self._local_key = load_or_create_signing_key(settings.signing_key_path).public_key()
        elif settings.oidc_jwks_url is None:
            raise AuthError("auth_mode=oidc needs CKEY_OIDC_JWKS_URL")
        else:
            # PyJWKClient refetches the key set for an unknown kid at most once per cooldown (30 s), so tokens
            # with made-up kids do not turn the API into a load generator against the identity provider.
            self._jwks = jwt.PyJWKClient(settings.oidc_jwks_url, cache_keys=True)

    def verify(self, token: str) -> Principal:
        """The caller behind ``token``.

        Raises:
            AuthError: the token is not valid.
        """
        try:
            if self._local_key is not None:
                claims = jwt.decode(
                    token,
                    self._local_key,
                    algorithms=["EdDSA"],
                    audience=self.settings.audience,
                    issuer=self.settings.local_issuer,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
            elif self._jwks is None:
                raise AuthError("no key to check tokens with")
            else:
                signing_key = self._jwks.get_signing_key_from_jwt(token)
                claims = jwt.decode(
                    token,
                    signing_key.key,
                    algorithms=["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"],
                    audience=self.settings.audience,
                    issuer=self.settings.oidc_issuer,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
        except jwt.PyJWTError as exc:
            raise AuthError(token_error(exc)) from None
        return Principal(user=self._user(claims), roles=self._roles(claims))

    def _user(self, claims: dict[str, Any]) -> str:
        user = claims.get(self.settings.user_claim) or claims.get("sub")
        if not isinstance(user, str) or not user:
            raise AuthError("token names no user")
        return user

    def _roles(self, claims: dict[str, Any]) -> frozenset[Role]:
        raw = claims.get(self.settings.roles_claim, [])
        names = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
        # Exact, case-sensitive matches only: a suffix rule ("anything.admin") would let any app that can put a
        # role into the token (another app's "Evil.Admin") become admin.
        return frozenset(self._role_of[name] for name in names if isinstance(name, str) and name in self._role_of)
