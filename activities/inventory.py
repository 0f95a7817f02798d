"""Inventory activities: read the tenant in bulk and write what it says into SQL (:mod:`ckey.store.inventory`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from temporalio import activity

from activities.exchange import STATUS_CONCURRENCY, refusal
from activities.operation import audit_call
from ckey.keyvault import KeyVaultGateway, vault_summaries
from ckey.m365 import Cmdlet, CmdletError, M365Gateway
from ckey.operations import Outcome
from ckey.store import Store
from ckey.store.inventory import InventoryStore, RecipientSeen, RecipientStatus, dep_view
from contracts.inventory import (
    InventoryActivityStub,
    SyncDepsResult,
    SyncRecipientsResult,
    SyncStatusesInput,
    SyncStatusesResult,
    SyncStepInput,
    SyncVaultsResult,
)

if TYPE_CHECKING:
    from activities import Gateways

EXCHANGE = "exchange"


class InventoryActivities(InventoryActivityStub):
    """Activities that keep the inventory.

    Args:
        m365: the Microsoft 365 gateway (reads only).
        store: the inventory and the audit trail.
    """

    @classmethod
    def from_gateways(cls, gateways: Gateways) -> InventoryActivities | None:
        """The family built from the worker's gateways; ``None`` without the Microsoft 365 gateway."""
        if gateways.m365 is None:
            return None
        return cls(gateways.m365, gateways.store, gateways.keyvault)

    def __init__(self, m365: M365Gateway, store: Store, keyvault: KeyVaultGateway | None = None) -> None:
        self.m365 = m365
        self.store = store
        self.keyvault = keyvault
        self.inventory = InventoryStore(store)

    def _audited(self) -> M365Gateway:
        async def on_call(cmdlet: Cmdlet, outcome: str, error: str | None) -> None:
            await audit_call(
                self.store,
                f"m365.{cmdlet.name}",
                cmdlet.render(),
                Outcome(outcome),
                {"error": error} if error else None,
            )

        return self.m365.with_on_call(on_call)

    @activity.defn
    async def sync_deps(self, input: SyncStepInput) -> SyncDepsResult:
        """Get-DataEncryptionPolicy: every mailbox DEP into the inventory."""
        try:
            deps = await self._audited().get_data_encryption_policy()
        except CmdletError as exc:
            raise refusal(exc) from None
        now = datetime.now(UTC)
        views = [dep_view(EXCHANGE, d, now, input.operation_id) for d in deps]
        await self.inventory.record_deps(EXCHANGE, views, now, input.operation_id)
        await self.inventory.mark_synced(f"deps:{EXCHANGE}", now, input.operation_id, len(views))
        return SyncDepsResult(deps=len(views))

    @activity.defn
    async def sync_vaults(self, input: SyncStepInput) -> SyncVaultsResult:
        """Get-AzKeyVault and Get-AzKeyVaultKey: every vault of the subscription and its keys into the inventory."""
        if self.keyvault is None:
            return SyncVaultsResult(vaults=0)
        summaries = await vault_summaries(self.keyvault)
        await self.inventory.record_vaults(summaries, datetime.now(UTC), input.operation_id)
        await audit_call(
            self.store,
            "keyvault.vault.list",
            f"Get-AzKeyVault; Get-AzKeyVaultKey -VaultName <each of {len(summaries)} vaults>",
            Outcome.INFO,
            {"vaults": len(summaries)},
        )
        return SyncVaultsResult(vaults=len(summaries))

    @activity.defn
    async def sync_recipients(self, input: SyncStepInput) -> SyncRecipientsResult:
        """Get-Mailbox and Get-MailUser, every page, into the inventory; then forget what they no longer list."""
        m365 = self._audited()
        try:
            mailboxes = await m365.get_mailbox(result_size="Unlimited")
            activity.heartbeat("mailboxes read")
            mail_users = await m365.get_mail_user(result_size="Unlimited")
        except CmdletError as exc:
            raise refusal(exc) from None
        activity.heartbeat("mail users read")
        guids = {d.name.lower(): d.guid for d in await self.inventory.deps(EXCHANGE) if d.guid}
        seen = [
            RecipientSeen(
                identity=r.identity,
                recipient_type=r.recipient_type_details or default_type,
                user_principal_name=r.user_principal_name,
                dep=r.data_encryption_policy,
            )
            for batch, default_type in ((mailboxes, "UserMailbox"), (mail_users, "MailUser"))
            for r in batch
        ]
        now = datetime.now(UTC)
        written = await self.inventory.record_seen(seen, guids, now, input.operation_id)
        # Only a complete listing may forget: a row not seen since this sync began is gone from the tenant.
        forgotten = await self.inventory.forget_unseen(input.started_at)
        await self.inventory.mark_synced("recipients", now, input.operation_id, written)
        return SyncRecipientsResult(recipients=written, forgotten=forgotten)

    @activity.defn
    async def sync_statuses(self, input: SyncStatusesInput) -> SyncStatusesResult:
        """Get-MailboxStatistics for the mailboxes not yet known encrypted under their DEP, a bounded number."""
        identities = await self.inventory.needing_status(input.limit)
        gate = asyncio.Semaphore(STATUS_CONCURRENCY)
        m365 = self.m365  # one summary entry below, not one audit entry per mailbox read

        async def read(identity: str) -> RecipientStatus | None:
            async with gate:
                try:
                    stats = await m365.get_mailbox_statistics(identity)
                except CmdletError:
                    return None  # gone since the listing: the next sync forgets it
            return RecipientStatus(
                identity=identity, is_encrypted=stats.is_encrypted, dep_guid=stats.data_encryption_policy_id
            )

        statuses = [s for s in await asyncio.gather(*(read(i) for i in identities)) if s is not None]
        await self.inventory.record_status(statuses, datetime.now(UTC), input.operation_id)
        await audit_call(
            self.store,
            "m365.Get-MailboxStatistics",
            f"Get-MailboxStatistics -Identity <each of {len(identities)} mailboxes not known encrypted> | "
            "fl IsEncrypted, DataEncryptionPolicyID",
            Outcome.INFO,
            {"checked": len(identities), "read": len(statuses)},
        )
        return SyncStatusesResult(statuses=len(statuses))
