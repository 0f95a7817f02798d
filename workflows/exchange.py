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
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field, model_validator
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
        FailedMailbox,
        FailedMailboxesInput,
        FollowInput,
        NewDepInput,
        RegisterMailboxesInput,
        TargetsRef,
    )
    from activities.keyvault import CheckKeyHealthInput, HealthLine, KeyVaultActivities
    from ckey.config import Settings
    from ckey.models import DepName, RecipientIdentity, Role, TwoKeyUris, Workload, has_control_characters, rule_error
    from ckey.operations import Escalation, OperationKind, Params, registry
    from ckey.store.targets import FollowCounts, claim_check_mailboxes
    from workflows.keyvault import pair_lines
    from workflows.operation import OperationWorkflow, call

ESCALATE_AFTER = timedelta(days=7)
"""Seed: "If the mailboxes are not encrypted after a week from the time you assigned the DEP, contact Microsoft".
The default of the internal input; the API fills it from ``Settings.exchange_escalate_after``."""
POLL_INTERVAL = timedelta(minutes=15)
ASSIGN_BATCH = 200
INLINE_MAILBOXES_MAX = 1000
"""Mailboxes a request may name inline; more go through an upload (``POST /api/uploads/mailboxes``)."""
DESCRIPTION_MAX = 1024
FAILED_LISTED = 100
"""Failed mailboxes an operation's result names one by one (the count says how many there are in all)."""
FAILED_IN_MESSAGE = 5
ASSIGN_PARALLEL_BATCHES = 4
FOLLOW_ROUND_TIMEOUT = timedelta(minutes=30)
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
"""A batch or a status round whose worker died is retried elsewhere after this long, not after its whole timeout."""
ONE_SOURCE = "name the mailboxes either inline (mailboxes) or as an upload (mailbox_file)"
MAILBOX_FILE = r"^ts-[0-9a-f-]{36}$"
"""A target set's id, as ``POST /api/uploads/mailboxes`` returns it."""


def _check_description(value: str) -> str:
    # One line: the description is rendered into the audited cmdlet line, where a line break could forge another.
    if has_control_characters(value):
        raise rule_error(
            "no-control-characters", "a description can't contain NUL, control characters, tabs or line breaks"
        )
    return value


Description = Annotated[str, Field(max_length=DESCRIPTION_MAX), AfterValidator(_check_description)]
"""A DEP's description: at most 1,024 characters on one line (no control characters, tabs or line breaks)."""


# exchange.dep.create -----------------------------------------------------------------------------------------------


class DepCreatePhase(StrEnum):
    """Phases of ``exchange.dep.create``."""

    CHECKING_KEYS = "checking_keys"
    CHECKING_EXISTING = "checking_existing"
    CREATING = "creating"
    DONE = "done"


class ExchangeDepCreateParams(Params):
    """What a caller may set for ``exchange.dep.create``: New-DataEncryptionPolicy's parameters."""

    name: DepName
    description: Description | None = None
    azure_key_ids: TwoKeyUris


class ExchangeDepCreateInput(BaseModel):
    """New-DataEncryptionPolicy's parameters, validated by the seed's rules (the workflow's input)."""

    name: DepName
    description: Description | None = None
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
    failed: int = 0
    """Mailboxes that could not be assigned (not found, refused): never encrypted by this operation."""
    failed_mailboxes: list[FailedMailbox] = Field(default_factory=list)
    """The first of them (at most ``FAILED_LISTED``), each with the refusal."""


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
    """Mailboxes that could not be assigned; ``total`` counts them, so the progress never reaches 100 % with them."""
    failed_mailboxes: list[FailedMailbox] = Field(default_factory=list)
    """The first ``FAILED_LISTED`` of them with the reason; ``failed`` says how many there are in all."""
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
        counts = FollowCounts(total=state.total, encrypted=state.encrypted, failed=state.failed)
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
            # The total keeps the mailboxes that failed: the progress never shows 100 % while some were not
            # assigned, and the result names them.
            state.encrypted, state.total, state.failed = counts.encrypted, counts.total, counts.failed
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
            failed=state.failed,
            failed_mailboxes=state.failed_mailboxes,
            escalated=state.escalated_mailboxes,
            case_id=state.case_id,
        )
        if self._close is not None:
            result.closed_by, result.close_reason = self._close.by, self._close.reason
            await self.set_phase(FollowPhase.CLOSED, {"by": self._close.by, "reason": self._close.reason})
        else:
            await self.set_phase(
                FollowPhase.DONE, {"encrypted": state.encrypted, "total": state.total, "failed": state.failed}
            )
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


