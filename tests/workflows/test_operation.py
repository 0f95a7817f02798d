"""The operation base workflow: life cycle on the time-skipping server, and replay over checked-in histories."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowHistory,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError, RetryState
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker
from temporalio.workflow import _Definition as _WorkflowDefinition

from activities import Gateways, build_activities
from ckey.config import Settings
from ckey.models import Role
from ckey.operations import OperationKind, OperationRecord, OperationState
from ckey.store import Store
from tests.support.faults import ATTEMPTS, FAULTS_KIND, FaultActivities, FaultInput, FaultMode, FaultWorkflow
from tests.support.steps import STEPS_KIND, StepsInput, StepsResult, StepsWorkflow
from worker import WORKFLOW_FAILURE_TYPES
from workflows import all_workflows, product_kinds, product_registry

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
    text = (HISTORIES / name).read_text()
    # Replayed under the id it ran with, as a worker replays it: a workflow may build ids from its own (a child's).
    started = json.loads(text)["events"][0].get("workflowExecutionStartedEventAttributes", {})
    history = WorkflowHistory.from_json(started.get("workflowId") or "op-replay", text)
    replayer = Replayer(workflows=[StepsWorkflow, *all_workflows()], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


TEST_HISTORIES = {"steps_workflow"}
"""Histories of the test workflows (tests/support), replayed with the product's."""


@pytest.mark.parametrize("kind", product_kinds(), ids=lambda kind: kind.name)
def test_every_registered_kind_has_a_history_of_its_workflow(kind: OperationKind) -> None:
    # Derived from the registry: registering a kind without a history, or removing one, fails here.
    assert kind.history_name is not None, f"{kind.name} starts a workflow: it needs a replay history"
    path = HISTORIES / f"{kind.history_name}.json"
    assert path.is_file(), f"{kind.name} has no replay history: record {path.name} (CKEY_RECORD_HISTORIES=1)"
    history = WorkflowHistory.from_json(kind.name, path.read_text())
    started = history.events[0].workflow_execution_started_event_attributes
    assert started.workflow_type.name == _WorkflowDefinition.must_from_class(kind.workflow).name


def test_every_checked_in_history_is_of_a_registered_kind() -> None:
    expected = {kind.history_name for kind in product_kinds()} | TEST_HISTORIES
    assert {p.stem for p in HISTORIES.glob("*.json")} == expected


# Cancel at any moment (finding 5) ------------------------------------------------------------------------------------


@pytest.fixture
async def test_kinds_worker(client: Client, op_settings: Settings, store: Store) -> AsyncIterator[Worker]:
    """The test kinds, registered for the API, on a worker configured like the product's."""
    for kind in (STEPS_KIND, FAULTS_KIND):
        product_registry().register(kind)
    try:
        async with Worker(
            client,
            task_queue=op_settings.temporal_task_queue,
            workflows=[StepsWorkflow, FaultWorkflow],
            activities=[*build_activities(Gateways(store)), FaultActivities().raise_value_error],
            workflow_failure_exception_types=WORKFLOW_FAILURE_TYPES,
        ) as worker:
            yield worker
    finally:
        for kind in (STEPS_KIND, FAULTS_KIND):
            product_registry().unregister(kind.name)


async def _ended(store: Store, op_id: str) -> OperationRecord:
    for _ in range(1200):
        record = await store.get_operation(op_id)
        if record is not None and record.state.ended:
            return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"{op_id} did not end: {record}")


CANCEL_DELAYS_MS = (0, 10, 100, 1000)
CANCEL_TRIES = 10


async def test_a_cancel_at_any_moment_after_the_start_ends_the_record_and_the_trail_cancelled_once(
    api: httpx.AsyncClient,
    auth: Callable[..., dict[str, str]],
    client: Client,
    store: Store,
    test_kinds_worker: Worker,
) -> None:
    headers = auth(Role.OPERATOR)

    async def start_then_cancel(delay_ms: int) -> str:
        # Held at its first step: it never ends by itself, only the cancel ends it.
        params = {"dep": "USA_mailboxes", "steps": 1, "hold": True}
        started = await api.post("/api/operations", json={"kind": "test.steps", "params": params}, headers=headers)
        assert started.status_code == 202, started.text
        op_id: str = started.json()["id"]
        await asyncio.sleep(delay_ms / 1000)
        cancelled = await api.post(f"/api/operations/{op_id}/cancel", headers=headers)
        assert cancelled.status_code == 202, cancelled.text
        return op_id

    runs = [(delay, n) for delay in CANCEL_DELAYS_MS for n in range(CANCEL_TRIES)]
    ids = await asyncio.gather(*(start_then_cancel(delay) for delay, _ in runs))
    for (delay, n), op_id in zip(runs, ids, strict=True):
        where = f"cancel {delay} ms after the start, try {n + 1}: {op_id}"
        record = await _ended(store, op_id)
        assert record.state is OperationState.CANCELLED, where
        assert record.ended_at is not None and record.error == "cancelled on request", where
        with pytest.raises(WorkflowFailureError) as failure:
            await client.get_workflow_handle(op_id).result()
        assert isinstance(failure.value.cause, CancelledError), where
        actions = [e.action for e in await store.list_audit(operation_id=op_id)]
        assert actions.count("operation.cancelled") == 1, (where, actions)
        assert "operation.succeeded" not in actions and "operation.failed" not in actions, (where, actions)
        assert actions.count("operation.started") == 1, (where, actions)
        # The start is written before the end, never after it.
        assert actions.index("operation.started") < actions.index("operation.cancelled"), (where, actions)
        again = await store.get_operation(op_id)
        assert again == record, where  # nothing wrote after the end


