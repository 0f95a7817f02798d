"""A test-only operation kind, ``test.faults``: errors that no retry cures, raised where tests choose.

``activity-value-error`` calls an activity that raises ``ValueError`` (as a NUL byte in a cmdlet argument does);
``workflow-value-error`` raises it in workflow code; ``nondeterminism`` raises Temporal's ``NondeterminismError`` in
workflow code, which must stay a workflow *task* failure.
"""

from __future__ import annotations

from collections import Counter
from enum import StrEnum

from pydantic import BaseModel, Field
from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from ckey.operations import OperationKind
    from workflows.operation import OperationWorkflow, call


class FaultMode(StrEnum):
    ACTIVITY_VALUE_ERROR = "activity-value-error"
    WORKFLOW_VALUE_ERROR = "workflow-value-error"
    NONDETERMINISM = "nondeterminism"
    VALUE_ERROR_OUTSIDE = "value-error-outside"
    """Raised by ``run`` itself, outside ``operate``: only the worker's failure types fail the workflow then."""


class FaultInput(BaseModel):
    mode: FaultMode
    note: str = Field(default="", max_length=20)


class FaultResult(BaseModel):
    done: bool = True


class FaultActivityInput(BaseModel):
    key: str


ATTEMPTS: Counter[str] = Counter()
"""Attempts of :meth:`FaultActivities.raise_value_error` per key (activities run in the test's process)."""


class FaultActivities:
    @activity.defn
    async def raise_value_error(self, input: FaultActivityInput) -> None:
        ATTEMPTS[input.key] += 1
        raise ValueError("embedded null byte")


class FaultPhase(StrEnum):
    FAULTING = "faulting"


@workflow.defn
class FaultWorkflow(OperationWorkflow):
    kind = "test.faults"

    @workflow.run
    async def run(self, input: FaultInput) -> FaultResult:
        if input.mode is FaultMode.VALUE_ERROR_OUTSIDE:
            raise ValueError("raised before the operation began")
        return await self.operate(input, lambda: self._fault(input))

    async def _fault(self, input: FaultInput) -> FaultResult:
        await self.set_phase(FaultPhase.FAULTING)
        if input.mode is FaultMode.ACTIVITY_VALUE_ERROR:
            await call(FaultActivities.raise_value_error, FaultActivityInput(key=self.operation_id))
        elif input.mode is FaultMode.WORKFLOW_VALUE_ERROR:
            raise ValueError(f"no such mode variant {input.note!r}")
        else:
            raise workflow.NondeterminismError("a command that the history does not have")
        return FaultResult()


FAULTS_KIND = OperationKind(name="test.faults", workflow=FaultWorkflow, input_model=FaultInput)
