"""Exchange Online operations: ``exchange.dep.create``, ``exchange.dep.assign``, ``exchange.encryption.verify``.

Seed sections: "Create a DEP for use with Exchange Online mailboxes", "Assign a DEP to a mailbox", "Assign a DEP
before you migrate a mailbox to the cloud", "Determine the DEP assigned to a mailbox", "Verify encryption completes
for Exchange Online mailboxes" ("If the mailboxes are not encrypted after a week from the time you assigned the
DEP, contact Microsoft").
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from ckey.models import FollowCounts, Role, Workload, human_duration
    from ckey.operations import (
        Escalation,
        KindUpdate,
        Lease,
        LeaseMode,
        LeaseRequest,
        OperationKind,
        lazy,
        lazy_preflight,
    )
    from contracts.exchange import (
        AssignBatchInput,
        AssignBatchResult,
        CloseRequest,
        CloseResult,
        DepRef,
        EscalateInput,
        ExchangeActivityStub,
        ExchangeDepAssignInput,
        ExchangeDepAssignParams,
        ExchangeDepCreateInput,
        ExchangeDepCreateParams,
        ExchangeDepCreateResult,
        ExchangeEncryptionVerifyInput,
        ExchangeEncryptionVerifyParams,
        FailedMailboxesInput,
        FollowInput,
        FollowState,
        MailboxFollowInput,
        MailboxFollowResult,
        NewDepInput,
        RegisterMailboxesInput,
        ResolveRecipientsInput,
        ResolveRecipientsResult,
        TargetsRef,
    )
    from contracts.keyvault import KeyVaultActivityStub
    from workflows.keyvault import check_dep_keys
    from workflows.operation import OperationWorkflow, call

if TYPE_CHECKING:
    from ckey.config import Settings

FAILED_LISTED = 100
"""Failed mailboxes an operation's result names one by one (the count says how many there are in all)."""
FAILED_IN_MESSAGE = 5
ASSIGN_PARALLEL_BATCHES = 4
FOLLOW_ROUND_TIMEOUT = timedelta(minutes=30)
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
"""A batch or a status round whose worker died is retried elsewhere after this long, not after its whole timeout."""
ASSIGN_PROGRESS_PER_WAVE = "exchange-assign-progress-per-wave"
"""Patch id: the record's progress shows the mailboxes assigned after every wave of batches (one checkpoint each),
not 0 % until the follow-up starts."""
CLOSE_LAST_ROUND = "exchange-close-last-round"
"""Patch id: a close runs one last status round, and the close's answer and the result carry its counts."""
VERIFY_FROM_ASSIGNMENT = "exchange-verify-deadline-from-assignment"
"""Patch id: a verification counts the escalation delay from when ckey assigned the DEP to its mailboxes, when
that is known, rather than from its own start."""
RESOLVE_RECIPIENTS_FIRST = "exchange-assign-resolve-recipients-first"
"""Patch id: an assignment resolves its identities in one bulk lookup before assigning (unknown ones are named and
never sent a call; mail users get Set-MailUser only). Runs started before it replay without the lookup."""


# exchange.dep.create -----------------------------------------------------------------------------------------------


class DepCreatePhase(StrEnum):
    """Phases of ``exchange.dep.create``."""

    CHECKING_KEYS = "checking_keys"
    CHECKING_EXISTING = "checking_existing"
    CREATING = "creating"
    DONE = "done"


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
        await check_dep_keys(keys, Workload.EXCHANGE)

        await self.set_phase(DepCreatePhase.CHECKING_EXISTING)
        existing = (await call(ExchangeActivityStub.find_dep, DepRef(dep=input.name))).dep
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
            ExchangeActivityStub.new_dep,
            NewDepInput(name=input.name, description=input.description, azure_key_ids=keys),
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


