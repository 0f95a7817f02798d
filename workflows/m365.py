"""Multi-workload operations: ``m365.dep.create``, ``m365.dep.assign``, ``m365.dep.disable``.

Seed sections: "Create a DEP for use with multiple workloads for all tenant users", "Assign multi-workload policy"
("For Windows 365, within 3 to 4 hours of completing this step, the Intune admin center updates"), "Get details
about DEPs you use with multiple workloads", "Get multi-workload DEP assignment information", "Disable a
multi-workload DEP" ("Before you disable a multi-workload DEP, unassign the DEP from workloads in your tenant").
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from ckey import temporal as sa
    from ckey.models import Role, Workload, human_duration
    from ckey.operations import (
        Escalation,
        Lease,
        LeaseMode,
        LeaseRequest,
        OperationKind,
        OperationState,
        lazy_preflight,
    )
    from contracts.alerts import AlertActivityStub
    from contracts.keyvault import KeyVaultActivityStub
    from contracts.m365 import (
        SIGNAL,
        SIGNAL_DETAIL,
        AssignmentInfo,
        AssignmentQuery,
        M365ActivityStub,
        M365AssignFollow,
        M365DepAssignInput,
        M365DepAssignResult,
        M365DepCreateInput,
        M365DepCreateParams,
        M365DepCreateResult,
        M365DepDisableInput,
        M365DepDisableResult,
        M365DepRefParams,
        MultiDepInfo,
        MultiDepRef,
        NewMultiDepInput,
        RefreshMultiWorkloadInput,
        assigned_refusal,
    )
    from contracts.windows365 import (
        WINDOWS365_ENCRYPT_WORKFLOW,
        CloudPcsInput,
        Windows365ActivityStub,
        Windows365EncryptInput,
    )
    from workflows.keyvault import check_dep_keys
    from workflows.operation import OperationWorkflow, call

if TYPE_CHECKING:
    from ckey.config import Settings

WINDOWS365_KIND = "windows365.encrypt"
DEP_LEASE = "dep:multi_workload"
ASSIGNMENT_LEASE = ("m365:assignment", "tenant")
CHILD_ID_MAX = 64


def _key(uri: str) -> str:
    return uri.lower().rstrip("/")


def _no_dep(name: str) -> ApplicationError:
    return ApplicationError(
        f"there is no multi-workload DEP named {name!r}", type="m365-dep-exists", non_retryable=True
    )


# m365.dep.create ---------------------------------------------------------------------------------------------------


class M365CreatePhase(StrEnum):
    """Phases of ``m365.dep.create``."""

    CHECKING_KEYS = "checking_keys"
    CHECKING_EXISTING = "checking_existing"
    CREATING = "creating"
    DONE = "done"


@workflow.defn
class M365DepCreateWorkflow(OperationWorkflow):
    """Create a multi-workload DEP once every rule holds for the Microsoft 365 data-at-rest principal."""

    kind = "m365.dep.create"

    @workflow.run
    async def run(self, input: M365DepCreateInput) -> M365DepCreateResult:
        """Check the keys, look for the DEP, create it."""
        return await self.operate(input, lambda: self._create(input))

    async def _create(self, input: M365DepCreateInput) -> M365DepCreateResult:
        keys = [str(k) for k in input.azure_key_ids]
        await self.set_phase(M365CreatePhase.CHECKING_KEYS, {"keys": keys, "workload": Workload.MULTI_WORKLOAD})
        await check_dep_keys(keys, Workload.MULTI_WORKLOAD)

        await self.set_phase(M365CreatePhase.CHECKING_EXISTING)
        existing = (await call(M365ActivityStub.m365_find_dep, MultiDepRef(dep=input.name))).dep
        if existing is not None:
            theirs, ours = {_key(k) for k in existing.azure_key_ids}, {_key(k) for k in keys}
            if theirs != ours:
                raise ApplicationError(
                    f"a multi-workload DEP named {existing.name!r} exists with other keys: it has "
                    f"{', '.join(sorted(theirs - ours))}, not {', '.join(sorted(ours - theirs))}",
                    {"existing": existing.azure_key_ids, "requested": keys},
                    type="dep-name-taken",
                    non_retryable=True,
                )
            await self.set_phase(M365CreatePhase.DONE, {"guid": existing.guid, "created": False})
            return M365DepCreateResult(name=existing.name, guid=existing.guid, created=False)

        await self.set_phase(M365CreatePhase.CREATING)
        dep = await call(
            M365ActivityStub.m365_new_dep,
            NewMultiDepInput(name=input.name, description=input.description, azure_key_ids=keys),
        )
        await self.set_phase(M365CreatePhase.DONE, {"guid": dep.guid, "created": True})
        return M365DepCreateResult(name=dep.name, guid=dep.guid, created=True)


# m365.dep.assign ---------------------------------------------------------------------------------------------------


class M365AssignPhase(StrEnum):
    """Phases of ``m365.dep.assign``."""

    VALIDATING = "validating"
    ASSIGNING = "assigning"
    WAITING = "waiting"
    """The documented window after the assignment (no in-effect state is documented)."""
    VERIFYING = "verifying"
    ESCALATED = "escalated"
    DONE = "done"


def build_assign_input(params: BaseModel, settings: Settings) -> M365DepAssignInput:
    """The assignment's input: the DEP, the window, deadline and cadence, and the Windows 365 settings."""
    return M365DepAssignInput(
        dep=str(getattr(params, "dep", "")),
        window=settings.m365_assignment_window,
        deadline=settings.m365_assignment_deadline,
        poll_interval=settings.m365_assignment_poll_interval,
        windows365_ready_deadline=settings.windows365_ready_deadline,
        windows365_poll_interval=settings.windows365_poll_interval,
        windows365_batch_size=settings.windows365_batch_size,
        windows365_ready_limit=settings.windows365_ready_limit,
    )


