"""The service's side of Azure Key Vault: the customer's keys, reached through the Azure SDK as Microsoft 365.

Microsoft 365 reaches a customer key as the workload's service principal (Exchange Online, SharePoint Online, the
Microsoft 365 data-at-rest principal), never as the customer's administrator. In the sandbox the same SDK clients
ckey uses go through the sandbox's own transport (:class:`sandbox.m365.transport.KeyVaultTransport`: the vault's
real host name, resolved to the sandbox Key Vault, over the local CA) with a token the sandbox's identity provider
mints for the principal (:class:`sandbox.identity.SandboxCredential`: Microsoft 365 signs in as its first-party
apps, which no client secret of the customer's tenant names), so the sandbox Key Vault sees the principal's token and
answers by its access policies or role assignments exactly as for anyone else.

Wrapping is done *by the vault* (``POST .../wrapkey`` through ``KeyClient.send_request``): the SDK's
``CryptographyClient`` would wrap locally once it holds the public key, and then the ``wrapKey`` permission the seed
requires would never be exercised. Unwrapping always reaches the vault (``CryptographyClient.unwrap_key``).

Failures are sorted the way Customer Key's availability logic needs them: :class:`VaultDenied` (the customer took
access away or the key is gone: 401/403/404/400) never falls back to the availability key; :class:`VaultUnavailable`
(5xx, throttling, network) may.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.rest import HttpRequest
from azure.keyvault.keys import KeyVaultKey
from azure.keyvault.keys.aio import KeyClient
from azure.keyvault.keys.crypto import KeyWrapAlgorithm
from azure.keyvault.keys.crypto.aio import CryptographyClient

from ckey.config import Settings
from sandbox.identity import SandboxCredential, SandboxIdentity
from sandbox.m365.transport import KeyVaultTransport
from sandbox.vocabulary import KeyUri

WRAP_ALGORITHM = KeyWrapAlgorithm.rsa_oaep_256
KEYVAULT_RETRIES = 1
"""Retries of a failing Key Vault call before the service treats the vault as unavailable."""
MIN_RSA_BITS = 2048


class VaultError(Exception):
    """A Key Vault call failed.

    Args:
        uri: the key.
        status: HTTP status (0: no answer).
        code: the service's error code, if any.
        message: what happened.
    """

    def __init__(self, uri: str, status: int, code: str, message: str) -> None:
        super().__init__(f"{uri}: {status} {code}: {message}")
        self.uri, self.status, self.code, self.message = uri, status, code, message


class VaultDenied(VaultError):
    """The vault refused (no permission, no such key, key disabled): the customer's decision, no fallback."""


class VaultUnavailable(VaultError):
    """The vault did not answer usefully (5xx, throttled, unreachable): a system error."""


def _classify(uri: str, exc: Exception) -> VaultError:
    if isinstance(exc, HttpResponseError):
        status = exc.status_code or 0
        error = getattr(exc, "error", None)
        code = (getattr(error, "code", None) or exc.reason or "Error") if error is not None else (exc.reason or "Error")
        message = (getattr(error, "message", None) or exc.message or str(exc)) if error is not None else str(exc)
        if status in (400, 401, 403, 404):
            return VaultDenied(uri, status, str(code), str(message))
        return VaultUnavailable(uri, status, str(code), str(message))
    return VaultUnavailable(uri, 0, "Unreachable", str(exc))


_TRANSPORT_ERRORS = (HttpResponseError, ServiceRequestError, ServiceResponseError, OSError)


