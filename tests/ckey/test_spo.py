"""The SharePoint family's pieces that need no tenant: the geos' table and migration, leases, input, CLI keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import Connection, inspect

from ckey.cli_spo import key_ref
from ckey.config import load_settings
from ckey.m365 import Cmdlet, M365Gateway
from ckey.models import SpoKeyRef
from ckey.store import Store
from ckey.store.migrate import alembic_config
from ckey.store.schema import Base
from ckey.store.spo import SpoGeoStore
from contracts.spo import SpoDepRegisterParams
from workflows.spo import KINDS, build_geo_input

VERSION = "f635a23bd4a44b9996ff6aadd88d42ba"
PRIMARY = {"vault": "contoso-eastus-kv1", "key": "spo-key-01", "version": VERSION}
SECONDARY = {"vault": "contoso-westus-kv1", "key": "spo-key-02", "version": VERSION}


async def test_migration_0011_makes_the_table_the_model_describes_and_takes_it_away(any_store: Store) -> None:
    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        found: list[Any] = compare_metadata(context, Base.metadata)
        return [d for d in found if "spo_geos" in repr(d)]

    async with any_store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []

    def down_and_up(connection: Connection) -> set[str]:
        command.downgrade(alembic_config(connection), "0009")
        tables = set(inspect(connection).get_table_names())
        command.upgrade(alembic_config(connection), "heads")
        return tables

    async with any_store.engine.begin() as conn:
        assert "spo_geos" not in await conn.run_sync(down_and_up)


async def test_a_refresh_keeps_the_operation_that_moved_a_geo_last(store: Store) -> None:
    geos = SpoGeoStore(store)
    at = datetime.now(UTC)
    await geos.record_geo("nam", "Registering", 25, ["https://a.vault.azure.net/keys/k/1"], "op-1", at)
    await geos.record_geo("NAM", "Registered", 100, ["https://a.vault.azure.net/keys/k/1"], None, at + timedelta(1))
    [view] = await geos.geos()
    assert (view.geo, view.state, view.percent, view.operation_id) == ("NAM", "Registered", 100, "op-1")
    assert view.seen_at == at + timedelta(1)
    await geos.record_geo("NAM", "Rolling", 0, ["https://a.vault.azure.net/keys/k/2"], "op-roll", None)
    moved = await geos.geo("nam")
    assert moved is not None and (moved.state, moved.operation_id) == ("Rolling", "op-roll")
    assert await geos.geo("EUR") is None


def test_the_input_names_the_admin_site_and_the_settings_deadlines(tmp_path: Any) -> None:
    settings = load_settings(
        data_dir=tmp_path, _env_file=None, spo_stall_deadline="PT6H", spo_poll_interval=60, spo_follow_limit="P2D"
    )
    params = SpoDepRegisterParams.model_validate({"geo": " eur ", "primary": PRIMARY, "secondary": SECONDARY})
    made = build_geo_input(params, settings)
    assert (made.geo, made.admin_url) == ("EUR", "https://contosoeur-admin.sharepoint.com")
    assert made.primary_uri == f"https://contoso-eastus-kv1.vault.azure.net/keys/spo-key-01/{VERSION}"
    assert (made.stall_deadline, made.poll_interval, made.follow_limit) == (
        timedelta(hours=6),
        timedelta(minutes=1),
        timedelta(days=2),
    )
    unknown = build_geo_input(params.model_copy(update={"geo": "XYZ"}), settings)
    assert unknown.admin_url is None and unknown.known_geos == ["EUR", "NAM"]


@pytest.mark.parametrize("geo", ["", "N", "NAMERICAS1", "N-A", "NA M", "NAM\x00"])
def test_a_geo_is_two_to_eight_letters(geo: str) -> None:
    with pytest.raises(ValidationError):
        SpoDepRegisterParams.model_validate({"geo": geo, "primary": PRIMARY, "secondary": SECONDARY})


def test_an_operation_holds_its_geo_and_reads_its_two_keys() -> None:
    for kind in KINDS:
        assert kind.leases_of is not None
        params = kind.public_params.model_validate({"geo": "NAM", "primary": PRIMARY, "secondary": SECONDARY})
        leases = {(lease.target, lease.mode.value) for lease in kind.leases_of(params).leases}
        assert leases == {
            ("spo:geo:nam", "write"),
            ("key:contoso-eastus-kv1/spo-key-01", "read"),
            ("key:contoso-westus-kv1/spo-key-02", "read"),
        }


def test_the_cli_takes_a_key_by_name_or_by_its_versioned_uri() -> None:
    assert key_ref(f"contoso-eastus-kv1/spo-key-01/{VERSION}") == PRIMARY
    assert key_ref(f"https://contoso-eastus-kv1.vault.azure.net/keys/spo-key-01/{VERSION}") == PRIMARY
    for bad in ("contoso-eastus-kv1/spo-key-01", "https://contoso-eastus-kv1.vault.azure.net/keys/spo-key-01"):
        with pytest.raises(typer.BadParameter):
            key_ref(bad)


def test_the_cli_resolves_a_key_named_without_a_version_to_its_current_one() -> None:
    asked: list[tuple[str, str]] = []

    def current(vault: str, key: str) -> str:
        asked.append((vault, key))
        return VERSION

    assert key_ref("contoso-eastus-kv1/spo-key-01", current) == PRIMARY
    assert key_ref("https://contoso-eastus-kv1.vault.azure.net/keys/spo-key-01", current) == PRIMARY
    assert key_ref(f"contoso-eastus-kv1/spo-key-01/{VERSION}", current) == PRIMARY
    assert asked == [("contoso-eastus-kv1", "spo-key-01")] * 2
    for bad in ("contoso-eastus-kv1", "a/b/c/d", "contoso-eastus-kv1/spo key"):
        with pytest.raises(typer.BadParameter):
            key_ref(bad, current)


async def test_restore_is_sent_through_the_geos_admin_site_with_both_keys_by_name() -> None:
    sent: list[Cmdlet] = []

    class Transport:
        async def invoke(self, cmdlet: Cmdlet) -> list[dict[str, Any]]:
            sent.append(cmdlet)
            return []

    gateway = M365Gateway(Transport())
    admin = "https://contosoeur-admin.sharepoint.com"
    await gateway.restore_spo_data_encryption_policy(admin, SpoKeyRef(**PRIMARY), SpoKeyRef(**SECONDARY))
    [cmdlet] = sent
    assert (cmdlet.name, cmdlet.admin_url) == ("Restore-SPODataEncryptionPolicy", admin)
    assert cmdlet.parameters() == {
        "Identity": admin,
        "PrimaryKeyVaultName": "contoso-eastus-kv1",
        "PrimaryKeyName": "spo-key-01",
        "PrimaryKeyVersion": VERSION,
        "SecondaryKeyVaultName": "contoso-westus-kv1",
        "SecondaryKeyName": "spo-key-02",
        "SecondaryKeyVersion": VERSION,
    }
