"""Windows 365 operations: ``windows365.encrypt``.

Seed: "For Windows 365, within 3 to 4 hours of completing this step [the multi-workload assignment], the Intune admin
center updates. Complete steps in the admin center to encrypt existing Cloud PCs." ckey does those steps through
Microsoft Graph: it waits until ``retrieveTenantEncryptionSetting`` answers ``customerManagedKey`` (escalating once
if that takes longer than the settings' deadline, failing at a hard limit), then re-encrypts the existing Cloud PCs
in ``cloudPcBulkModifyDiskEncryptionType`` bulk actions of ``batch_size``, following each to its end.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, RetryState, TimeoutError

with workflow.unsafe.imports_passed_through():
    from ckey.models import Role, human_duration
    from ckey.operations import Escalation, Lease, LeaseRequest, OperationKind, lazy_preflight
    from contracts.windows365 import (
        FAILED_LISTED,
        BatchInput,
        BatchResult,
        EncryptState,
        PlanInput,
        TenantSettingInput,
        TenantSettingResult,
        Windows365ActivityStub,
        Windows365EncryptInput,
        Windows365EncryptParams,
        Windows365EncryptResult,
    )
    from workflows.operation import GATEWAY_TIMEOUT, NON_RETRYABLE_ERROR_TYPES, OperationWorkflow, call

if TYPE_CHECKING:
    from ckey.config import Settings

ROUND_TIMEOUT = timedelta(minutes=10)
"""One read of Graph (the tenant setting, a batch's Cloud PCs): a worker that died is noticed after this long."""


class Windows365Phase(StrEnum):
    """Phases of ``windows365.encrypt``."""

    WAITING_FOR_INTUNE = "waiting_for_intune"
    ENCRYPTING = "encrypting"
    DONE = "done"


def _polling(interval: timedelta) -> RetryPolicy:
    # Retry-driven polling: "not yet" is a retryable failure whose delay is the poll interval, so waiting adds
    # nothing to the history; the activity's schedule-to-close timeout is the deadline.
    return RetryPolicy(
        initial_interval=interval,
        backoff_coefficient=1.0,
        maximum_interval=max(interval, timedelta(seconds=1)),
        non_retryable_error_types=list(NON_RETRYABLE_ERROR_TYPES),
    )


def _timed_out(error: ActivityError) -> bool:
    # A deadline that passes between retries ends the activity with its last failure and the retry state TIMEOUT.
    return isinstance(error.cause, TimeoutError) or error.retry_state == RetryState.TIMEOUT


@workflow.defn
class Windows365EncryptWorkflow(OperationWorkflow):
    """Wait for the Intune admin center, then re-encrypt the existing Cloud PCs with the customer-managed key."""

    kind = "windows365.encrypt"

    @workflow.run
    async def run(self, input: Windows365EncryptInput) -> Windows365EncryptResult:
        """Wait for readiness, plan, encrypt batch by batch."""
        return await self.operate(input, lambda: self._encrypt(input))

    async def _encrypt(self, input: Windows365EncryptInput) -> Windows365EncryptResult:
        state = input.state or EncryptState(started_at=workflow.now())
        assigned_at = input.assigned_at or state.started_at
        if not state.ready:
            await self.set_phase(
                Windows365Phase.WAITING_FOR_INTUNE,
                {
                    "dep": input.dep,
                    "assigned_at": assigned_at.isoformat(),
                    "deadline": human_duration(input.ready_deadline),
                },
            )
            setting = await self._wait_for_intune(input, state, assigned_at)
            state.ready, state.tenant_disk_encryption_type = True, setting.tenant_disk_encryption_type
        if not state.planned:
            plan = await call(
                Windows365ActivityStub.plan_cloud_pc_batches,
                PlanInput(operation_id=self.operation_id, batch_size=input.batch_size),
                start_to_close=ROUND_TIMEOUT,
            )
            state.planned, state.total, state.already, state.batches = True, plan.total, plan.already, plan.batches
            await self.set_phase(
                Windows365Phase.ENCRYPTING,
                {"total": state.total, "already": state.already, "batches": state.batches},
            )
        report_every = max(1, state.total // 100)
        self.set_progress(state.already + state.encrypted, state.total, "cloud PCs")
        await self.checkpoint()
        while state.next_batch < state.batches:
            outcome = await self._batch(input, state, state.next_batch, report_every)
            state.encrypted += outcome.encrypted
            state.failed += outcome.size - outcome.encrypted
            state.failed_cloud_pcs = (state.failed_cloud_pcs + outcome.failed_cloud_pcs)[:FAILED_LISTED]
            state.next_batch += 1
            self.set_progress(state.already + state.encrypted, state.total)
            await self.checkpoint()
            if workflow.info().is_continue_as_new_suggested() and state.next_batch < state.batches:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(input.model_copy(update={"state": state}))
        result = Windows365EncryptResult(
            dep=input.dep,
            tenant_disk_encryption_type=state.tenant_disk_encryption_type,
            total=state.total,
            already=state.already,
            encrypted=state.already + state.encrypted,
            failed=state.failed,
            failed_cloud_pcs=state.failed_cloud_pcs,
            bulk_actions=state.bulk_actions,
            escalated=state.escalated,
        )
        await self.set_phase(
            Windows365Phase.DONE, {"encrypted": result.encrypted, "total": result.total, "failed": result.failed}
        )
        return result

    async def _wait_for_intune(
        self, input: Windows365EncryptInput, state: EncryptState, assigned_at: datetime
    ) -> TenantSettingResult:
        """Poll the tenant setting until customer-managed; escalate once at the deadline, fail at the hard limit."""
        first = await call(
            Windows365ActivityStub.read_tenant_encryption_setting, TenantSettingInput(operation_id=self.operation_id)
        )
        if first.customer_managed:
            return first
        deadline = assigned_at + input.ready_deadline
        limit = max(assigned_at + input.ready_limit, deadline)
        while True:
            target = limit if state.escalated else deadline
            remaining = target - workflow.now()
            if remaining > timedelta(0):
                try:
                    return await workflow.execute_activity_method(
                        Windows365ActivityStub.read_tenant_encryption_setting,
                        TenantSettingInput(operation_id=self.operation_id, wait=True),
                        start_to_close_timeout=GATEWAY_TIMEOUT,
                        schedule_to_close_timeout=remaining,
                        retry_policy=_polling(input.poll_interval),
                    )
                except ActivityError as exc:
                    if not _timed_out(exc):
                        raise
                # The polls stop at the last one that fits before the deadline: wait for the deadline itself and
                # look once more, so that the escalation (or the failure) comes at its time, not a poll early.
                rest = target - workflow.now()
                if rest > timedelta(0):
                    await workflow.sleep(rest)
                last = await call(
                    Windows365ActivityStub.read_tenant_encryption_setting,
                    TenantSettingInput(operation_id=self.operation_id),
                )
                if last.customer_managed:
                    return last
            if state.escalated:
                raise ApplicationError(
                    f"the Intune admin center was not ready {human_duration(limit - assigned_at)} after the "
                    "multi-workload assignment (retrieveTenantEncryptionSetting still answers platformManagedKey): "
                    "no Cloud PC was sent; check the assignment (Get-M365DataAtRestEncryptionPolicyAssignment) and "
                    "start windows365.encrypt again once the setting is customerManagedKey",
                    type="intune-not-ready",
                    non_retryable=True,
                )
            state.escalated = True
            await self.escalate(
                Escalation(
                    at=workflow.now(),
                    reason=f"The Intune admin center is not ready {human_duration(input.ready_deadline)} after the "
                    "multi-workload assignment (the seed: within 3 to 4 hours); the tenant's Cloud PC encryption "
                    f"setting is still platformManagedKey. ckey keeps waiting until "
                    f"{human_duration(limit - assigned_at)} after the assignment.",
                    subjects=[input.dep or "tenant"],
                )
            )
            await self.set_phase(Windows365Phase.WAITING_FOR_INTUNE, {"escalated": True})

    async def _batch(
        self, input: Windows365EncryptInput, state: EncryptState, batch: int, report_every: int
    ) -> BatchResult:
        """Send one batch (or find its bulk action) and follow it to its end, reporting progress as it moves."""
        started = workflow.now()
        sent = await call(
            Windows365ActivityStub.encrypt_cloud_pc_batch,
            BatchInput(operation_id=self.operation_id, batch=batch),
            start_to_close=ROUND_TIMEOUT,
        )
        if sent.bulk_action_id is not None:
            state.bulk_actions += 1
        outcome, reported = sent, sent.encrypted
        while not outcome.finished:
            ask = BatchInput(
                operation_id=self.operation_id,
                batch=batch,
                bulk_action_id=sent.bulk_action_id,
                reported=reported,
                report_every=report_every,
            )
            remaining = started + input.encrypt_limit - workflow.now()
            try:
                if remaining <= timedelta(0):
                    raise _TimeUp()
                outcome = await workflow.execute_activity_method(
                    Windows365ActivityStub.follow_cloud_pc_batch,
                    ask,
                    start_to_close_timeout=ROUND_TIMEOUT,
                    schedule_to_close_timeout=remaining,
                    retry_policy=_polling(input.poll_interval),
                )
            except (ActivityError, _TimeUp) as exc:
                if isinstance(exc, ActivityError) and not _timed_out(exc):
                    raise
                outcome = await call(
                    Windows365ActivityStub.follow_cloud_pc_batch,
                    ask.model_copy(update={"final": True}),
                    start_to_close=ROUND_TIMEOUT,
                )
            reported = outcome.encrypted
            self.set_progress(state.already + state.encrypted + outcome.encrypted, state.total)
            await self.checkpoint()
        return outcome


class _TimeUp(Exception):
    """The batch's time ran out before a round could be asked."""


# Registration ------------------------------------------------------------------------------------------------------


def build_encrypt_input(params: BaseModel, settings: Settings) -> Windows365EncryptInput:
    """The input of an operator's start: the settings' deadline, cadence, batch size and hard limit."""
    return Windows365EncryptInput(**encrypt_timings(settings))


def encrypt_timings(settings: Settings) -> dict[str, Any]:
    """The settings ``windows365.encrypt`` runs with (for a parent that starts it as a child, too)."""
    return {
        "ready_deadline": settings.windows365_ready_deadline,
        "poll_interval": settings.windows365_poll_interval,
        "batch_size": settings.windows365_batch_size,
        "ready_limit": settings.windows365_ready_limit,
    }


def _holds_the_tenant(params: BaseModel) -> LeaseRequest:
    """One re-encryption of the tenant's Cloud PCs at a time."""
    return LeaseRequest(leases=[Lease.on("windows365", "tenant")])


KINDS: tuple[OperationKind, ...] = (
    OperationKind(
        name="windows365.encrypt",
        workflow=Windows365EncryptWorkflow,
        input_model=Windows365EncryptInput,
        params_model=Windows365EncryptParams,
        build_input=build_encrypt_input,
        role=Role.OPERATOR,
        description="After a multi-workload assignment: wait for the Intune admin center (escalate if late), then "
        "re-encrypt every existing Cloud PC with the customer-managed key, in Graph bulk actions.",
        leases_of=_holds_the_tenant,
        preflight=lazy_preflight("ckey.windows365:preflight_encrypt"),
        result_model=Windows365EncryptResult,
        activities=(Windows365ActivityStub,),
    ),
)
"""The kinds this module runs, declared once: the registry (:func:`workflows.product_registry`) collects them."""
