"""The contract of the operation machinery's own activity: persisting an operation's record and audit trail."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity

from ckey.operations import AuditEvent, OperationRecord, OperationUpdate


class RecordOperationInput(BaseModel):
    """What to persist: the first record, a change, an audit event — any of them, in that order."""

    start: OperationRecord | None = None
    update: OperationUpdate | None = None
    event: AuditEvent | None = None


class RecordOperationResult(BaseModel):
    """Where the audit event landed in the chain, if one was written."""

    audit_seq: int | None = None


class OperationActivityStub:
    """What every operation workflow calls; :class:`activities.operation.OperationActivities` implements it."""

    @activity.defn(name="record_operation")
    async def record_operation(self, input: RecordOperationInput) -> RecordOperationResult:
        """Create or update an operation's record and append its audit event."""
        raise NotImplementedError
