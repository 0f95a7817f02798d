"""Windows 365's side of Customer Key (Microsoft Graph): the tenant's Cloud PC encryption setting and the Cloud PCs.

The setting turns customer-managed once the Intune admin center is ready, 3 to 4 hours after the multi-workload
assignment (:mod:`sandbox.m365.multiworkload`); from then existing Cloud PCs can be re-encrypted with the
customer-managed key, each taking its time (a Graph bulk action).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from sandbox.m365.clock import iso
from sandbox.m365.core import Core
from sandbox.m365.db import BulkActionRow, CloudPcRow
from sandbox.m365.durations import spread
from sandbox.m365.errors import GraphError
from sandbox.m365.multiworkload import Assignment

CMK = "customerManagedKey"
PMK = "platformManagedKey"
BULK_MODIFY = "#microsoft.graph.cloudPcBulkModifyDiskEncryptionType"


class Windows365:
    """Windows 365's Graph resources: the tenant encryption setting, Cloud PCs, disk encryption bulk actions.

    Args:
        core: the tenant's shared state.
        assignment: the tenant's multi-workload assignment, if any
            (:meth:`~sandbox.m365.multiworkload.MultiWorkload.assignment`).
    """

    def __init__(self, core: Core, assignment: Callable[[], Awaitable[Assignment | None]]) -> None:
        self.core = core
        self.assignment = assignment

    async def tenant_setting(self) -> dict[str, Any]:
        """The ``cloudPcTenantEncryptionSetting``: customer-managed once the Intune admin center is ready."""
        current = await self.assignment()
        ready = current is not None and self.core.now() >= current.intune_ready_at
        return {
            "@odata.type": "#microsoft.graph.cloudPcTenantEncryptionSetting",
            "tenantDiskEncryptionType": CMK if ready else PMK,
            "lastSyncDateTime": iso(current.intune_ready_at if ready and current else self.core.now()),
        }

    def disk_state(self, pc: CloudPcRow, now: float) -> str:
        """``diskEncryptionState`` of a Cloud PC."""
        if pc.cmk_due_at is not None and now >= pc.cmk_due_at:
            return "encryptedUsingCustomerManagedKey"
        return "encryptedUsingPlatformManagedKey"

    def cloud_pc(self, pc: CloudPcRow, now: float) -> dict[str, Any]:
        """A ``cloudPC`` resource."""
        return {
            "id": pc.id,
            "displayName": pc.display_name,
            "userPrincipalName": pc.upn,
            "managedDeviceName": pc.managed_device_name,
            "status": "provisioned",
            "diskEncryptionState": self.disk_state(pc, now),
            "lastModifiedDateTime": iso(
                pc.cmk_due_at if pc.cmk_due_at is not None and now >= pc.cmk_due_at else pc.provisioned_at
            ),
        }

    async def cloud_pcs(self) -> list[dict[str, Any]]:
        """Every Cloud PC."""
        now = self.core.now()
        async with self.core.db.session() as s:
            rows = (await s.scalars(select(CloudPcRow).order_by(CloudPcRow.display_name))).all()
        return [self.cloud_pc(pc, now) for pc in rows]

    async def get_cloud_pc(self, pc_id: str) -> dict[str, Any]:
        """One Cloud PC.

        Raises:
            GraphError: no such Cloud PC (404).
        """
        async with self.core.db.session() as s:
            pc = await s.get(CloudPcRow, pc_id)
        if pc is None:
            raise GraphError(404, "ResourceNotFound", f"Cloud PC '{pc_id}' was not found.")
        return self.cloud_pc(pc, self.core.now())

    async def bulk_action(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a ``cloudPcBulkModifyDiskEncryptionType`` bulk action (encrypt existing Cloud PCs with the CMK).

        Raises:
            GraphError: not that bulk action, unknown Cloud PCs, or the tenant setting is not customer-managed yet.
        """
        if body.get("@odata.type") != BULK_MODIFY:
            raise GraphError(400, "BadRequest", f"Only {BULK_MODIFY} bulk actions are served by the sandbox.")
        ids = body.get("cloudPcIds")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise GraphError(400, "BadRequest", "cloudPcIds must list the Cloud PCs the bulk action applies to.")
        kind = body.get("diskEncryptionType")
        if kind == PMK:
            raise GraphError(
                400,
                "BadRequest",
                "Cloud PCs return to platform-managed keys only when the multi-workload DEP is rolled back (a support "
                "request to Microsoft).",
            )
        if kind != CMK:
            raise GraphError(400, "BadRequest", f"diskEncryptionType must be {CMK} or {PMK}.")
        if (await self.tenant_setting())["tenantDiskEncryptionType"] != CMK:
            raise GraphError(
                400,
                "BadRequest",
                "The tenant's Cloud PC encryption setting isn't customerManagedKey yet: assign a multi-workload data "
                "encryption policy and wait until the Intune admin center updates (3 to 4 hours).",
            )
        now = self.core.now()
        d = self.core.durations
        action = BulkActionRow(
            id=str(uuid.uuid4()),
            display_name=str(body.get("displayName") or "Modify disk encryption type"),
            created_at=now,
            disk_encryption_type=kind,
            cloud_pc_ids=list(ids),
        )
        async with self.core.db.session() as s, s.begin():
            rows = [await s.get(CloudPcRow, i) for i in ids]
            unknown = [i for i, row in zip(ids, rows, strict=True) if row is None]
            if unknown:
                raise GraphError(404, "ResourceNotFound", f"Cloud PCs not found: {', '.join(unknown)}.")
            for row in rows:
                assert row is not None
                if row.cmk_requested_at is None:
                    row.cmk_requested_at = now
                    row.cmk_due_at = now + spread(d.cloud_pc_encrypt_min, d.cloud_pc_encrypt_max, row.id + action.id)
                    row.bulk_action_id = action.id
            s.add(action)
        return await self.get_bulk_action(action.id)

    async def get_bulk_action(self, action_id: str) -> dict[str, Any]:
        """A bulk action with its progress.

        Raises:
            GraphError: no such bulk action (404).
        """
        now = self.core.now()
        async with self.core.db.session() as s:
            action = await s.get(BulkActionRow, action_id)
            if action is None:
                raise GraphError(404, "ResourceNotFound", f"Bulk action '{action_id}' was not found.")
            pcs = [await s.get(CloudPcRow, i) for i in action.cloud_pc_ids]
        return self._bulk_view(action, pcs, now)

    async def bulk_actions(self) -> list[dict[str, Any]]:
        """Every bulk action, oldest first (``GET bulkActions``)."""
        now = self.core.now()
        async with self.core.db.session() as s:
            actions = (await s.scalars(select(BulkActionRow).order_by(BulkActionRow.created_at))).all()
            views = []
            for action in actions:
                pcs = [await s.get(CloudPcRow, i) for i in action.cloud_pc_ids]
                views.append(self._bulk_view(action, pcs, now))
        return views

    def _bulk_view(self, action: BulkActionRow, pcs: list[CloudPcRow | None], now: float) -> dict[str, Any]:
        # Graph's cloudPcBulkActionStatus is pending, succeeded, failed (or unknownFutureValue): "pending" while
        # any Cloud PC is still in progress.
        done = sum(1 for pc in pcs if pc is not None and self.disk_state(pc, now) == "encryptedUsingCustomerManagedKey")
        total = len(pcs)
        status = "succeeded" if done == total else "pending"
        return {
            "@odata.type": BULK_MODIFY,
            "id": action.id,
            "displayName": action.display_name,
            "cloudPcIds": list(action.cloud_pc_ids),
            "diskEncryptionType": action.disk_encryption_type,
            "createdDateTime": iso(action.created_at),
            "status": status,
            "actionSummary": {
                "successfulCount": done,
                "inProgressCount": total - done,
                "failedCount": 0,
                "notSupportedCount": 0,
                "pendingCount": 0,
            },
        }
