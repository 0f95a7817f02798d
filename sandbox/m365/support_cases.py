"""Support cases: what each Customer Key request must carry, and how a case reads as a ``supportTickets`` resource.

The request rides in ``properties.customerKey`` with a ``requestType`` (:data:`REQUEST_TYPES`); :class:`RequestChecks`
refuses what the seed says Customer Key does not support, before a case is opened.
"""

from __future__ import annotations

import uuid
from typing import Any

from sandbox.m365 import deps
from sandbox.m365.clock import iso
from sandbox.m365.core import Core
from sandbox.m365.db import CaseRow
from sandbox.m365.errors import DeskError
from sandbox.m365.exchange import Exchange
from sandbox.m365.multiworkload import MultiWorkload
from sandbox.vocabulary import Workload

ESCALATION = "mailboxEncryptionEscalation"
ROLLBACK = "multiWorkloadRollback"
PURGE = "dataPurgeEDocument"
REQUEST_TYPES = (ESCALATION, ROLLBACK, PURGE)
SEVERITIES = ("minimal", "moderate", "critical", "highestcriticalimpact")
MICROSOFT = "Microsoft Support <support@microsoft.com>"
SERVICE_ID = "/providers/Microsoft.Support/services/7c6d3ae0-6ce7-4c3d-9e2a-000000c0de05"
"""The sandbox's service id for "Microsoft Purview Customer Key"."""
TITLES = {
    ESCALATION: "Mailboxes not encrypted a week after the DEP assignment",
    ROLLBACK: "Roll back from Customer Key for multiple workloads",
    PURGE: "Request for the Data Purge eDocument",
}
"""A case's title when the request gives none."""

Checked = tuple[dict[str, Any], str, dict[str, float], str]
"""A request's details, first stage, schedule (step: delay) and Microsoft's first reply."""