# Errors no retry cures (finding 6) -----------------------------------------------------------------------------------


async def test_an_activity_value_error_fails_the_operation_after_one_attempt_with_its_message(
    client: Client, store: Store, op_settings: Settings, test_kinds_worker: Worker
) -> None:
    op_id = f"op-{uuid.uuid4()}"
    handle = await client.start_workflow(
        FaultWorkflow.run,
        FaultInput(mode=FaultMode.ACTIVITY_VALUE_ERROR),
        id=op_id,
        task_queue=op_settings.temporal_task_queue,
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=60)
    activity_error = failure.value.cause
    assert isinstance(activity_error, ActivityError)
    assert activity_error.retry_state is RetryState.NON_RETRYABLE_FAILURE
    assert ATTEMPTS[op_id] == 1
    record = await _ended(store, op_id)
    assert record.state is OperationState.FAILED
    assert record.error == "ValueError: embedded null byte"
    failed = [e for e in await store.list_audit(operation_id=op_id) if e.action == "operation.failed"]
    assert [e.detail for e in failed] == [{"error": "ValueError: embedded null byte"}]


async def test_a_listed_error_in_workflow_code_fails_the_operation_not_its_task(
    client: Client, store: Store, op_settings: Settings, test_kinds_worker: Worker
) -> None:
    op_id = f"op-{uuid.uuid4()}"
    handle = await client.start_workflow(
        FaultWorkflow.run,
        FaultInput(mode=FaultMode.WORKFLOW_VALUE_ERROR, note="x"),
        id=op_id,
        task_queue=op_settings.temporal_task_queue,
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=60)
    assert isinstance(failure.value.cause, ApplicationError) and failure.value.cause.type == "ValueError"
    record = await _ended(store, op_id)
    assert (record.state, record.error) == (OperationState.FAILED, "ValueError: no such mode variant 'x'")
    assert not await _task_failures(handle)


async def test_the_worker_fails_a_workflow_on_a_listed_error_outside_any_operation(
    client: Client, op_settings: Settings, test_kinds_worker: Worker
) -> None:
    handle = await client.start_workflow(
        FaultWorkflow.run,
        FaultInput(mode=FaultMode.VALUE_ERROR_OUTSIDE),
        id=f"op-{uuid.uuid4()}",
        task_queue=op_settings.temporal_task_queue,
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=60)
    assert isinstance(failure.value.cause, ApplicationError) and failure.value.cause.type == "ValueError"
    assert failure.value.cause.message == "raised before the operation began"
    assert not await _task_failures(handle)


async def _task_failures(handle: WorkflowHandle[Any, Any]) -> list[str]:
    history = await handle.fetch_history()
    return [
        e.workflow_task_failed_event_attributes.failure.message
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]


async def test_a_nondeterminism_error_stays_a_task_failure(
    client: Client, store: Store, op_settings: Settings, test_kinds_worker: Worker
) -> None:
    op_id = f"op-{uuid.uuid4()}"
    handle = await client.start_workflow(
        FaultWorkflow.run,
        FaultInput(mode=FaultMode.NONDETERMINISM),
        id=op_id,
        task_queue=op_settings.temporal_task_queue,
    )
    try:
        for _ in range(600):
            failures = await _task_failures(handle)
            if failures:
                break
            await asyncio.sleep(0.05)
        assert failures and "a command that the history does not have" in failures[0]
        assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
        record = await store.get_operation(op_id)
        assert record is not None and record.state is OperationState.RUNNING  # a rolled-back deploy goes on
    finally:
        await handle.terminate("test over")


@pytest.mark.parametrize("reserved", [True, False], ids=["record-reserved", "no-record"])
async def test_an_input_that_breaks_its_model_fails_the_workflow_and_the_operation(
    client: Client, store: Store, op_settings: Settings, test_kinds_worker: Worker, reserved: bool
) -> None:
    # Started around the API, with what the API would refuse (a note over its 20 characters).
    op_id = f"op-{uuid.uuid4()}"
    if reserved:  # as the API does before it starts a workflow
        now = datetime.now(UTC)
        await store.create_operation(
            OperationRecord(
                id=op_id,
                kind="test.faults",
                state=OperationState.RUNNING,
                phase="starting",
                params={"mode": "workflow-value-error", "note": "x" * 500},
                started_by="alice@contoso.com",
                started_at=now,
                updated_at=now,
            )
        )
    raw = {"mode": "workflow-value-error", "note": "x" * 500}
    handle = await client.start_workflow("FaultWorkflow", raw, id=op_id, task_queue=op_settings.temporal_task_queue)
    with pytest.raises(WorkflowFailureError) as failure:
        await asyncio.wait_for(handle.result(), timeout=60)
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "workflow-input-valid"
    assert cause.message == "note: String should have at most 20 characters"
    assert not await _task_failures(handle)
    record = await _ended(store, op_id)
    assert record.state is OperationState.FAILED
    assert record.error == "workflow-input-valid: note: String should have at most 20 characters"
    actions = [e.action for e in await store.list_audit(operation_id=op_id)]
    assert actions == ["operation.failed"]
    assert "x" * 21 not in json.dumps([e.model_dump(mode="json") for e in await store.list_audit(operation_id=op_id)])
