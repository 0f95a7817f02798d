"""The sandbox Key Vault in this process (a uvicorn thread), reached through the Azure SDKs as ckey reaches it."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import KeyVaultKey
from azure.keyvault.keys.aio import KeyClient
from azure.keyvault.keys.crypto.aio import CryptographyClient

from ckey.azure import AzureConnection
from ckey.config import Settings, load_settings
from sandbox.identity import SandboxCredential, SandboxIdentity
from sandbox.keyvault import SandboxKeyVaultControl, SandboxKeyVaultServer
from tests.conftest import signed_in_to_sandbox


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sandbox_settings(data_dir: Path) -> Settings:
    return signed_in_to_sandbox(load_settings(data_dir=data_dir, sandbox_keyvault_port=free_port(), _env_file=None))


def as_principal(conn: AzureConnection, principal: str | None = None) -> Any:
    """ckey's own credential, or (``principal``) a token the sandbox's identity provider mints for anyone else."""
    if principal is None:
        return conn.credential()
    settings = conn.settings
    return SandboxCredential(SandboxIdentity(settings.sandbox_identity_key_path, settings.azure_tenant_id), principal)


def vault_url(vault: str) -> str:
    return f"https://{vault}.vault.azure.net"


def unique(prefix: str) -> str:
    """A name no other test uses (vault names: at most 24 characters)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def kv_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return sandbox_settings(tmp_path_factory.mktemp("sandbox-keyvault") / "data")


@pytest.fixture(scope="session")
def kv_server(kv_settings: Settings) -> Iterator[SandboxKeyVaultServer]:
    with SandboxKeyVaultServer(kv_settings) as server:
        yield server


@pytest.fixture(scope="session")
async def conn(kv_settings: Settings, kv_server: SandboxKeyVaultServer) -> AsyncIterator[AzureConnection]:
    async with AzureConnection(kv_settings) as connection:
        yield connection


@pytest.fixture(scope="session")
async def control(kv_settings: Settings, kv_server: SandboxKeyVaultServer) -> AsyncIterator[SandboxKeyVaultControl]:
    async with SandboxKeyVaultControl.from_settings(kv_settings) as client:
        yield client


MakeVault = Callable[..., Awaitable[str]]


@pytest.fixture
def make_vault(control: SandboxKeyVaultControl, kv_settings: Settings) -> MakeVault:
    """Create a vault with a unique name, ckey's principal holding every key permission (access policies)."""

    async def make(*, purge_protection: bool = False, rbac: bool = False, **kwargs: Any) -> str:
        name = unique("t")
        await control.create_vault(name, purge_protection=purge_protection, rbac=rbac, **kwargs)
        if not rbac:
            await control.grant(name, kv_settings.azure_principal, ["all"])
        return name

    return make


@pytest.fixture
async def vault(make_vault: MakeVault) -> str:
    return await make_vault()


@pytest.fixture
def keys(conn: AzureConnection) -> Callable[..., KeyClient]:
    """A KeyClient factory: ``keys(vault, principal=None, **client_kwargs)`` (use it as an async context manager)."""

    def make(vault: str, principal: str | None = None, **kwargs: Any) -> KeyClient:
        return KeyClient(vault_url(vault), as_principal(conn, principal), **conn.client_kwargs(), **kwargs)

    return make


@pytest.fixture
def crypto(conn: AzureConnection) -> Callable[..., CryptographyClient]:
    """A CryptographyClient factory: ``crypto(key_or_id, principal=None, **client_kwargs)``."""

    def make(key: Any, principal: str | None = None, **kwargs: Any) -> CryptographyClient:
        return CryptographyClient(key, as_principal(conn, principal), **conn.client_kwargs(), **kwargs)

    return make


# Reading SDK results and errors ---------------------------------------------------------------------------------


def modulus(key: KeyVaultKey) -> bytes:
    """The public modulus of a key (JsonWebKey sets its fields dynamically, out of the type checker's sight)."""
    n: bytes = vars(key.key)["n"]
    return n


def code(exc: HttpResponseError) -> str | None:
    """``error.code`` of the service's answer."""
    return exc.error.code if exc.error is not None else None


def inner_code(exc: HttpResponseError) -> str | None:
    """``error.innererror.code`` of the service's answer."""
    inner: Any = exc.error.innererror if exc.error is not None else None
    return inner.get("code") if inner else None


def message(exc: HttpResponseError) -> str:
    """``error.message`` of the service's answer."""
    return (exc.error.message if exc.error is not None else None) or ""


def header(exc: HttpResponseError, name: str) -> str:
    """A header of the failed response."""
    response: Any = exc.response
    value: str = response.headers[name]
    return value
