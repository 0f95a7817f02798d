"""``inventory.sync``: read the tenant in bulk into the inventory the read side answers from.

Run by a Temporal Schedule (``ckey-inventory-sync``, interval ``CKEY_INVENTORY_SYNC_INTERVAL``) and startable by
hand. It only reads the tenant, so it holds no lease.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from ckey.models import Role
    from ckey.operations import OperationKind
    from contracts.inventory import (
        InventoryActivityStub,
        InventorySyncInput,
        InventorySyncParams,
        InventorySyncResult,
        SyncStatusesInput,
        SyncStepInput,
    )
    from contracts.m365 import M365ActivityStub, RefreshMultiWorkloadInput
    from contracts.spo import RefreshSpoGeosInput, SpoActivityStub
    from contracts.windows365 import RefreshCloudPcsInput, Windows365ActivityStub
    from workflows.operation import OperationWorkflow, call, failure_message

if TYPE_CHECKING:
    from ckey.config import Settings

LISTING_TIMEOUT = timedelta(minutes=30)
SYNC_VAULTS = "inventory-sync-vaults"
"""Patch id: the sync also reads every vault and its keys (``/api/vaults`` answers from the inventory)."""
SYNC_WORKLOADS = "inventory-sync-workloads"
"""Patch id: the sync also reads the multi-workload DEPs and assignment, every SharePoint geo and every Cloud PC."""
WORKLOAD_READ_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30), maximum_attempts=3
)
"""A workload that does not answer after three attempts is reported on the result; the next sync tries again."""
"""Get-Mailbox and Get-MailUser over 100,000 recipients, paged, with the writes."""


class SyncPhase(StrEnum):
    """Phases of ``inventory.sync``."""

    DEPS = "reading_deps"
    VAULTS = "reading_vaults"
    WORKLOADS = "reading_workloads"
    RECIPIENTS = "reading_recipients"
    STATUSES = "reading_statuses"
    DONE = "done"


@workflow.defn
class InventorySyncWorkflow(OperationWorkflow):
    """Read the DEPs, every recipient, then the encryption status of the mailboxes not known encrypted."""

    kind = "inventory.sync"

    @workflow.run
    async def run(self, input: InventorySyncInput) -> InventorySyncResult:
        """DEPs first (the recipients' DEP GUIDs come from them), then recipients, then statuses."""
        return await self.operate(input, lambda: self._sync(input))

    async def _sync(self, input: InventorySyncInput) -> InventorySyncResult:
        step = SyncStepInput(operation_id=self.operation_id, started_at=workflow.now())
        self.set_progress(0, 3, "steps")
        await self.set_phase(SyncPhase.DEPS)
        deps = await call(InventoryActivityStub.sync_deps, step)
        self.set_progress(1, 3, "steps")
        vaults = 0
        if workflow.patched(SYNC_VAULTS):
            await self.set_phase(SyncPhase.VAULTS)
            vaults = (await call(InventoryActivityStub.sync_vaults, step, start_to_close=LISTING_TIMEOUT)).vaults
        workloads: dict[str, int] = {}
        unread: dict[str, str] = {}
        if workflow.patched(SYNC_WORKLOADS):
            await self.set_phase(SyncPhase.WORKLOADS)
            workloads, unread = await self._workloads()
        await self.set_phase(SyncPhase.RECIPIENTS)
        recipients = await call(
            InventoryActivityStub.sync_recipients, step, start_to_close=LISTING_TIMEOUT, heartbeat=timedelta(minutes=5)
        )
        self.set_progress(2, 3, "steps")
        await self.set_phase(SyncPhase.STATUSES)
        statuses = await call(
            InventoryActivityStub.sync_statuses,
            SyncStatusesInput(operation_id=self.operation_id, limit=input.status_batch),
            start_to_close=LISTING_TIMEOUT,
        )
        self.set_progress(3, 3, "steps")
        result = InventorySyncResult(
            deps=deps.deps,
            vaults=vaults,
            recipients=recipients.recipients,
            forgotten=recipients.forgotten,
            statuses=statuses.statuses,
            workloads=workloads,
            unread=unread,
            as_of=workflow.now(),
        )
        await self.set_phase(SyncPhase.DONE, result.model_dump(mode="json", exclude={"as_of"}))
        return result

    async def _workloads(self) -> tuple[dict[str, int], dict[str, str]]:
        """Each workload's read model (what was read), and the workloads that did not answer (why)."""
        read: dict[str, int] = {}
        unread: dict[str, str] = {}
        try:
            m365 = await call(
                M365ActivityStub.refresh_multi_workload,
                RefreshMultiWorkloadInput(operation_id=self.operation_id),
                retry=WORKLOAD_READ_RETRY,
            )
            read["multi_workload_deps"] = m365.deps
        except ActivityError as exc:
            unread["multi_workload"] = failure_message(exc)
        try:
            spo = await call(
                SpoActivityStub.refresh_spo_geos,
                RefreshSpoGeosInput(operation_id=self.operation_id),
                retry=WORKLOAD_READ_RETRY,
            )
            read["spo_geos"] = len(spo.geos)
        except ActivityError as exc:
            unread["sharepoint"] = failure_message(exc)
        try:
            pcs = await call(
                Windows365ActivityStub.refresh_cloud_pcs,
                RefreshCloudPcsInput(),
                retry=WORKLOAD_READ_RETRY,
                start_to_close=LISTING_TIMEOUT,
            )
            read["cloud_pcs"] = pcs.total
        except ActivityError as exc:
            unread["windows365"] = failure_message(exc)
        return read, unread


def build_sync_input(params: BaseModel, settings: Settings) -> InventorySyncInput:
    """The sync's input: how many statuses one run reads comes from the settings."""
    return InventorySyncInput(status_batch=settings.inventory_status_batch)


KINDS: tuple[OperationKind, ...] = (
    OperationKind(
        name="inventory.sync",
        workflow=InventorySyncWorkflow,
        input_model=InventorySyncInput,
        params_model=InventorySyncParams,
        build_input=build_sync_input,
        role=Role.OPERATOR,
        description=(
            "Read the DEPs, the vaults, the multi-workload assignment, the SharePoint geos, the Cloud PCs, every "
            "mailbox and mail user, and encryption statuses into ckey's inventory."
        ),
        result_model=InventorySyncResult,
        activities=(InventoryActivityStub, M365ActivityStub, SpoActivityStub, Windows365ActivityStub),
    ),
)
"""The kinds this module runs, declared once: the registry (:func:`workflows.product_registry`) collects them."""
