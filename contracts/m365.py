"""The multi-workload family's contract: ``m365.dep.create``, ``m365.dep.assign``, ``m365.dep.disable``.

The multi-workload DEP (New-M365DataAtRestEncryptionPolicy) covers every tenant user's data in the workloads it
serves, Windows 365 Cloud PCs included; one is assigned to the whole tenant at a time
(Set-M365DataAtRestEncryptionPolicyAssignment). The workflows (:mod:`workflows.m365`) call the activities of
:class:`M365ActivityStub`, which :class:`activities.m365.M365Activities` implements.

What the service tells about an assignment (researched; see ``docs/m365.md``): Microsoft's cmdlet page of
Get-M365DataAtRestEncryptionPolicyAssignment documents no output properties; Microsoft365DSC's
``EXODataAtRestEncryptionPolicyAssignment`` resource reads the assigned policy from its ``Name``. Nothing documented
says whether the assignment is *in effect*: ckey waits out the documented window, then verifies that the assignment
still names the DEP (:data:`SIGNAL`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field, model_validator
from temporalio import activity

from ckey.models import DepName, TwoKeyUris, rule_error
from ckey.operations import Escalation, Params
from contracts.exchange import Description

ASSIGNMENT_WINDOW = timedelta(hours=24)
"""How long an assignment may take to be in effect (up to 24 hours): ckey verifies once it has passed."""
ASSIGNMENT_DEADLINE = timedelta(hours=26)
"""When an assignment not yet in effect is escalated (once): the window and a margin."""
POLL_INTERVAL = timedelta(minutes=15)
SIGNAL = "window-then-verify"
"""How ``m365.dep.assign`` knows the assignment is in effect: Microsoft documents no state for it, so ckey waits
out the documented window and verifies that Get-M365DataAtRestEncryptionPolicyAssignment names the DEP."""
SIGNAL_DETAIL = (
    "Microsoft documents no in-effect state for a multi-workload assignment: Get-M365DataAtRestEncryptionPolicy"
    "Assignment names the assigned DEP (Name) and Get-M365DataAtRestEncryptionPolicy its keys and Enabled, nothing "
    "more; ckey waits out the documented window after Set-M365DataAtRestEncryptionPolicyAssignment, then verifies "
    "that the assignment names this DEP and the DEP is enabled, and escalates once if that is not so by the deadline"
)


def assigned_refusal(name: str) -> str:
    """Why an assigned multi-workload DEP can't be disabled, and the ways out."""
    return (
        f"multi-workload DEP {name!r} is assigned to the tenant (Get-M365DataAtRestEncryptionPolicyAssignment names "
        "it): there is no cmdlet to unassign it; assign another multi-workload DEP first (m365.dep.assign), or roll "
        "the tenant back to Microsoft-managed keys (m365.rollback)"
    )


# Activities -------------------------------------------------------------------------------------------------------


class MultiDepRef(BaseModel):
    """A multi-workload DEP by name or GUID."""

    dep: str


class MultiDepInfo(BaseModel):
    """What ckey needs of a multi-workload DEP (Get-M365DataAtRestEncryptionPolicy)."""

    name: str
    guid: str | None = None
    azure_key_ids: list[str] = Field(default_factory=list)
    description: str | None = None
    enabled: bool = True


class FindMultiDepResult(BaseModel):
    """A multi-workload DEP found by name, or none."""

    dep: MultiDepInfo | None = None


class NewMultiDepInput(BaseModel):
    """New-M365DataAtRestEncryptionPolicy's parameters."""

    name: str
    description: str | None = None
    azure_key_ids: list[str]


class AssignmentQuery(BaseModel):
    """Nothing to name: the tenant's one multi-workload assignment."""


class AssignmentInfo(BaseModel):
    """Get-M365DataAtRestEncryptionPolicyAssignment: which multi-workload DEP the tenant is assigned, if any."""

    dep: str | None = None
    """The assigned DEP's name (the cmdlet's ``Name``); None when none is assigned."""
    properties: dict[str, Any] = Field(default_factory=dict)
    """Every property the service returned, as returned (for the record: nothing else is relied on)."""

    def names(self, dep: MultiDepInfo) -> bool:
        """Whether the assignment is of ``dep`` (by name, or by GUID where the service gives one)."""
        if self.dep is None:
            return False
        return self.dep.lower() == dep.name.lower() or (dep.guid is not None and self.dep.lower() == dep.guid.lower())


class AssignMultiDepResult(BaseModel):
    """What Set-M365DataAtRestEncryptionPolicyAssignment changed."""

    previous: str | None = None
    """The DEP assigned before (None: none)."""
    sent: bool = True
    """False when the tenant already showed the DEP assigned (a retry after the call went through): nothing sent."""


class DisableMultiDepResult(BaseModel):
    """What Set-M365DataAtRestEncryptionPolicy -Enabled $false changed."""

    name: str
    changed: bool
    """False when the DEP was already disabled (nothing sent)."""


class RefreshMultiWorkloadInput(BaseModel):
    """Read the tenant's multi-workload DEPs and assignment into the inventory."""

    operation_id: str | None = None
    """The operation that reads (recorded on the rows); None: the inventory's own sync."""


class RefreshMultiWorkloadResult(BaseModel):
    """What was read."""

    deps: int = 0
    assigned: str | None = None


