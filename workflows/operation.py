"""The base every operation workflow builds on: state, phase, progress, the ``progress`` query, the audit trail.

A workflow of an operation kind subclasses :class:`OperationWorkflow`, defines its phase enum and runs its steps
inside :meth:`OperationWorkflow.operate`, which records the start, the end (succeeded, failed, cancelled) and every
phase change in SQL through activities, and keeps the ``CkeyState`` search attribute current.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import StrEnum
from typing import Any, NoReturn, TypeVar, get_type_hints

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
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
    from contracts.alerts import ALERT_MAX_FINDINGS, Alert, AlertActivityStub, AlertFinding
    from contracts.operation import OperationActivityStub, RecordOperationInput

ResultT = TypeVar("ResultT", bound=BaseModel)
ArgT = TypeVar("ArgT")
ReturnT = TypeVar("ReturnT")

NON_RETRYABLE_ERROR_TYPES: tuple[str, ...] = (
    "ValueError",
    "TypeError",
    "KeyError",
    "IndexError",
    "AttributeError",
    "AssertionError",
    "NotImplementedError",
    "ValidationError",
)
"""Errors of an activity that no retry can cure: programming and validation errors (a NUL byte in a cmdlet
argument, a host the SDK's challenge check refuses, a model that does not validate).

Temporal matches these against the failure's type, which for an exception that is not an ``ApplicationError`` is
its class's own name, never a base class's. So only these exact classes stop retrying: subclasses keep their own
names and stay retryable, which is what the transient ones need -- aiohttp's ``ClientConnectorCertificateError``
and ``InvalidURL`` and ssl's ``SSLCertVerificationError`` (all ``ValueError``s), azure-core's
``DeserializationError`` (a ``ValueError``, raised on a garbled answer) and every ``AzureError``/``ClientError``.
``ValidationError`` is pydantic's (``pydantic_core.ValidationError``); ``JSONDecodeError`` and ``UnicodeDecodeError``
are left out on purpose: a proxy's error page in place of a service's answer passes with a retry.
"""

WORKFLOW_FAILURE_TYPES: tuple[type[BaseException], ...] = (
    ValueError,
    ValidationError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    AssertionError,
    NotImplementedError,
)
"""Exceptions of workflow code that fail the workflow rather than its task (``workflow_failure_exception_types``).

A workflow task that fails is retried until the code changes, which cures a nondeterminism error (roll the deploy
back and week-long runs go on) but never a bad input or a programming error: those end the operation with their
reason. Matched with ``isinstance``: ``ValidationError`` (pydantic's, the data converter's decode of an input that
breaks its model) is a ``ValueError`` and listed for the reader. Temporal's ``NondeterminismError`` (and the
sandbox's ``RestrictedWorkflowAccessError``) derive from none of these, and must never: ``Exception`` and
``RuntimeError`` are not listed for that reason.
"""

GATEWAY_TIMEOUT = timedelta(minutes=2)
GATEWAY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=list(NON_RETRYABLE_ERROR_TYPES),
)


def incurable_not_retried(policy: RetryPolicy) -> RetryPolicy:
    """``policy`` with :data:`NON_RETRYABLE_ERROR_TYPES` added to its non-retryable types."""
    known = list(policy.non_retryable_error_types or [])
    missing = [name for name in NON_RETRYABLE_ERROR_TYPES if name not in known]
    if not missing:
        return policy
    return dataclasses.replace(policy, non_retryable_error_types=known + missing)


async def call(
    method: Callable[[Any, ArgT], Awaitable[ReturnT]],
    arg: ArgT,
    *,
    start_to_close: timedelta = GATEWAY_TIMEOUT,
    retry: RetryPolicy = GATEWAY_RETRY,
    heartbeat: timedelta | None = None,
) -> ReturnT:
    """Run an activity method with the gateways' default timeout and retry policy (transient errors retried).

    Whatever ``retry`` is given, the errors no retry cures (:data:`NON_RETRYABLE_ERROR_TYPES`) are not retried.
    """
    return await workflow.execute_activity_method(
        method,
        arg,
        start_to_close_timeout=start_to_close,
        retry_policy=incurable_not_retried(retry),
        heartbeat_timeout=heartbeat,
    )


RECORD_TIMEOUT = timedelta(seconds=30)
# The store may be down for a while (a database fail-over); an operation waits for it rather than failing.
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=list(NON_RETRYABLE_ERROR_TYPES),
)

SYSTEM_ACTOR = "ckey"

WEBHOOK_TIMEOUT = timedelta(seconds=30)
WEBHOOK_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
)
"""The webhook is tried five times over about fifteen seconds; after that the operation goes on without it."""
ESCALATION_ALERTS = "escalation-alerts-webhook"
"""Patch id: an escalation is also POSTed to the alert webhook (``CKEY_ALERT_WEBHOOK_URL``) as an alert whose rule
is :data:`ESCALATED`; runs that escalated before it replay without the call."""
ESCALATED = "operation-escalated"
"""The rule of the alert an escalation raises."""


class FailedWithResult(ApplicationError):
    """A non-retryable end of an operation that still has a result to record: a check that found broken rules.

    :meth:`OperationWorkflow.operate` records the operation ``failed`` with this error's message *and* ``result``,
    so a dashboard turns red and the report stays readable. The result also travels as the failure's first detail.

    Args:
        message: what broke, naming the rules.
        result: the operation's result (its result model), recorded with the failure.
        type: the rule id (the failure's type).
    """

    def __init__(self, message: str, result: BaseModel, *, type: str) -> None:
        super().__init__(message, result.model_dump(mode="json"), type=type, non_retryable=True)
        self.result = result


class OperationWorkflow:
    """Base class of operation workflows (not a workflow itself).

    Subclasses set :attr:`kind`, decorate the class with ``@workflow.defn`` and their ``run`` with
    ``@workflow.run``, and call :meth:`operate` from ``run``.
    """

    kind: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Before @workflow.defn reads the class: its run then takes the raw input (see _validating_run).
        super().__init_subclass__(**kwargs)
        run = cls.__dict__.get("run")
        if run is not None and hasattr(run, "__temporal_workflow_run"):
            cls.run = _validating_run(run)  # type: ignore[attr-defined]

    def __init__(self) -> None:
        self._status = OperationStatus(kind=self.kind)
        self._audit_seq = 0
        self._start_record: OperationRecord | None = None
        self._start_recorded = False

    @workflow.query
    def progress(self) -> OperationStatus:
        """The operation's state, phase, progress, escalations and gates."""
        return self._status

    # Life cycle -------------------------------------------------------------------------------------------------

    async def operate(self, input: BaseModel, body: Callable[[], Awaitable[ResultT]]) -> ResultT:
        """Run ``body`` as this operation: record its start, its outcome, and raise what it raised.

        A cancel may arrive at any moment, even in the first workflow task before anything was written: the start
        is written in a task of its own that the cancel does not reach, and the end (``cancelled``, once) is
        written after it. An error of :data:`WORKFLOW_FAILURE_TYPES` in ``body`` fails the operation with its
        reason (raised on as a non-retryable ``ApplicationError``, so the workflow fails on any worker).

        A continued-as-new run does not record a second start; ``continue_as_new`` passes straight through.
        """
        info = workflow.info()
        self._status.updated_at = workflow.now()
        start: asyncio.Task[None] | None = None
        if info.continued_run_id is None:
            self._start_record = self._start(input)
            start = asyncio.create_task(self._record_start(self._start_record))
        try:
            if start is not None:
                await asyncio.shield(start)
            result = await body()
        except asyncio.CancelledError:
            await _settled(start, swallow=True)
            await self._finish(OperationState.CANCELLED, error="cancelled on request")
            raise
        except FailureError as exc:
            await _settled(start, swallow=True)
            if is_cancelled_exception(exc):
                await self._finish(OperationState.CANCELLED, error="cancelled on request")
            else:
                kept = exc.result.model_dump(mode="json") if isinstance(exc, FailedWithResult) else None
                await self._finish(OperationState.FAILED, error=failure_message(exc), result=kept)
            raise
        except WORKFLOW_FAILURE_TYPES as exc:
            await _settled(start, swallow=True)
            reason = f"{type(exc).__name__}: {exc}"
            await self._finish(OperationState.FAILED, error=reason)
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from exc
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

    def set_progress(
        self, done: int, total: int | None = None, unit: str | None = None, *, assigned: int | None = None
    ) -> None:
        """Update progress in memory (the query shows it at once); :meth:`checkpoint` persists it.

        ``assigned`` (for operations that assign, then follow) is kept from the last call when not given.
        """
        current = self._status.progress
        self._status.progress = Progress(
            done=done,
            total=current.total if total is None else total,
            unit=unit or current.unit,
            assigned=current.assigned if assigned is None else assigned,
        )
        self._status.updated_at = workflow.now()

    async def checkpoint(self) -> None:
        """Persist progress, escalations and gates to the operation's record (no audit event)."""
        await self._record(RecordOperationInput(update=self._update()))

    async def escalate(self, escalation: Escalation) -> None:
        """Record an escalation (a support case filed, operators alerted) on the operation, and tell the webhook."""
        self._status.escalations.append(escalation)
        await self._persist("escalated", detail=escalation.model_dump(mode="json"), outcome=Outcome.INFO)
        if workflow.patched(ESCALATION_ALERTS):
            summary = escalation.reason + (f" (support case {escalation.case_id})" if escalation.case_id else "")
            await self.post_alert(
                Alert(
                    rule=ESCALATED,
                    operation_id=self.operation_id,
                    kind=self.kind,
                    summary=summary,
                    findings=[
                        AlertFinding(rule=ESCALATED, target=subject, detail=escalation.reason)
                        for subject in escalation.subjects[:ALERT_MAX_FINDINGS]
                    ],
                    at=escalation.at,
                )
            )

    async def post_alert(self, alert: Alert) -> None:
        """POST ``alert`` to the webhook; an outage of the webhook is audited and never changes the operation."""
        try:
            await call(AlertActivityStub.post_alert_webhook, alert, start_to_close=WEBHOOK_TIMEOUT, retry=WEBHOOK_RETRY)
        except ActivityError as exc:
            # The record and the audit trail already carry what happened; the webhook is a courtesy.
            await self.audit(
                "alert.webhook.failed", detail={"error": failure_message(exc)}, target="webhook", outcome=Outcome.FAILED
            )

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

    async def refuse_input(self, error: ValidationError) -> NoReturn:
        """End the operation ``failed`` because its input breaks its model (the API's bounds), never retrying.

        The record the API reserved, if any, shows it; else a record is made. The input itself is not recorded:
        it was not checked, so it may be anything (the reason names the fields, never their values).
        """
        reason = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'input'}: {e['msg']}"
            for e in error.errors(include_url=False, include_input=False, include_context=False)
        )
        self._start_record = self._start(None)
        await self._finish(OperationState.FAILED, error=f"workflow-input-valid: {reason}")
        raise ApplicationError(reason, type="workflow-input-valid", non_retryable=True)

    # Internals --------------------------------------------------------------------------------------------------

    def _start(self, input: BaseModel | None) -> OperationRecord:
        return OperationRecord(
            id=self.operation_id,
            kind=self.kind,
            state=OperationState.RUNNING,
            phase=self._status.phase,
            params={} if input is None else input.model_dump(mode="json"),
            started_by=self.started_by,
            started_at=workflow.info().start_time,
            updated_at=workflow.now(),
            idempotency_key=workflow.memo_value("idempotency_key", default=None),
            fingerprint=workflow.memo_value("fingerprint", default=None),
            dep=workflow.memo_value("dep", default=None),
        )

    async def _record_start(self, record: OperationRecord) -> None:
        # The API may have inserted the record already (its idempotency reservation): the store keeps that one.
        event = self._event("operation.started", {"params": record.params}, None, Outcome.OK, self.started_by)
        await self._record(RecordOperationInput(start=record, event=event))
        self._start_recorded = True

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
        # A start that could not be written (its write failed) is written with the end, so the end has a record.
        start = None if self._start_recorded else self._start_record
        # Recording the end must happen even when a cancel arrives meanwhile: the write runs in its own task, and
        # the workflow waits for it, so that Temporal and the record agree on how the operation ended.
        write = asyncio.create_task(self._record(RecordOperationInput(start=start, update=update, event=event)))
        await _settled(write)

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
            OperationActivityStub.record_operation,
            input,
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RECORD_RETRY,
        )


