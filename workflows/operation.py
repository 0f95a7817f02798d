"""The base every operation workflow builds on: state, phase, progress, the ``progress`` query, the audit trail.

A workflow of an operation kind subclasses :class:`OperationWorkflow`, defines its phase enum and runs its steps
inside :meth:`OperationWorkflow.operate`, which records the start, the end (succeeded, failed, cancelled) and every
phase change in SQL through activities, and keeps the ``CkeyState`` search attribute current.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import StrEnum
from typing import Any, TypeVar

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ChildWorkflowError, FailureError, is_cancelled_exception

with workflow.unsafe.imports_passed_through():
    from activities.operation import OperationActivities, RecordOperationInput
    from ckey import temporal as sa
    from ckey.operations import (
        AuditEvent,
        Escalation,
        Gate,
        OperationRecord,
        OperationState,
        OperationStatus,
        OperationUpdate,
        Outcome,
        Progress,
    )

ResultT = TypeVar("ResultT", bound=BaseModel)
ArgT = TypeVar("ArgT")
ReturnT = TypeVar("ReturnT")

GATEWAY_TIMEOUT = timedelta(minutes=2)
GATEWAY_RETRY = RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(minutes=1))


async def call(
    method: Callable[[Any, ArgT], Awaitable[ReturnT]],
    arg: ArgT,
    *,
    start_to_close: timedelta = GATEWAY_TIMEOUT,
    retry: RetryPolicy = GATEWAY_RETRY,
    heartbeat: timedelta | None = None,
) -> ReturnT:
    """Run an activity method with the gateways' default timeout and retry policy (transient errors retried)."""
    return await workflow.execute_activity_method(
        method, arg, start_to_close_timeout=start_to_close, retry_policy=retry, heartbeat_timeout=heartbeat
    )


RECORD_TIMEOUT = timedelta(seconds=30)
# The store may be down for a while (a database fail-over); an operation waits for it rather than failing.
RECORD_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))

SYSTEM_ACTOR = "ckey"


