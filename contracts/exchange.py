"""The Exchange Online family's contract: the workflows' models, the activities' models and their stub.

Workflows ``exchange.dep.create``, ``exchange.dep.assign`` and ``exchange.encryption.verify``
(:mod:`workflows.exchange`) call the activities of :class:`ExchangeActivityStub`, which
:class:`activities.exchange.ExchangeActivities` implements.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, model_validator
from temporalio import activity

from ckey.models import (
    DepName,
    FollowCounts,
    RecipientIdentity,
    SupportCase,
    TwoKeyUris,
    has_control_characters,
    rule_error,
)
from ckey.operations import Params

ESCALATE_AFTER = timedelta(days=7)
"""Seed: "If the mailboxes are not encrypted after a week from the time you assigned the DEP, contact Microsoft".
The default of the internal input; the API fills it from ``Settings.exchange_escalate_after``."""
POLL_INTERVAL = timedelta(minutes=15)
ASSIGN_BATCH = 200
INLINE_MAILBOXES_MAX = 1000
"""Mailboxes a request may name inline; more go through an upload (``POST /api/uploads/mailboxes``)."""
DESCRIPTION_MAX = 1024
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


# Activities -------------------------------------------------------------------------------------------------------


class DepRef(BaseModel):
    """A DEP by name or GUID."""

    dep: str


class DepInfo(BaseModel):
    """What ckey needs of a DEP."""

    name: str
    guid: str
    azure_key_ids: list[str] = Field(default_factory=list)
    enabled: bool = True
    permanent_data_purge_requested: bool = False


class FindDepResult(BaseModel):
    """A DEP found by name, or none."""

    dep: DepInfo | None = None


class NewDepInput(BaseModel):
    """New-DataEncryptionPolicy's parameters."""

    name: str
    description: str | None = None
    azure_key_ids: list[str]


class TargetsRef(BaseModel):
    """A target set by id."""

    set_id: str


class TargetCount(BaseModel):
    """How many targets a set holds (or an operation follows, and which of the named ones are unknown)."""

    count: int
    unknown: list[str] = Field(default_factory=list)
    """The first ``UNKNOWN_LISTED`` identities no mailbox or mail user answers to (not followed)."""
    unknown_count: int = 0
    assigned_at: datetime | None = None
    """For a verification: when ckey last assigned the DEP to these mailboxes (its assignments' records), if it
    did; the escalation delay counts from then."""


UNKNOWN_LISTED = 100
"""Unknown identities a result names one by one (``unknown_count`` says how many there are in all)."""


class ResolveRecipientsInput(BaseModel):
    """Resolve a target set against the tenant's recipients (one bulk lookup) and register the known ones."""

    operation_id: str
    set_id: str
    dep: str | None = None
    """The DEP to assign: recipients that already show it are counted as assigned and sent nothing."""


class ResolveRecipientsResult(TargetCount):
    """The recipients an operation follows (``count``), what they are, and the identities nobody answers to."""

    mailboxes: int = 0
    mail_users: int = 0
    already: int = 0
    """Recipients that already showed the DEP: assigned before this operation, sent nothing."""


class AssignBatchInput(BaseModel):
    """One batch of a target set to assign a DEP to."""

    operation_id: str
    set_id: str
    offset: int
    limit: int
    dep: str
    dep_guid: str | None = None
    """The DEP's GUID, to recognise it on a mailbox whose assignment was in flight when a worker died."""
    mail_user: bool = False
    resolved: bool = False
    """The set was resolved first (:class:`ResolveRecipientsInput`): only registered recipients are assigned, each
    with the one cmdlet its kind takes; unknown identities are skipped (no call is sent for them)."""


class AssignBatchResult(BaseModel):
    """What happened to the batch's mailboxes, counting what earlier attempts did."""

    assigned: int = 0
    already: int = 0
    """Assigned by an earlier attempt."""
    failed: int = 0
    """Refused (not found, invalid), by this attempt or an earlier one."""
    confirmed: int = 0
    """In flight when an earlier attempt died, found assigned in the tenant: not sent again."""


class FailedMailboxesInput(BaseModel):
    """The mailboxes of an operation that could not be assigned."""

    operation_id: str
    limit: int = 100


class FailedMailbox(BaseModel):
    """A mailbox that could not be assigned, and why (the cmdlet's text)."""

    identity: str
    error: str


class FailedMailboxes(BaseModel):
    """The first ``limit`` failed mailboxes and how many there are."""

    count: int = 0
    mailboxes: list[FailedMailbox] = Field(default_factory=list)


class RegisterMailboxesInput(BaseModel):
    """Mailboxes to follow without assigning (``exchange.encryption.verify``): a set, or every mailbox of a DEP."""

    operation_id: str
    dep: str
    set_id: str | None = None


