"""The inventory family's contract: ``inventory.sync``'s params, input and result, its activities' models and stub.

:class:`workflows.inventory.InventorySyncWorkflow` calls the activities of :class:`InventoryActivityStub`, which
:class:`activities.inventory.InventoryActivities` implements.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field
from temporalio import activity

from ckey.operations import Params

STATUS_BATCH = 500
"""Mailboxes whose encryption status one sync reads at most, least recently read first."""


class InventorySyncParams(Params):
    """What a caller may set for ``inventory.sync``: nothing; the deployment's settings say how much one run reads."""


class InventorySyncInput(BaseModel):
    """The sync's input (built from the settings)."""

    status_batch: int = Field(default=STATUS_BATCH, ge=0, le=100_000)


class InventorySyncResult(BaseModel):
    """What the sync read and wrote."""

    deps: int = 0
    vaults: int = 0
    recipients: int = 0
    forgotten: int = 0
    statuses: int = 0
    workloads: dict[str, int] = Field(default_factory=dict)
    """What was read of the other workloads: ``multi_workload_deps``, ``spo_geos``, ``cloud_pcs``."""
    unread: dict[str, str] = Field(default_factory=dict)
    """Workloads that did not answer (``multi_workload``, ``sharepoint``, ``windows365``) and why; their read models
    keep what an earlier sync read."""
    as_of: datetime | None = None


class SyncStepInput(BaseModel):
    """One step of a sync, for one operation."""

    operation_id: str
    started_at: datetime
    """When the sync started: recipients a complete listing no longer shows were last seen before it."""


class SyncDepsResult(BaseModel):
    """The DEPs a sync read."""

    deps: int


class SyncRecipientsResult(BaseModel):
    """The recipients a sync read, and how many it removed because the tenant no longer lists them."""

    recipients: int
    forgotten: int


class SyncVaultsResult(BaseModel):
    """The vaults a sync read (0 where the worker has no Key Vault gateway)."""

    vaults: int


class SyncStatusesInput(BaseModel):
    """Read the encryption status of at most ``limit`` mailboxes."""

    operation_id: str
    limit: int = Field(ge=0, le=100_000)


class SyncStatusesResult(BaseModel):
    """How many statuses were read."""

    statuses: int


class InventoryActivityStub:
    """The inventory activities as the workflow calls them.

    :class:`activities.inventory.InventoryActivities` implements them under the same names.
    """

    @activity.defn(name="sync_deps")
    async def sync_deps(self, input: SyncStepInput) -> SyncDepsResult:
        """Get-DataEncryptionPolicy: every mailbox DEP into the inventory."""
        raise NotImplementedError

    @activity.defn(name="sync_vaults")
    async def sync_vaults(self, input: SyncStepInput) -> SyncVaultsResult:
        """Get-AzKeyVault and Get-AzKeyVaultKey: every vault and its keys into the inventory."""
        raise NotImplementedError

    @activity.defn(name="sync_recipients")
    async def sync_recipients(self, input: SyncStepInput) -> SyncRecipientsResult:
        """Get-Mailbox and Get-MailUser (every page): every recipient and its assigned DEP into the inventory."""
        raise NotImplementedError

    @activity.defn(name="sync_statuses")
    async def sync_statuses(self, input: SyncStatusesInput) -> SyncStatusesResult:
        """Get-MailboxStatistics for the mailboxes not yet known encrypted under their DEP."""
        raise NotImplementedError
