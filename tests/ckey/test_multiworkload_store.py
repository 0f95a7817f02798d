"""The multi-workload inventory (``ckey.store.multiworkload``) and its migration (0010)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect

from ckey.store import Store
from ckey.store.migrate import alembic_config
from ckey.store.multiworkload import MultiWorkloadStore
from ckey.store.schema import Base
from contracts.m365 import AssignmentInfo, MultiDepInfo

TABLES = {"m365_deps", "m365_assignment"}


async def test_migration_0010_makes_the_tables_the_model_describes_and_takes_them_away(any_store: Store) -> None:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        found: list[Any] = compare_metadata(context, Base.metadata)
        return [d for d in found if any(t in repr(d) for t in TABLES)]

    async with any_store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []

    def down_and_up(connection: Connection) -> set[str]:
        command.downgrade(alembic_config(connection), "0009")
        tables = set(inspect(connection).get_table_names())
        command.upgrade(alembic_config(connection), "head")
        return tables

    async with any_store.engine.begin() as conn:
        assert not TABLES & await conn.run_sync(down_and_up)


async def test_deps_and_the_assignment_as_read(store: Store) -> None:
    inventory = MultiWorkloadStore(store)
    now = datetime.now(UTC)
    assert await inventory.assignment() is None and await inventory.deps() == []
    keys = ["https://a.vault.azure.net/keys/k", "https://b.vault.azure.net/keys/k"]
    await inventory.record_deps(
        [MultiDepInfo(name="Contoso_Global", guid="G-1", azure_key_ids=keys), MultiDepInfo(name="Old", enabled=False)],
        now,
        None,
    )
    await inventory.record_dep(MultiDepInfo(name="Old", enabled=True), now, "op-1")
    assert [(d.name, d.enabled, d.source) for d in await inventory.deps()] == [
        ("Contoso_Global", True, None),
        ("Old", True, "op-1"),
    ]
    found = await inventory.dep("g-1")
    assert found is not None and found.azure_key_ids == keys

    await inventory.record_assignment(
        AssignmentInfo(dep="Contoso_Global", properties={"Name": "Contoso_Global"}), now, "op-2", assigned_at=now
    )
    later = now + timedelta(hours=1)
    await inventory.record_assignment(AssignmentInfo(dep="contoso_global"), later, None)
    same = await inventory.assignment()
    assert same is not None and (same.assigned_by, same.assigned_at, same.seen_at) == ("op-2", now, later)
    # Another DEP than the one ckey assigned: when and by whom is not known.
    await inventory.record_assignment(AssignmentInfo(dep="Old"), later, None)
    other = await inventory.assignment()
    assert other is not None and (other.dep, other.assigned_by, other.assigned_at) == ("Old", None, None)

    await inventory.record_deps([MultiDepInfo(name="Old")], later, None)
    assert [d.name for d in await inventory.deps()] == ["Old"]
