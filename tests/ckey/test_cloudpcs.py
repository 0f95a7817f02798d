"""Windows 365's read model: Cloud PCs in SQL (migration 0012), ``ckey w365 status``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from typer.testing import CliRunner

from ckey import cli
from ckey.store import Store
from ckey.store.cloudpcs import CloudPcStore
from ckey.store.migrate import alembic_config
from ckey.store.schema import Base
from ckey.windows365 import CloudPc

PMK, CMK = "encryptedUsingPlatformManagedKey", "encryptedUsingCustomerManagedKey"


def pc(index: int, state: str = PMK) -> CloudPc:
    return CloudPc(id=f"00000000-0000-0000-0000-{index:012d}", displayName=f"CPC-{index}", diskEncryptionState=state)


async def test_a_plan_puts_only_platform_managed_cloud_pcs_in_batches_once(store: Store) -> None:
    pcs = CloudPcStore(store)
    read = [pc(1), pc(2, CMK), pc(3), pc(4), pc(5)]
    await pcs.record(read, datetime.now(UTC))
    assert await pcs.plan("op-1", read, 2) == (5, 1, 2)
    assert [v.id for v in await pcs.batch("op-1", 0)] == [read[0].id, read[2].id]
    # Planned again (a retry after a crash), even with another batch size: the same plan.
    assert await pcs.plan("op-1", read, 3) == (5, 1, 2)
    await pcs.mark_failed([read[4].id])
    assert [v.label for v in await pcs.failed()] == [f"CPC-5 ({read[4].id})"]
    assert await pcs.counts() == {PMK: 4, CMK: 1}
    # Graph lists it customer-managed later: no longer failed.
    await pcs.record([pc(5, CMK)], datetime.now(UTC))
    assert await pcs.failed() == []
    page, total = await pcs.page(state=CMK)
    assert total == 2 and {v.id for v in page} == {read[1].id, read[4].id}


async def test_migration_0012_makes_the_tables_the_models_describe_and_takes_them_away(any_store: Store) -> None:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        found: list[Any] = compare_metadata(context, Base.metadata)
        return [d for d in found if "cloud_pc" in repr(d)]

    async with any_store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []

    def down_and_up(connection: Connection) -> set[str]:
        config = alembic_config(connection)
        before = ScriptDirectory.from_config(config).get_revision("0012").down_revision
        command.downgrade(config, str(before))
        tables = set(inspect(connection).get_table_names())
        command.upgrade(config, "head")
        return tables

    async with any_store.engine.begin() as conn:
        assert not {"cloud_pcs", "cloud_pc_tenant"} & await conn.run_sync(down_and_up)
    await CloudPcStore(any_store).set_tenant("customerManagedKey", datetime.now(UTC))
    assert (await CloudPcStore(any_store).tenant())[0] == "customerManagedKey"


def test_w365_status_shows_the_setting_the_counts_and_the_failed_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake(method: str, path: str, **kwargs: Any) -> Any:
        asked.append(path)
        return {
            "tenant_disk_encryption_type": "customerManagedKey",
            "tenant_seen_at": "2026-12-01T07:00:00Z",
            "counts": {CMK: 6, PMK: 1},
            "failed": [{"id": "pc-7", "display_name": "CPC-7", "disk_encryption_state": PMK, "operation_id": "op-1"}],
            "total": 7,
            "items": [],
        }

    monkeypatch.setattr(cli, "_call", fake)
    out = CliRunner().invoke(cli.app, ["w365", "status", "--refresh"])
    assert out.exit_code == 0, out.output
    assert asked == ["/api/windows365/cloud-pcs?limit=1&refresh=true"]
    assert "tenant setting: customerManagedKey" in out.output
    assert f"{CMK}: 6" in out.output and "cloud PCs: 7" in out.output
    assert "CPC-7 (pc-7)" in out.output and "failed: 1" in out.output