@workflow.defn
class M365DepAssignWorkflow(OperationWorkflow):
    """Assign a multi-workload DEP to the tenant, start the Cloud PCs' encryption, follow until in effect."""

    kind = "m365.dep.assign"

    @workflow.run
    async def run(self, input: M365DepAssignInput) -> M365DepAssignResult:
        """Validate, assign, start Windows 365, wait out the window, verify."""
        return await self.operate(input, lambda: self._assign(input))

    async def _assign(self, input: M365DepAssignInput) -> M365DepAssignResult:
        if input.follow_state is None:
            result, dep = await self._assign_and_wait(input)
        else:
            # A continued run: the assignment was made and its window waited out; verification goes on.
            result = input.follow_state.result
            dep = MultiDepInfo(name=result.dep, guid=result.guid)
            self._status.escalations = list(input.follow_state.escalations)
            self.set_progress(0, 1, "assignment in effect")
        await self._verify(input, dep, result)
        self.set_progress(1, 1)
        await self.set_phase(
            M365AssignPhase.DONE,
            {
                "in_effect_at": result.in_effect_at.isoformat() if result.in_effect_at else None,
                "signal": SIGNAL,
                "windows365": result.windows365_operation,
            },
        )
        return result

    async def _assign_and_wait(self, input: M365DepAssignInput) -> tuple[M365DepAssignResult, MultiDepInfo]:
        # The plan, first: how this operation will know the assignment is in effect.
        await self.set_phase(
            M365AssignPhase.VALIDATING,
            {
                "signal": SIGNAL,
                "plan": SIGNAL_DETAIL,
                "window": human_duration(input.window),
                "deadline": human_duration(input.deadline),
            },
        )
        dep = (await call(M365ActivityStub.m365_find_dep, MultiDepRef(dep=input.dep))).dep
        if dep is None:
            raise _no_dep(input.dep)
        if not dep.enabled:
            raise ApplicationError(
                f"multi-workload DEP {dep.name!r} is disabled: enable it (Set-M365DataAtRestEncryptionPolicy "
                "-Enabled $true) before assigning it",
                type="m365-dep-enabled",
                non_retryable=True,
            )

        await self.set_phase(M365AssignPhase.ASSIGNING, {"dep": dep.name, "guid": dep.guid})
        assigned = await call(M365ActivityStub.m365_assign_dep, MultiDepRef(dep=dep.name))
        assigned_at = workflow.now()
        await self.audit(
            "m365.assigned",
            detail={"dep": dep.name, "previous": assigned.previous, "sent": assigned.sent},
        )
        result = M365DepAssignResult(
            dep=dep.name, guid=dep.guid, previous=assigned.previous, sent=assigned.sent, assigned_at=assigned_at
        )
        result.cloud_pcs = (await call(Windows365ActivityStub.count_cloud_pcs, CloudPcsInput())).count
        if result.cloud_pcs > 0:
            result.windows365_operation = await self._start_windows365(input, dep, assigned_at)
            await self.audit(
                "m365.windows365.started",
                detail={"operation": result.windows365_operation, "cloud_pcs": result.cloud_pcs},
            )
        await call(M365ActivityStub.refresh_multi_workload, RefreshMultiWorkloadInput(operation_id=self.operation_id))

        self.set_progress(0, 1, "assignment in effect")
        await self.set_phase(
            M365AssignPhase.WAITING,
            {"until": (assigned_at + input.window).isoformat(), "windows365": result.windows365_operation},
        )
        await workflow.sleep(input.window)
        return result, dep

    async def _verify(self, input: M365DepAssignInput, dep: MultiDepInfo, result: M365DepAssignResult) -> None:
        """Verify that the assignment names the DEP and the DEP is enabled; escalate once at the deadline.

        Past the deadline it goes on verifying (Microsoft may still fix it) until an operator cancels; the history
        stays bounded by continuing as new.
        """
        await self.set_phase(M365AssignPhase.ESCALATED if result.escalated else M365AssignPhase.VERIFYING)
        deadline = result.assigned_at + input.deadline
        while True:
            seen: AssignmentInfo = await call(M365ActivityStub.m365_get_assignment, AssignmentQuery())
            if seen.dep is not None and not seen.names(dep):
                raise ApplicationError(
                    f"the tenant's multi-workload assignment names {seen.dep!r}, not {dep.name!r}: another "
                    "assignment replaced this one",
                    seen.properties,
                    type="m365-assignment-replaced",
                    non_retryable=True,
                )
            current = (await call(M365ActivityStub.m365_find_dep, MultiDepRef(dep=dep.name))).dep
            if seen.dep is not None and current is not None and current.enabled:
                result.in_effect_at = workflow.now()
                return
            if not result.escalated and workflow.now() >= deadline:
                result.escalated = True
                why = "not assigned" if seen.dep is None else "disabled or gone"
                await self.escalate(
                    Escalation(
                        at=workflow.now(),
                        reason=f"multi-workload DEP {dep.name!r} not verified in effect "
                        f"{human_duration(input.deadline)} after assignment ({why})",
                        subjects=[dep.name],
                    )
                )
                await self.set_phase(M365AssignPhase.ESCALATED, {"dep": dep.name, "assignment": seen.properties})
            if workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                follow = M365AssignFollow(result=result, escalations=self._status.escalations)
                workflow.continue_as_new(input.model_copy(update={"follow_state": follow}))
            wait = input.poll_interval
            if not result.escalated:
                wait = min(wait, max(timedelta(seconds=1), deadline - workflow.now()))
            await workflow.sleep(wait)

    async def _start_windows365(self, input: M365DepAssignInput, dep: MultiDepInfo, assigned_at: Any) -> str:
        """Start ``windows365.encrypt`` as a child that outlives this operation and reports on its own record."""
        child_id = f"{self.operation_id}-windows365"
        if len(child_id) > CHILD_ID_MAX:
            # An operation id is at most 64 characters (the API's and the store's bound): a long parent's is cut.
            digest = hashlib.sha256(self.operation_id.encode()).hexdigest()[:12]
            child_id = f"{self.operation_id[: CHILD_ID_MAX - 24]}-{digest}-windows365"
        pairs: list[SearchAttributePair[Any]] = []
        # As the API sets them, where the API set this operation's: a server without them refuses them.
        if workflow.info().typed_search_attributes.get(sa.KIND) is not None:
            pairs = [
                SearchAttributePair(sa.KIND, WINDOWS365_KIND),
                SearchAttributePair(sa.STATE, OperationState.RUNNING.value),
                SearchAttributePair(sa.STARTED_BY, self.started_by),
                SearchAttributePair(sa.DEP, dep.name),
            ]
        await workflow.start_child_workflow(
            WINDOWS365_ENCRYPT_WORKFLOW,
            Windows365EncryptInput(
                dep=dep.name,
                assigned_at=assigned_at,
                ready_deadline=input.windows365_ready_deadline,
                poll_interval=input.windows365_poll_interval,
                batch_size=input.windows365_batch_size,
                ready_limit=input.windows365_ready_limit,
            ),
            id=child_id,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            memo={"kind": WINDOWS365_KIND, "started_by": self.started_by, "dep": dep.name},
            search_attributes=TypedSearchAttributes(pairs) if pairs else None,
        )
        return child_id