class RequestChecks:
    """Checks a Customer Key request against the tenant before a case is opened.

    Args:
        core: the tenant's shared state.
        exchange: to find the mailboxes of an escalation.
        multi: the multi-workload assignment a rollback needs.
    """

    def __init__(self, core: Core, exchange: Exchange, multi: MultiWorkload) -> None:
        self.core = core
        self.exchange = exchange
        self.multi = multi

    async def check(self, kind: str, request: dict[str, Any]) -> Checked:
        """The case's details, first stage, schedule and first reply for a request of ``kind``.

        Raises:
            DeskError: the request is incomplete, or asks for what Customer Key does not support.
        """
        d = self.core.durations
        if kind == ESCALATION:
            mailboxes = request.get("mailboxes")
            if not isinstance(mailboxes, list) or not mailboxes or not all(isinstance(m, str) for m in mailboxes):
                raise DeskError(400, "BadRequest", "An escalation lists the mailboxes that aren't encrypted.")
            unknown = [m for m in mailboxes if await self.exchange.find_any(m) is None]
            if unknown:
                raise DeskError(400, "BadRequest", f"These mailboxes aren't in the tenant: {', '.join(unknown)}.")
            details = {"mailboxes": list(mailboxes), "evidence": request.get("evidence")}
            if request.get("dataEncryptionPolicy"):
                details["dataEncryptionPolicy"] = str(request["dataEncryptionPolicy"])
            return (
                details,
                "investigating",
                {"resolve": d.escalation_resolve},
                f"An engineer is looking at the moves of {len(mailboxes)} mailbox(es).",
            )
        if kind == ROLLBACK:
            workload = str(request.get("workload") or Workload.MULTI_WORKLOAD.value)
            if workload == Workload.SHAREPOINT.value:
                raise DeskError(
                    400,
                    "NotSupported",
                    "Roll back from Customer Key to Microsoft-managed keys isn't supported for SharePoint and "
                    "OneDrive.",
                )
            if workload == Workload.EXCHANGE.value:
                raise DeskError(
                    400,
                    "NotSupported",
                    "Exchange Online mailboxes roll back without Microsoft: unassign their DEPs with "
                    "Set-Mailbox -DataEncryptionPolicy $null.",
                )
            missing = [f for f in ("tenantFqdn", "contact", "reason", "incidentNumber") if not request.get(f)]
            if missing:
                raise DeskError(
                    400,
                    "BadRequest",
                    f"A rollback request needs the tenant FQDN, contact, reason and incident "
                    f"number; missing: {', '.join(missing)}.",
                )
            if str(request["tenantFqdn"]).lower() != str(self.core.tenant.get("fqdn", "")).lower():
                raise DeskError(400, "BadRequest", f"'{request['tenantFqdn']}' isn't this tenant's FQDN.")
            if await self.multi.assignment() is None:
                raise DeskError(
                    400, "BadRequest", "No multi-workload data encryption policy is assigned to the tenant."
                )
            details = {f: str(request[f]) for f in ("tenantFqdn", "contact", "reason", "incidentNumber")}
            return (
                details | {"workload": workload},
                "scheduled",
                {"rollback": d.rollback_complete},
                "We'll re-wrap your data with Microsoft-managed keys. Keep your Customer Key vaults, keys and their "
                "permissions in place until we confirm.",
            )
        # PURGE
        workload = str(request.get("workload") or Workload.EXCHANGE.value)
        identity = request.get("dataEncryptionPolicy")
        async with self.core.db.session() as s:
            multi = await deps.find(s, Workload.MULTI_WORKLOAD, str(identity)) if identity else None
            dep = await deps.find(s, Workload.EXCHANGE, str(identity)) if identity else None
        if workload == Workload.MULTI_WORKLOAD.value or (multi is not None and dep is None):
            raise DeskError(400, "NotSupported", "Purging of multi-workload DEP isn't supported for Customer Key.")
        if workload == Workload.SHAREPOINT.value:
            raise DeskError(
                400, "NotSupported", "Purging of SharePoint and OneDrive DEPs isn't supported in Customer Key."
            )
        if dep is None:
            raise DeskError(400, "BadRequest", f"No mailbox data encryption policy '{identity}' in this tenant.")
        if not dep.purge_requested:
            raise DeskError(
                400,
                "BadRequest",
                f"Request the purge on '{dep.name}' first: Set-DataEncryptionPolicy {dep.name} "
                f"-PermanentDataPurgeRequested -PermanentDataPurgeReason <reason> "
                f"-PermanentDataPurgeContact <contact>.",
            )
        return (
            {"dataEncryptionPolicy": dep.name, "dataEncryptionPolicyId": dep.guid},
            "edocument-requested",
            {"issue-edocument": d.edocument_issue},
            "We're preparing the Data Purge eDocument for your authorized approver to sign.",
        )


def ticket(row: CaseRow) -> dict[str, Any]:
    """The ``supportTickets`` resource of a case."""
    return {
        "id": f"/providers/Microsoft.Support/supportTickets/{row.name}",
        "name": row.name,
        "type": "Microsoft.Support/supportTickets",
        "properties": {
            "supportTicketId": row.ticket_id,
            "title": row.title,
            "description": row.description,
            "serviceId": SERVICE_ID,
            "severity": row.severity,
            "status": row.status,
            "contactDetails": row.contact,
            "createdDate": iso(row.created_at),
            "modifiedDate": iso(row.modified_at),
            "customerKey": {
                "requestType": row.kind,
                **row.details,
                "stage": row.stage,
                "schedule": {step: iso(at) for step, at in sorted(row.schedule.items(), key=lambda i: i[1])},
                "eDocumentSha256": row.edocument_sha256,
                "signers": [sig["signer"] for sig in row.signatures],
            },
        },
    }


def communication(now: float, direction: str, sender: str, subject: Any, body: Any) -> dict[str, Any]:
    """A ``Microsoft.Support/communications`` resource."""
    return {
        "name": str(uuid.uuid4()),
        "type": "Microsoft.Support/communications",
        "properties": {
            "communicationType": "web",
            "communicationDirection": direction,
            "sender": sender,
            "subject": str(subject or ""),
            "body": str(body or ""),
            "createdDate": iso(now),
        },
    }
