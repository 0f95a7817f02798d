"""Microsoft's support desk, as ckey files cases with it: escalations, rollback requests, the Data Purge eDocument.

Microsoft's support desk has no public API for the Customer Key paths; the sandbox tenant serves one
(``https://support.ckey.test``) modelled on the Azure Support REST API's ``supportTickets``, where the client names
the ticket and naming it again returns the same ticket. ckey keys every case by the operation and the step, so a
retried activity never files a second case. In production the same calls would reach a desk that the support
contract provides; until then a case filed there is recorded in the audit trail and handed to people.
"""

from __future__ import annotations

from typing import Any, Protocol

from ckey.azure import AzureConnection
from ckey.models import SupportCase as SupportCase

SUPPORT_URL = "https://support.ckey.test"


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
    """The support desk over HTTPS, in the Azure Support API's shape (``Microsoft.Support/supportTickets``).

    Args:
        connection: the HTTP session and credential.
        base_url: the desk's address (the sandbox's ``https://support.ckey.test``).
        contact: who Microsoft answers (``contactDetails.primaryEmailAddress``).
    """

    API_VERSION = "2024-04-01"

    def __init__(self, connection: AzureConnection, base_url: str = SUPPORT_URL, contact: str = "") -> None:
        self.connection = connection
        self.base_url = base_url.rstrip("/")
        self.contact = contact

    def _url(self, key: str) -> str:
        # Ticket names are letters, digits, '-' and '_'.
        name = "".join(c if c.isalnum() or c in "-_" else "-" for c in key)
        return f"{self.base_url}/providers/Microsoft.Support/supportTickets/{name}?api-version={self.API_VERSION}"

    async def _headers(self) -> dict[str, str]:
        token = await self.connection.credential().get_token(f"{self.base_url}/.default")
        return {"Authorization": f"Bearer {token.token}"}

    async def file_case(self, *, key: str, kind: str, title: str, details: dict[str, Any]) -> SupportCase:
        """PUT the ticket under its name (idempotent: the same name returns the ticket filed first)."""
        body = {
            "properties": {
                "title": title[:200],
                "description": title,
                "severity": "moderate",
                "contactDetails": {"primaryEmailAddress": self.contact, "preferredContactMethod": "email"},
                "customerKey": {"requestType": kind, **details},
            }
        }
        session = self.connection.http_session()
        async with session.put(self._url(key), json=body, headers=await self._headers()) as response:
            payload = await response.json(content_type=None)
            if response.status >= 400:
                raise SupportDeskError(f"{response.status}: {payload}")
        return _case(key, payload)

    async def get_case(self, key: str) -> SupportCase | None:
        """GET the ticket by its name."""
        session = self.connection.http_session()
        async with session.get(self._url(key), headers=await self._headers()) as response:
            if response.status == 404:
                return None
            payload = await response.json(content_type=None)
            if response.status >= 400:
                raise SupportDeskError(f"{response.status}: {payload}")
        return _case(key, payload)


def _case(key: str, ticket: dict[str, Any]) -> SupportCase:
    props = ticket.get("properties", {})
    request = dict(props.get("customerKey") or {})
    return SupportCase(
        id=str(props.get("supportTicketId") or ticket.get("name") or key),
        key=key,
        kind=str(request.pop("requestType", "")),
        status=str(props.get("status") or "Open"),
        title=str(props.get("title") or ""),
        details=request,
    )
