"""The sandbox's stand-in for Microsoft Entra ID: access tokens for users and service principals.

Tokens look like Entra's v1 access tokens (``iss`` ``https://sts.windows.net/<tenant>/``, ``aud`` the resource,
``tid``, ``oid``, and ``appid`` for applications or ``upn`` for users) and are signed with an RSA key kept in the
data dir. A principal's object id is derived from the tenant and its application id or UPN, so ckey and the
sandbox agree on it without a directory: :func:`object_id`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from azure.core.credentials import AccessToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

SANDBOX_TENANT_ID = "72f988bf-0000-4000-8000-00000000c0de"
"""The sandbox tenant's id (Contoso)."""
_OBJECT_ID_NAMESPACE = uuid.UUID("0c4e5d36-2f5a-4a0e-8d7e-6f2b3a9d1c11")
TOKEN_LIFETIME_SECONDS = 3600


def object_id(tenant_id: str, principal: str) -> str:
    """The object id of a principal (an application id or a UPN) in the sandbox tenant."""
    return str(uuid.uuid5(_OBJECT_ID_NAMESPACE, f"{tenant_id.lower()}/{principal.lower()}"))


def is_application(principal: str) -> bool:
    """Whether ``principal`` names an application (a GUID app id) rather than a user (a UPN)."""
    try:
        uuid.UUID(principal)
    except ValueError:
        return False
    return True


def load_or_create_issuer_key(path: Path) -> rsa.RSAPrivateKey:
    """The sandbox identity provider's signing key, created (mode 0600) on first use."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def scope_to_resource(scope: str) -> str:
    """``https://vault.azure.net/.default`` → ``https://vault.azure.net``."""
    return scope.removesuffix("/.default").removesuffix("/")


@dataclass(frozen=True)
class Caller:
    """Who a sandbox access token names."""

    object_id: str
    principal: str
    """The application id or the UPN."""
    tenant_id: str
    is_application: bool


class SandboxIdentity:
    """Mints and verifies the sandbox's access tokens."""

    def __init__(self, key_path: Path, tenant_id: str = SANDBOX_TENANT_ID) -> None:
        self.tenant_id = tenant_id
        self._key = load_or_create_issuer_key(key_path)
        self.issuer = f"https://sts.windows.net/{tenant_id}/"
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
        """The signing key's id (``kid``), as Entra's JWKS names its keys."""

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        """The key that verifies the tokens (published at the token endpoint's JWKS)."""
        return self._key.public_key()

    def mint(self, principal: str, resource: str, lifetime: int = TOKEN_LIFETIME_SECONDS) -> AccessToken:
        """An access token for ``principal`` (app id or UPN) to call ``resource``."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": resource,
            "tid": self.tenant_id,
            "oid": object_id(self.tenant_id, principal),
            "sub": object_id(self.tenant_id, principal),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
        }
        if is_application(principal):
            claims |= {"appid": principal, "idtyp": "app"}
        else:
            claims |= {"upn": principal, "idtyp": "user"}
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.key_id})
        return AccessToken(token, now + lifetime)

    def verify(self, token: str, resource: str) -> Caller:
        """The caller behind ``token`` for ``resource``.

        Raises:
            jwt.PyJWTError: the token is invalid, expired, or for another resource.
        """
        claims = jwt.decode(
            token,
            self._key.public_key(),
            algorithms=["RS256"],
            audience=[resource, resource + "/"],
            issuer=self.issuer,
            options={"require": ["exp", "aud", "iss", "oid"]},
        )
        principal = claims.get("appid") or claims.get("upn")
        if not principal:
            raise jwt.InvalidTokenError("token names neither appid nor upn")
        return Caller(
            object_id=claims["oid"], principal=principal, tenant_id=claims["tid"], is_application="appid" in claims
        )


class SandboxCredential:
    """An ``AsyncTokenCredential`` (and sync ``TokenCredential``) that signs in ``principal`` to the sandbox.

    The Azure SDK clients take it where production passes ``DefaultAzureCredential``.
    """

    def __init__(self, identity: SandboxIdentity, principal: str) -> None:
        self.identity = identity
        self.principal = principal

    def _token(self, scopes: tuple[str, ...]) -> AccessToken:
        if not scopes:
            raise ValueError("a scope is required")
        return self.identity.mint(self.principal, scope_to_resource(scopes[0]))

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        """A token for the first scope."""
        return self._token(scopes)

    def get_token_sync(self, *scopes: str, **_: Any) -> AccessToken:
        """The same, for synchronous callers."""
        return self._token(scopes)

    async def close(self) -> None:
        """Nothing to release."""

    async def __aenter__(self) -> SandboxCredential:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None