def _validating_run(run: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """``run`` taking its input raw and validating it itself, so that an input that breaks its model is recorded.

    The data converter would validate the input before any line of the workflow runs: the workflow would fail
    (``WORKFLOW_FAILURE_TYPES``) with the record the API reserved left ``running``. Here the payload is validated
    by the same pydantic model, the same way (its JSON), and a failure ends the operation through
    :meth:`OperationWorkflow.refuse_input`. The payload and the commands are unchanged: histories replay as they were.
    """
    try:
        hints = get_type_hints(run)
    except NameError:  # a type not defined yet: leave it to the data converter
        return run
    model = hints.get("input")
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return run

    async def validating_run(self: OperationWorkflow, input: RawValue) -> Any:
        try:
            checked = model.model_validate_json(input.payload.data)
        except ValidationError as exc:
            await self.refuse_input(exc)
        return await run(self, checked)

    validating_run.__annotations__ = {"input": RawValue, "return": hints.get("return", Any)}
    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(validating_run, name, getattr(run, name))
    setattr(validating_run, "__temporal_workflow_run", True)
    return validating_run


async def _settled(task: asyncio.Task[None] | None, *, swallow: bool = False) -> None:
    """Wait until ``task`` is done, through any cancel of the waiting workflow; raise its error unless ``swallow``.

    The task was started by the workflow and is not cancelled with it (``asyncio.shield``): its write lands.
    """
    if task is None:
        return
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            continue
        except Exception:
            break
    if task.cancelled():  # only when the worker evicts the workflow: nothing is written then
        return
    error = task.exception()
    if error is not None and not swallow:
        raise error


def failure_message(exc: BaseException) -> str:
    """The most telling message of a failure: the innermost application error's, with its type."""
    inner: BaseException = exc
    while isinstance(inner, (ActivityError, ChildWorkflowError)) and inner.cause is not None:
        inner = inner.cause
    kind = getattr(inner, "type", None)
    message = getattr(inner, "message", None) or str(inner)
    return f"{kind}: {message}" if kind else message
