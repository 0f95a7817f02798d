"""Activities that persist an operation's record and audit trail to ckey's SQL store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from temporalio import activity

from ckey.operations import AuditEvent, Outcome
from ckey.store import Store
from contracts.operation import OperationActivityStub, RecordOperationInput, RecordOperationResult

if TYPE_CHECKING:
    from activities import Gateways


class OperationActivities(OperationActivityStub):
    """Writes operation records and audit events. Every write is idempotent, so retries land once."""

    @classmethod
    def from_gateways(cls, gateways: Gateways) -> OperationActivities:
        """The family built from the worker's gateways."""
        return cls(gateways.store)

    def __init__(self, store: Store) -> None:
        self.store = store

    @activity.defn
    async def record_operation(self, input: RecordOperationInput) -> RecordOperationResult:
        """Create or update an operation's record and append its audit event."""
        if input.start is not None:
            await self.store.create_operation(input.start)
        if input.update is not None:
            await self.store.update_operation(input.update)
        seq = None
        if input.event is not None:
            seq = (await self.store.append_audit(input.event)).seq
        return RecordOperationResult(audit_seq=seq)


async def audit_call(
    store: Store,
    action: str,
    target: str,
    outcome: Outcome,
    detail: dict[str, Any] | None = None,
    *,
    step: str = "",
) -> None:
    """Record, from inside an activity, one call to an outside service (the cmdlet line or the API call).

    The key is the operation id (workflow id), its run, the activity, the attempt and the action (plus ``step``
    where one activity makes the same call more than once): a retried attempt is a new call and is recorded as
    one, while the same attempt recording twice lands once.
    """
    info = activity.info()
    await store.append_audit(
        AuditEvent(
            key=f"{info.workflow_id}/{info.workflow_run_id}/a{info.activity_id}/{info.attempt}/{action}{step}",
            at=datetime.now(UTC),
            actor="ckey",
            action=action,
            outcome=outcome,
            operation_id=info.workflow_id,
            target=target,
            detail=detail or {},
        )
    )
