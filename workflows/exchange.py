"""Exchange Online operations: ``exchange.dep.create``, ``exchange.dep.assign``, ``exchange.encryption.verify``.

Seed sections: "Create a DEP for use with Exchange Online mailboxes", "Assign a DEP to a mailbox", "Assign a DEP
before you migrate a mailbox to the cloud", "Determine the DEP assigned to a mailbox", "Verify encryption completes
for Exchange Online mailboxes" ("If the mailboxes are not encrypted after a week from the time you assigned the
DEP, contact Microsoft").
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field, model_validator
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.exchange import (
        AssignBatchInput,
        AssignBatchResult,
        DepRef,
        EscalateInput,
        ExchangeActivities,
        FollowInput,
        NewDepInput,
        RegisterMailboxesInput,
        TargetsRef,
    )
    from activities.keyvault import CheckKeyHealthInput, HealthLine, KeyVaultActivities
    from ckey.models import DepName, Role, TwoKeyUris, Workload, rule_error
    from ckey.operations import Escalation, OperationKind, registry
    from ckey.store.targets import FollowCounts, claim_check_mailboxes
    from workflows.keyvault import pair_lines
    from workflows.operation import OperationWorkflow, call

ESCALATE_AFTER = timedelta(days=7)
"""Seed: "If the mailboxes are not encrypted after a week from the time you assigned the DEP, contact Microsoft"."""
POLL_INTERVAL = timedelta(minutes=15)
ASSIGN_BATCH = 200
ASSIGN_PARALLEL_BATCHES = 4
FOLLOW_ROUND_TIMEOUT = timedelta(minutes=30)
HEARTBEAT_TIMEOUT = timedelta(seconds=20)
"""A batch or a status round whose worker died is retried elsewhere after this long, not after its whole timeout."""
ONE_SOURCE = "name the mailboxes either inline (mailboxes) or as an upload (mailbox_file)"


# exchange.dep.create -----------------------------------------------------------------------------------------------


class DepCreatePhase(StrEnum):
    """Phases of ``exchange.dep.create``."""

    CHECKING_KEYS = "checking_keys"
    CHECKING_EXISTING = "checking_existing"
    CREATING = "creating"
    DONE = "done"


class ExchangeDepCreateInput(BaseModel):
    """New-DataEncryptionPolicy's parameters, validated by the seed's rules."""

    name: DepName
    description: str | None = Field(default=None, max_length=1024)
    azure_key_ids: TwoKeyUris


class ExchangeDepCreateResult(BaseModel):
    """The DEP, and whether this operation created it (an identical DEP that existed is success too)."""

    name: str
    guid: str
    created: bool


def _same_keys(a: list[str], b: list[str]) -> bool:
    return sorted(k.lower().rstrip("/") for k in a) == sorted(k.lower().rstrip("/") for k in b)


@workflow.defn
class ExchangeDepCreateWorkflow(OperationWorkflow):
    """Create a mailbox DEP once every rule holds: two healthy keys in two vaults in two regions."""

    kind = "exchange.dep.create"

    @workflow.run
    async def run(self, input: ExchangeDepCreateInput) -> ExchangeDepCreateResult:
        """Check the keys, look for the DEP, create it."""
        return await self.operate(input, lambda: self._create(input))

    async def _create(self, input: ExchangeDepCreateInput) -> ExchangeDepCreateResult:
        keys = [str(k) for k in input.azure_key_ids]
        await self.set_phase(DepCreatePhase.CHECKING_KEYS, {"keys": keys})
        results = await asyncio.gather(
            *(
                call(KeyVaultActivities.check_key_health, CheckKeyHealthInput(key_uri=k, workload=Workload.EXCHANGE))
                for k in keys
            )
        )
        lines: list[HealthLine] = [line for r in results for line in r.lines]
        lines += pair_lines(keys, [(r.vault, r.region) for r in results])
        broken = [line for line in lines if not line.ok]
        if broken:
            raise ApplicationError(
                "the keys break the DEP rules: "
                + "; ".join(
                    f"{line.check} ({line.rule}) for {line.key}: {line.detail}".rstrip(": ") for line in broken
                ),
                [line.model_dump() for line in broken],
                type=broken[0].rule,
                non_retryable=True,
            )

        await self.set_phase(DepCreatePhase.CHECKING_EXISTING)
        existing = (await call(ExchangeActivities.find_dep, DepRef(dep=input.name))).dep
        if existing is not None:
            if not _same_keys(existing.azure_key_ids, keys):
                raise ApplicationError(
                    f"a DEP named {input.name!r} exists with other keys ({', '.join(existing.azure_key_ids)})",
                    type="dep-name-taken",
                    non_retryable=True,
                )
            await self.set_phase(DepCreatePhase.DONE, {"guid": existing.guid, "created": False})
            return ExchangeDepCreateResult(name=existing.name, guid=existing.guid, created=False)

        await self.set_phase(DepCreatePhase.CREATING)
        dep = await call(
            ExchangeActivities.new_dep, NewDepInput(name=input.name, description=input.description, azure_key_ids=keys)
        )
        await self.set_phase(DepCreatePhase.DONE, {"guid": dep.guid, "created": True})
        return ExchangeDepCreateResult(name=dep.name, guid=dep.guid, created=True)


# Following mailboxes until they are encrypted ----------------------------------------------------------------------


class FollowPhase(StrEnum):
    """Phases of the operations that assign DEPs and follow encryption."""

    VALIDATING = "validating"
    ASSIGNING = "assigning"
    RESOLVING = "resolving"
    FOLLOWING = "following"
    ESCALATED = "escalated"
    DONE = "done"
    CLOSED = "closed"


class FollowState(BaseModel):
    """What a follow-up carries across continue-as-new."""

    dep: str
    dep_guid: str
    assigned_at: datetime
    total: int
    encrypted: int = 0
    escalated: bool = False
    case_id: str | None = None
    escalated_mailboxes: int = 0


class CloseRequest(BaseModel):
    """An operator ends the follow-up before every mailbox is encrypted."""

    reason: str = Field(min_length=1, max_length=500)
    by: str = ""
    """Set by the API from the caller's token."""


