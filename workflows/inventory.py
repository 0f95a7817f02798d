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
    from workflows.operation import OperationWorkflow, call

if TYPE_CHECKING:
    from ckey.config import Settings

LISTING_TIMEOUT = timedelta(minutes=30)
SYNC_VAULTS = "inventory-sync-vaults"
"""Patch id: the sync also reads every vault and its keys (``/api/vaults`` answers from the inventory)."""
"""Get-Mailbox and Get-MailUser over 100,000 recipients, paged, with the writes."""


class SyncPhase(StrEnum):
    """Phases of ``inventory.sync``."""

    DEPS = "reading_deps"
    VAULTS = "reading_vaults"
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
            as_of=workflow.now(),
        )
        await self.set_phase(SyncPhase.DONE, result.model_dump(mode="json", exclude={"as_of"}))
        return result


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
        description="Read the DEPs, every mailbox and mail user, and encryption statuses into ckey's inventory.",
        result_model=InventorySyncResult,
        activities=(InventoryActivityStub,),
    ),
)
"""The kinds this module runs, declared once: the registry (:func:`workflows.product_registry`) collects them."""
