"""Microsoft's support desk, as ckey files cases with it: escalations, rollback requests, the Data Purge eDocument.

Microsoft's support desk has no public API for the Customer Key paths; the sandbox tenant serves one
(``https://support.ckey.test``) modelled on the Azure Support REST API's ``supportTickets``, where the client names
the ticket and naming it again returns the same ticket. ckey keys every case by the operation and the step, so a
retried activity never files a second case. In production the same calls would reach a desk that the support
contract provides; until then a case filed there is recorded in the audit trail and handed to people.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field

from ckey.azure import AzureConnection

SUPPORT_URL = "https://support.ckey.test"


class SupportCase(BaseModel):
    """A support case as the desk reports it."""

    id: str
    key: str
    kind: str
    status: str = "open"
    title: str = ""
    details: dict[str, Any] = Field(default_factory=dict)


class SupportDesk(Protocol):
    """Files and reads support cases."""

    async def file_case(self, *, key: str, kind: str, title: str, details: dict[str, Any]) -> SupportCase:
        """File a case; the same ``key`` again returns the case filed first."""
        ...

    async def get_case(self, key: str) -> SupportCase | None:
        """A case by its key."""
        ...


class SupportDeskError(Exception):
    """The desk refused or failed a request."""


class HttpSupportDesk:
    """The support desk over HTTPS (the sandbox's, under ``support.ckey.test``).

    Args:
        connection: the HTTP session and credential.
        base_url: the desk's address.
    """

    def __init__(self, connection: AzureConnection, base_url: str = SUPPORT_URL) -> None:
        self.connection = connection
        self.base_url = base_url.rstrip("/")

    async def _headers(self) -> dict[str, str]:
        token = await self.connection.credential().get_token(f"{self.base_url}/.default")
        return {"Authorization": f"Bearer {token.token}"}

    async def file_case(self, *, key: str, kind: str, title: str, details: dict[str, Any]) -> SupportCase:
        """PUT the case under its key (idempotent)."""
        body = {"kind": kind, "title": title, "details": details}
        session = self.connection.http_session()
        async with session.put(f"{self.base_url}/cases/{key}", json=body, headers=await self._headers()) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                raise SupportDeskError(f"{response.status}: {payload}")
        return SupportCase.model_validate(payload)

    async def get_case(self, key: str) -> SupportCase | None:
        """GET the case by its key."""
        session = self.connection.http_session()
        async with session.get(f"{self.base_url}/cases/{key}", headers=await self._headers()) as response:
            if response.status == 404:
                return None
            payload = await response.json(content_type=None)
            if response.status >= 400:
                raise SupportDeskError(f"{response.status}: {payload}")
        return SupportCase.model_validate(payload)