@dataclass(frozen=True)
class KeyCheck:
    """What the service learnt about a customer key when it was named in a DEP."""

    kid: str
    """The versioned key identifier."""
    enabled: bool
    expired: bool
    not_yet_valid: bool
    recovery_level: str
    kty: str
    bits: int

    @property
    def soft_delete(self) -> bool:
        """Whether deleting the key leaves it recoverable (soft delete)."""
        return "Recoverable" in self.recovery_level

    @property
    def purge_protection(self) -> bool:
        """Whether a deleted key cannot be purged before its retention ends."""
        return self.soft_delete and "Purgeable" not in self.recovery_level


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class KeyVaultAccess:
    """Key Vault as the Microsoft 365 service principals reach it (one instance per server; an event loop's own).

    Args:
        settings: the shared settings (the sandbox Key Vault's port, the local CA, the identity provider's key).
        retries: retries per call before a vault counts as unavailable.
    """

    def __init__(self, settings: Settings, retries: int = KEYVAULT_RETRIES) -> None:
        self.transport = KeyVaultTransport(settings)
        self.identity = SandboxIdentity(settings.sandbox_identity_key_path, settings.azure_tenant_id)
        self.retries = retries
        self._keys: dict[tuple[str, str], KeyClient] = {}
        self._crypto: dict[tuple[str, str], CryptographyClient] = {}

    async def close(self) -> None:
        """Close every SDK client and the HTTP session."""
        for client in [*self._keys.values(), *self._crypto.values()]:
            await client.close()
        self._keys.clear()
        self._crypto.clear()
        await self.transport.close()

    def _options(self) -> dict[str, Any]:
        return {**self.transport.client_kwargs(), "retry_total": self.retries}

    def _key_client(self, vault_url: str, principal: str) -> KeyClient:
        # Cached per vault and principal: the challenge handshake happens once, as in a long-running service.
        cache_key = (vault_url.lower(), principal)
        if cache_key not in self._keys:
            self._keys[cache_key] = KeyClient(vault_url, SandboxCredential(self.identity, principal), **self._options())
        return self._keys[cache_key]

    def _crypto_client(self, kid: str, principal: str) -> CryptographyClient:
        cache_key = (kid.lower(), principal)
        if cache_key not in self._crypto:
            self._crypto[cache_key] = CryptographyClient(
                kid, SandboxCredential(self.identity, principal), **self._options()
            )
        return self._crypto[cache_key]

    async def get_key(self, uri: KeyUri, principal: str) -> KeyVaultKey:
        """The key (the version ``uri`` names, else the latest), read as ``principal`` (``keys/get``).

        Raises:
            VaultDenied: refused or not found.
            VaultUnavailable: a system error.
        """
        try:
            return await self._key_client(uri.vault_url, principal).get_key(uri.name, uri.version)
        except _TRANSPORT_ERRORS as exc:
            raise _classify(str(uri), exc) from None

    async def check(self, uri: KeyUri, principal: str) -> KeyCheck:
        """Read the key as ``principal`` and report what a DEP needs to know about it.

        Raises:
            VaultDenied: refused or not found.
            VaultUnavailable: a system error.
        """
        key = await self.get_key(uri, principal)
        props = key.properties
        now = datetime.now(UTC)
        modulus = vars(key.key).get("n") if key.key is not None else None
        return KeyCheck(
            kid=str(key.id),
            enabled=bool(props.enabled),
            expired=props.expires_on is not None and props.expires_on <= now,
            not_yet_valid=props.not_before is not None and props.not_before > now,
            # The SDK hands back an enum (DeletionRecoveryLevel) where the service sent a string.
            recovery_level=str(getattr(props.recovery_level, "value", props.recovery_level) or ""),
            kty=str(getattr(key.key_type, "value", key.key_type)),
            bits=len(modulus) * 8 if modulus else 0,
        )

    async def wrap(self, kid: str, plaintext: bytes, principal: str) -> tuple[str, bytes]:
        """Wrap ``plaintext`` with the versioned key ``kid`` in the vault, as ``principal`` (``keys/wrapKey``).

        Returns:
            The versioned key id the vault used, and the wrapped bytes.

        Raises:
            VaultDenied: refused or not found.
            VaultUnavailable: a system error.
        """
        uri = KeyUri.parse(kid)
        client = self._key_client(uri.vault_url, principal)
        path = f"/keys/{uri.name}/{uri.version or ''}/wrapkey"
        request = HttpRequest("POST", path, json={"alg": WRAP_ALGORITHM.value, "value": _b64url(plaintext)})
        try:
            response = await client.send_request(request)
            response.raise_for_status()
            body = response.json()
        except _TRANSPORT_ERRORS as exc:
            raise _classify(kid, exc) from None
        return str(body.get("kid") or kid), _unb64url(str(body["value"]))

    async def unwrap(self, kid: str, wrapped: bytes, principal: str) -> bytes:
        """Unwrap with the versioned key ``kid``, in the vault, as ``principal`` (``keys/unwrapKey``).

        Raises:
            VaultDenied: refused or not found.
            VaultUnavailable: a system error.
        """
        try:
            result = await self._crypto_client(kid, principal).unwrap_key(WRAP_ALGORITHM, wrapped)
        except _TRANSPORT_ERRORS as exc:
            raise _classify(kid, exc) from None
        return bytes(result.key)
