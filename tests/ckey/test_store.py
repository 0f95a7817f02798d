from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import text, update

from ckey.operations import (
    AuditEvent,
    OperationRecord,
    OperationState,
    OperationUpdate,
    Outcome,
    Progress,
)
from ckey.store import Store
from ckey.store.schema import AuditEventRow

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


async def drop_append_only_guards(store: Store) -> None:
    """What an attacker with the owner's rights does first: drop the triggers that make the trail append-only."""
    async with store.engine.begin() as conn:
        for table in ("audit_events", "audit_checkpoints"):
            if store.engine.url.get_backend_name() == "sqlite":
                for verb in ("update", "delete"):
                    await conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{verb}"))
            else:
                await conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}"))
                await conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}"))


def _record(op_id: str, kind: str = "test.steps", at: datetime = T0) -> OperationRecord:
    return OperationRecord(
        id=op_id,
        kind=kind,
        state=OperationState.RUNNING,
        phase="starting",
        params={"dep": "USA_mailboxes"},
        started_by="alice@contoso.com",
        started_at=at,
        updated_at=at,
        dep="USA_mailboxes",
    )


def _event(key: str, op_id: str | None = "op-1", action: str = "phase.stepping") -> AuditEvent:
    return AuditEvent(key=key, at=T0, actor="alice@contoso.com", action=action, operation_id=op_id)


async def test_operation_record_round_trip_and_filters(any_store: Store) -> None:
    await any_store.create_operation(_record("op-1"))
    await any_store.create_operation(_record("op-2", kind="other.kind", at=T0 + timedelta(minutes=1)))
    again = await any_store.create_operation(_record("op-1", kind="changed"))
    assert again.kind == "test.steps"  # a second create returns the stored record unchanged

    changed = await any_store.update_operation(
        OperationUpdate(id="op-1", at=T0 + timedelta(minutes=5), phase="stepping", progress=Progress(done=2, total=4))
    )
    assert changed is not None
    assert (changed.phase, changed.progress.percent, changed.updated_at) == (
        "stepping",
        50.0,
        T0 + timedelta(minutes=5),
    )

    assert [r.id for r in await any_store.list_operations()] == ["op-2", "op-1"]
    assert [r.id for r in await any_store.list_operations(kind="test.steps")] == ["op-1"]
    assert [r.id for r in await any_store.list_operations(dep="USA_mailboxes", state=OperationState.RUNNING)] == [
        "op-2",
        "op-1",
    ]
    assert await any_store.list_operations(state=OperationState.SUCCEEDED) == []
    assert await any_store.update_operation(OperationUpdate(id="nope", at=T0)) is None


async def test_final_state_is_kept(any_store: Store) -> None:
    await any_store.create_operation(_record("op-1"))
    end = T0 + timedelta(hours=1)
    await any_store.update_operation(
        OperationUpdate(id="op-1", at=end, state=OperationState.SUCCEEDED, result={"steps_done": 3})
    )
    late = await any_store.update_operation(OperationUpdate(id="op-1", at=end, state=OperationState.RUNNING))
    assert late is not None and late.state is OperationState.SUCCEEDED
    stored = await any_store.get_operation("op-1")
    assert stored is not None
    assert (stored.ended_at, stored.result) == (end, {"steps_done": 3})


async def test_audit_append_is_idempotent_and_chained(any_store: Store) -> None:
    first = await any_store.append_audit(_event("op-1/a"))
    retried = await any_store.append_audit(_event("op-1/a"))
    second = await any_store.append_audit(_event("op-1/b", action="phase.done"))
    other = await any_store.append_audit(_event("op-2/a", op_id="op-2"))
    assert (first.seq, retried.seq, second.seq, other.seq) == (1, 1, 2, 3)
    assert second.prev_hash == first.hash
    assert [e.action for e in await any_store.list_audit(operation_id="op-1")] == ["phase.stepping", "phase.done"]
    assert await any_store.verify_audit_chain() == type(await any_store.verify_audit_chain())(ok=True, events=3)


async def test_concurrent_appends_keep_one_chain(any_store: Store) -> None:
    await asyncio.gather(*(any_store.append_audit(_event(f"op-1/{i}")) for i in range(40)))
    events = await any_store.list_audit()
    assert [e.seq for e in events] == list(range(1, 41))
    assert (await any_store.verify_audit_chain()).ok


async def test_tampering_is_detected(any_store: Store) -> None:
    for i in range(5):
        await any_store.append_audit(_event(f"op-1/{i}", action=f"step.{i}"))
    await drop_append_only_guards(any_store)
    async with any_store.session() as session:
        await session.execute(update(AuditEventRow).where(AuditEventRow.seq == 3).values(outcome=Outcome.FAILED.value))
        await session.commit()
    verdict = await any_store.verify_audit_chain()
    assert (verdict.ok, verdict.broken_at) == (False, 3)


async def test_removed_last_entry_is_detected(any_store: Store) -> None:
    for i in range(3):
        await any_store.append_audit(_event(f"op-1/{i}"))
    await drop_append_only_guards(any_store)
    async with any_store.session() as session:
        await session.delete(await session.get(AuditEventRow, 3))
        await session.commit()
    assert not (await any_store.verify_audit_chain()).ok


async def test_operations_filter_by_who_started_them(any_store: Store) -> None:
    await any_store.create_operation(_record("op-people"))
    for n in range(3):
        scheduled = _record(f"ckey-inventory-sync-2026-12-01T09:0{n}:00Z", "inventory.sync", T0 + timedelta(minutes=n))
        await any_store.create_operation(scheduled.model_copy(update={"started_by": "schedule:ckey-inventory-sync"}))
    assert [r.id for r in await any_store.list_operations(scheduled=False)] == ["op-people"]
    assert await any_store.count_operations(scheduled=True) == 3
    assert await any_store.count_operations() == 4
