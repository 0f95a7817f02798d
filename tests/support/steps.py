"""A test-only operation kind, ``test.steps``: the machinery exercised without any Customer Key I/O.

It validates a DEP name and a key URI like a real kind, walks ``steps`` steps (each released by the ``release``
signal when ``hold`` is set, so tests control progress), and can fail at a chosen step.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from ckey.models import DepName, KeyUriField
    from ckey.operations import OperationKind
    from workflows.operation import OperationWorkflow


class StepsPhase(StrEnum):
    PREPARING = "preparing"
    STEPPING = "stepping"
    DONE = "done"


class StepsInput(BaseModel):
    dep: DepName
    key_uri: KeyUriField | None = None
    steps: int = Field(default=3, ge=1, le=1000)
    hold: bool = False
    fail_at_step: int | None = None
    step_delay: timedelta = timedelta(0)


class StepsResult(BaseModel):
    steps_done: int


@workflow.defn
class StepsWorkflow(OperationWorkflow):
    kind = "test.steps"

    def __init__(self) -> None:
        super().__init__()
        self._released = 0

    @workflow.signal
    def release(self, count: int) -> None:
        self._released += count

    @workflow.run
    async def run(self, input: StepsInput) -> StepsResult:
        return await self.operate(input, lambda: self._steps(input))

    async def _steps(self, input: StepsInput) -> StepsResult:
        await self.set_phase(StepsPhase.PREPARING)
        self.set_progress(0, input.steps, "steps")
        await self.set_phase(StepsPhase.STEPPING)
        for step in range(1, input.steps + 1):
            if input.hold:
                await workflow.wait_condition(lambda s=step: self._released >= s)  # type: ignore[misc]
            if input.step_delay:
                await workflow.sleep(input.step_delay)
            if input.fail_at_step == step:
                raise ApplicationError(f"step {step} refused", type="StepRefused", non_retryable=True)
            self.set_progress(step)
            await self.checkpoint()
        await self.set_phase(StepsPhase.DONE)
        return StepsResult(steps_done=input.steps)


STEPS_KIND = OperationKind(
    name="test.steps",
    workflow=StepsWorkflow,
    input_model=StepsInput,
    description="test-only: walks steps",
    dep_of=lambda params: params.dep,  # type: ignore[attr-defined]
)
