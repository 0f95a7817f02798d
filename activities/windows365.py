"""Windows 365's activities: Cloud PCs and their encryption through Microsoft Graph.

Graph's answers become ckey's errors here: a refusal no retry cures (a 4xx: a missing permission, a bad request)
fails the operation with Graph's message (``graph-refused``); throttling and 5xx are retried, after the wait Graph
asked for.
"""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.operation import audit_call
from ckey.operations import Outcome
from ckey.store import Store
from ckey.store.cloudpcs import CloudPcStore, refresh
from ckey.windows365 import (
    ENCRYPTED_WITH_CMK,
    CloudPc,
    GraphRefusal,
    GraphUnavailable,
    Windows365Gateway,
)
from contracts.windows365 import (
    FAILED_LISTED,
    BatchInput,
    BatchResult,
    CloudPcsInput,
    CloudPcsResult,
    PlanInput,
    PlanResult,
    RefreshCloudPcsInput,
    RefreshCloudPcsResult,
    TenantSettingInput,
    TenantSettingResult,
    Windows365ActivityStub,
)

if TYPE_CHECKING:
    from activities import Gateways

T = TypeVar("T")


def bulk_action_name(operation_id: str, batch: int) -> str:
    """The display name of an operation's batch: how a retry after a crash finds the bulk action it created."""
    return f"ckey {operation_id} batch {batch}"


async def graph(call: Awaitable[T]) -> T:
    """Await a gateway call, turning Graph's errors into the operation's."""
    try:
        return await call
    except GraphRefusal as exc:
        raise ApplicationError(
            f"Microsoft Graph refused: {exc.message} ({exc.status} {exc.code})",
            type="graph-refused",
            non_retryable=True,
        ) from None
    except GraphUnavailable as exc:
        delay = timedelta(seconds=exc.retry_after) if exc.retry_after else None
        raise ApplicationError(str(exc), type="graph-unavailable", next_retry_delay=delay) from None


