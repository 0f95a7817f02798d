"""Key backups in the store: kept by id on SQLite and PostgreSQL, described by SHA-256 and size only."""

from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import BaseModel
from sqlalchemy import Connection, inspect

from ckey.models import rule_error
from ckey.store import Store
from ckey.store.backups import KeyBackupId, KeyBackupStore, claim_check_key_backup
from ckey.store.migrate import alembic_config
from ckey.store.schema import Base
from ckey.store.targets import TargetStore


async def test_a_backup_is_kept_by_id_and_described_without_its_bytes(any_store: Store) -> None:
    blob = os.urandom(100 * 1024) + b"\x00"
    backups = KeyBackupStore(any_store)
    backup = await backups.create(blob, "alice@contoso.com")
    assert backup.id.startswith("kb-") and backup.size == len(blob)
    assert backup.sha256 == hashlib.sha256(blob).hexdigest()
    assert await backups.get(backup.id) == backup
    assert await backups.read(backup.id) == blob
    assert "data" not in backup.model_dump()
    unknown = f"kb-{uuid.uuid4()}"
    assert await backups.get(unknown) is None and await backups.read(unknown) is None
    assert await backups.get("kb-' OR 1=1 --") is None


class _Restore(BaseModel):
    backup: KeyBackupId | None = None


async def test_the_claim_check_refuses_an_unknown_backup(store: Store) -> None:
    known = await KeyBackupStore(store).create(b"blob", "alice@contoso.com")
    targets = TargetStore(store)
    params = _Restore(backup=known.id)
    assert await claim_check_key_backup(params, targets, "alice@contoso.com") is params
    assert await claim_check_key_backup(_Restore(), targets, "alice@contoso.com") == _Restore()
    with pytest.raises(type(rule_error("x", "y"))) as refused:
        await claim_check_key_backup(_Restore(backup=f"kb-{uuid.uuid4()}"), targets, "alice@contoso.com")
    assert refused.value.type == "key-backup-exists"


async def test_migration_0003_makes_the_table_the_model_describes_and_takes_it_away(any_store: Store) -> None:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        found: list[Any] = compare_metadata(context, Base.metadata)
        return [d for d in found if "key_backups" in repr(d)]

    async with any_store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []

    def down_and_up(connection: Connection) -> set[str]:
        command.downgrade(alembic_config(connection), "0002")
        tables = set(inspect(connection).get_table_names())
        command.upgrade(alembic_config(connection), "head")
        return tables

    async with any_store.engine.begin() as conn:
        assert "key_backups" not in await conn.run_sync(down_and_up)
    assert await KeyBackupStore(any_store).create(b"again", "alice@contoso.com")
