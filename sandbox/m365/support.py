"""Microsoft's side of Customer Key's support paths: a support desk modelled on the Azure Support API.

Cases are ``Microsoft.Support/supportTickets`` resources (``PUT .../supportTickets/{name}``): the client-supplied name
is the idempotency key, so creating the same case twice returns the first. The Customer Key request rides in
``properties.customerKey`` with a ``requestType``:

- ``mailboxEncryptionEscalation`` (mailboxes, evidence): mailboxes not encrypted a week after the assignment.
  Microsoft's engineers restart the stuck moves after :attr:`~sandbox.m365.durations.Durations.escalation_resolve`.
- ``multiWorkloadRollback`` (tenant FQDN, contact, reason, incident number): Microsoft re-wraps the multi-workload data
  with Microsoft-managed keys after :attr:`~sandbox.m365.durations.Durations.rollback_complete`, which needs the
  customer's keys and permissions still in place (else it waits and tries again). SharePoint: refused (unsupported).
- ``dataPurgeEDocument`` (the DEP): Microsoft issues the Data Purge eDocument (the DEP, its mailboxes, the reason and
  contact, a SHA-256 of its content); once it comes back signed (Ed25519 signatures over the SHA-256, with the
  signers' public keys), Microsoft runs the purge in simulated time: the policy is deleted, its mailboxes are marked for
  permanent deletion, the availability key is deleted. Multi-workload and SharePoint DEPs: refused (unsupported).

Every step is scheduled at a simulated instant and carried out by :meth:`SupportDesk.tick` once the clock passes it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select

from sandbox.m365 import deps
from sandbox.m365.clock import iso
from sandbox.m365.core import Core, KeyUnavailable
from sandbox.m365.db import CaseRow, DepRow, MailboxRow
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
EDOCUMENT_TYPE = "Microsoft 365 Customer Key Data Purge Authorization"


def canonical(document: dict[str, Any]) -> str:
    """The eDocument's canonical JSON text (sorted keys, no spaces): what its SHA-256 covers."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _public_key(text: str) -> Ed25519PublicKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    else:
        raw = base64.b64decode(text, validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


class SupportDesk:
    """The support desk: cases, their communications, the eDocument, and Microsoft's scheduled steps.

    Args:
        core: the tenant's shared state and key hierarchy.
        exchange: for mailboxes (escalations, the purge).
        multi: for the multi-workload rollback.
    """

    def __init__(self, core: Core, exchange: Exchange, multi: MultiWorkload) -> None:
        self.core = core
        self.exchange = exchange
        self.multi = multi
        self.next_due = 0.0
        """The earliest scheduled step (0: unknown, look): until then :meth:`tick` has nothing to do."""

    # Cases ------------------------------------------------------------------------------------------------------

    async def create(self, name: str, body: dict[str, Any], caller: str) -> tuple[dict[str, Any], bool]:
        """Open a case (or return the one opened under ``name`` before); whether it was created now.

        Raises:
            DeskError: the request is incomplete or asks for something Customer Key does not support.
        """
        async with self.core.db.session() as s:
            existing = await s.get(CaseRow, name)
        if existing is not None:
            return self.ticket(existing), False
        props = body.get("properties")
        if not isinstance(props, dict):
            raise DeskError(400, "BadRequest", "The request body needs 'properties'.")
        request = props.get("customerKey")
        if not isinstance(request, dict) or request.get("requestType") not in REQUEST_TYPES:
            raise DeskError(
                400,
                "BadRequest",
                f"properties.customerKey.requestType must be one of {', '.join(REQUEST_TYPES)}.",
            )
        severity = str(props.get("severity") or "moderate").lower()
        if severity not in SEVERITIES:
            raise DeskError(400, "BadRequest", f"severity must be one of {', '.join(SEVERITIES)}.")
        kind = str(request["requestType"])
        details, stage, schedule, first_message = await self._validate(kind, request)
        now = self.core.now()
        async with self.core.db.session() as s, s.begin():
            if (existing := await s.get(CaseRow, name)) is not None:
                return self.ticket(existing), False
            count = await s.scalar(select(func.count()).select_from(CaseRow))
            day = datetime.fromtimestamp(now, UTC).strftime("%y%m%d")
            contact = props.get("contactDetails") if isinstance(props.get("contactDetails"), dict) else {}
            row = CaseRow(
                name=name,
                ticket_id=f"{day}{(count or 0) + 1:010d}",
                kind=kind,
                title=str(props.get("title") or _TITLES[kind]),
                description=str(props.get("description") or ""),
                severity=severity,
                contact=dict(contact or {}),
                details=details,
                status="Open",
                stage=stage,
                created_by=caller,
                created_at=now,
                modified_at=now,
                communications=[
                    _communication(
                        now, "inbound", caller, props.get("title") or _TITLES[kind], props.get("description")
                    ),
                    _communication(now, "outbound", MICROSOFT, "We received your request", first_message),
                ],
                schedule={step: now + delay for step, delay in schedule.items()},
            )
            s.add(row)
        self.next_due = 0.0
        return self.ticket(row), True

    async def _validate(self, kind: str, request: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, float], str]:
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

    async def get(self, name: str) -> dict[str, Any]:
        """A case.

        Raises:
            DeskError: no such case (404).
        """
        return self.ticket(await self._case(name))

    async def _case(self, name: str) -> CaseRow:
        async with self.core.db.session() as s:
            row = await s.get(CaseRow, name)
        if row is None:
            raise DeskError(404, "ResourceNotFound", f"The support ticket '{name}' was not found.")
        return row

    async def tickets(self) -> list[dict[str, Any]]:
        """Every case, newest first."""
        async with self.core.db.session() as s:
            rows = (await s.scalars(select(CaseRow).order_by(CaseRow.created_at.desc()))).all()
        return [self.ticket(r) for r in rows]

    async def communications(self, name: str) -> list[dict[str, Any]]:
        """A case's communications, oldest first."""
        return list((await self._case(name)).communications)

    def ticket(self, row: CaseRow) -> dict[str, Any]:
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

    # The eDocument ----------------------------------------------------------------------------------------------

    async def edocument(self, name: str) -> dict[str, Any]:
        """The Data Purge eDocument of a case: its canonical text and SHA-256.

        Raises:
            DeskError: no such case, not a purge case, or not issued yet.
        """
        row = await self._case(name)
        if row.kind != PURGE:
            raise DeskError(400, "BadRequest", "Only a dataPurgeEDocument case has an eDocument.")
        if row.edocument is None:
            raise DeskError(409, "Conflict", "The eDocument hasn't been issued yet; Microsoft sends it shortly.")
        return {
            "name": f"{row.name}-edocument",
            "contentType": "application/json",
            "content": row.edocument,
            "sha256": row.edocument_sha256,
            "signatureAlgorithm": "Ed25519 over the 32-byte SHA-256 digest of content (UTF-8)",
        }

    async def sign(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Accept the signed eDocument: verify the hash and every signature, then schedule the purge.

        Raises:
            DeskError: wrong stage, wrong hash, or a signature that does not verify (nothing recorded).
        """
        row = await self._case(name)
        if row.kind != PURGE:
            raise DeskError(400, "BadRequest", "Only a dataPurgeEDocument case takes a signed eDocument.")
        if row.stage != "awaiting-signature" or row.edocument_sha256 is None:
            raise DeskError(
                409, "Conflict", f"The case is at the stage '{row.stage}'; it isn't waiting for a signature."
            )
        if str(body.get("sha256", "")).lower() != row.edocument_sha256:
            raise DeskError(400, "BadRequest", "The SHA-256 of the signed document doesn't match the issued eDocument.")
        signatures = body.get("signatures")
        if not isinstance(signatures, list) or not signatures:
            raise DeskError(400, "BadRequest", "Return the eDocument with at least one signature.")
        digest = bytes.fromhex(row.edocument_sha256)
        accepted: list[dict[str, Any]] = []
        for entry in signatures:
            if not isinstance(entry, dict) or not entry.get("signer"):
                raise DeskError(400, "BadRequest", "Each signature names its signer.")
            signer = str(entry["signer"])
            try:
                key = _public_key(str(entry.get("publicKey", "")))
                signature = base64.b64decode(str(entry.get("signature", "")), validate=True)
            except (ValueError, binascii.Error, TypeError):
                raise DeskError(400, "BadRequest", f"The public key or signature of {signer} isn't readable.") from None
            if not _verifies(key, signature, digest, row.edocument_sha256):
                raise DeskError(400, "BadRequest", f"The signature of {signer} doesn't verify against the eDocument.")
            accepted.append(
                {"signer": signer, "publicKey": str(entry["publicKey"]), "signature": str(entry["signature"])}
            )
        if len({a["signer"] for a in accepted}) != len(accepted):
            raise DeskError(400, "BadRequest", "A signer signed twice.")
        d = self.core.durations
        now = self.core.now()
        policy_at = now + d.purge_delete_policy
        mark_at = policy_at + d.purge_mark_mailboxes
        async with self.core.db.session() as s, s.begin():
            case = await s.get(CaseRow, name)
            assert case is not None
            if case.stage != "awaiting-signature":
                raise DeskError(409, "Conflict", f"The case is at the stage '{case.stage}'.")
            case.signatures = accepted
            case.stage = "signed"
            case.modified_at = now
            case.schedule = {
                "delete-policy": policy_at,
                "mark-mailboxes": mark_at,
                "delete-availability-key": mark_at + d.purge_delete_availability_key,
            }
            self.next_due = 0.0
            signers = ", ".join(a["signer"] for a in accepted)
            case.communications = [
                *case.communications,
                _communication(now, "inbound", signers, "Signed Data Purge eDocument", f"Signed by {signers}."),
                _communication(
                    now,
                    "outbound",
                    MICROSOFT,
                    "Data purge scheduled",
                    "We received the signed eDocument. We'll delete the policy, mark its mailboxes for permanent "
                    "deletion, then delete the availability key. The data won't be recoverable.",
                ),
            ]
        return self.ticket(case)

    # Microsoft's steps ------------------------------------------------------------------------------------------

    async def tick(self) -> int:
        """Carry out every step whose time has come, in time order; how many ran."""
        ran = 0
        while True:
            now = self.core.now()
            if now < self.next_due:
                return ran
            async with self.core.db.session() as s:
                rows = (await s.scalars(select(CaseRow).where(CaseRow.status == "Open"))).all()
            steps = sorted((at, row.name, step) for row in rows for step, at in row.schedule.items())
            due = [d for d in steps if d[0] <= now]
            if not due:
                self.next_due = steps[0][0] if steps else float("inf")
                return ran
            _, name, step = due[0]
            await self._run(name, step, now)
            ran += 1

    async def _run(self, name: str, step: str, now: float) -> None:
        row = await self._case(name)
        schedule = dict(row.schedule)
        schedule.pop(step, None)
        notes: list[tuple[str, str]] = []
        stage, status = row.stage, row.status
        extra: dict[str, Any] = {}
        if step == "resolve":
            restarted, moving = await self._restart_moves(row.details.get("mailboxes", []), now)
            notes.append(
                (
                    "Escalation resolved",
                    f"We restarted the moves of {len(restarted)} mailbox(es) ({', '.join(restarted) or 'none'}); "
                    f"{len(moving)} were still moving normally ({', '.join(moving) or 'none'}).",
                )
            )
            stage, status = "resolved", "Closed"
        elif step == "rollback":
            try:
                await self.multi.roll_back()
            except KeyUnavailable as exc:
                schedule["rollback"] = now + self.core.durations.rollback_retry
                notes.append(
                    (
                        "We can't reach your keys",
                        f"To re-wrap your data with Microsoft-managed keys we need your Customer Key vaults, keys and "
                        f"permissions: {exc.message} We'll try again.",
                    )
                )
                stage = "waiting-for-customer-keys"
            else:
                notes.append(("Rollback complete", "Your data is now encrypted with Microsoft-managed keys."))
                stage, status = "rolled-back", "Closed"
        elif step == "issue-edocument":
            document = await self._edocument(row, now)
            text = canonical(document)
            extra = {"edocument": text, "edocument_sha256": hashlib.sha256(text.encode()).hexdigest()}
            notes.append(
                (
                    "Data Purge eDocument",
                    "Your Data Purge eDocument is ready (GET .../eDocument). Have your authorized approver sign its "
                    "SHA-256 and return it (POST .../eDocument/signatures).",
                )
            )
            stage = "awaiting-signature"
        elif step in ("delete-policy", "mark-mailboxes", "delete-availability-key"):
            stage = await self._purge_step(row, step, now)
            if step == "delete-availability-key":
                status = "Closed"
            notes.append((f"Data purge: {stage}", _PURGE_NOTES[step]))
        async with self.core.db.session() as s, s.begin():
            case = await s.get(CaseRow, name)
            assert case is not None
            case.schedule = schedule
            case.stage, case.status, case.modified_at = stage, status, now
            replies = [_communication(now, "outbound", MICROSOFT, title, text) for title, text in notes]
            case.communications = [*case.communications, *replies]
            for field, value in extra.items():
                setattr(case, field, value)

    async def _restart_moves(self, identities: list[str], now: float) -> tuple[list[str], list[str]]:
        restarted, moving = [], []
        async with self.core.db.session() as s, s.begin():
            for identity in identities:
                low = identity.lower()
                row = (
                    await s.scalars(
                        select(MailboxRow).where((MailboxRow.name_lower == low) | (MailboxRow.upn_lower == low))
                    )
                ).first()
                if row is None:
                    continue
                if row.stuck:
                    row.stuck = False
                    self.exchange.restart_move(row, now)
                    restarted.append(row.name)
                elif not self.exchange.move_done(row, now):
                    moving.append(row.name)
        return restarted, moving

    async def _edocument(self, row: CaseRow, now: float) -> dict[str, Any]:
        guid = str(row.details["dataEncryptionPolicyId"])
        async with self.core.db.session() as s:
            dep = await s.get(DepRow, guid)
            assert dep is not None
            mailboxes = (
                await s.scalars(select(MailboxRow.upn).where(MailboxRow.dep_guid == guid).order_by(MailboxRow.upn))
            ).all()
        return {
            "documentType": EDOCUMENT_TYPE,
            "case": {"name": row.name, "supportTicketId": row.ticket_id},
            "tenant": {"fqdn": self.core.tenant.get("fqdn"), "tenantId": self.core.settings.azure_tenant_id},
            "dataEncryptionPolicy": {"name": dep.name, "guid": dep.guid, "azureKeyIds": list(dep.azure_key_ids)},
            "mailboxes": list(mailboxes),
            "reason": dep.purge_reason,
            "contact": dep.purge_contact,
            "purgeRequestedDateTime": iso(dep.purge_requested_at),
            "issuedDateTime": iso(now),
            "statement": (
                "The signatories, authorized to act for the organization, acknowledge and authorize the permanent "
                "deletion of the data encrypted with this data encryption policy. Once the purge completes the data is "
                "inaccessible to Exchange Online and isn't recoverable."
            ),
        }

    async def _purge_step(self, row: CaseRow, step: str, now: float) -> str:
        guid = str(row.details["dataEncryptionPolicyId"])
        async with self.core.db.session() as s, s.begin():
            dep = await s.get(DepRow, guid)
            assert dep is not None
            if step == "delete-policy":
                # The policy goes, and with it the DEP key's copies wrapped by the customer keys.
                dep.deleted_at = now
                dep.wrapped_1 = dep.wrapped_2 = None
                stage = "policy-deleted"
            elif step == "mark-mailboxes":
                marked = (
                    await s.scalars(
                        select(MailboxRow).where(
                            (MailboxRow.dep_guid == guid)
                            | (MailboxRow.key_current_dep == guid)
                            | (MailboxRow.key_target_dep == guid)
                        )
                    )
                ).all()
                for mailbox in marked:
                    mailbox.soft_deleted_at = now
                stage = "mailboxes-marked"
            else:
                dep.availability_key = None
                dep.wrapped_availability = None
                stage = "purged"
            dep.changed_at = now
        self.core.forget(guid)
        return stage


def _verifies(key: Ed25519PublicKey, signature: bytes, digest: bytes, hex_digest: str) -> bool:
    # Over the 32-byte digest; a signer that signed the hexadecimal text of the digest is accepted too.
    for message in (digest, hex_digest.encode()):
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False


def _communication(now: float, direction: str, sender: str, subject: Any, body: Any) -> dict[str, Any]:
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


_TITLES = {
    ESCALATION: "Mailboxes not encrypted a week after the DEP assignment",
    ROLLBACK: "Roll back from Customer Key for multiple workloads",
    PURGE: "Request for the Data Purge eDocument",
}
_PURGE_NOTES = {
    "delete-policy": "We deleted the data encryption policy.",
    "mark-mailboxes": "We marked the policy's mailboxes for permanent deletion.",
    "delete-availability-key": "We deleted the availability key. The data purge is complete.",
}
