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

import hashlib
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select

from sandbox.m365.core import Core, KeyUnavailable
from sandbox.m365.db import CaseRow, MailboxRow
from sandbox.m365.errors import DeskError
from sandbox.m365.exchange import Exchange
from sandbox.m365.multiworkload import MultiWorkload
from sandbox.m365.support_cases import (
    MICROSOFT,
    REQUEST_TYPES,
    SEVERITIES,
    TITLES,
    RequestChecks,
    communication,
    ticket,
)
from sandbox.m365.support_purge import PURGE_NOTES, PURGE_STEPS, DataPurge, canonical


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
        self.requests = RequestChecks(core, exchange, multi)
        self.purge = DataPurge(core)
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
        details, stage, schedule, first_message = await self.requests.check(kind, request)
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
                title=str(props.get("title") or TITLES[kind]),
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
                    communication(now, "inbound", caller, props.get("title") or TITLES[kind], props.get("description")),
                    communication(now, "outbound", MICROSOFT, "We received your request", first_message),
                ],
                schedule={step: now + delay for step, delay in schedule.items()},
            )
            s.add(row)
        self.next_due = 0.0
        return self.ticket(row), True

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
        return ticket(row)

    # The eDocument ----------------------------------------------------------------------------------------------

    async def edocument(self, name: str) -> dict[str, Any]:
        """The Data Purge eDocument of a case: its canonical text and SHA-256.

        Raises:
            DeskError: no such case, not a purge case, or not issued yet.
        """
        return self.purge.edocument(await self._case(name))

    async def sign(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        """Accept the signed eDocument: verify the hash and every signature, then schedule the purge.

        Raises:
            DeskError: wrong stage, wrong hash, or a signature that does not verify (nothing recorded).
        """
        accepted = self.purge.signatures(await self._case(name), body)
        now = self.core.now()
        async with self.core.db.session() as s, s.begin():
            case = await s.get(CaseRow, name)
            assert case is not None
            if case.stage != "awaiting-signature":
                raise DeskError(409, "Conflict", f"The case is at the stage '{case.stage}'.")
            case.signatures = accepted
            case.stage = "signed"
            case.modified_at = now
            case.schedule = self.purge.schedule(now)
            self.next_due = 0.0
            signers = ", ".join(a["signer"] for a in accepted)
            case.communications = [
                *case.communications,
                communication(now, "inbound", signers, "Signed Data Purge eDocument", f"Signed by {signers}."),
                communication(
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
            document = await self.purge.issue(row, now)
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
        elif step in PURGE_STEPS:
            stage = await self.purge.step(row, step, now)
            if step == "delete-availability-key":
                status = "Closed"
            notes.append((f"Data purge: {stage}", PURGE_NOTES[step]))
        async with self.core.db.session() as s, s.begin():
            case = await s.get(CaseRow, name)
            assert case is not None
            case.schedule = schedule
            case.stage, case.status, case.modified_at = stage, status, now
            replies = [communication(now, "outbound", MICROSOFT, title, text) for title, text in notes]
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