# m365.dep.disable --------------------------------------------------------------------------------------------------


class M365DisablePhase(StrEnum):
    """Phases of ``m365.dep.disable``."""

    VALIDATING = "validating"
    DISABLING = "disabling"
    DONE = "done"


@workflow.defn
class M365DepDisableWorkflow(OperationWorkflow):
    """Disable a multi-workload DEP, refusing while it is the tenant's assignment."""

    kind = "m365.dep.disable"

    @workflow.run
    async def run(self, input: M365DepDisableInput) -> M365DepDisableResult:
        """Check it is not assigned, disable it."""
        return await self.operate(input, lambda: self._disable(input))

    async def _disable(self, input: M365DepDisableInput) -> M365DepDisableResult:
        await self.set_phase(M365DisablePhase.VALIDATING)
        dep = (await call(M365ActivityStub.m365_find_dep, MultiDepRef(dep=input.dep))).dep
        if dep is None:
            raise _no_dep(input.dep)
        assignment = await call(M365ActivityStub.m365_get_assignment, AssignmentQuery())
        if assignment.names(dep):
            raise ApplicationError(
                assigned_refusal(dep.name), assignment.properties, type="m365-dep-assigned", non_retryable=True
            )
        if not dep.enabled:
            await self.set_phase(M365DisablePhase.DONE, {"disabled": False, "already": True})
            return M365DepDisableResult(name=dep.name, guid=dep.guid, disabled=False)
        await self.set_phase(M365DisablePhase.DISABLING, {"dep": dep.name})
        done = await call(M365ActivityStub.m365_disable_dep, MultiDepRef(dep=dep.name))
        await self.set_phase(M365DisablePhase.DONE, {"disabled": done.changed})
        return M365DepDisableResult(name=dep.name, guid=dep.guid, disabled=done.changed)