def _one_source(mailboxes: list[str], mailbox_file: str | None) -> None:
    if mailboxes and mailbox_file:
        raise rule_error("mailboxes-or-file", ONE_SOURCE)


class MailboxFollowParams(Params):
    """What a caller may set for assign and verify: the DEP and the mailboxes (inline or uploaded)."""

    dep: DepName
    mailboxes: list[RecipientIdentity] = Field(default_factory=list, max_length=INLINE_MAILBOXES_MAX, repr=False)
    """Identities, at most 1,000 inline (more through an upload); the API stores them as a target set."""
    mailbox_file: str | None = Field(default=None, max_length=39, pattern=MAILBOX_FILE)
    """Id of an uploaded mailbox list (``POST /api/uploads/mailboxes``)."""

    @model_validator(mode="after")
    def _one_source_of_mailboxes(self) -> MailboxFollowParams:
        _one_source(self.mailboxes, self.mailbox_file)
        return self


class ExchangeDepAssignParams(MailboxFollowParams):
    """What a caller may set for ``exchange.dep.assign``."""

    mail_user: bool = False
    """Set-MailUser first: hybrid mailboxes and mailboxes not yet migrated to the cloud."""

    @model_validator(mode="after")
    def _some_mailboxes(self) -> ExchangeDepAssignParams:
        if not (self.mailboxes or self.mailbox_file):
            raise rule_error("mailboxes-or-file", ONE_SOURCE)
        return self


class ExchangeEncryptionVerifyParams(MailboxFollowParams):
    """What a caller may set for ``exchange.encryption.verify``; no mailboxes: every one the DEP is assigned to."""


class MailboxFollowInput(BaseModel):
    """What assign and verify share (the workflow's input): the public fields, then internal ones.

    The internal fields (durations, batch size, ``follow_state``) come from the settings through ``build_input``
    and from the workflow itself across continue-as-new; the API never fills them from a request.
    """

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
        _one_source(self.mailboxes, self.mailbox_file)
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
            dep = await call(ExchangeActivities.check_dep_assignable, DepRef(dep=input.dep))
            total = (await call(ExchangeActivities.count_targets, TargetsRef(set_id=set_id))).count
            self.set_progress(0, total, "mailboxes encrypted")
            await self.set_phase(FollowPhase.ASSIGNING, {"dep_guid": dep.guid, "mailboxes": total})
            assigned = await self._assign_batches(input, set_id, total, dep.name, dep.guid)
            state = FollowState(dep=dep.name, dep_guid=dep.guid, assigned_at=workflow.now(), total=total)
            if assigned.failed:
                failures = await call(
                    ExchangeActivities.failed_mailboxes,
                    FailedMailboxesInput(operation_id=self.operation_id, limit=FAILED_LISTED),
                )
                state.failed, state.failed_mailboxes = failures.count, failures.mailboxes
            await self.audit(
                "exchange.assigned",
                detail={
                    **assigned.model_dump(),
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
        self, input: ExchangeDepAssignInput, set_id: str, total: int, dep: str, dep_guid: str
    ) -> AssignBatchResult:
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
                            dep=dep,
                            dep_guid=dep_guid,
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


registry.register(
    OperationKind(
        name="exchange.dep.create",
        workflow=ExchangeDepCreateWorkflow,
        input_model=ExchangeDepCreateInput,
        params_model=ExchangeDepCreateParams,
        role=Role.OPERATOR,
        description="Create a mailbox DEP (New-DataEncryptionPolicy) after checking both keys against every rule.",
        dep_of=_dep,
    )
)
registry.register(
    OperationKind(
        name="exchange.dep.assign",
        workflow=ExchangeDepAssignWorkflow,
        input_model=ExchangeDepAssignInput,
        params_model=ExchangeDepAssignParams,
        build_input=build_assign_input,
        role=Role.OPERATOR,
        description="Assign a DEP to mailboxes or mail users, follow encryption to the end, escalate after a week.",
        dep_of=_dep,
        claim_check=claim_check_mailboxes,
    )
)
registry.register(
    OperationKind(
        name="exchange.encryption.verify",
        workflow=ExchangeEncryptionVerifyWorkflow,
        input_model=ExchangeEncryptionVerifyInput,
        params_model=ExchangeEncryptionVerifyParams,
        build_input=build_verify_input,
        role=Role.OPERATOR,
        description="Follow mailboxes until encrypted with a DEP (after a key roll, a new DEP or a migration).",
        dep_of=_dep,
        claim_check=claim_check_mailboxes,
    )
)
