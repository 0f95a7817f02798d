"""The operation machinery's vocabulary: states, progress, records, audit events, and what a kind declares.

An *operation* is one run of a Customer Key procedure (create a DEP, assign it, purge ...). Each kind is declared
once, as an :class:`OperationKind` in its workflow module's ``KINDS`` (its workflow, the models of its params, input
and result, the role a caller needs, its claim check, the DEP it concerns, the activities it calls);
:func:`workflows.product_registry` collects them. Workflows report a phase (their own enum), a :class:`Progress` and
an :class:`OperationState` through the ``progress`` query; activities persist the same to SQL with the audit trail.

Light on purpose: the workflows and their contracts import this module, so it imports no I/O library.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, computed_field, model_serializer

from ckey.models import Role

if TYPE_CHECKING:
    from ckey.config import Settings
    from ckey.m365 import M365Gateway
    from ckey.store.targets import TargetStore

ClaimCheck = Callable[[BaseModel, "TargetStore", str], Awaitable[BaseModel]]
"""Moves large inputs (lists of mailboxes) into SQL before the workflow starts: ``(params, targets, user)``."""
Preflight = Callable[[BaseModel, "TargetStore", "M365Gateway"], Awaitable[None]]
"""Run by the API after the claim check, before anything starts: ``(params, targets, m365)``; refuses a request that
cannot do anything (``PydanticCustomError``, answered 422 with its rule)."""


@dataclass(frozen=True)
class lazy:
    """A claim check named ``"module:function"``, imported on its first call.

    Claim checks talk to the store (SQLAlchemy); a kind declared next to its workflow names its claim check this way
    so that importing the workflow loads no store code. Only the API, which runs it, imports it.
    """

    target: str

    def resolve(self) -> ClaimCheck:
        """The named function (importing its module)."""
        module_name, _, attribute = self.target.partition(":")
        function: ClaimCheck = getattr(importlib.import_module(module_name), attribute)
        return function

    async def __call__(self, params: BaseModel, targets: TargetStore, user: str) -> BaseModel:
        """Run the named claim check."""
        return await self.resolve()(params, targets, user)


class LeaseMode(StrEnum):
    """How an operation holds a target: readers share it, a writer holds it alone."""

    READ = "read"
    WRITE = "write"


class Lease(BaseModel):
    """One target an operation holds from its start to its end, whatever the end.

    Targets are ``<type>:<name>``, lower case because Microsoft 365 and Azure compare these names without case:
    ``mailbox:<identity>``, ``dep:<workload>:<name>``, ``vault:<name>``, ``geo:<code>``.
    """

    model_config = ConfigDict(frozen=True)

    target: str = Field(min_length=3, max_length=400)
    mode: LeaseMode = LeaseMode.WRITE

    @classmethod
    def on(cls, kind: str, name: str, mode: LeaseMode = LeaseMode.WRITE) -> Lease:
        """The lease of a ``kind`` target (``dep:exchange``, ``vault`` ...) named ``name``."""
        return cls(target=f"{kind}:{name.strip().lower()}", mode=mode)


class LeaseRequest(BaseModel):
    """What an operation holds while it runs: named targets, and the mailboxes of a claim-checked set."""

    leases: list[Lease] = Field(default_factory=list)
    mailbox_set: str | None = None
    """A target set (``ckey.store.targets``) whose every identity is held as ``mailbox:<identity>``."""
    mailbox_mode: LeaseMode = LeaseMode.WRITE

    @property
    def empty(self) -> bool:
        """Whether the operation holds nothing."""
        return not self.leases and self.mailbox_set is None


LeasesOf = Callable[[BaseModel], LeaseRequest]
"""What an operation of a kind holds, from its validated (and claim-checked) params: ``(params)``."""


@dataclass(frozen=True)
class lazy_preflight:
    """A preflight named ``"module:function"``, imported on its first call (as :class:`lazy` for claim checks)."""

    target: str

    async def __call__(self, params: BaseModel, targets: TargetStore, m365: M365Gateway) -> None:
        """Run the named preflight."""
        module_name, _, attribute = self.target.partition(":")
        function: Preflight = getattr(importlib.import_module(module_name), attribute)
        await function(params, targets, m365)


BuildInput = Callable[[BaseModel, "Settings"], BaseModel]
"""Builds a workflow's input from its public params and the settings: ``(params, settings)``."""


class Params(BaseModel):
    """Base of every kind's public parameters: what a caller may set, bounded, unknown fields refused.

    State carried across continue-as-new and internal knobs never live here: they belong to the workflow's input,
    which the API builds from these parameters and the settings, never from the request.
    """

    model_config = ConfigDict(extra="forbid")


