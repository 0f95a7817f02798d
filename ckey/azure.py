"""How ckey reaches Azure: credentials and HTTP transport for the Azure SDK clients, real or sandbox.

ckey signs in with ``azure-identity``'s own credentials: ``ClientSecretCredential`` when ``CKEY_AZURE_CLIENT_ID`` and
``CKEY_AZURE_CLIENT_SECRET`` name an app registration, ``DefaultAzureCredential`` otherwise. In sandbox mode (explicit
in config, announced at start) the credential and the SDK clients keep Azure's own host names —
``login.microsoftonline.com``, ``<vault>.vault.azure.net``, ``management.azure.com``, ``graph.microsoft.com`` — while
ckey's resolver sends those names to the sandbox's local ports and the TLS context trusts the local CA. Name
resolution and the trusted CA are the only differences: token requests, key URIs, challenge-resource checks and
validation rules stay the production ones.
"""

from __future__ import annotations

import logging
import socket
import ssl
from typing import Any

import aiohttp
import httpx
from aiohttp.abc import AbstractResolver, ResolveResult
from azure.core.pipeline.transport import AioHttpTransport

from ckey.config import Settings

log = logging.getLogger(__name__)

KEYVAULT_HOST_SUFFIXES = (".vault.azure.net", ".vault.ckey.test")
ENTRA_AUTHORITY = "login.microsoftonline.com"
"""Microsoft Entra ID's authority host (public cloud): where the credential asks for tokens."""
ARM_HOSTS = ("management.azure.com", ENTRA_AUTHORITY)
"""Hosts of the sandbox Key Vault's server besides the vaults: Resource Manager and Entra ID's token endpoint."""
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


class SandboxHttpxTransport(httpx.AsyncBaseTransport):
    """httpx's transport with :class:`SandboxResolver`'s routing, for the gateways that speak httpx (Graph).

    The request keeps its URL's host in ``Host`` and as the TLS server name (SNI, certificate check); only the TCP
    connection goes to ``127.0.0.1:<sandbox port>``. An unknown host does not resolve.

    Args:
        resolver: which port serves which host.
        ssl_context: trusts the sandbox's CA.
    """

    def __init__(self, resolver: SandboxResolver, ssl_context: ssl.SSLContext) -> None:
        self.resolver = resolver
        self._inner = httpx.AsyncHTTPTransport(verify=ssl_context)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` to the sandbox port serving its host."""
        host = request.url.host
        port = self.resolver.port_for(host)
        if port is None:
            raise httpx.ConnectError(f"sandbox mode: {host} is not served by the local stack", request=request)
        request.url = request.url.copy_with(host="127.0.0.1", port=port)
        request.extensions = {**request.extensions, "sni_hostname": host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._inner.aclose()


class SandboxSignInError(RuntimeError):
    """Sandbox mode without client credentials: nothing would sign ckey in to the sandbox tenant."""


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
        self._credential: Any = None
        self._ssl: ssl.SSLContext | None = None

    async def __aenter__(self) -> AzureConnection:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the shared HTTP session and credential."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._credential is not None:
            await self._credential.close()
            self._credential = None

    def credential(self) -> Any:
        """The async token credential of ckey, shared by every SDK client of the process.

        ``ClientSecretCredential`` for the app registration of ``CKEY_AZURE_CLIENT_ID`` / ``CKEY_AZURE_CLIENT_SECRET``
        (``ckey up`` sets the sandbox tenant's), ``CertificateCredential`` for ``CKEY_AZURE_CLIENT_ID`` /
        ``CKEY_AZURE_CLIENT_CERTIFICATE_PATH``, else ``DefaultAzureCredential`` (managed identity, workload
        identity, environment, Azure CLI). Either reaches Entra ID through :meth:`client_kwargs`' transport.
        """
        if self._credential is None:
            settings = self.settings
            common: dict[str, Any] = {"authority": settings.azure_authority_host, **self.client_kwargs()}
            if settings.azure_client_id and settings.azure_client_secret is not None:
                from azure.identity.aio import ClientSecretCredential

                self._credential = ClientSecretCredential(
                    settings.azure_tenant_id,
                    settings.azure_client_id,
                    settings.azure_client_secret.get_secret_value(),
                    **common,
                )
            elif settings.azure_client_id and settings.azure_client_certificate_path is not None:
                from azure.identity.aio import CertificateCredential

                self._credential = CertificateCredential(
                    settings.azure_tenant_id,
                    settings.azure_client_id,
                    certificate_path=str(settings.azure_client_certificate_path),
                    **common,
                )
            elif settings.sandbox:
                # DefaultAzureCredential would try the instance metadata service at 169.254.169.254, an address
                # that no resolver maps: the sandbox's own app registration is the only way in.
                raise SandboxSignInError(
                    "sandbox mode needs the sandbox tenant's app registration for ckey: CKEY_AZURE_CLIENT_ID with "
                    "CKEY_AZURE_CLIENT_SECRET or CKEY_AZURE_CLIENT_CERTIFICATE_PATH (`ckey up` sets them; "
                    "`python -m sandbox.bootstrap` prints them)"
                )
            else:
                from azure.identity.aio import DefaultAzureCredential

                self._credential = DefaultAzureCredential(**common)
        return self._credential

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # The sandbox's CA only: nothing else is reachable in sandbox mode, and verification stays on.
            self._ssl = ssl.create_default_context(cafile=str(self.settings.resolved_ca_file))
        return self._ssl

    def httpx_transport(self) -> httpx.AsyncBaseTransport | None:
        """A transport for an httpx client: the sandbox's routing and CA in sandbox mode, httpx's default (``None``).

        A new one each time: an httpx client closes its transport with itself.
        """
        if not self.settings.sandbox:
            return None
        return SandboxHttpxTransport(SandboxResolver(sandbox_routes(self.settings)), self._ssl_context())

    def http_session(self) -> aiohttp.ClientSession:
        """The shared HTTP session: the sandbox's resolver and CA in sandbox mode, plain HTTPS otherwise."""
        if self._session is None:
            if self.settings.sandbox:
                connector = aiohttp.TCPConnector(
                    resolver=SandboxResolver(sandbox_routes(self.settings)),
                    ssl=self._ssl_context(),
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
