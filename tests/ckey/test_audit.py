"""The audit trail: signed checkpoints, tampering of every kind, malformed rows, append-only in the database."""

from __future__ import annotations

import base64
import stat
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ckey.audit import (
    AuditKeyError,
    ChainChecker,
    Checkpoint,
    CheckpointSigner,
    audit_hash,
    checkpoint_problem,
    load_public_key,
    public_key_pem,
)
from ckey.operations import AuditEvent, Outcome
from ckey.store import Store, create_engine
from ckey.store.migrate import upgrade
from tests.ckey.test_store import T0, _event, _record, drop_append_only_guards

# A stored row as a tamperer would change it: straight in SQL, triggers dropped first.


async def _sql(store: Store, statement: str, **params: object) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(text(statement), params)


async def _trail(store: Store, count: int = 6) -> None:
    """``count`` entries of op-1, the last one its end: checkpoints (every 2) at 2, 4 and 6."""
    for i in range(1, count):
        await store.append_audit(_event(f"op-1/{i}", action=f"step.{i}"))
    await store.append_audit(_event("op-1/end", action="operation.succeeded"))


async def tamper(store: Store, how: str) -> None:
    """One of the four ways to rewrite the trail that verification must catch (on a 6-entry trail)."""
    await drop_append_only_guards(store)
    if how == "edit":
        await _sql(store, "UPDATE audit_events SET outcome = 'failed' WHERE seq = 3")
    elif how == "delete-row":
        await _sql(store, "DELETE FROM audit_events WHERE seq = 3")
    elif how == "truncate":
        # Remove the tail and rewind the head to the last remaining entry: the chain alone is consistent again.
        await _sql(store, "DELETE FROM audit_events WHERE seq > 4")
        row4 = (await store.list_audit(after_seq=3, limit=1))[0]
        await _sql(store, "UPDATE audit_head SET seq = 4, hash = :h WHERE id = 1", h=row4.hash)
    elif how == "recompute":
        await _sql(store, "UPDATE audit_events SET action = 'step.rewritten' WHERE seq = 3")
        records = await store.list_audit()
        prev = records[1].hash
        for rec in records[2:]:
            event = AuditEvent.model_validate(rec.model_dump(exclude={"seq", "prev_hash", "hash", "malformed"}))
            digest = audit_hash(prev, rec.seq, event)
            await _sql(
                store, "UPDATE audit_events SET prev_hash = :p, hash = :h WHERE seq = :s", p=prev, h=digest, s=rec.seq
            )
            prev = digest
        await _sql(store, "UPDATE audit_head SET hash = :h WHERE id = 1", h=prev)
    else:
        raise AssertionError(how)


EXPECTED_BREAK = {
    "edit": (3, "row 3 was changed"),
    "delete-row": (3, "row 3 is missing"),
    "truncate": (5, "names row 6 but the chain ends at row 4"),
    "recompute": (3, "a row from 3 to 4 was changed and the chain recomputed"),
}


