"""The Windows 365 gateway: Cloud PCs and their disk encryption through Microsoft Graph.

Microsoft Graph's Windows 365 (Cloud PC) endpoints live under ``/beta/deviceManagement/virtualEndpoint``; the app
needs the ``CloudPC.Read.All`` permission to read them (``CloudPC.ReadWrite.All`` to re-encrypt). In sandbox mode
``graph.microsoft.com`` resolves to the sandbox tenant.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ckey.azure import AzureConnection

GRAPH_URL = "https://graph.microsoft.com"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
VIRTUAL_ENDPOINT = "/beta/deviceManagement/virtualEndpoint"


class CloudPc(BaseModel):
    """A Cloud PC as Graph's ``cloudPC`` resource describes it (the fields ckey reads)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    display_name: str | None = Field(default=None, alias="displayName")
    managed_device_name: str | None = Field(default=None, alias="managedDeviceName")
    user_principal_name: str | None = Field(default=None, alias="userPrincipalName")
    disk_encryption_state: str | None = Field(default=None, alias="diskEncryptionState")


class Windows365Gateway:
    """Cloud PCs and the tenant's Cloud PC encryption setting, from Microsoft Graph.

    Args:
        connection: credentials and the HTTP transport (the sandbox's in sandbox mode).
        transport: an HTTP transport to use instead (tests).
    """

    def __init__(self, connection: AzureConnection, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.connection = connection
        self.transport = transport

    async def _headers(self) -> dict[str, str]:
        token = await self.connection.credential().get_token(GRAPH_SCOPE)
        return {"Authorization": f"Bearer {token.token}"}

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=GRAPH_URL, timeout=30, transport=self.transport or self.connection.httpx_transport()
        )

    async def _get(self, path: str) -> dict[str, Any]:
        async with self._http() as http:
            response = await http.get(f"{VIRTUAL_ENDPOINT}{path}", headers=await self._headers())
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def cloud_pcs(self) -> list[CloudPc]:
        """Every Cloud PC of the tenant (``GET cloudPCs``, following ``@odata.nextLink``)."""
        found: list[CloudPc] = []
        page = await self._get("/cloudPCs")
        while True:
            found += [CloudPc.model_validate(item) for item in page.get("value", [])]
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return found
            async with self._http() as http:
                response = await http.get(str(next_link), headers=await self._headers())
            response.raise_for_status()
            page = response.json()