# Registration ------------------------------------------------------------------------------------------------------


def _dep(params: BaseModel) -> str | None:
    return str(getattr(params, "dep", None) or getattr(params, "name", None) or "") or None


def _creates_dep(params: BaseModel) -> LeaseRequest:
    """A DEP being created is held alone: a second creation of the same name waits for this one's outcome."""
    return LeaseRequest(leases=[Lease.on(DEP_LEASE, str(getattr(params, "name", "")))])


def _assigns_tenant(params: BaseModel) -> LeaseRequest:
    """The assignment writes the tenant's one assignment and reads its DEP (no disable meanwhile)."""
    return LeaseRequest(
        leases=[
            Lease.on(DEP_LEASE, str(getattr(params, "dep", "")), LeaseMode.READ),
            Lease.on(*ASSIGNMENT_LEASE),
        ]
    )


def _disables_dep(params: BaseModel) -> LeaseRequest:
    """Disabling writes the DEP and reads the assignment (no assignment of it meanwhile)."""
    return LeaseRequest(
        leases=[
            Lease.on(DEP_LEASE, str(getattr(params, "dep", ""))),
            Lease.on(*ASSIGNMENT_LEASE, LeaseMode.READ),
        ]
    )


KINDS: tuple[OperationKind, ...] = (
    OperationKind(
        name="m365.dep.create",
        workflow=M365DepCreateWorkflow,
        input_model=M365DepCreateInput,
        params_model=M365DepCreateParams,
        role=Role.OPERATOR,
        description="Create a multi-workload DEP (New-M365DataAtRestEncryptionPolicy) after checking both keys "
        "for the Microsoft 365 data-at-rest principal.",
        dep_of=_dep,
        leases_of=_creates_dep,
        result_model=M365DepCreateResult,
        activities=(KeyVaultActivityStub, M365ActivityStub),
    ),
    OperationKind(
        name="m365.dep.assign",
        workflow=M365DepAssignWorkflow,
        input_model=M365DepAssignInput,
        params_model=M365DepRefParams,
        build_input=build_assign_input,
        role=Role.OPERATOR,
        description="Assign a multi-workload DEP to the tenant (Set-M365DataAtRestEncryptionPolicyAssignment), "
        "start the Windows 365 Cloud PCs' encryption, follow until in effect (up to 24 hours).",
        dep_of=_dep,
        leases_of=_assigns_tenant,
        preflight=lazy_preflight("ckey.store.multiworkload:preflight_assign"),
        result_model=M365DepAssignResult,
        # AlertActivityStub: an escalation is also posted to the alert webhook (OperationWorkflow.escalate).
        activities=(M365ActivityStub, Windows365ActivityStub, AlertActivityStub),
    ),
    OperationKind(
        name="m365.dep.disable",
        workflow=M365DepDisableWorkflow,
        input_model=M365DepDisableInput,
        params_model=M365DepRefParams,
        role=Role.OPERATOR,
        description="Disable a multi-workload DEP (Set-M365DataAtRestEncryptionPolicy -Enabled $false); refused "
        "while it is assigned to the tenant.",
        dep_of=_dep,
        leases_of=_disables_dep,
        preflight=lazy_preflight("ckey.store.multiworkload:preflight_disable"),
        result_model=M365DepDisableResult,
        activities=(M365ActivityStub,),
    ),
)
"""The kinds this module runs, declared once: the registry (:func:`workflows.product_registry`) collects them."""