class OperationWorkflow:
    """Base class of operation workflows (not a workflow itself).

    Subclasses set :attr:`kind`, decorate the class with ``@workflow.defn`` and their ``run`` with
    ``@workflow.run``, and call :meth:`operate` from ``run``.
    """

    kind: str = ""

    def __init__(self) -> None:
        self._status = OperationStatus(kind=self.kind)
        self._audit_seq = 0

    @workflow.query
    def progress(self) -> OperationStatus:
        """The operation's state, phase, progress, escalations and gates."""
        return self._status

    # Life cycle -------------------------------------------------------------------------------------------------

    async def operate(self, input: BaseModel, body: Callable[[], Awaitable[ResultT]]) -> ResultT:
        """Run ``body`` as this operation: record its start, its outcome, and raise what it raised.

        A continued-as-new run does not record a second start; ``continue_as_new`` passes straight through.
        """
        info = workflow.info()
        self._status.updated_at = workflow.now()
        if info.continued_run_id is None:
            await self._record_start(input)
        try:
            result = await body()
        except asyncio.CancelledError:
            await self._finish(OperationState.CANCELLED, error="cancelled on request")
            raise
        except FailureError as exc:
            if is_cancelled_exception(exc):
                await self._finish(OperationState.CANCELLED, error="cancelled on request")
            else:
                await self._finish(OperationState.FAILED, error=failure_message(exc))
            raise
        await self._finish(OperationState.SUCCEEDED, result=result.model_dump(mode="json"))
        return result

    async def set_phase(self, phase: StrEnum, detail: dict[str, Any] | None = None) -> None:
        """Enter ``phase``: shown by the query, persisted, and written to the audit trail."""
        self._status.phase = phase.value
        await self._persist(f"phase.{phase.value}", detail=detail)

    async def set_state(self, state: OperationState, detail: dict[str, Any] | None = None) -> None:
        """Move to a non-final ``state`` (waiting for an approval or for Microsoft, running again)."""
        self._status.state = state
        self._upsert_state(state)
        await self._persist(f"state.{state.value}", detail=detail)

    def set_progress(self, done: int, total: int | None = None, unit: str | None = None) -> None:
        """Update progress in memory (the query shows it at once); :meth:`checkpoint` persists it."""
        current = self._status.progress
        self._status.progress = Progress(
            done=done, total=current.total if total is None else total, unit=unit or current.unit
        )
        self._status.updated_at = workflow.now()

    async def checkpoint(self) -> None:
        """Persist progress, escalations and gates to the operation's record (no audit event)."""
        await self._record(RecordOperationInput(update=self._update()))

    async def escalate(self, escalation: Escalation) -> None:
        """Record an escalation (a support case filed, operators alerted) on the operation."""
        self._status.escalations.append(escalation)
        await self._persist("escalated", detail=escalation.model_dump(mode="json"), outcome=Outcome.INFO)

    def set_gates(self, gates: list[Gate]) -> None:
        """Replace the gates the query shows (persisted by the next :meth:`checkpoint` or phase change)."""
        self._status.gates = gates

    async def audit(
        self,
        action: str,
        *,
        detail: dict[str, Any] | None = None,
        target: str | None = None,
        outcome: Outcome = Outcome.OK,
        actor: str | None = None,
    ) -> None:
        """Append one event to the operation's audit timeline."""
        await self._record(RecordOperationInput(event=self._event(action, detail, target, outcome, actor)))

    @property
    def operation_id(self) -> str:
        """The operation's id, which is its workflow id."""
        return workflow.info().workflow_id

    @property
    def started_by(self) -> str:
        """Who started the operation (from the memo the API wrote; the token, never the request body)."""
        value = workflow.memo_value("started_by", default=SYSTEM_ACTOR)
        return str(value)

    # Internals --------------------------------------------------------------------------------------------------

    async def _record_start(self, input: BaseModel) -> None:
        now = workflow.now()
        record = OperationRecord(
            id=self.operation_id,
            kind=self.kind,
            state=OperationState.RUNNING,
            phase=self._status.phase,
            params=input.model_dump(mode="json"),
            started_by=self.started_by,
            started_at=workflow.info().start_time,
            updated_at=now,
            idempotency_key=workflow.memo_value("idempotency_key", default=None),
            fingerprint=workflow.memo_value("fingerprint", default=None),
            dep=workflow.memo_value("dep", default=None),
        )
        event = self._event("operation.started", {"params": record.params}, None, Outcome.OK, self.started_by)
        await self._record(RecordOperationInput(start=record, event=event))

    async def _finish(
        self, state: OperationState, *, result: dict[str, Any] | None = None, error: str | None = None
    ) -> None:
        self._status.state = state
        self._upsert_state(state)
        update = self._update().model_copy(update={"result": result, "error": error})
        outcome = {
            OperationState.SUCCEEDED: Outcome.OK,
            OperationState.CANCELLED: Outcome.INFO,
        }.get(state, Outcome.FAILED)
        detail = {"error": error} if error else {}
        event = self._event(f"operation.{state.value}", detail, None, outcome, None)
        # Recording the end must happen even when the workflow was cancelled: shield it from the cancellation.
        await asyncio.shield(self._record(RecordOperationInput(update=update, event=event)))

    async def _persist(
        self, action: str, *, detail: dict[str, Any] | None = None, outcome: Outcome = Outcome.OK
    ) -> None:
        self._status.updated_at = workflow.now()
        event = self._event(action, detail, None, outcome, None)
        await self._record(RecordOperationInput(update=self._update(), event=event))

    def _update(self) -> OperationUpdate:
        s = self._status
        return OperationUpdate(
            id=self.operation_id,
            at=workflow.now(),
            state=s.state,
            phase=s.phase,
            progress=s.progress,
            escalations=s.escalations,
            gates=s.gates,
        )

    def _event(
        self,
        action: str,
        detail: dict[str, Any] | None,
        target: str | None,
        outcome: Outcome,
        actor: str | None,
    ) -> AuditEvent:
        # The key is stable across activity retries and replays of this run, and unique within the operation.
        self._audit_seq += 1
        info = workflow.info()
        return AuditEvent(
            key=f"{info.workflow_id}/{info.run_id}/{self._audit_seq}/{action}",
            at=workflow.now(),
            actor=actor or f"{SYSTEM_ACTOR} (for {self.started_by})",
            action=action,
            outcome=outcome,
            operation_id=info.workflow_id,
            target=target,
            detail=detail or {},
        )

    def _upsert_state(self, state: OperationState) -> None:
        # Only where the API set ckey's search attributes at start: a server without them would reject the upsert.
        if workflow.info().typed_search_attributes.get(sa.KIND) is not None:
            workflow.upsert_search_attributes([sa.STATE.value_set(state.value)])

    async def _record(self, input: RecordOperationInput) -> None:
        await workflow.execute_activity_method(
            OperationActivities.record_operation,
            input,
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RECORD_RETRY,
        )


def failure_message(exc: BaseException) -> str:
    """The most telling message of a failure: the innermost application error's, with its type."""
    inner: BaseException = exc
    while isinstance(inner, (ActivityError, ChildWorkflowError)) and inner.cause is not None:
        inner = inner.cause
    kind = getattr(inner, "type", None)
    message = getattr(inner, "message", None) or str(inner)
    return f"{kind}: {message}" if kind else message