class OperationState(StrEnum):
    """Where an operation stands, as the API reports it."""

    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_MICROSOFT = "awaiting_microsoft"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        """Whether the operation has reached a final state."""
        return self in (OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELLED)


class Outcome(StrEnum):
    """The outcome an audit event records."""

    INTENT = "intent"
    """A state-changing call about to be sent; its outcome follows in another event."""
    OK = "ok"
    REFUSED = "refused"
    FAILED = "failed"
    INFO = "info"


class Progress(BaseModel):
    """How far an operation is: ``done`` of ``total`` ``unit`` (``total`` unknown until counted)."""

    done: int = 0
    total: int | None = None
    unit: str = "steps"
    assigned: int | None = None
    """For operations that assign before they follow: how many targets are assigned so far (``done`` counts the
    ones finished, e.g. encrypted), so that an assignment in progress never reads as 0 %."""

    @model_serializer(mode="wrap")
    def _without_unset_assigned(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # ``assigned`` only means something for operations that assign: elsewhere the record looks as it always did.
        data: dict[str, Any] = handler(self)
        if data.get("assigned") is None:
            data.pop("assigned", None)
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def percent(self) -> float | None:
        """``done`` as a percentage of ``total``, one decimal."""
        if not self.total:
            return None if self.total is None else 100.0
        return round(min(100.0, 100.0 * self.done / self.total), 1)


class Escalation(BaseModel):
    """Something handed to a human or to Microsoft (a support case, an alert)."""

    at: datetime
    reason: str
    case_id: str | None = None
    subjects: list[str] = Field(default_factory=list)


class Gate(BaseModel):
    """A human gate of an irreversible step and its signatures."""

    name: str
    status: str = "pending"
    signers: list[str] = Field(default_factory=list)
    required: int = 1


class OperationStatus(BaseModel):
    """What the ``progress`` query of every operation workflow answers."""

    kind: str
    state: OperationState = OperationState.RUNNING
    phase: str = "starting"
    progress: Progress = Field(default_factory=Progress)
    escalations: list[Escalation] = Field(default_factory=list)
    gates: list[Gate] = Field(default_factory=list)
    updated_at: datetime | None = None


class OperationRecord(BaseModel):
    """An operation as the API shows it and the store keeps it."""

    id: str
    kind: str
    state: OperationState
    phase: str
    progress: Progress = Field(default_factory=Progress)
    params: dict[str, Any] = Field(default_factory=dict)
    started_by: str
    started_at: datetime
    updated_at: datetime
    ended_at: datetime | None = None
    idempotency_key: str | None = None
    fingerprint: str | None = None
    dep: str | None = None
    escalations: list[Escalation] = Field(default_factory=list)
    gates: list[Gate] = Field(default_factory=list)
    result: dict[str, Any] | None = None
    error: str | None = None


class OperationUpdate(BaseModel):
    """A change to an operation's record; ``None`` fields are left as they are."""

    id: str
    at: datetime
    state: OperationState | None = None
    phase: str | None = None
    progress: Progress | None = None
    escalations: list[Escalation] | None = None
    gates: list[Gate] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None


class AuditEvent(BaseModel):
    """An audit entry to append: who did what, when, through which call, with which outcome."""

    key: str
    """Idempotency key: the operation id plus the step, so a retried write lands once."""
    at: datetime
    actor: str
    action: str
    outcome: Outcome = Outcome.OK
    operation_id: str | None = None
    target: str | None = None
    """The rendered cmdlet line or the API call."""
    detail: dict[str, Any] = Field(default_factory=dict)


class AuditRecord(AuditEvent):
    """An appended audit entry with its place in the hash chain."""

    seq: int
    prev_hash: str
    hash: str
    malformed: str | None = None
    """Set when the stored row does not parse: why. The entry is then a marker (``audit.malformed``)."""


@dataclass(frozen=True)
class KindUpdate:
    """An update a kind's running workflow accepts from the API (``POST /api/operations/{id}/<name>``).

    The API calls it by method reference, never by a string it spells itself, so renaming the workflow's update
    breaks the declaration at import, not a request at run time.
    """

    method: Callable[..., Any]
    """The ``@workflow.update`` method of the kind's workflow (``MailboxFollowWorkflow.close``)."""
    result_model: type[BaseModel]
    """What the update returns."""
    role: Role = Role.OPERATOR
    """The role a caller needs to send it."""
    description: str = ""

    @property
    def name(self) -> str:
        """The update's name as Temporal knows it (the method's name unless its decorator set one)."""
        # @workflow.update keeps its definition on the method (temporalio.workflow.UpdateMethodMultiParam._defn).
        defn = getattr(self.method, "_defn", None)
        name = getattr(defn, "name", None)
        return str(name) if name else self.method.__name__


@dataclass(frozen=True)
class OperationKind:
    """One kind of operation the API can start."""

    name: str
    """The kind, ``<family>.<object>.<verb>`` (``exchange.dep.create``)."""
    workflow: type
    """The ``@workflow.defn`` class; its run method takes ``input_model``."""
    input_model: type[BaseModel]
    role: Role = Role.OPERATOR
    description: str = ""
    dep_of: Callable[[BaseModel], str | None] | None = None
    """Which DEP the operation concerns, for the ``CkeyDep`` search attribute and the list filter."""
    claim_check: ClaimCheck | None = None
    """Run by the API after validation: large target lists go to SQL, the workflow gets their reference."""
    preflight: Preflight | None = None
    """Run by the API after the claim check: a request that can do nothing is refused before anything starts."""
    params_model: type[BaseModel] | None = None
    """What a caller may set (a :class:`Params`: bounded, unknown fields refused); ``None``: ``input_model`` is it."""
    build_input: BuildInput | None = None
    """The workflow's input from the validated (and claim-checked) params and the settings, which supply the
    internal knobs (deadlines, poll cadence); ``None``: the params' fields are the input's."""
    result_model: type[BaseModel] | None = None
    """What the workflow returns (the operation's ``result``)."""
    activities: tuple[type, ...] = ()
    """The activity stubs (``contracts.<family>``) whose activities the workflow calls: the worker registers their
    implementations. Every operation workflow also calls :class:`contracts.operation.OperationActivityStub`."""
    leases_of: LeasesOf | None = None
    """What the operation holds from start to end (mailboxes, a DEP, a vault): a second operation that needs a
    held target is refused before it starts, unless both only read. ``None``: it holds nothing."""
    updates: tuple[KindUpdate, ...] = ()
    """The updates the running workflow accepts from the API (``close`` for a follow-up); none: only cancel."""
    history: str | None = ""
    """The checked-in replay history of a run of the workflow (``tests/workflows/histories/<history>.json``);
    empty: the kind's name with ``_`` for ``.``; ``None`` only for a kind that refuses and never starts a workflow."""

    def update(self, name: str) -> KindUpdate | None:
        """The declared update of that name, if the kind has one."""
        return next((u for u in self.updates if u.name == name), None)

    @property
    def history_name(self) -> str | None:
        """The stem of the kind's replay history file, or ``None`` for a kind that never runs a workflow."""
        if self.history is None:
            return None
        return self.history or self.name.replace(".", "_")

    @property
    def public_params(self) -> type[BaseModel]:
        """The model the API validates a request's ``params`` with, and publishes in OpenAPI."""
        return self.params_model or self.input_model

    def make_input(self, params: BaseModel, settings: Settings) -> BaseModel:
        """The workflow's input for ``params``; never filled from the request beyond the public params."""
        if self.build_input is not None:
            return self.build_input(params, settings)
        if isinstance(params, self.input_model):
            return params
        return self.input_model.model_validate(dict(params))


class OperationRegistry:
    """Kind name → :class:`OperationKind`. The API, the worker and the tests read the same registry.

    The product's is :func:`workflows.product_registry`, built from the ``KINDS`` each workflow module declares.

    Raises:
        ValueError: two kinds of one name among ``kinds``.
    """

    def __init__(self, kinds: Iterable[OperationKind] = ()) -> None:
        self._kinds: dict[str, OperationKind] = {}
        for kind in kinds:
            if kind.name in self._kinds:
                raise ValueError(f"operation kind {kind.name!r} is declared twice")
            self._kinds[kind.name] = kind

    def register(self, kind: OperationKind) -> OperationKind:
        """Add a kind (tests add their own); a second registration of the same name replaces the first."""
        self._kinds[kind.name] = kind
        return kind

    def unregister(self, name: str) -> None:
        """Remove a kind (tests register their own kinds and take them away)."""
        self._kinds.pop(name, None)

    def get(self, name: str) -> OperationKind | None:
        """The kind of that name, if registered."""
        return self._kinds.get(name)

    def __iter__(self) -> Iterator[OperationKind]:
        return iter(sorted(self._kinds.values(), key=lambda k: k.name))


def request_fingerprint(kind: str, params: dict[str, Any]) -> str:
    """A stable hash of a start request, to tell a retry from a different request under the same key."""
    canonical = json.dumps({"kind": kind, "params": params}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
