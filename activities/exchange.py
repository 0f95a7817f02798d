"""Exchange Online activities: DEPs, assignment to mailboxes, following encryption, escalation.

Mailbox lists live in SQL (:class:`~ckey.store.targets.TargetStore`); activities get a set's id and work through
it in batches, so one activity call covers hundreds of mailboxes and a workflow's history stays small however many
there are. Polling is retry-driven: :meth:`ExchangeActivities.follow_encryption` checks every pending mailbox once
and, when nothing worth reporting changed, fails with a retryable ``StillEncrypting`` error whose retry delay is
the poll interval — Temporal waits and calls again without adding a single event to the history.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.operation import audit_call
from ckey.m365 import (
    MAIL_USER,
    MAILBOX,
    Cmdlet,
    CmdletError,
    DataEncryptionPolicy,
    M365Gateway,
    Mailbox,
    resolve_identities,
)
from ckey.models import human_duration
from ckey.operations import Outcome
from ckey.store import Store
from ckey.store.inventory import InventoryStore, RecipientStatus, dep_view
from ckey.store.targets import FollowRow, StatusUpdate, TargetStore
from ckey.support import SupportDesk
from contracts.exchange import (
    UNKNOWN_LISTED,
    AssignBatchInput,
    AssignBatchResult,
    DepInfo,
    DepRef,
    EscalateInput,
    EscalateResult,
    ExchangeActivityStub,
    FailedMailbox,
    FailedMailboxes,
    FailedMailboxesInput,
    FindDepResult,
    FollowInput,
    FollowResult,
    NewDepInput,
    RegisterMailboxesInput,
    ResolveRecipientsInput,
    ResolveRecipientsResult,
    TargetCount,
    TargetsRef,
)

STATUS_CONCURRENCY = 16
"""Get-MailboxStatistics calls in flight at once (Exchange Online throttles a tenant's admin sessions)."""
ASSIGN_CONCURRENCY = 8
STATUS_CHUNK = 250
READ_CHUNK = 1000
UNKNOWN_IN_MESSAGE = 5
ERROR_MAX = 500
"""Characters of a cmdlet's refusal kept per failed mailbox."""

if TYPE_CHECKING:
    from activities import Gateways


def _dep_info(dep: DataEncryptionPolicy) -> DepInfo:
    return DepInfo(
        name=dep.name,
        guid=dep.guid,
        azure_key_ids=dep.azure_key_ids,
        enabled=dep.enabled,
        permanent_data_purge_requested=dep.permanent_data_purge_requested,
    )


def refusal(exc: CmdletError, rule: str | None = None) -> ApplicationError:
    """A cmdlet's refusal as a non-retryable error carrying its text."""
    return ApplicationError(exc.message, exc.line, type=rule or exc.code or "CmdletRefused", non_retryable=True)


class ExchangeActivities(ExchangeActivityStub):
    """Activities over Exchange Online.

    Args:
        m365: the Microsoft 365 gateway.
        store: the audit trail, target sets and follow-up.
        support: Microsoft's support desk (escalations).
    """

    @classmethod
    def from_gateways(cls, gateways: Gateways) -> ExchangeActivities | None:
        """The family built from the worker's gateways; ``None`` without the Microsoft 365 gateway or the desk."""
        if gateways.m365 is None or gateways.support is None:
            return None
        return cls(gateways.m365, gateways.store, gateways.support)

    def __init__(self, m365: M365Gateway, store: Store, support: SupportDesk) -> None:
        self.m365 = m365
        self.store = store
        self.targets = TargetStore(store)
        self.inventory = InventoryStore(store)
        self.support = support

    def _audited(self, step: str = "") -> M365Gateway:
        """The gateway, recording each call's rendered line in the audit trail.

        A state-changing cmdlet is recorded twice: its intent before it is sent (``intent``; the gateway sends
        nothing if that write fails) and its outcome after; a read only with its outcome.
        """

        async def on_call(cmdlet: Cmdlet, outcome: str, error: str | None) -> None:
            await audit_call(
                self.store,
                f"m365.{cmdlet.name}",
                cmdlet.render(),
                Outcome(outcome),
                {"error": error} if error else None,
                step=f"{step}/intent" if outcome == Outcome.INTENT else step,
            )

        return self.m365.with_on_call(on_call)

    # DEPs ----------------------------------------------------------------------------------------------------------

    @activity.defn
    async def find_dep(self, input: DepRef) -> FindDepResult:
        """Get-DataEncryptionPolicy <name>; none when there is no such DEP."""
        try:
            found = await self._audited().get_data_encryption_policy(input.dep)
        except CmdletError as exc:
            if _not_found(exc):
                return FindDepResult()
            raise refusal(exc) from None
        return FindDepResult(dep=_dep_info(found[0]) if found else None)

    @activity.defn
    async def new_dep(self, input: NewDepInput) -> DepInfo:
        """New-DataEncryptionPolicy. A retry after it went through finds the DEP and returns it."""
        existing = (await self.find_dep(DepRef(dep=input.name))).dep
        if existing is not None:
            return existing
        try:
            dep = await self._audited().new_data_encryption_policy(input.name, input.azure_key_ids, input.description)
        except CmdletError as exc:
            raise refusal(exc) from None
        await self.inventory.record_dep(dep_view("exchange", dep, datetime.now(UTC), activity.info().workflow_id))
        return _dep_info(dep)

    @activity.defn
    async def check_dep_assignable(self, input: DepRef) -> DepInfo:
        """The DEP, if mailboxes may be assigned to it: it exists and no permanent data purge was requested."""
        dep = (await self.find_dep(input)).dep
        if dep is None:
            raise ApplicationError(f"there is no DEP named {input.dep!r}", type="dep-exists", non_retryable=True)
        if dep.permanent_data_purge_requested:
            raise ApplicationError(
                f"a permanent data purge was requested for DEP {dep.name!r}: it can no longer be assigned",
                type="dep-purge-requested",
                non_retryable=True,
            )
        return dep

    # Targets -------------------------------------------------------------------------------------------------------

    @activity.defn
    async def count_targets(self, input: TargetsRef) -> TargetCount:
        """How many mailboxes a target set holds."""
        target = await self.targets.get_set(input.set_id)
        if target is None:
            raise ApplicationError(f"no uploaded mailbox list {input.set_id}", type="mailbox-file", non_retryable=True)
        return TargetCount(count=target.count)

    async def _set_identities(self, set_id: str) -> list[str]:
        total = (await self.count_targets(TargetsRef(set_id=set_id))).count
        identities: list[str] = []
        for offset in range(0, total, READ_CHUNK):
            identities += await self.targets.items(set_id, offset, READ_CHUNK)
        return identities

    @activity.defn
    async def resolve_recipients(self, input: ResolveRecipientsInput) -> ResolveRecipientsResult:
        """Resolve the set against the tenant's recipients in one bulk lookup; follow the known ones.

        Get-Mailbox and Get-MailUser ``-ResultSize Unlimited`` (two paged calls, however long the list), never a call
        per identity. Known recipients are registered with their kind, so that each is later sent only the cmdlet
        that fits it; unknown identities are named and never sent anything.

        Raises:
            ApplicationError: ``recipients-unknown`` (non-retryable) when no identity of the set is a recipient.
        """
        identities = await self._set_identities(input.set_id)
        index = await self._audited(step="/resolve").recipient_index()
        resolution = resolve_identities(identities, {name: kind for name, (kind, _) in index.items()})
        if not resolution.kinds:
            raise unknown_refusal(resolution.unknown)
        known = [i for i in identities if i in resolution.kinds]
        await self.targets.register(input.operation_id, known, 0, resolution.kinds)
        # A recipient that already shows the DEP (assigned before, by ckey or by hand) is assigned: it is counted
        # as such and sent nothing.
        wanted = (input.dep or "").lower()
        already = [i for i in known if wanted and (index[i.strip().lower()][1] or "").lower() == wanted]
        if already:
            await self.targets.mark_many_assigned(input.operation_id, already, datetime.now(UTC))
            await audit_call(
                self.store,
                "exchange.assignment.already",
                ", ".join(already[:UNKNOWN_IN_MESSAGE]),
                Outcome.INFO,
                {"count": len(already), "dep": input.dep, "why": "already shows the DEP; nothing sent"},
                step="/resolve",
            )
        if resolution.unknown:
            await audit_call(
                self.store,
                "exchange.recipients.unknown",
                ", ".join(resolution.unknown[:UNKNOWN_IN_MESSAGE]),
                Outcome.REFUSED,
                {"count": len(resolution.unknown), "unknown": resolution.unknown[:UNKNOWN_LISTED]},
                step="/resolve",
            )
        mail_users = sum(kind == MAIL_USER for kind in resolution.kinds.values())
        return ResolveRecipientsResult(
            count=len(known),
            mailboxes=len(known) - mail_users,
            mail_users=mail_users,
            unknown=resolution.unknown[:UNKNOWN_LISTED],
            unknown_count=len(resolution.unknown),
            already=len(already),
        )

    @activity.defn
    async def assign_dep_batch(self, input: AssignBatchInput) -> AssignBatchResult:
        """Set-Mailbox (or Set-MailUser) -DataEncryptionPolicy for one batch; mailboxes done before are skipped.

        Each call's intent is on record before it is sent (``sent_at`` on the mailbox, then the audit line), its
        outcome after. A mailbox whose call was in flight when an earlier attempt died (sent, no outcome) is looked
        up in the tenant first (Get-Mailbox / Get-MailUser) and sent again only if it does not show the DEP.

        A resolved set (``input.resolved``): only the registered recipients are assigned, each with its own cmdlet.
        """
        identities = await self.targets.items(input.set_id, input.offset, input.limit)
        kinds: dict[str, str | None] = {}
        if input.resolved:
            kinds = await self.targets.kinds(input.operation_id, identities)
            identities = [i for i in identities if i in kinds]
        else:
            await self.targets.register(input.operation_id, identities, input.offset)
        progress = await self.targets.assignment(input.operation_id, identities)
        states = list(progress.values())
        result = AssignBatchResult(already=sum(p.assigned for p in states), failed=sum(p.failed for p in states))
        todo = [i for i in identities if not (progress[i].assigned or progress[i].failed)]
        gate = asyncio.Semaphore(ASSIGN_CONCURRENCY)

        async def assign(identity: str) -> None:
            async with gate:
                gateway = self._audited(step=f"/{identity}")
                only = kinds.get(identity)
                try:
                    if progress[identity].in_flight:
                        found = await _recipient(
                            gateway, identity, mail_user_first=input.mail_user or only == MAIL_USER
                        )
                        if found is not None:
                            recipient, only = found
                            if _shows_dep(recipient, input.dep, input.dep_guid):
                                await self._confirmed(input, identity, only)
                                result.confirmed += 1
                                result.assigned += 1
                                activity.heartbeat(result.assigned)
                                return
                    await self.targets.mark_sent(input.operation_id, identity, datetime.now(UTC))
                    await _assign_recipient(gateway, identity, input.dep, mail_user_first=input.mail_user, only=only)
                except CmdletError as exc:
                    if _refuses_the_dep(exc):
                        raise refusal(exc, "dep-purge-requested") from None
                    await self.targets.mark_failed(input.operation_id, identity, exc.message[:ERROR_MAX])
                    result.failed += 1
                    return
                await self.targets.mark_assigned(input.operation_id, identity, datetime.now(UTC))
                result.assigned += 1
                activity.heartbeat(result.assigned)

        await asyncio.gather(*(assign(i) for i in todo))
        # The read side sees the assignment as it happens, not at the next sync.
        done = await self.targets.assignment(input.operation_id, todo)
        await self.inventory.record_assignment(
            [i for i in todo if done[i].assigned],
            input.dep,
            input.dep_guid,
            datetime.now(UTC),
            input.operation_id,
            mail_users=[i for i, kind in kinds.items() if kind == MAIL_USER],
        )
        return result

    async def _confirmed(self, input: AssignBatchInput, identity: str, kind: str) -> None:
        await audit_call(
            self.store,
            "exchange.assignment.confirmed",
            identity,
            Outcome.INFO,
            {"dep": input.dep, "recipient": kind, "why": "in flight when an earlier attempt died; not sent again"},
            step=f"/{identity}",
        )
        await self.targets.mark_assigned(input.operation_id, identity, datetime.now(UTC))

    @activity.defn
    async def failed_mailboxes(self, input: FailedMailboxesInput) -> FailedMailboxes:
        """The first ``limit`` mailboxes of an operation that could not be assigned, with the reason."""
        rows = await self.targets.failed(input.operation_id, limit=input.limit)
        count = (await self.targets.counts(input.operation_id)).failed
        return FailedMailboxes(
            count=count, mailboxes=[FailedMailbox(identity=r.identity, error=r.error or "") for r in rows]
        )

    @activity.defn
    async def register_dep_mailboxes(self, input: RegisterMailboxesInput) -> TargetCount:
        """Follow mailboxes without assigning: the given set, or every mailbox and mail user with the DEP."""
        now = datetime.now(UTC)
        unknown: list[str] = []
        if input.set_id is not None:
            # The named identities, resolved in one bulk lookup as for an assignment: unknown ones are named.
            resolved = await self.resolve_recipients(
                ResolveRecipientsInput(operation_id=input.operation_id, set_id=input.set_id)
            )
            unknown, unknown_count = resolved.unknown, resolved.unknown_count
        else:
            gateway = self._audited()
            with_dep: dict[str, str] = {}
            for get, kind in ((gateway.get_mailbox, MAILBOX), (gateway.get_mail_user, MAIL_USER)):
                for r in await get(result_size="Unlimited"):
                    if (r.data_encryption_policy or "").lower() == input.dep.lower():
                        with_dep.setdefault(r.identity, kind)
            await self.targets.register(input.operation_id, list(with_dep), 0, with_dep)
            unknown_count = 0
        await self.targets.mark_all_assigned(input.operation_id, now)
        return TargetCount(
            count=(await self.targets.counts(input.operation_id)).total,
            unknown=unknown,
            unknown_count=unknown_count,
            assigned_at=await self.targets.last_assigned_at(input.operation_id, input.dep),
        )

    # Following -----------------------------------------------------------------------------------------------------

    @activity.defn
    async def follow_encryption(self, input: FollowInput) -> FollowResult:
        """Check every pending recipient once; report, or retry after the poll interval.

        A mailbox is read with Get-MailboxStatistics (IsEncrypted with the DEP's GUID); a mail user, which has no
        mailbox statistics, with Get-MailUser: showing the DEP, it is done (it encrypts on migration). A mail user
        that migrated meanwhile is read as the mailbox it became, and a recipient of unknown kind is tried as both.
        """
        started = datetime.now(UTC)
        pending = await self.targets.pending_recipients(input.operation_id, limit=1_000_000)
        gate = asyncio.Semaphore(STATUS_CONCURRENCY)
        dep_names = {input.dep_guid.lower()} | ({input.dep.lower()} if input.dep else set())
        if input.dep is None and any(kind != MAILBOX for _, _, kind in pending):
            # Get-MailUser shows the DEP's name; a round started before the name was passed looks it up once.
            found = await self.m365.get_data_encryption_policy(input.dep_guid)
            dep_names |= {d.name.lower() for d in found}

        async def mailbox(identity: str) -> StatusUpdate:
            stats = await self.m365.get_mailbox_statistics(identity)
            return StatusUpdate(
                identity=identity, is_encrypted=stats.is_encrypted, dep_guid=stats.data_encryption_policy_id
            )

        async def mail_user(identity: str) -> StatusUpdate:
            found = await self.m365.get_mail_user(identity)
            if not found:
                raise CmdletError(f"Get-MailUser -Identity {identity}", f"{identity} couldn't be found")
            shown = found[0].data_encryption_policy
            guid = input.dep_guid if (shown or "").lower() in dep_names else shown
            return StatusUpdate(identity=identity, is_encrypted=False, dep_guid=guid, mail_user=True)

        async def check(identity: str, kind: str | None) -> StatusUpdate:
            first, second = (mail_user, mailbox) if kind == MAIL_USER else (mailbox, mail_user)
            async with gate:
                try:
                    try:
                        return await first(identity)
                    except CmdletError as exc:
                        if kind == MAILBOX or not _not_found(exc):
                            raise
                        return await second(identity)
                except CmdletError as exc:
                    return StatusUpdate(identity=identity, is_encrypted=False, error=exc.message)

        newly = 0
        # In chunks: what a round saw is kept even if the round dies, and the heartbeat shows it is alive.
        for start in range(0, len(pending), STATUS_CHUNK):
            chunk = pending[start : start + STATUS_CHUNK]
            seen = await asyncio.gather(*(check(identity, kind) for _, identity, kind in chunk))
            at = datetime.now(UTC)
            newly += await self.targets.record_status(input.operation_id, seen, input.dep_guid, at)
            await self.inventory.record_status(
                [
                    RecipientStatus(identity=u.identity, is_encrypted=u.is_encrypted, dep_guid=u.dep_guid)
                    for u in seen
                    if u.error is None and not u.mail_user
                ],
                at,
                input.operation_id,
            )
            activity.heartbeat(start + len(chunk))
        counts = await self.targets.counts(input.operation_id)
        mail_users = sum(kind == MAIL_USER for _, _, kind in pending)
        await audit_call(
            self.store,
            "m365.Get-MailboxStatistics",
            f"Get-MailboxStatistics -Identity <each of {len(pending) - mail_users} pending mailboxes> | fl "
            f"IsEncrypted, DataEncryptionPolicyID; Get-MailUser -Identity <each of {mail_users} pending mail users> "
            "| fl DataEncryptionPolicy",
            Outcome.INFO,
            {
                "checked": len(pending),
                "newly_encrypted": newly,
                "encrypted": counts.encrypted,
                "assigned_encrypts_on_migration": counts.assigned_encrypts_on_migration,
                "total": counts.total,
                "started": started.isoformat(),
            },
        )
        if counts.pending == 0 or counts.done - input.reported_encrypted >= input.report_every:
            return FollowResult(counts=counts)
        raise ApplicationError(
            f"{counts.encrypted} of {counts.total} mailboxes encrypted"
            + (
                f", {counts.assigned_encrypts_on_migration} mail users assigned (encrypt on migration)"
                if counts.assigned_encrypts_on_migration
                else ""
            )
            + f"; checking again in {input.poll_interval}",
            type="StillEncrypting",
            next_retry_delay=input.poll_interval,
        )

    @activity.defn
    async def escalate_unencrypted(self, input: EscalateInput) -> EscalateResult:
        """File one support case with the evidence for every mailbox still not encrypted, and alert operators."""
        rows = await self.targets.rows(input.operation_id, pending_only=True)
        if not rows:
            return EscalateResult()
        evidence = [_evidence(row, input) for row in rows]
        case = await self.support.file_case(
            key=f"{input.operation_id}-escalation",
            kind="mailboxEncryptionEscalation",
            title=f"Customer Key: {len(rows)} mailboxes not encrypted {human_duration(input.escalate_after)} after DEP "
            f"{input.dep} was assigned",
            details={
                "dataEncryptionPolicy": input.dep,
                "mailboxes": [row.identity for row in rows],
                "evidence": evidence,
            },
        )
        await self.targets.mark_escalated(input.operation_id, [r.identity for r in rows], datetime.now(UTC))
        await audit_call(
            self.store,
            "support.case.filed",
            f"support case {case.id} ({case.kind})",
            Outcome.INFO,
            {"case": case.id, "mailboxes": len(rows)},
        )
        await audit_call(
            self.store,
            "alert.raised",
            "operators",
            Outcome.INFO,
            {
                "reason": f"mailboxes not encrypted {human_duration(input.escalate_after)} after assignment",
                "case": case.id,
                "mailboxes": len(rows),
            },
        )
        return EscalateResult(case=case, mailboxes=[r.identity for r in rows])


def unknown_refusal(unknown: list[str]) -> ApplicationError:
    """No named identity is a mailbox or a mail user: nothing can be done, nothing was sent."""
    return ApplicationError(
        f"no mailbox or mail user answers to any of the {len(unknown)} identities named, e.g. "
        + ", ".join(unknown[:UNKNOWN_IN_MESSAGE]),
        {"unknown": unknown[:UNKNOWN_LISTED], "unknown_count": len(unknown)},
        type="recipients-unknown",
        non_retryable=True,
    )


async def _assign_recipient(
    gateway: M365Gateway, identity: str, dep: str, *, mail_user_first: bool, only: str | None = None
) -> None:
    """Set-Mailbox, or Set-MailUser for a mail user (hybrid, pre-migration): a mixed list needs both.

    ``only``: the recipient's kind when a lookup already told it, so that only the cmdlet that fits is sent.
    """
    if only is not None:
        await (gateway.set_mail_user if only == MAIL_USER else gateway.set_mailbox)(identity, dep)
        return
    first, second = (
        (gateway.set_mail_user, gateway.set_mailbox)
        if mail_user_first
        else (gateway.set_mailbox, gateway.set_mail_user)
    )
    try:
        await first(identity, dep)
    except CmdletError as exc:
        if not _not_found(exc):
            raise
        await second(identity, dep)


async def _recipient(gateway: M365Gateway, identity: str, *, mail_user_first: bool) -> tuple[Mailbox, str] | None:
    """The recipient as Get-Mailbox or Get-MailUser shows it, and which it is; ``None`` when neither finds it."""
    lookups = [(gateway.get_mailbox, MAILBOX), (gateway.get_mail_user, MAIL_USER)]
    for get, kind in reversed(lookups) if mail_user_first else lookups:
        try:
            found = await get(identity)
        except CmdletError as exc:
            if _not_found(exc):
                continue
            raise
        if found:
            return found[0], kind
    return None


def _shows_dep(recipient: Mailbox, dep: str, dep_guid: str | None) -> bool:
    shown = (recipient.data_encryption_policy or "").lower()
    return bool(shown) and shown in {dep.lower(), (dep_guid or "").lower()}


def _not_found(exc: CmdletError) -> bool:
    return exc.code == "ManagementObjectNotFoundException" or "couldn't be found" in exc.message.lower()


def _refuses_the_dep(exc: CmdletError) -> bool:
    text = exc.message.lower()
    return "purge" in text and ("can't be assigned" in text or "cannot be assigned" in text)


def _evidence(row: FollowRow, input: EscalateInput) -> dict[str, Any]:
    return {
        "mailbox": row.identity,
        "dep": input.dep,
        "assigned_at": (row.assigned_at or input.assigned_at).isoformat(),
        "last_checked_at": row.checked_at.isoformat() if row.checked_at else None,
        "last_status": {"IsEncrypted": row.is_encrypted, "DataEncryptionPolicyID": row.dep_guid},
    }