class MailboxFollowWorkflow(OperationWorkflow):
    """Shared by assign and verify: follow mailboxes until encrypted, escalating once after ``escalate_after``."""

    def __init__(self) -> None:
        super().__init__()
        self._close: CloseRequest | None = None
        self._closed_counts: FollowCounts | None = None

    @workflow.update
    async def close(self, request: CloseRequest) -> CloseResult:
        """End the follow-up now, after one last status round; the answer and the result say how far it got."""
        self._close = request
        if workflow.patched(CLOSE_LAST_ROUND):
            await workflow.wait_condition(lambda: self._closed_counts is not None)
        return CloseResult(encrypted=self._status.progress.done, total=self._status.progress.total or 0)

    @close.validator
    def _validate_close(self, request: CloseRequest) -> None:
        if self._status.phase not in (FollowPhase.FOLLOWING, FollowPhase.ESCALATED):
            raise ApplicationError(f"only a follow-up can be closed; the operation is {self._status.phase}")

    async def follow(self, state: FollowState, input: MailboxFollowInput) -> MailboxFollowResult:
        """Follow until every mailbox is encrypted or an operator closes; continue as new when history grows."""
        escalate_after, poll_interval = input.escalate_after, input.poll_interval
        # Done: mailboxes encrypted, and mail users assigned (they encrypt on migration).
        self.set_progress(
            state.encrypted + state.assigned_encrypts_on_migration,
            state.total,
            "mailboxes encrypted",
            assigned=state.total - state.failed,
        )
        await self.set_phase(FollowPhase.ESCALATED if state.escalated else FollowPhase.FOLLOWING)
        deadline = state.assigned_at + escalate_after
        report_every = max(1, state.total // 100)
        counts = FollowCounts(total=state.total, encrypted=state.encrypted, failed=state.failed)
        while self._close is None:
            round_ = asyncio.ensure_future(
                call(
                    ExchangeActivityStub.follow_encryption,
                    FollowInput(
                        operation_id=self.operation_id,
                        dep_guid=state.dep_guid,
                        reported_encrypted=state.encrypted + state.assigned_encrypts_on_migration,
                        report_every=report_every,
                        poll_interval=poll_interval,
                        dep=state.dep,
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
                if workflow.patched(CLOSE_LAST_ROUND):
                    await self._last_round(state, report_every)
                break
            counts = round_.result().counts
            # The total keeps the mailboxes that failed: the progress never shows 100 % while some were not
            # assigned, and the result names them.
            state.encrypted, state.total, state.failed = counts.encrypted, counts.total, counts.failed
            state.assigned_encrypts_on_migration = counts.assigned_encrypts_on_migration
            self.set_progress(counts.done, state.total, assigned=state.total - state.failed)
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
            failed=state.failed,
            failed_mailboxes=state.failed_mailboxes,
            escalated=state.escalated_mailboxes,
            case_id=state.case_id,
            assigned_encrypts_on_migration=state.assigned_encrypts_on_migration,
            unknown=state.unknown,
            unknown_count=state.unknown_count,
        )
        if self._close is not None:
            result.closed_by, result.close_reason = self._close.by, self._close.reason
            await self.set_phase(FollowPhase.CLOSED, {"by": self._close.by, "reason": self._close.reason})
        else:
            ended: dict[str, Any] = {"encrypted": state.encrypted, "total": state.total, "failed": state.failed}
            if state.assigned_encrypts_on_migration or state.unknown_count:
                ended |= {
                    "assigned_encrypts_on_migration": state.assigned_encrypts_on_migration,
                    "unknown": state.unknown_count,
                }
            await self.set_phase(FollowPhase.DONE, ended)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _last_round(self, state: FollowState, report_every: int) -> None:
        """One status round that reports whatever it sees (an operator closed): the counts it ends with are fresh."""
        last = await call(
            ExchangeActivityStub.follow_encryption,
            FollowInput(
                operation_id=self.operation_id,
                dep_guid=state.dep_guid,
                reported_encrypted=state.encrypted + state.assigned_encrypts_on_migration,
                report_every=0,
                poll_interval=timedelta(seconds=1),
                dep=state.dep,
            ),
            start_to_close=FOLLOW_ROUND_TIMEOUT,
            heartbeat=HEARTBEAT_TIMEOUT,
        )
        counts = last.counts
        state.encrypted, state.total, state.failed = counts.encrypted, counts.total, counts.failed
        state.assigned_encrypts_on_migration = counts.assigned_encrypts_on_migration
        self.set_progress(counts.done, state.total, assigned=state.total - state.failed)
        self._closed_counts = counts
        await self.checkpoint()

    async def _escalate(self, state: FollowState, escalate_after: timedelta) -> None:
        escalated = await call(
            ExchangeActivityStub.escalate_unencrypted,
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
                reason=f"{len(escalated.mailboxes)} mailboxes not encrypted {human_duration(escalate_after)} "
                "after assignment",
                case_id=state.case_id,
                subjects=escalated.mailboxes,
            )
        )
        await self.set_phase(FollowPhase.ESCALATED, {"case": state.case_id, "mailboxes": len(escalated.mailboxes)})


# exchange.dep.assign -----------------------------------------------------------------------------------------------


def _follow_timings(settings: Settings) -> dict[str, Any]:
    return {"escalate_after": settings.exchange_escalate_after, "poll_interval": settings.exchange_poll_interval}


def build_assign_input(params: BaseModel, settings: Settings) -> ExchangeDepAssignInput:
    """The assignment's input: the caller's params, the timings and batch size of the settings."""
    return ExchangeDepAssignInput(
        **params.model_dump(), **_follow_timings(settings), batch_size=settings.exchange_assign_batch_size
    )


def build_verify_input(params: BaseModel, settings: Settings) -> ExchangeEncryptionVerifyInput:
    """The verification's input: the caller's params and the timings of the settings."""
    return ExchangeEncryptionVerifyInput(**params.model_dump(), **_follow_timings(settings))


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
            set_id = _target_set(input)
            await self.set_phase(FollowPhase.VALIDATING)
            dep = await call(ExchangeActivityStub.check_dep_assignable, DepRef(dep=input.dep))
            resolved: ResolveRecipientsResult | None = None
            if workflow.patched(RESOLVE_RECIPIENTS_FIRST):
                # One bulk lookup names the unknown identities before anything is sent; none known refuses the
                # operation (recipients-unknown) with nothing assigned.
                resolved = await call(
                    ExchangeActivityStub.resolve_recipients,
                    ResolveRecipientsInput(operation_id=self.operation_id, set_id=set_id, dep=dep.name),
                    start_to_close=timedelta(minutes=10),
                )
            listed = (await call(ExchangeActivityStub.count_targets, TargetsRef(set_id=set_id))).count
            total = listed if resolved is None else resolved.count
            self.set_progress(0, total, "mailboxes encrypted", assigned=resolved.already if resolved else 0)
            phase: dict[str, Any] = {"dep_guid": dep.guid, "mailboxes": total}
            if resolved is not None:
                phase |= {"mail_users": resolved.mail_users, "unknown": resolved.unknown_count}
            await self.set_phase(FollowPhase.ASSIGNING, phase)
            assigned = await self._assign_batches(
                input, set_id, listed, dep.name, dep.guid, resolved=resolved is not None
            )
            state = FollowState(dep=dep.name, dep_guid=dep.guid, assigned_at=workflow.now(), total=total)
            if resolved is not None:
                state.unknown, state.unknown_count = resolved.unknown, resolved.unknown_count
            if assigned.failed:
                failures = await call(
                    ExchangeActivityStub.failed_mailboxes,
                    FailedMailboxesInput(operation_id=self.operation_id, limit=FAILED_LISTED),
                )
                state.failed, state.failed_mailboxes = failures.count, failures.mailboxes
            await self.audit(
                "exchange.assigned",
                detail={
                    **assigned.model_dump(),
                    **({"unknown": state.unknown_count} if state.unknown_count else {}),
                    "failed_mailboxes": [f.model_dump() for f in state.failed_mailboxes[:FAILED_IN_MESSAGE]],
                },
            )
            if assigned.failed and not (assigned.assigned or assigned.already):
                raise ApplicationError(
                    f"no mailbox could be assigned DEP {dep.name!r}: all {state.failed} were refused, e.g. "
                    + "; ".join(f"{f.identity}: {f.error}" for f in state.failed_mailboxes[:FAILED_IN_MESSAGE]),
                    {"failed": state.failed, "failed_mailboxes": [f.model_dump() for f in state.failed_mailboxes]},
                    type="mailboxes-assignable",
                    non_retryable=True,
                )
        return await self.follow(state, input)

    async def _assign_batches(
        self, input: ExchangeDepAssignInput, set_id: str, total: int, dep: str, dep_guid: str, *, resolved: bool
    ) -> AssignBatchResult:
        offsets = list(range(0, total, input.batch_size))
        summary = AssignBatchResult()
        for wave in range(0, len(offsets), ASSIGN_PARALLEL_BATCHES):
            results = await asyncio.gather(
                *(
                    call(
                        ExchangeActivityStub.assign_dep_batch,
                        AssignBatchInput(
                            operation_id=self.operation_id,
                            set_id=set_id,
                            offset=offset,
                            limit=input.batch_size,
                            dep=dep,
                            dep_guid=dep_guid,
                            mail_user=input.mail_user,
                            resolved=resolved,
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
            if workflow.patched(ASSIGN_PROGRESS_PER_WAVE):
                self.set_progress(0, assigned=summary.assigned + summary.already)
                await self.checkpoint()
        return summary


def _target_set(input: ExchangeDepAssignInput) -> str:
    # The API's claim check always leaves a set id; a workflow started by other means without one is a bad input.
    if input.mailbox_file is None:
        raise ApplicationError(
            "the assignment has no stored mailbox list (mailbox_file); start it through the API",
            type="mailboxes-or-file",
            non_retryable=True,
        )
    return input.mailbox_file


# exchange.encryption.verify ----------------------------------------------------------------------------------------


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
            dep = (await call(ExchangeActivityStub.find_dep, DepRef(dep=input.dep))).dep
            if dep is None:
                raise ApplicationError(f"there is no DEP named {input.dep!r}", type="dep-exists", non_retryable=True)
            registered = await call(
                ExchangeActivityStub.register_dep_mailboxes,
                RegisterMailboxesInput(operation_id=self.operation_id, dep=dep.name, set_id=input.mailbox_file),
                start_to_close=timedelta(minutes=10),
            )
            assigned_at = workflow.now()
            if input.follow_from is not None:
                # A key roll's follow-up: the mailboxes re-encrypt after its refresh, however old their assignment.
                assigned_at = input.follow_from
            elif workflow.patched(VERIFY_FROM_ASSIGNMENT) and registered.assigned_at is not None:
                # The seed's week runs from the assignment, not from when someone asked to verify it.
                assigned_at = min(assigned_at, registered.assigned_at)
            state = FollowState(
                dep=dep.name,
                dep_guid=dep.guid,
                assigned_at=assigned_at,
                total=registered.count,
                unknown=registered.unknown,
                unknown_count=registered.unknown_count,
            )
        return await self.follow(state, input)


# Registration ------------------------------------------------------------------------------------------------------


CLOSE = KindUpdate(
    method=MailboxFollowWorkflow.close,
    result_model=CloseResult,
    role=Role.OPERATOR,
    description="End the follow-up now; the operation finishes with what it reached.",
)


def _creates_dep(params: BaseModel) -> LeaseRequest:
    """A DEP being created is held alone: a second creation of the same name waits for this one's outcome."""
    return LeaseRequest(leases=[Lease.on("dep:exchange", str(getattr(params, "name", "")))])


def _assigns_mailboxes(params: BaseModel) -> LeaseRequest:
    """Assignment writes its mailboxes (held alone) and reads its DEP (no purge or re-creation meanwhile)."""
    return LeaseRequest(
        leases=[Lease.on("dep:exchange", str(getattr(params, "dep", "")), LeaseMode.READ)],
        mailbox_set=getattr(params, "mailbox_file", None),
        mailbox_mode=LeaseMode.WRITE,
    )


def _follows_mailboxes(params: BaseModel) -> LeaseRequest:
    """Verification only reads: it runs beside other verifications, never beside an assignment of its mailboxes."""
    return LeaseRequest(
        leases=[Lease.on("dep:exchange", str(getattr(params, "dep", "")), LeaseMode.READ)],
        mailbox_set=getattr(params, "mailbox_file", None),
        mailbox_mode=LeaseMode.READ,
    )


def _dep(params: BaseModel) -> str | None:
    return str(getattr(params, "dep", None) or getattr(params, "name", None) or "") or None


KINDS: tuple[OperationKind, ...] = (
    OperationKind(
        name="exchange.dep.create",
        workflow=ExchangeDepCreateWorkflow,
        input_model=ExchangeDepCreateInput,
        params_model=ExchangeDepCreateParams,
        role=Role.OPERATOR,
        description="Create a mailbox DEP (New-DataEncryptionPolicy) after checking both keys against every rule.",
        dep_of=_dep,
        leases_of=_creates_dep,
        result_model=ExchangeDepCreateResult,
        activities=(KeyVaultActivityStub, ExchangeActivityStub),
    ),
    OperationKind(
        name="exchange.dep.assign",
        workflow=ExchangeDepAssignWorkflow,
        input_model=ExchangeDepAssignInput,
        params_model=ExchangeDepAssignParams,
        build_input=build_assign_input,
        role=Role.OPERATOR,
        description="Assign a DEP to mailboxes or mail users, follow encryption to the end, escalate after a week.",
        dep_of=_dep,
        leases_of=_assigns_mailboxes,
        claim_check=lazy("ckey.store.targets:claim_check_mailboxes"),
        preflight=lazy_preflight("ckey.store.targets:preflight_recipients"),
        result_model=MailboxFollowResult,
        activities=(ExchangeActivityStub,),
        updates=(CLOSE,),
    ),
    OperationKind(
        name="exchange.encryption.verify",
        workflow=ExchangeEncryptionVerifyWorkflow,
        input_model=ExchangeEncryptionVerifyInput,
        params_model=ExchangeEncryptionVerifyParams,
        build_input=build_verify_input,
        role=Role.OPERATOR,
        description="Follow mailboxes until encrypted with a DEP (after a key roll, a new DEP or a migration).",
        dep_of=_dep,
        leases_of=_follows_mailboxes,
        claim_check=lazy("ckey.store.targets:claim_check_mailboxes"),
        preflight=lazy_preflight("ckey.store.targets:preflight_recipients"),
        result_model=MailboxFollowResult,
        activities=(ExchangeActivityStub,),
        updates=(CLOSE,),
    ),
)
"""The kinds this module runs, declared once: the registry (:func:`workflows.product_registry`) collects them."""
