"""Activities that persist an operation's record and audit trail to ckey's SQL store."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity

from ckey.operations import AuditEvent, OperationRecord, OperationUpdate
from ckey.store import Store


class RecordOperationInput(BaseModel):
    """What to persist: the first record, a change, an audit event — any of them, in that order."""

    start: OperationRecord | None = None
    update: OperationUpdate | None = None
    event: AuditEvent | None = None


class RecordOperationResult(BaseModel):
    """Where the audit event landed in the chain, if one was written."""

    audit_seq: int | None = None


class OperationActivities:
    """Writes operation records and audit events. Every write is idempotent, so retries land once."""

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
