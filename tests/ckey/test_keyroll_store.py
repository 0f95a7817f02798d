"""The versions in effect (``ckey.store.keyroll``): one row per workload, target and key, replaced by each roll."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from ckey.store import Store
from ckey.store.keyroll import KeyInEffect, KeyRollStore
from ckey.store.schema import Base

KEY = "https://Contoso-EastUS-KV1.vault.azure.net/keys/exo-key-01/"
AT = datetime(2026, 12, 1, 7, 0, tzinfo=UTC)


async def test_a_roll_replaces_the_version_a_target_has_in_effect(any_store: Store) -> None:
    rolls = KeyRollStore(any_store)
    await rolls.record(
        KeyInEffect(workload="mailbox_dep", target="USA_Mailboxes", key_id=KEY, version="a" * 32, refreshed_at=AT)
    )
    await rolls.record(KeyInEffect(workload="spo_geo", target="NAM", key_id=KEY, version="a" * 32, refreshed_at=AT))
    later = AT + timedelta(days=90)
    await rolls.record(
        KeyInEffect(
            workload="mailbox_dep",
            target="usa_mailboxes",
            key_id=KEY.lower(),
            version="b" * 32,
            refreshed_at=later,
            operation_id="op-2",
        )
    )
    found = sorted((r.workload, r.target, r.version, r.operation_id) for r in await rolls.in_effect(KEY.upper()))
    assert found == [("mailbox_dep", "usa_mailboxes", "b" * 32, "op-2"), ("spo_geo", "nam", "a" * 32, None)]
    assert await rolls.in_effect("https://other.vault.azure.net/keys/exo-key-01") == []


async def test_migration_0013_makes_the_table_the_model_describes(any_store: Store) -> None:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        found: list[Any] = compare_metadata(context, Base.metadata)
        return [d for d in found if "key_versions_in_effect" in repr(d)]

    async with any_store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
