"""How ckey reaches Azure: credentials and HTTP transport for the Azure SDK clients, real or sandbox.

In production the SDK clients use ``DefaultAzureCredential`` and their default transport. In sandbox mode (explicit
in config, announced at start) they keep Azure's own host names — ``<vault>.vault.azure.net``,
``management.azure.com`` — while ckey's resolver sends those names to the sandbox's local port and the TLS context
trusts the local CA. Key URIs, challenge-resource checks and validation rules stay the production ones.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from azure.core.pipeline.transport import AioHttpTransport

from ckey.config import Settings
from sandbox.identity import SandboxCredential, SandboxIdentity
from sandbox.tls import client_ssl_context

log = logging.getLogger(__name__)

KEYVAULT_HOST_SUFFIXES = (".vault.azure.net", ".vault.ckey.test")
ARM_HOSTS = ("management.azure.com", "login.microsoftonline.com")
M365_HOSTS = ("outlook.office365.com", "graph.microsoft.com", ".sharepoint.com", "support.ckey.test")
"""Hosts of the sandbox tenant: Exchange Online, Graph, SharePoint admin (``<tenant>-admin.sharepoint.com``), and
the sandbox's support desk (Microsoft's support desk has no public API that covers the Customer Key paths)."""
ARM_ENDPOINT = "https://management.azure.com"


class SandboxResolver(AbstractResolver):
    """Resolves Azure's and Microsoft 365's host names to the local sandbox ports; nothing else resolves."""

    def __init__(self, routes: dict[str, int]) -> None:
        self.routes = routes
        """Host (``management.azure.com``) or suffix (``.vault.azure.net``) → local port."""

    def port_for(self, host: str) -> int | None:
        """The sandbox port serving ``host``, if any."""
        host = host.lower().rstrip(".")
        if host in self.routes:
            return self.routes[host]
        for pattern, port in self.routes.items():
            if pattern.startswith(".") and host.endswith(pattern):
                return port
        return None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """``host`` → ``127.0.0.1:<sandbox port>``; an unknown host does not resolve (nothing leaks to the cloud)."""
        target = self.port_for(host)
        if target is None:
            raise OSError(f"sandbox mode: {host} is not served by the local stack")
        return [
            ResolveResult(
                hostname=host,
                host="127.0.0.1",
                port=target,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        """Nothing to release."""


def sandbox_routes(settings: Settings) -> dict[str, int]:
    """Which sandbox port serves which host."""
    routes = {suffix: settings.sandbox_keyvault_port for suffix in KEYVAULT_HOST_SUFFIXES}
    routes |= {host: settings.sandbox_keyvault_port for host in ARM_HOSTS}
    routes |= {host: settings.sandbox_m365_port for host in M365_HOSTS}
    return routes


class AzureConnection:
    """Credentials and transport for the Azure SDK clients of one process (an async context manager).

    Args:
        settings: ckey's settings; ``settings.sandbox`` picks the sandbox.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._identity: SandboxIdentity | None = None
        self._default_credential: Any = None

    async def __aenter__(self) -> AzureConnection:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the shared HTTP session and credential."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._default_credential is not None:
            await self._default_credential.close()
            self._default_credential = None

    @property
    def sandbox(self) -> bool:
        """Whether the SDK clients talk to the sandbox."""
        return self.settings.sandbox

    def credential(self, principal: str | None = None) -> Any:
        """An async token credential: ckey's own identity, or (sandbox only) ``principal``'s.

        ``principal`` lets the sandbox tenant act as a Microsoft 365 service principal (by application id).
        """
        if self.settings.sandbox:
            if self._identity is None:
                self._identity = SandboxIdentity(self.settings.sandbox_identity_key_path, self.settings.azure_tenant_id)
            return SandboxCredential(self._identity, principal or self.settings.azure_principal)
        if principal is not None:
            raise ValueError("acting as another principal is only possible in the sandbox")
        if self._default_credential is None:
            from azure.identity.aio import DefaultAzureCredential

            self._default_credential = DefaultAzureCredential()
        return self._default_credential

    def http_session(self) -> aiohttp.ClientSession:
        """The shared HTTP session: the sandbox's resolver and CA in sandbox mode, plain HTTPS otherwise."""
        if self._session is None:
            if self.settings.sandbox:
                connector = aiohttp.TCPConnector(
                    resolver=SandboxResolver(sandbox_routes(self.settings)),
                    ssl=client_ssl_context(self.settings.resolved_ca_file),
                )
                self._session = aiohttp.ClientSession(connector=connector)
            else:
                self._session = aiohttp.ClientSession()
        return self._session

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for every Azure SDK client: the sandbox transport, or nothing in production."""
        if not self.settings.sandbox:
            return {}
        return {"transport": AioHttpTransport(session=self.http_session(), session_owner=False)}
