"""Multi-workload activities: the tenant's multi-workload DEPs and its assignment (Exchange Online PowerShell).

Every state-changing cmdlet is audited before it is sent (intent) and after (outcome), and each activity looks
before it acts: a retry after a call that went through finds its effect and sends nothing again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.operation import audit_call
from ckey.m365 import Cmdlet, CmdletError, M365Gateway
from ckey.operations import Outcome
from ckey.store import Store
from ckey.store.multiworkload import MultiWorkloadStore, assignment_info, dep_info
from contracts.m365 import (
    AssignmentInfo,
    AssignmentQuery,
    AssignMultiDepResult,
    DisableMultiDepResult,
    FindMultiDepResult,
    M365ActivityStub,
    MultiDepInfo,
    MultiDepRef,
    NewMultiDepInput,
    RefreshMultiWorkloadInput,
    RefreshMultiWorkloadResult,
)

if TYPE_CHECKING:
    from activities import Gateways


def _not_found(exc: CmdletError) -> bool:
    return exc.code == "ManagementObjectNotFoundException" or "couldn't be found" in exc.message.lower()


def _refusal(exc: CmdletError) -> ApplicationError:
    return ApplicationError(exc.message, exc.line, type=exc.code or "CmdletRefused", non_retryable=True)


class M365Activities(M365ActivityStub):
    """Activities over the multi-workload cmdlets.

    Args:
        m365: the Microsoft 365 gateway.
        store: the audit trail and the inventory.
    """

    @classmethod
    def from_gateways(cls, gateways: Gateways) -> M365Activities | None:
        """The family built from the worker's gateways; ``None`` without the Microsoft 365 gateway."""
        if gateways.m365 is None:
            return None
        return cls(gateways.m365, gateways.store)

    def __init__(self, m365: M365Gateway, store: Store) -> None:
        self.m365 = m365
        self.store = store
        self.inventory = MultiWorkloadStore(store)

    def _audited(self, step: str = "") -> M365Gateway:
        """The gateway, recording each call's rendered line (a state-changing one before and after it is sent)."""

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

    def _source(self) -> str | None:
        return activity.info().workflow_id if activity.in_activity() else None

    async def _find(self, dep: str, step: str = "") -> MultiDepInfo | None:
        try:
            found = await self._audited(step).get_m365_data_at_rest_encryption_policy(dep)
        except CmdletError as exc:
            if _not_found(exc):
                return None
            raise _refusal(exc) from None
        return dep_info(found[0]) if found else None

    async def _sent_before(self, cmdlet: str) -> bool:
        """Whether this operation recorded the cmdlet's intent before (an attempt that died after sending it)."""
        if not activity.in_activity():
            return False
        events = await self.store.list_audit(operation_id=activity.info().workflow_id, limit=100_000)
        return any(e.action == f"m365.{cmdlet}" and e.outcome == Outcome.INTENT for e in events)

    @activity.defn
    async def m365_find_dep(self, input: MultiDepRef) -> FindMultiDepResult:
        """Get-M365DataAtRestEncryptionPolicy -Identity <name>; none when there is no such DEP."""
        return FindMultiDepResult(dep=await self._find(input.dep))

    @activity.defn
    async def m365_new_dep(self, input: NewMultiDepInput) -> MultiDepInfo:
        """New-M365DataAtRestEncryptionPolicy. A retry after it went through finds the DEP and returns it."""
        existing = await self._find(input.name, "/look")
        if existing is not None:
            return existing
        try:
            dep = await self._audited().new_m365_data_at_rest_encryption_policy(
                input.name, input.azure_key_ids, input.description
            )
        except CmdletError as exc:
            raise _refusal(exc) from None
        info = dep_info(dep)
        await self.inventory.record_dep(info, datetime.now(UTC), self._source())
        return info

    @activity.defn
    async def m365_get_assignment(self, input: AssignmentQuery) -> AssignmentInfo:
        """Get-M365DataAtRestEncryptionPolicyAssignment (recorded in the inventory as read)."""
        try:
            found = await self._audited().get_m365_data_at_rest_encryption_policy_assignment()
        except CmdletError as exc:
            raise _refusal(exc) from None
        info = assignment_info(found)
        await self.inventory.record_assignment(info, datetime.now(UTC), self._source())
        return info

    @activity.defn
    async def m365_assign_dep(self, input: MultiDepRef) -> AssignMultiDepResult:
        """Set-M365DataAtRestEncryptionPolicyAssignment -DataEncryptionPolicy <dep>.

        Looks first: a tenant that already shows the DEP assigned (this activity's earlier attempt went through
        before its worker died, or the DEP was assigned before) is sent nothing.
        """
        dep = await self._find(input.dep, "/look")
        if dep is None:
            raise ApplicationError(
                f"there is no multi-workload DEP named {input.dep!r}", type="m365-dep-exists", non_retryable=True
            )
        before = assignment_info(await self._audited("/before").get_m365_data_at_rest_encryption_policy_assignment())
        if before.names(dep):
            return AssignMultiDepResult(previous=before.dep, sent=False)
        try:
            await self._audited().set_m365_data_at_rest_encryption_policy_assignment(dep.name)
        except CmdletError as exc:
            raise _refusal(exc) from None
        now = datetime.now(UTC)
        after = assignment_info(await self._audited("/after").get_m365_data_at_rest_encryption_policy_assignment())
        await self.inventory.record_assignment(after, now, self._source(), assigned_at=now)
        return AssignMultiDepResult(previous=before.dep, sent=True)

    @activity.defn
    async def m365_disable_dep(self, input: MultiDepRef) -> DisableMultiDepResult:
        """Set-M365DataAtRestEncryptionPolicy -Identity <dep> -Enabled $false, unless it is already disabled."""
        dep = await self._find(input.dep, "/look")
        if dep is None:
            raise ApplicationError(
                f"there is no multi-workload DEP named {input.dep!r}", type="m365-dep-exists", non_retryable=True
            )
        if not dep.enabled:
            # Disabled by an earlier attempt of this operation whose worker died before the answer: it changed it.
            return DisableMultiDepResult(
                name=dep.name, changed=await self._sent_before("Set-M365DataAtRestEncryptionPolicy")
            )
        try:
            await self._audited().set_m365_data_at_rest_encryption_policy(dep.name, enabled=False)
        except CmdletError as exc:
            raise _refusal(exc) from None
        await self.inventory.record_dep(dep.model_copy(update={"enabled": False}), datetime.now(UTC), self._source())
        return DisableMultiDepResult(name=dep.name, changed=True)

    @activity.defn
    async def refresh_multi_workload(self, input: RefreshMultiWorkloadInput) -> RefreshMultiWorkloadResult:
        """Get-M365DataAtRestEncryptionPolicy and Get-M365DataAtRestEncryptionPolicyAssignment into the inventory.

        The inventory's sync calls it too (``inventory.sync``); the DEPs the tenant no longer lists are forgotten.
        """
        gateway = self._audited()
        try:
            deps = [dep_info(d) for d in await gateway.get_m365_data_at_rest_encryption_policy()]
            assignment = assignment_info(await gateway.get_m365_data_at_rest_encryption_policy_assignment())
        except CmdletError as exc:
            raise _refusal(exc) from None
        now = datetime.now(UTC)
        source = input.operation_id or self._source()
        await self.inventory.record_deps(deps, now, source)
        await self.inventory.record_assignment(assignment, now, source)
        return RefreshMultiWorkloadResult(deps=len(deps), assigned=assignment.dep)