@pytest.fixture
async def signed_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated store with a checkpoint signer (every 2 entries), on SQLite or PostgreSQL (``indirect``)."""
    backend = getattr(request, "param", "sqlite")
    url = f"sqlite+aiosqlite:///{tmp_path / 'ckey.db'}"
    if backend == "postgresql":
        url = request.getfixturevalue("postgres").create_database()
    store = Store(
        create_engine(url), signer=CheckpointSigner.from_file(tmp_path / "keys" / "cp.pem"), checkpoint_every=2
    )
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()


BOTH = pytest.mark.parametrize("signed_store", ["sqlite", "postgresql"], indirect=True)


# Checkpoints ---------------------------------------------------------------------------------------------------


def test_checkpoint_signature_covers_seq_hash_and_time(tmp_path: Path) -> None:
    signer = CheckpointSigner.from_file(tmp_path / "data" / "keys" / "audit-checkpoint.pem")
    checkpoint = signer.sign(7, "ab" * 32, T0)
    public = load_public_key(public_key_pem(signer.public_key).encode())
    assert checkpoint_problem(checkpoint, public) is None
    for forged in (
        checkpoint.model_copy(update={"seq": 6}),
        checkpoint.model_copy(update={"hash": "cd" * 32}),
        checkpoint.model_copy(update={"at": T0 + timedelta(seconds=1)}),
        checkpoint.model_copy(update={"signature": base64.b64encode(b"x" * 64).decode()}),
    ):
        assert "invalid signature" in (checkpoint_problem(forged, public) or "")
    other = CheckpointSigner.from_file(tmp_path / "other.pem")
    assert "another key" in (checkpoint_problem(other.sign(7, "ab" * 32, T0), public) or "")
    # The key is created like the token-signing key: private to its owner.
    key_file = tmp_path / "data" / "keys" / "audit-checkpoint.pem"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    # The same file gives the same key again.
    assert CheckpointSigner.from_file(key_file).key_id == signer.key_id


def test_processes_starting_together_share_one_checkpoint_key(tmp_path: Path) -> None:
    path = tmp_path / "data" / "keys" / "audit-checkpoint.pem"
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(lambda _: CheckpointSigner.from_file(path).key_id, range(16)))
    assert len(ids) == 1
    assert [p.name for p in path.parent.iterdir()] == ["audit-checkpoint.pem"]  # no staging file left behind
    path.write_text("not a key")
    with pytest.raises(AuditKeyError):
        CheckpointSigner.from_file(path)


@BOTH
async def test_checkpoints_every_n_entries_and_at_each_operation_end(signed_store: Store) -> None:
    await signed_store.append_audit(_event("op-1/a"))
    await signed_store.append_audit(_event("op-1/b"))
    await signed_store.append_audit(_event("op-1/c", action="operation.failed"))
    await signed_store.append_audit(_event("op-1/c", action="operation.failed"))  # a retry: no second checkpoint
    await signed_store.append_audit(_event("op-2/a", op_id="op-2"))
    checkpoints = await signed_store.list_checkpoints()
    assert [c.seq for c in checkpoints] == [2, 3, 4]
    records = await signed_store.list_audit()
    assert [c.hash for c in checkpoints] == [records[1].hash, records[2].hash, records[3].hash]
    verdict = await signed_store.verify_audit_chain()
    assert (verdict.ok, verdict.events, verdict.checkpoints, verdict.last_checkpoint) == (True, 4, 3, 4)
    assert verdict.signatures_checked


# Tampering -----------------------------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("how", sorted(EXPECTED_BREAK))
async def test_every_kind_of_tampering_is_detected(signed_store: Store, how: str) -> None:
    await _trail(signed_store)
    assert (await signed_store.verify_audit_chain()).ok
    await tamper(signed_store, how)
    verdict = await signed_store.verify_audit_chain()
    seq, reason = EXPECTED_BREAK[how]
    assert (verdict.ok, verdict.broken_at) == (False, seq), verdict
    assert reason in (verdict.reason or "")


async def test_truncation_and_recomputation_pass_without_checkpoints(signed_store: Store) -> None:
    """Why checkpoints exist: the hash chain alone accepts a cut tail with a rewound head."""
    await _trail(signed_store)
    await tamper(signed_store, "truncate")
    checkpoints = await signed_store.list_checkpoints()
    unanchored = ChainChecker([], None)
    for record in await signed_store.list_audit():
        assert unanchored.feed(record.model_dump())
    assert unanchored.finish(await signed_store.audit_head()).ok
    anchored = ChainChecker(checkpoints, signed_store.signer.public_key if signed_store.signer else None)
    for record in await signed_store.list_audit():
        anchored.feed(record.model_dump())
    assert anchored.finish(await signed_store.audit_head()).broken_at == 5


async def test_a_rewound_head_with_the_rows_left_in_place_is_reported(signed_store: Store) -> None:
    await _trail(signed_store, 4)
    row2 = (await signed_store.list_audit(after_seq=1, limit=1))[0]
    await _sql(signed_store, "UPDATE audit_head SET seq = 2, hash = :h WHERE id = 1", h=row2.hash)
    verdict = await signed_store.verify_audit_chain()
    assert (verdict.ok, verdict.broken_at) == (False, 3)
    assert "the head was rewound" in (verdict.reason or "")


async def test_a_forged_checkpoint_is_reported(signed_store: Store) -> None:
    await _trail(signed_store, 3)
    await drop_append_only_guards(signed_store)
    await _sql(signed_store, "UPDATE audit_checkpoints SET hash = :h WHERE seq = 2", h="0" * 64)
    verdict = await signed_store.verify_audit_chain()
    assert (verdict.ok, verdict.broken_at) == (False, 2)
    assert "invalid signature" in (verdict.reason or "")


# Malformed rows ------------------------------------------------------------------------------------------------


@BOTH
async def test_a_malformed_outcome_is_the_break_and_a_marker_in_listings(signed_store: Store) -> None:
    await _trail(signed_store, 4)
    await drop_append_only_guards(signed_store)
    await _sql(signed_store, "UPDATE audit_events SET outcome = 'exploded' WHERE seq = 2")
    listed = await signed_store.list_audit(operation_id="op-1")
    assert [r.seq for r in listed] == [1, 2, 3, 4]
    marker = listed[1]
    assert (marker.action, marker.outcome) == ("audit.malformed", Outcome.FAILED)
    assert marker.malformed and "outcome" in marker.malformed
    assert listed[0].malformed is None and listed[2].action == "step.3"
    verdict = await signed_store.verify_audit_chain()
    assert (verdict.ok, verdict.broken_at) == (False, 2)
    assert "row 2 is malformed" in (verdict.reason or "") and "outcome" in (verdict.reason or "")


@BOTH
async def test_a_detail_that_is_not_an_object_is_malformed(signed_store: Store) -> None:
    await _trail(signed_store, 3)
    await drop_append_only_guards(signed_store)
    await _sql(signed_store, "UPDATE audit_events SET detail = '[1, 2]' WHERE seq = 3")
    assert "not a JSON object" in ((await signed_store.list_audit())[2].malformed or "")
    verdict = await signed_store.verify_audit_chain()
    assert (verdict.ok, verdict.broken_at) == (False, 3)


async def test_invalid_json_and_a_bad_time_are_malformed_on_sqlite(signed_store: Store) -> None:
    # PostgreSQL's json type refuses invalid JSON on write; SQLite stores any text.
    await _trail(signed_store, 3)
    await drop_append_only_guards(signed_store)
    await _sql(signed_store, "UPDATE audit_events SET detail = '{not json' WHERE seq = 1")
    await _sql(signed_store, "UPDATE audit_events SET at = 'yesterday' WHERE seq = 2")
    listed = await signed_store.list_audit()
    assert "detail: not JSON" in (listed[0].malformed or "")
    assert "is not a time" in (listed[1].malformed or "")
    assert (await signed_store.verify_audit_chain()).broken_at == 1


async def test_huge_after_lists_nothing(signed_store: Store) -> None:
    await _trail(signed_store, 2)
    assert await signed_store.list_audit(after_seq=2**63) == []
    assert await signed_store.list_audit(after_seq=10**30, operation_id="op-1") == []


# Append-only in the database -----------------------------------------------------------------------------------


async def test_sqlite_triggers_refuse_update_and_delete(signed_store: Store) -> None:
    await _trail(signed_store, 2)
    for statement in (
        "UPDATE audit_events SET outcome = 'failed' WHERE seq = 1",
        "DELETE FROM audit_events WHERE seq = 2",
        "UPDATE audit_checkpoints SET hash = 'x' WHERE seq = 2",
        "DELETE FROM audit_checkpoints",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            await _sql(signed_store, statement)
    assert (await signed_store.verify_audit_chain()).ok
    await signed_store.append_audit(_event("op-1/more"))  # appends still work


async def test_postgresql_app_role_appends_but_cannot_rewrite(postgres: object, tmp_path: Path) -> None:
    cluster = postgres
    port = cluster.port  # type: ignore[attr-defined]
    admin = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        # Other tests' migrations may have created it NOLOGIN already; the DBA's part is to let it log in.
        conn.execute(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ckey_app') THEN "
            "CREATE ROLE ckey_app LOGIN; ELSE ALTER ROLE ckey_app LOGIN; END IF; END $$"
        )
    owner_url = cluster.create_database()  # type: ignore[attr-defined]
    owner = Store.from_url(owner_url)
    await upgrade(owner.engine)
    app_url = make_url(owner_url).set(username="ckey_app").render_as_string(hide_password=False)
    app = Store(create_engine(app_url), signer=CheckpointSigner.from_file(tmp_path / "cp.pem"), checkpoint_every=2)
    try:
        async with app.engine.connect() as conn:
            assert (await conn.execute(text("SELECT current_user"))).scalar() == "ckey_app"
        # What the service does works: records, targets, appends (with their checkpoints), the head moving.
        await app.create_operation(_record("op-1"))
        await _trail(app, 4)
        assert [c.seq for c in await app.list_checkpoints()] == [2, 4]
        assert (await app.verify_audit_chain()).ok
        # What a compromised service would do is refused by the grants.
        for statement in (
            "UPDATE audit_events SET outcome = 'failed' WHERE seq = 1",
            "DELETE FROM audit_events WHERE seq = 4",
            "TRUNCATE audit_events",
            "UPDATE audit_checkpoints SET hash = 'x'",
            "DELETE FROM audit_checkpoints",
            "DELETE FROM audit_head",
            "INSERT INTO audit_head (id, seq, hash) VALUES (2, 0, 'x')",
            "DROP TRIGGER audit_events_append_only ON audit_events",
        ):
            with pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
                await _sql(app, statement)
        await _sql(app, "UPDATE audit_head SET seq = seq WHERE id = 1")  # the head alone is updatable
        # The owner is refused by the triggers (it would have to drop them, which the checkpoints then reveal).
        for statement in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events", "TRUNCATE audit_events"):
            with pytest.raises(DBAPIError, match="append-only"):
                await _sql(owner, statement)
        # Tables of later migrations (run by the owner) get the normal rights through the default privileges.
        await _sql(owner, "CREATE TABLE later_table (id integer primary key)")
        await _sql(app, "INSERT INTO later_table VALUES (1)")
        await _sql(app, "DELETE FROM later_table")
        assert (await app.verify_audit_chain()).ok
    finally:
        await app.close()
        await owner.close()


# Files ---------------------------------------------------------------------------------------------------------


async def test_sqlite_files_and_folder_are_private(tmp_path: Path) -> None:
    folder = tmp_path / "data" / "nested"
    store = Store.from_url(f"sqlite+aiosqlite:///{folder / 'ckey.db'}")
    try:
        await upgrade(store.engine)
        await store.append_audit(_event("op-1/a"))
        async with store.engine.connect() as conn:  # an open connection keeps the -wal and -shm files
            await conn.execute(text("SELECT 1"))
            files = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    finally:
        await store.close()
    assert files["ckey.db"] == 0o600
    assert files.get("ckey.db-wal", 0o600) == 0o600 and files.get("ckey.db-shm", 0o600) == 0o600
    assert "ckey.db-wal" in files
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


def test_checkpoint_model_round_trips_through_json(tmp_path: Path) -> None:
    checkpoint = CheckpointSigner.from_file(tmp_path / "k.pem").sign(1, "0" * 64, T0)
    assert Checkpoint.model_validate_json(checkpoint.model_dump_json()) == checkpoint


def test_ckey_up_creates_the_checkpoint_key_before_any_child_starts(tmp_path: Path) -> None:
    from ckey.config import load_settings
    from ckey.stack import prepare_shared_files

    settings = load_settings(data_dir=tmp_path / "data", _env_file=None)
    prepare_shared_files(settings)
    key = settings.audit_checkpoint_key_path
    assert key == tmp_path / "data" / "keys" / "audit-checkpoint.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    signer = CheckpointSigner.from_file(key)
    prepare_shared_files(settings)  # a second `ckey up` keeps it
    assert CheckpointSigner.from_file(key).key_id == signer.key_id


@BOTH
async def test_migration_0004_downgrades_and_upgrades_again(signed_store: Store) -> None:
    from alembic import command
    from sqlalchemy import Connection

    from ckey.store.migrate import alembic_config

    def migrate(revision: str) -> Callable[[Connection], None]:
        def run(conn: Connection) -> None:
            if revision == "head":
                command.upgrade(alembic_config(conn), revision)
            else:
                command.downgrade(alembic_config(conn), revision)

        return run

    await _trail(signed_store, 2)
    async with signed_store.engine.begin() as conn:
        await conn.run_sync(migrate("0003"))
    await _sql(signed_store, "UPDATE audit_events SET actor = 'x' WHERE seq = 1")  # no trigger below 0004
    async with signed_store.engine.begin() as conn:
        await conn.run_sync(migrate("head"))
    with pytest.raises(DBAPIError, match="append-only"):
        await _sql(signed_store, "DELETE FROM audit_events")