class CloseResult(BaseModel):
    """Where the follow-up stood when it was closed."""

    encrypted: int
    total: int


class MailboxFollowResult(BaseModel):
    """How the mailboxes ended."""

    dep: str
    dep_guid: str
    total: int
    encrypted: int
    failed: int = 0
    escalated: int = 0
    case_id: str | None = None
    closed_by: str | None = None
    close_reason: str | None = None


class MailboxFollowWorkflow(OperationWorkflow):
    """Shared by assign and verify: follow mailboxes until encrypted, escalating once after ``escalate_after``."""

    def __init__(self) -> None:
        super().__init__()
        self._close: CloseRequest | None = None

    @workflow.update
    async def close(self, request: CloseRequest) -> CloseResult:
        """End the follow-up now; the result lists how far it got."""
        self._close = request
        return CloseResult(encrypted=self._status.progress.done, total=self._status.progress.total or 0)

    @close.validator
    def _validate_close(self, request: CloseRequest) -> None:
        if self._status.phase not in (FollowPhase.FOLLOWING, FollowPhase.ESCALATED):
            raise ApplicationError(f"only a follow-up can be closed; the operation is {self._status.phase}")

    async def follow(self, state: FollowState, input: MailboxFollowInput) -> MailboxFollowResult:
        """Follow until every mailbox is encrypted or an operator closes; continue as new when history grows."""
        escalate_after, poll_interval = input.escalate_after, input.poll_interval
        self.set_progress(state.encrypted, state.total, "mailboxes encrypted")
        await self.set_phase(FollowPhase.ESCALATED if state.escalated else FollowPhase.FOLLOWING)
        deadline = state.assigned_at + escalate_after
        report_every = max(1, state.total // 100)
        counts = FollowCounts(total=state.total, encrypted=state.encrypted)
        while self._close is None:
            round_ = asyncio.ensure_future(
                call(
                    ExchangeActivities.follow_encryption,
                    FollowInput(
                        operation_id=self.operation_id,
                        dep_guid=state.dep_guid,
                        reported_encrypted=state.encrypted,
                        report_every=report_every,
                        poll_interval=poll_interval,
                    ),
                    start_to_close=FOLLOW_ROUND_TIMEOUT,
                    heartbeat=HEARTBEAT_TIMEOUT,
                    # Retry-driven polling: "still encrypting" is a retryable failure whose delay is the poll
                    # interval, so waiting adds nothing to the history.
                    retry=RetryPolicy(
                        initial_interval=poll_interval,
                        backoff_coefficient=1.0,
                        maximum_interval=max(poll_interval, timedelta(seconds=1)),
                    ),
                )
            )
            closed = asyncio.ensure_future(workflow.wait_condition(lambda: self._close is not None))
            waiting: list[asyncio.Future[Any]] = [round_, closed]
            timer: asyncio.Future[Any] | None = None
            if not state.escalated:
                timer = asyncio.ensure_future(workflow.sleep(max(timedelta(0), deadline - workflow.now())))
                waiting.append(timer)
            while not (round_.done() or closed.done()):
                done, _ = await workflow.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if timer is not None and timer in done:
                    waiting.remove(timer)
                    timer = None
                    await self._escalate(state, escalate_after)
            for pending in (timer, closed if round_.done() else round_):
                if pending is not None and not pending.done():
                    pending.cancel()
            if self._close is not None:
                break
            counts = round_.result().counts
            state.encrypted, state.total = counts.encrypted, counts.total - counts.failed
            self.set_progress(state.encrypted, state.total)
            await self.checkpoint()
            if counts.pending == 0:
                break
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(input.model_copy(update={"follow_state": state}))

        result = MailboxFollowResult(
            dep=state.dep,
            dep_guid=state.dep_guid,
            total=state.total,
            encrypted=state.encrypted,
            failed=counts.failed,
            escalated=state.escalated_mailboxes,
            case_id=state.case_id,
        )
        if self._close is not None:
            result.closed_by, result.close_reason = self._close.by, self._close.reason
            await self.set_phase(FollowPhase.CLOSED, {"by": self._close.by, "reason": self._close.reason})
        else:
            await self.set_phase(FollowPhase.DONE, {"encrypted": state.encrypted, "total": state.total})
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _escalate(self, state: FollowState, escalate_after: timedelta) -> None:
        escalated = await call(
            ExchangeActivities.escalate_unencrypted,
            EscalateInput(
                operation_id=self.operation_id,
                dep=state.dep,
                dep_guid=state.dep_guid,
                assigned_at=state.assigned_at,
                escalate_after=escalate_after,
            ),
        )
        state.escalated = True
        if not escalated.mailboxes:
            return
        state.case_id = escalated.case.id if escalated.case else None
        state.escalated_mailboxes = len(escalated.mailboxes)
        await self.escalate(
            Escalation(
                at=workflow.now(),
                reason=f"{len(escalated.mailboxes)} mailboxes not encrypted {escalate_after} after assignment",
                case_id=state.case_id,
                subjects=escalated.mailboxes,
            )
        )
        await self.set_phase(FollowPhase.ESCALATED, {"case": state.case_id, "mailboxes": len(escalated.mailboxes)})


# exchange.dep.assign -----------------------------------------------------------------------------------------------


class MailboxFollowInput(BaseModel):
    """What assign and verify share: the mailboxes (inline or uploaded) and the follow-up's durations."""

    dep: DepName
    mailboxes: list[str] = Field(default_factory=list, repr=False)
    """Identities; the API moves them into a stored target set (``mailbox_file``) before the workflow starts."""
    mailbox_file: str | None = None
    """Id of a target set: an uploaded CSV (``POST /api/uploads/mailboxes``) or the claim check of ``mailboxes``."""
    escalate_after: timedelta = ESCALATE_AFTER
    poll_interval: timedelta = POLL_INTERVAL
    follow_state: FollowState | None = None
    """Carried across continue-as-new; never set by callers."""

    @model_validator(mode="after")
    def _valid_targets_and_durations(self) -> MailboxFollowInput:
        if self.mailboxes and self.mailbox_file:
            raise rule_error("mailboxes-or-file", ONE_SOURCE)
        if any(not m.strip() for m in self.mailboxes):
            raise rule_error("mailbox-identity", "a mailbox identity can't be empty")
        if self.poll_interval <= timedelta(0) or self.escalate_after <= timedelta(0):
            raise rule_error("durations-positive", "escalate_after and poll_interval must be positive")
        return self


class ExchangeDepAssignInput(MailboxFollowInput):
    """Assign a DEP to mailboxes (or mail users), then follow encryption to the end."""

    mail_user: bool = False
    """Set-MailUser instead of Set-Mailbox: hybrid mailboxes and mailboxes not yet migrated to the cloud."""
    batch_size: int = Field(default=ASSIGN_BATCH, ge=1, le=1000)

    @model_validator(mode="after")
    def _some_mailboxes(self) -> ExchangeDepAssignInput:
        if not (self.mailboxes or self.mailbox_file):
            raise rule_error("mailboxes-or-file", ONE_SOURCE)
        return self


@workflow.defn
class ExchangeDepAssignWorkflow(MailboxFollowWorkflow):
    """Assign a DEP to mailboxes and follow each until it reports IsEncrypted with that DEP."""

    kind = "exchange.dep.assign"

    @workflow.run
    async def run(self, input: ExchangeDepAssignInput) -> MailboxFollowResult:
        """Validate, assign in batches, follow."""
        return await self.operate(input, lambda: self._assign(input))

    async def _assign(self, input: ExchangeDepAssignInput) -> MailboxFollowResult:
        state = input.follow_state
        if state is None:
            set_id = mailbox_file_required(input.mailbox_file)
            await self.set_phase(FollowPhase.VALIDATING)
            dep = await call(ExchangeActivities.check_dep_assignable, DepRef(dep=input.dep))
            total = (await call(ExchangeActivities.count_targets, TargetsRef(set_id=set_id))).count
            self.set_progress(0, total, "mailboxes encrypted")
            await self.set_phase(FollowPhase.ASSIGNING, {"dep_guid": dep.guid, "mailboxes": total})
            assigned = await self._assign_batches(input, total)
            await self.audit("exchange.assigned", detail=assigned.model_dump())
            state = FollowState(dep=dep.name, dep_guid=dep.guid, assigned_at=workflow.now(), total=total)
        return await self.follow(state, input)

    async def _assign_batches(self, input: ExchangeDepAssignInput, total: int) -> AssignBatchResult:
        set_id = mailbox_file_required(input.mailbox_file)
        offsets = list(range(0, total, input.batch_size))
        summary = AssignBatchResult()
        for wave in range(0, len(offsets), ASSIGN_PARALLEL_BATCHES):
            results = await asyncio.gather(
                *(
                    call(
                        ExchangeActivities.assign_dep_batch,
                        AssignBatchInput(
                            operation_id=self.operation_id,
                            set_id=set_id,
                            offset=offset,
                            limit=input.batch_size,
                            dep=input.dep,
                            mail_user=input.mail_user,
                        ),
                        start_to_close=timedelta(minutes=10),
                        heartbeat=HEARTBEAT_TIMEOUT,
                    )
                    for offset in offsets[wave : wave + ASSIGN_PARALLEL_BATCHES]
                )
            )
            for r in results:
                summary.assigned += r.assigned
                summary.already += r.already
                summary.failed += r.failed
        return summary


# exchange.encryption.verify ----------------------------------------------------------------------------------------


class ExchangeEncryptionVerifyInput(MailboxFollowInput):
    """Follow mailboxes until they are encrypted with a DEP, without assigning (after a roll, a new DEP, a move).

    Without ``mailboxes`` or ``mailbox_file``: every mailbox and mail user the DEP is assigned to.
    """


@workflow.defn
class ExchangeEncryptionVerifyWorkflow(MailboxFollowWorkflow):
    """Verify that mailboxes end encrypted with a DEP; escalate those that are not after a week."""

    kind = "exchange.encryption.verify"

    @workflow.run
    async def run(self, input: ExchangeEncryptionVerifyInput) -> MailboxFollowResult:
        """Resolve the mailboxes, follow them."""
        return await self.operate(input, lambda: self._verify(input))

    async def _verify(self, input: ExchangeEncryptionVerifyInput) -> MailboxFollowResult:
        state = input.follow_state
        if state is None:
            await self.set_phase(FollowPhase.RESOLVING)
            dep = (await call(ExchangeActivities.find_dep, DepRef(dep=input.dep))).dep
            if dep is None:
                raise ApplicationError(f"there is no DEP named {input.dep!r}", type="dep-exists", non_retryable=True)
            total = (
                await call(
                    ExchangeActivities.register_dep_mailboxes,
                    RegisterMailboxesInput(operation_id=self.operation_id, dep=dep.name, set_id=input.mailbox_file),
                    start_to_close=timedelta(minutes=10),
                )
            ).count
            state = FollowState(dep=dep.name, dep_guid=dep.guid, assigned_at=workflow.now(), total=total)
        return await self.follow(state, input)


# Registration ------------------------------------------------------------------------------------------------------


def _dep(params: BaseModel) -> str | None:
    return str(getattr(params, "dep", None) or getattr(params, "name", None) or "") or None


for _kind, _workflow_class, _input, _description in (
    (
        "exchange.dep.create",
        ExchangeDepCreateWorkflow,
        ExchangeDepCreateInput,
        "Create a mailbox DEP (New-DataEncryptionPolicy) after checking both keys against every rule.",
    ),
    (
        "exchange.dep.assign",
        ExchangeDepAssignWorkflow,
        ExchangeDepAssignInput,
        "Assign a DEP to mailboxes or mail users, follow encryption to the end, escalate after a week.",
    ),
    (
        "exchange.encryption.verify",
        ExchangeEncryptionVerifyWorkflow,
        ExchangeEncryptionVerifyInput,
        "Follow mailboxes until encrypted with a DEP (after a key roll, a new DEP or a migration).",
    ),
):
    registry.register(
        OperationKind(
            name=_kind,
            workflow=_workflow_class,
            input_model=_input,
            role=Role.OPERATOR,
            description=_description,
            dep_of=_dep,
            claim_check=None if _kind == "exchange.dep.create" else claim_check_mailboxes,
        )
    )

del _kind, _workflow_class, _input, _description


def mailbox_file_required(mailbox_file: str | None) -> str:
    """The claim-checked set of mailboxes; a start without one is refused (the API always makes one)."""
    if mailbox_file is None:
        raise ApplicationError(
            "no mailboxes to assign (mailbox_file)", type="mailbox-file-required", non_retryable=True
        )
    return mailbox_file