class FollowInput(BaseModel):
    """One round of following an operation's mailboxes."""

    operation_id: str
    dep_guid: str
    reported_encrypted: int = 0
    """Encrypted mailboxes the workflow knows of; the round returns only when this has grown by ``report_every``."""
    report_every: int = 1
    poll_interval: timedelta = timedelta(minutes=15)
    dep: str | None = None
    """The DEP's name, which Get-MailUser shows on a mail user (``None`` in rounds scheduled before it was passed)."""


class FollowResult(BaseModel):
    """Counts after a round that had something to report."""

    counts: FollowCounts


class EscalateInput(BaseModel):
    """Escalate the mailboxes of an operation still not encrypted."""

    operation_id: str
    dep: str
    dep_guid: str
    assigned_at: datetime
    escalate_after: timedelta


class EscalateResult(BaseModel):
    """The support case and the mailboxes it is about."""

    case: SupportCase | None = None
    mailboxes: list[str] = Field(default_factory=list)


class ExchangeActivityStub:
    """The Exchange Online activities as the workflows call them; ``activities.exchange`` implements them.

    Each method only names the activity and its types: the worker registers the implementation's methods, which
    carry the same names.
    """

    @activity.defn(name="find_dep")
    async def find_dep(self, input: DepRef) -> FindDepResult:
        """Get-DataEncryptionPolicy: the DEP of that name, or none."""
        raise NotImplementedError

    @activity.defn(name="new_dep")
    async def new_dep(self, input: NewDepInput) -> DepInfo:
        """New-DataEncryptionPolicy."""
        raise NotImplementedError

    @activity.defn(name="check_dep_assignable")
    async def check_dep_assignable(self, input: DepRef) -> DepInfo:
        """The DEP, if it exists, is enabled and not being purged."""
        raise NotImplementedError

    @activity.defn(name="count_targets")
    async def count_targets(self, input: TargetsRef) -> TargetCount:
        """How many targets a stored set holds."""
        raise NotImplementedError

    @activity.defn(name="resolve_recipients")
    async def resolve_recipients(self, input: ResolveRecipientsInput) -> ResolveRecipientsResult:
        """Resolve the set in one bulk lookup; refuse (``recipients-unknown``) when no identity is a recipient."""
        raise NotImplementedError

    @activity.defn(name="assign_dep_batch")
    async def assign_dep_batch(self, input: AssignBatchInput) -> AssignBatchResult:
        """Assign the DEP to one batch of a target set."""
        raise NotImplementedError

    @activity.defn(name="failed_mailboxes")
    async def failed_mailboxes(self, input: FailedMailboxesInput) -> FailedMailboxes:
        """The mailboxes of an operation that could not be assigned."""
        raise NotImplementedError

    @activity.defn(name="register_dep_mailboxes")
    async def register_dep_mailboxes(self, input: RegisterMailboxesInput) -> TargetCount:
        """Register the mailboxes to follow without assigning."""
        raise NotImplementedError

    @activity.defn(name="follow_encryption")
    async def follow_encryption(self, input: FollowInput) -> FollowResult:
        """One round of following an operation's mailboxes (retry-driven polling)."""
        raise NotImplementedError

    @activity.defn(name="escalate_unencrypted")
    async def escalate_unencrypted(self, input: EscalateInput) -> EscalateResult:
        """File a support case for the mailboxes still not encrypted."""
        raise NotImplementedError


# Workflows --------------------------------------------------------------------------------------------------------


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
    assigned_encrypts_on_migration: int = 0
    """Mail users showing the DEP: done, they encrypt when they migrate (never escalated)."""
    unknown: list[str] = Field(default_factory=list)
    """The first named identities no mailbox or mail user answers to: refused up front, never sent a call."""
    unknown_count: int = 0


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
    assigned_encrypts_on_migration: int = 0
    """Mail users (hybrid, not yet migrated) showing the DEP: assigned, they encrypt on migration; not in
    ``encrypted``, never escalated."""
    unknown: list[str] = Field(default_factory=list)
    """The first ``UNKNOWN_LISTED`` named identities no mailbox or mail user answers to: refused before anything
    was sent, not counted in ``total``."""
    unknown_count: int = 0


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


class ExchangeEncryptionVerifyInput(MailboxFollowInput):
    """Follow mailboxes until they are encrypted with a DEP, without assigning (after a roll, a new DEP, a move).

    Without ``mailboxes`` or ``mailbox_file``: every mailbox and mail user the DEP is assigned to.
    """

    follow_from: datetime | None = None
    """Internal (a key roll sets it to its refresh): the escalation delay counts from here, not from the assignment,
    since Microsoft re-encrypts the mailboxes after the refresh. Never set by callers."""