class Windows365Activities(Windows365ActivityStub):
    """Reads and re-encrypts Cloud PCs.

    Args:
        windows365: the Graph gateway.
        store: ckey's SQL store.
    """

    @classmethod
    def from_gateways(cls, gateways: Gateways) -> Windows365Activities | None:
        """The family built from the worker's gateways (None without a Windows 365 gateway)."""
        if gateways.windows365 is None:
            return None
        return cls(gateways.windows365, gateways.store)

    def __init__(self, windows365: Windows365Gateway, store: Store) -> None:
        self.windows365 = windows365
        self.store = store
        self.cloud_pcs = CloudPcStore(store)

    async def _read_all(self) -> list[CloudPc]:
        pcs = await graph(self.windows365.cloud_pcs())
        await self.cloud_pcs.record(pcs, datetime.now(UTC))
        return pcs

    @activity.defn
    async def count_cloud_pcs(self, input: CloudPcsInput) -> CloudPcsResult:
        """How many Cloud PCs the tenant has."""
        return CloudPcsResult(count=len(await self._read_all()))

    @activity.defn
    async def read_tenant_encryption_setting(self, input: TenantSettingInput) -> TenantSettingResult:
        """``GET retrieveTenantEncryptionSetting``; with ``wait``, platform-managed is a retryable failure."""
        setting = await graph(self.windows365.tenant_encryption_setting())
        await self.cloud_pcs.set_tenant(setting.tenant_disk_encryption_type, datetime.now(UTC))
        if input.wait and not setting.customer_managed:
            # Retry-driven polling: the workflow's retry policy waits the poll interval, adding no history.
            raise ApplicationError(
                f"the tenant's Cloud PC encryption setting is {setting.tenant_disk_encryption_type}: the Intune admin "
                "center is not ready yet",
                type="intune-not-ready-yet",
            )
        return TenantSettingResult(
            tenant_disk_encryption_type=setting.tenant_disk_encryption_type, customer_managed=setting.customer_managed
        )

    @activity.defn
    async def plan_cloud_pc_batches(self, input: PlanInput) -> PlanResult:
        """Read every Cloud PC; those not customer-managed go in batches of the operation (once per operation)."""
        pcs = await self._read_all()
        total, already, batches = await self.cloud_pcs.plan(input.operation_id, pcs, input.batch_size)
        return PlanResult(total=total, already=already, batches=batches)

    @activity.defn
    async def encrypt_cloud_pc_batch(self, input: BatchInput) -> BatchResult:
        """Find the batch's bulk action by name, else send its Cloud PCs not yet customer-managed in a new one."""
        members = await self.cloud_pcs.batch(input.operation_id, input.batch)
        name = bulk_action_name(input.operation_id, input.batch)
        found = await graph(self.windows365.find_bulk_action(name))
        if found is not None:
            # An earlier attempt created it and died before answering: follow it, never send a second one.
            await self.cloud_pcs.set_bulk_action(found.cloud_pc_ids, found.id)
            return BatchResult(bulk_action_id=found.id, size=len(members), sent=len(found.cloud_pc_ids))
        now = {pc.id: pc for pc in await self._read_all()}
        done = [m.id for m in members if m.id in now and now[m.id].customer_managed]
        send = [m.id for m in members if m.id in now and not now[m.id].customer_managed]
        gone = [m.label for m in members if m.id not in now]
        if not send:
            return BatchResult(size=len(members), encrypted=len(done), finished=True, failed_cloud_pcs=gone)
        target = (
            f"POST bulkActions cloudPcBulkModifyDiskEncryptionType customerManagedKey {name!r} ({len(send)} Cloud PCs)"
        )
        detail = {"cloud_pc_ids": send}
        await audit_call(self.store, "graph.bulkActions.create", target, Outcome.INTENT, detail, step="/intent")
        try:
            action = await graph(self.windows365.modify_disk_encryption(name, send))
        except ApplicationError as exc:
            await audit_call(self.store, "graph.bulkActions.create", target, Outcome.FAILED, {"error": str(exc)})
            raise
        await audit_call(self.store, "graph.bulkActions.create", target, Outcome.OK, {"bulk_action_id": action.id})
        await self.cloud_pcs.set_bulk_action(send, action.id)
        return BatchResult(
            bulk_action_id=action.id, created=True, size=len(members), sent=len(send), encrypted=len(done)
        )

    @activity.defn
    async def follow_cloud_pc_batch(self, input: BatchInput) -> BatchResult:
        """Read the batch's Cloud PCs (and its bulk action); return when more are encrypted or the batch is done.

        With ``final``, return what is seen and count every Cloud PC of the batch not customer-managed as failed.
        """
        members = await self.cloud_pcs.batch(input.operation_id, input.batch)
        # The bulk action first, then the Cloud PCs: a Cloud PC the action counts done is then seen done too (the
        # two reads are not one snapshot, and Microsoft keeps working between them).
        action = await graph(self.windows365.bulk_action(input.bulk_action_id)) if input.bulk_action_id else None
        pcs = {pc.id: pc for pc in await self._read_all()}
        encrypted = [m for m in members if m.id in pcs and pcs[m.id].disk_encryption_state == ENCRYPTED_WITH_CMK]
        finished = len(encrypted) == len(members) or input.final or (action is not None and action.finished)
        if not finished and len(encrypted) < input.reported + input.report_every:
            raise ApplicationError(
                f"{len(encrypted)} of {len(members)} Cloud PCs of batch {input.batch} customer-managed",
                type="cloud-pcs-encrypting",
            )
        failed: list[str] = []
        if finished:
            done = {m.id for m in encrypted}
            left = [m for m in members if m.id not in done]
            await self.cloud_pcs.mark_failed([m.id for m in left])
            failed = [m.label for m in left][:FAILED_LISTED]
        return BatchResult(
            bulk_action_id=input.bulk_action_id,
            size=len(members),
            encrypted=len(encrypted),
            finished=finished,
            failed_cloud_pcs=failed,
        )

    @activity.defn
    async def refresh_cloud_pcs(self, input: RefreshCloudPcsInput) -> RefreshCloudPcsResult:
        """Every Cloud PC and the tenant setting, from Graph into the inventory (Cloud PCs gone are removed)."""
        read = await graph(refresh(self.windows365, self.cloud_pcs, datetime.now(UTC)))
        if read.setting_error:
            activity.logger.warning("tenant encryption setting not read: %s", read.setting_error)
        return RefreshCloudPcsResult(
            total=read.total, by_state=read.by_state, tenant_disk_encryption_type=read.tenant_disk_encryption_type
        )
