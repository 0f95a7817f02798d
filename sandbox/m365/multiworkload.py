"""The multi-workload DEP (all tenant users, Windows 365 included): its cmdlets and its assignment to the tenant.

The assignment takes effect within up to 24 hours; for Windows 365 the Intune admin center is ready 3 to 4 hours
after it (what happens then to the Cloud PCs is :mod:`sandbox.m365.windows365`). A multi-workload DEP can be
disabled only once unassigned; it cannot be unassigned by cmdlet (the rollback is a support request) and it can
never be purged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from sandbox.m365 import deps
from sandbox.m365.clock import iso
from sandbox.m365.core import Core, KeyUnavailable
from sandbox.m365.db import CloudPcRow, DepRow
from sandbox.m365.durations import spread
from sandbox.m365.errors import INVALID_OPERATION, KEY_VAULT, CmdletFailure
from sandbox.m365.params import NO_CHANGE, Cmdlet, Kind, Output, Param, Spec
from sandbox.vocabulary import Workload

ASSIGNMENT = "multi_workload_assignment"


@dataclass(frozen=True)
class Assignment:
    """The tenant's multi-workload DEP assignment."""

    dep: str
    assigned_at: float
    effective_at: float
    intune_ready_at: float


class MultiWorkload:
    """The multi-workload cmdlets (served by Exchange Online PowerShell) and the tenant's assignment.

    Args:
        core: the tenant's shared state and key hierarchy.
    """

    def __init__(self, core: Core) -> None:
        self.core = core

    def cmdlets(self) -> dict[str, Cmdlet]:
        """The cmdlets by name."""
        s, b, w, ss, n = Kind.STRING, Kind.BOOL, Kind.SWITCH, Kind.STRINGS, Kind.NULLABLE_STRING
        specs = [
            Cmdlet(
                Spec(
                    "New-M365DataAtRestEncryptionPolicy",
                    (Param("Name", s, True), Param("AzureKeyIDs", ss, True), Param("Description", s)),
                ),
                self.new_policy,
                changes=True,
            ),
            Cmdlet(Spec("Get-M365DataAtRestEncryptionPolicy", (Param("Identity", s),)), self.get_policy),
            Cmdlet(
                Spec(
                    "Set-M365DataAtRestEncryptionPolicy",
                    (
                        Param("Identity", s, True),
                        Param("Enabled", b),
                        Param("Refresh", w),
                        Param("Description", s),
                        Param("PermanentDataPurgeRequested", w),
                        Param("PermanentDataPurgeReason", s),
                        Param("PermanentDataPurgeContact", s),
                    ),
                ),
                self.set_policy,
                changes=True,
            ),
            Cmdlet(
                Spec("Set-M365DataAtRestEncryptionPolicyAssignment", (Param("DataEncryptionPolicy", n, True),)),
                self.set_assignment,
                changes=True,
            ),
            Cmdlet(Spec("Get-M365DataAtRestEncryptionPolicyAssignment", ()), self.get_assignment),
        ]
        return {c.spec.name.lower(): c for c in specs}

    async def assignment(self) -> Assignment | None:
        """The current assignment, if any."""
        state = await self.core.get_state(ASSIGNMENT)
        if not state or not state.get("dep"):
            return None
        return Assignment(
            str(state["dep"]),
            float(state["assigned_at"]),
            float(state["effective_at"]),
            float(state["intune_ready_at"]),
        )

    # Cmdlets ----------------------------------------------------------------------------------------------------

    async def new_policy(self, p: dict[str, Any]) -> Output:
        """New-M365DataAtRestEncryptionPolicy -Name -AzureKeyIDs [-Description]."""
        dep = await deps.create(
            self.core, Workload.MULTI_WORKLOAD, p["Name"], p.get("AzureKeyIDs"), p.get("Description")
        )
        return Output([self._object(dep)])

    async def get_policy(self, p: dict[str, Any]) -> Output:
        """Get-M365DataAtRestEncryptionPolicy [-Identity]."""
        async with self.core.db.session() as s:
            if p.get("Identity"):
                dep = await deps.require(s, self.core, Workload.MULTI_WORKLOAD, p["Identity"])
                return Output([self._object(dep)])
            return Output([self._object(d) for d in await deps.live(s, Workload.MULTI_WORKLOAD)])

    @staticmethod
    def _object(dep: DepRow) -> dict[str, Any]:
        out = deps.to_object(dep)
        for purge_field in ("PermanentDataPurgeRequested", "PermanentDataPurgeReason", "PermanentDataPurgeContact"):
            out.pop(purge_field)
        return out

    async def set_policy(self, p: dict[str, Any]) -> Output:
        """Set-M365DataAtRestEncryptionPolicy -Identity [-Enabled] [-Refresh] [-Description]."""
        if any(k.startswith("PermanentDataPurge") for k in p):
            raise CmdletFailure(
                "Purging of multi-workload DEP isn't supported for Customer Key: it would make data across multiple "
                "workloads inaccessible. To exit Microsoft 365 altogether, delete the tenant in Microsoft Entra ID.",
                INVALID_OPERATION,
            )
        now = self.core.now()
        current = await self.assignment()
        async with self.core.db.session() as s, s.begin():
            dep = await deps.require(s, self.core, Workload.MULTI_WORKLOAD, p["Identity"])
            changed = False
            if p.get("Refresh"):
                await self.core.rewrap_dep_key(dep, Workload.MULTI_WORKLOAD, KEY_VAULT)
                dep.refreshed_at = now
                changed = True
            if "Enabled" in p and p["Enabled"] != dep.enabled:
                if not p["Enabled"] and current is not None and current.dep == dep.guid:
                    raise CmdletFailure(
                        f"The multi-workload data encryption policy '{dep.name}' is assigned to the tenant. Before you "
                        f"disable a multi-workload DEP, unassign it from workloads in your tenant.",
                        INVALID_OPERATION,
                    )
                dep.enabled = bool(p["Enabled"])
                changed = True
            if "Description" in p and p["Description"] != dep.description:
                dep.description = p["Description"]
                changed = True
            if not changed:
                return Output(warnings=[NO_CHANGE.format(dep.name)])
            dep.changed_at = now
        return Output()

    async def set_assignment(self, p: dict[str, Any]) -> Output:
        """Set-M365DataAtRestEncryptionPolicyAssignment -DataEncryptionPolicy <name or ID>."""
        identity = p.get("DataEncryptionPolicy")
        if identity is None:
            raise CmdletFailure(
                "The multi-workload data encryption policy can't be unassigned with this cmdlet. To roll back to "
                "Microsoft-managed keys, file a support request with Microsoft (tenant FQDN, contact, reason, incident "
                "number).",
                INVALID_OPERATION,
            )
        now = self.core.now()
        current = await self.assignment()
        async with self.core.db.session() as s:
            dep = await deps.require(s, self.core, Workload.MULTI_WORKLOAD, identity)
        if not dep.enabled:
            raise CmdletFailure(
                f"The multi-workload data encryption policy '{dep.name}' is disabled; enable it before assigning it.",
                INVALID_OPERATION,
            )
        if current is not None and current.dep == dep.guid:
            return Output(warnings=[NO_CHANGE.format(dep.name)])
        try:
            await self.core.open_dep_key(dep, record_alert=False)
        except KeyUnavailable as exc:
            raise CmdletFailure(exc.message, KEY_VAULT, 503 if exc.transient else 400) from None
        d = self.core.durations
        token = f"{dep.guid}/{now}"
        state = {
            "dep": dep.guid,
            "assigned_at": now,
            "effective_at": now + spread(d.multi_workload_effect_min, d.multi_workload_effect_max, token),
            "intune_ready_at": now + spread(d.intune_ready_min, d.intune_ready_max, token),
        }
        await self.core.set_state(ASSIGNMENT, state)
        return Output()

    async def get_assignment(self, p: dict[str, Any]) -> Output:
        """Get-M365DataAtRestEncryptionPolicyAssignment: ``Name``, the assigned DEP, as clients read it.

        Microsoft documents no output properties; Microsoft365DSC reads ``Name``. ``DataEncryptionPolicyId``,
        ``Status``, ``AssignedDateTime`` and ``EffectiveDateTime`` are the sandbox's own (see the README): a client
        that relies on them would rely on something the real service is not known to return.
        """
        current = await self.assignment()
        if current is None:
            return Output([{"Name": None, "DataEncryptionPolicyId": None, "Status": "NotAssigned"}])
        dep = await self.core.dep(current.dep)
        applied = self.core.now() >= current.effective_at
        return Output(
            [
                {
                    "Name": dep.name if dep else None,
                    "DataEncryptionPolicyId": current.dep,
                    "Status": "Applied" if applied else "Pending",
                    "AssignedDateTime": iso(current.assigned_at),
                    "EffectiveDateTime": iso(current.effective_at) if applied else None,
                }
            ]
        )

    async def roll_back(self) -> None:
        """Microsoft's side of the rollback request: re-wrap with Microsoft-managed keys, then unassign.

        Raises:
            KeyUnavailable: the customer's keys can no longer be reached (the seed: keep them until Microsoft is done).
        """
        current = await self.assignment()
        if current is None:
            return
        dep = await self.core.dep(current.dep)
        if dep is not None:
            await self.core.open_dep_key(dep, record_alert=False)
        await self.core.set_state(ASSIGNMENT, {})
        async with self.core.db.session() as s, s.begin():
            for pc in (await s.scalars(select(CloudPcRow))).all():
                pc.cmk_requested_at = pc.cmk_due_at = None
                pc.bulk_action_id = None
