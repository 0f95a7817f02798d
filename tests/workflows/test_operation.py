"""The operation base workflow: life cycle on the time-skipping server, and replay over checked-in histories."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities import Gateways, build_activities
from ckey.operations import OperationState
from ckey.store import Store
from tests.support.steps import StepsInput, StepsResult, StepsWorkflow
from workflows import all_workflows

HISTORIES = Path(__file__).parent / "histories"


async def test_long_steps_finish_in_skipped_time_and_are_recorded(
    time_env: WorkflowEnvironment, store: Store, task_queue: str
) -> None:
    async with Worker(
        time_env.client, task_queue=task_queue, workflows=[StepsWorkflow], activities=build_activities(Gateways(store))
    ):
        op_id = f"op-{uuid.uuid4()}"
        result = await time_env.client.execute_workflow(
            StepsWorkflow.run,
            StepsInput(dep="USA_mailboxes", steps=3, step_delay=timedelta(days=7)),
            id=op_id,
            task_queue=task_queue,
        )
    assert result == StepsResult(steps_done=3)
    record = await store.get_operation(op_id)
    assert record is not None
    assert record.state is OperationState.SUCCEEDED
    assert record.started_by == "ckey"  # started outside the API: no memo, the system acts
    assert record.ended_at is not None and record.ended_at - record.started_at >= timedelta(days=21)
    actions = [e.action for e in await store.list_audit(operation_id=op_id)]
    assert actions == ["operation.started", "phase.preparing", "phase.stepping", "phase.done", "operation.succeeded"]


async def test_failure_is_recorded_and_raised(time_env: WorkflowEnvironment, store: Store, task_queue: str) -> None:
    async with Worker(
        time_env.client, task_queue=task_queue, workflows=[StepsWorkflow], activities=build_activities(Gateways(store))
    ):
        op_id = f"op-{uuid.uuid4()}"
        with pytest.raises(WorkflowFailureError):
            await time_env.client.execute_workflow(
                StepsWorkflow.run, StepsInput(dep="USA_mailboxes", fail_at_step=1), id=op_id, task_queue=task_queue
            )
    record = await store.get_operation(op_id)
    assert record is not None and record.state is OperationState.FAILED
    assert record.error == "StepRefused: step 1 refused"


async def _record_history(client: Client, store: Store, task_queue: str) -> WorkflowHistory:
    async with Worker(
        client, task_queue=task_queue, workflows=[StepsWorkflow], activities=build_activities(Gateways(store))
    ):
        handle = await client.start_workflow(
            StepsWorkflow.run,
            StepsInput(dep="USA_mailboxes", steps=2, hold=True),
            id="op-replay-steps",
            task_queue=task_queue,
            memo={"started_by": "alice@contoso.com"},
        )
        await handle.signal(StepsWorkflow.release, 2)
        await handle.result()
        return await handle.fetch_history()


@pytest.mark.skipif(not os.environ.get("CKEY_RECORD_HISTORIES"), reason="set CKEY_RECORD_HISTORIES=1 to re-record")
async def test_record_histories(env: WorkflowEnvironment, store: Store, task_queue: str) -> None:
    history = await _record_history(env.client, store, task_queue)
    (HISTORIES / "steps_workflow.json").write_text(history.to_json())


@pytest.mark.parametrize("name", sorted(p.name for p in HISTORIES.glob("*.json")))
async def test_replay_checked_in_histories(name: str) -> None:
    history = WorkflowHistory.from_json("op-replay", (HISTORIES / name).read_text())
    replayer = Replayer(workflows=[StepsWorkflow, *all_workflows()], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


def test_histories_are_checked_in() -> None:
    names = {p.stem for p in HISTORIES.glob("*.json")}
    assert names >= {
        "steps_workflow",
        "keyvault_health",
        "keyvault_key_restore",
        "keyvault_access_revoke",
        "exchange_dep_create",
        "exchange_dep_assign",
    }