class M365ActivityStub:
    """The multi-workload activities as the workflows call them; ``activities.m365`` implements them."""

    @activity.defn(name="m365_find_dep")
    async def m365_find_dep(self, input: MultiDepRef) -> FindMultiDepResult:
        """Get-M365DataAtRestEncryptionPolicy -Identity: the DEP of that name, or none."""
        raise NotImplementedError

    @activity.defn(name="m365_new_dep")
    async def m365_new_dep(self, input: NewMultiDepInput) -> MultiDepInfo:
        """New-M365DataAtRestEncryptionPolicy (a retry after it went through finds the DEP)."""
        raise NotImplementedError

    @activity.defn(name="m365_get_assignment")
    async def m365_get_assignment(self, input: AssignmentQuery) -> AssignmentInfo:
        """Get-M365DataAtRestEncryptionPolicyAssignment."""
        raise NotImplementedError

    @activity.defn(name="m365_assign_dep")
    async def m365_assign_dep(self, input: MultiDepRef) -> AssignMultiDepResult:
        """Set-M365DataAtRestEncryptionPolicyAssignment, unless the tenant already shows the DEP assigned."""
        raise NotImplementedError

    @activity.defn(name="m365_disable_dep")
    async def m365_disable_dep(self, input: MultiDepRef) -> DisableMultiDepResult:
        """Set-M365DataAtRestEncryptionPolicy -Enabled $false, unless the DEP is already disabled."""
        raise NotImplementedError

    @activity.defn(name="refresh_multi_workload")
    async def refresh_multi_workload(self, input: RefreshMultiWorkloadInput) -> RefreshMultiWorkloadResult:
        """Read every multi-workload DEP and the assignment into the inventory (``/api/m365/...``)."""
        raise NotImplementedError


# Workflows --------------------------------------------------------------------------------------------------------


class M365DepCreateParams(Params):
    """What a caller may set for ``m365.dep.create``: New-M365DataAtRestEncryptionPolicy's parameters."""

    name: DepName
    description: Description | None = None
    azure_key_ids: TwoKeyUris


class M365DepCreateInput(BaseModel):
    """``m365.dep.create``'s input (the params, validated by the seed's rules)."""

    name: DepName
    description: Description | None = None
    azure_key_ids: TwoKeyUris


class M365DepCreateResult(BaseModel):
    """The DEP, and whether this operation created it (an identical DEP that existed is success too)."""

    name: str
    guid: str | None = None
    created: bool


class M365DepRefParams(Params):
    """What a caller may set for ``m365.dep.assign`` and ``m365.dep.disable``: the multi-workload DEP."""

    dep: DepName


class M365DepAssignInput(BaseModel):
    """``m365.dep.assign``'s input: the DEP, and the deadlines and cadence of the settings (recorded on it)."""

    dep: DepName
    window: timedelta = ASSIGNMENT_WINDOW
    """How long after the assignment ckey waits before it verifies (Microsoft documents no in-effect state)."""
    deadline: timedelta = ASSIGNMENT_DEADLINE
    """After the assignment: not verified in effect by then, it is escalated once."""
    poll_interval: timedelta = POLL_INTERVAL
    """How often ckey verifies again after the window."""
    windows365_ready_deadline: timedelta = timedelta(hours=6)
    windows365_poll_interval: timedelta = timedelta(minutes=15)
    windows365_batch_size: int = Field(default=50, ge=1, le=1000)
    windows365_ready_limit: timedelta = timedelta(days=3)
    """How long the Windows 365 child keeps waiting for the Intune admin center before it fails."""
    follow_state: M365AssignFollow | None = None
    """Carried across continue-as-new while the assignment is verified; never set by callers."""

    @model_validator(mode="after")
    def _positive_and_ordered(self) -> M365DepAssignInput:
        durations = (self.window, self.deadline, self.poll_interval, self.windows365_poll_interval)
        if any(d <= timedelta(0) for d in durations) or self.windows365_ready_deadline <= timedelta(0):
            raise rule_error("durations-positive", "the assignment's window, deadline and intervals must be positive")
        if self.deadline < self.window:
            raise rule_error("deadline-after-window", "the deadline can't come before the window has passed")
        return self


class M365DepAssignResult(BaseModel):
    """How the assignment ended."""

    dep: str
    guid: str | None = None
    previous: str | None = None
    """The multi-workload DEP assigned before (None: none)."""
    sent: bool = True
    """False when the tenant already showed this DEP assigned: no Set- was sent."""
    assigned_at: datetime
    in_effect_at: datetime | None = None
    signal: str = SIGNAL
    """How ckey decided that the assignment is in effect (:data:`SIGNAL`)."""
    escalated: bool = False
    cloud_pcs: int = 0
    windows365_operation: str | None = None
    """The ``windows365.encrypt`` operation started for the tenant's Cloud PCs (None: no Cloud PCs)."""


class M365AssignFollow(BaseModel):
    """What a verification carries across continue-as-new: the result so far and the escalation made."""

    result: M365DepAssignResult
    escalations: list[Escalation] = Field(default_factory=list)


M365DepAssignInput.model_rebuild()


class M365DepDisableInput(BaseModel):
    """``m365.dep.disable``'s input."""

    dep: DepName


class M365DepDisableResult(BaseModel):
    """The DEP, and whether this operation disabled it (already disabled is success too)."""

    name: str
    guid: str | None = None
    disabled: bool
