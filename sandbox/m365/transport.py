"""How the sandbox tenant reaches the sandbox Key Vault: Azure's host names, resolved locally, over the local CA.

Microsoft 365 calls Key Vault under the vault's own name (``<vault>.vault.azure.net``). The sandbox tenant does the
same through the Azure SDK clients, whose HTTP session resolves the Key Vault's names (and Resource Manager's and
Entra ID's, which the same server answers) to the sandbox Key Vault's local port and trusts only the local CA, whose
server certificate carries those names. Verification stays on; nothing else resolves.

This is the sandbox's own transport, not ckey's: the stand-in must not share code with the product it checks.
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from azure.core.pipeline.transport import AioHttpTransport

from ckey.config import Settings
from sandbox.tls import client_ssl_context

KEYVAULT_SERVER_HOSTS = (".vault.azure.net", ".vault.ckey.test", "management.azure.com", "login.microsoftonline.com")
"""What the sandbox Key Vault's server answers: the vaults (a leading dot: any name under it), ARM, Entra ID."""


class KeyVaultResolver(AbstractResolver):
    """Resolves the sandbox Key Vault server's host names to ``127.0.0.1:<port>``; any other name fails.

    Args:
        port: the sandbox Key Vault's local HTTPS port.
        hosts: exact host names, or suffixes starting with a dot.
    """

    def __init__(self, port: int, hosts: tuple[str, ...] = KEYVAULT_SERVER_HOSTS) -> None:
        self.port = port
        self.hosts = tuple(h.lower() for h in hosts)

    def serves(self, host: str) -> bool:
        """Whether ``host`` is one of the server's names."""
        host = host.lower().rstrip(".")
        return any(host.endswith(h) if h.startswith(".") else host == h for h in self.hosts)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """``host`` → the local port; other names raise, so that no request of the sandbox leaves the machine."""
        if not self.serves(host):
            raise OSError(f"the sandbox tenant reaches only the sandbox Key Vault, not {host}")
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=self.port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        """Nothing to release."""


class KeyVaultTransport:
    """One HTTP session to the sandbox Key Vault, shared by the SDK clients of one event loop.

    Args:
        settings: the shared settings (the sandbox Key Vault's port, the local CA).
    """

    def __init__(self, settings: Settings) -> None:
        self.port = settings.sandbox_keyvault_port
        self.ca_file = settings.resolved_ca_file
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        """The shared session, created on first use (inside the event loop that will use it)."""
        if self._session is None:
            connector = aiohttp.TCPConnector(resolver=KeyVaultResolver(self.port), ssl=client_ssl_context(self.ca_file))
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for an Azure SDK client: the shared session, which the client must not close."""
        return {"transport": AioHttpTransport(session=self.session(), session_owner=False)}

    async def close(self) -> None:
        """Close the session (after the SDK clients)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
