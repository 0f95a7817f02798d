"""ckey's SQL store: operation records and the append-only, hash-chained audit trail.

SQLite by default (``sqlite+aiosqlite``), PostgreSQL in production (``postgresql+psycopg``). The schema is created
and upgraded by Alembic (:func:`ckey.store.migrate.upgrade`), never by ``create_all`` outside tests of the ORM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError
from sqlalchemy import Select, String, event, func, select, type_coerce, update
from sqlalchemy.engine import RowMapping, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from ckey.audit import (
    END_ACTIONS,
    GENESIS_HASH,
    ChainChecker,
    ChainVerification,
    Checkpoint,
    CheckpointSigner,
    as_utc,
    audit_hash,
)
from ckey.config import ensure_private_dir
from ckey.operations import (
    AuditEvent,
    AuditRecord,
    LeaseRequest,
    OperationRecord,
    OperationState,
    OperationUpdate,
    Outcome,
)
from ckey.store import leases as lease_table
from ckey.store.leases import LeaseConflict, LeaseHolder
from ckey.store.schema import AuditCheckpointRow, AuditEventRow, AuditHeadRow, OperationRow

if TYPE_CHECKING:
    from ckey.config import Settings

SCHEDULE_STARTER = "schedule:"
"""How the record of an operation a Temporal Schedule started names its starter (``schedule:<id>``)."""
RESERVED_PHASE = "starting"
"""The phase of a record the API reserved and whose workflow has not reported yet."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_SEQ = 2**63 - 1


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``, with SQLite tuned for several writers (WAL, a busy timeout)."""
    is_sqlite = url.startswith("sqlite")
    if is_sqlite:
        _prepare_sqlite_file(url)
    engine = create_async_engine(
        url,
        connect_args={"timeout": 30} if is_sqlite else {},
        pool_pre_ping=not is_sqlite,
    )
    if is_sqlite and ":memory:" not in url:

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

    return engine


def _prepare_sqlite_file(url: str) -> None:
    """Create a SQLite database's folder (0700) and its empty file (0600) before SQLite opens it.

    SQLite would create the file with the umask's mode (often world-readable); its ``-wal`` and ``-shm`` files take
    the database file's mode, so creating the file first covers them too.
    """
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    ensure_private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


class Store:
    """Async access to ckey's tables."""

    def __init__(
        self, engine: AsyncEngine, *, signer: CheckpointSigner | None = None, checkpoint_every: int = 100
    ) -> None:
        self.engine = engine
        self.signer = signer
        """Signs the audit chain's checkpoints; without one (tests of other parts) none are written."""
        self.checkpoint_every = checkpoint_every
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # SQLite allows one writer and makes the others poll with sleeps; queueing this process's writers in
        # order is much faster. Other processes are still serialized by SQLite's lock (and PostgreSQL's row lock).
        self._sqlite_writes = asyncio.Lock() if engine.url.get_backend_name() == "sqlite" else None

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        if self._sqlite_writes is None:
            yield
        else:
            async with self._sqlite_writes:
                yield

    @classmethod
    def from_url(cls, url: str) -> Store:
        """A store on a new engine for ``url``."""
        return cls(create_engine(url))

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """The store of ``settings``: its database, and the audit checkpoint key (created on first use)."""
        return cls(
            create_engine(settings.resolved_database_url),
            signer=CheckpointSigner.from_file(settings.audit_checkpoint_key_path),
            checkpoint_every=settings.audit_checkpoint_every,
        )

    async def close(self) -> None:
        """Dispose of the engine's connections."""
        await self.engine.dispose()

    def session(self) -> AsyncSession:
        """A new session (for read models that need their own queries)."""
        return self._sessions()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction that writes (queued behind this process's other SQLite writers)."""
        async with self._writing(), self._sessions() as session, session.begin():
            yield session

    # Operations ----------------------------------------------------------------------------------------------

    async def create_operation(self, record: OperationRecord) -> OperationRecord:
        """Insert an operation's first record; if it exists already, return the stored one unchanged."""
        async with self._sessions() as session:
            existing = await session.get(OperationRow, record.id)
            if existing is not None:
                return _to_record(existing)
            session.add(OperationRow(**_row_values(record)))
            try:
                await session.commit()
            except IntegrityError:
                # Another writer (the API or the workflow's first activity) inserted it first.
                await session.rollback()
                stored = await session.get(OperationRow, record.id)
                assert stored is not None
                return _to_record(stored)
        return record

    async def reserve_operation(
        self, record: OperationRecord, leases: LeaseRequest | None = None
    ) -> tuple[OperationRecord, bool]:
        """Insert an operation's record before its workflow starts: the reservation of its id and of its targets.

        The primary key makes this atomic across API processes and databases: of concurrent requests for the same
        id (the same caller and Idempotency-Key), exactly one inserts. ``leases`` are taken in the same transaction,
        so an operation never runs without what it holds, nor holds anything without a record that will end.

        Returns:
            The stored record and whether this call inserted it (``False``: another request holds the id).

        Raises:
            LeaseConflict: other running operations hold targets of ``leases``; nothing was stored.
        """
        holding = leases is not None and not leases.empty
        async with self._writing(), self._sessions() as session:
            if holding:
                await lease_table.lock(session)
            existing = await session.get(OperationRow, record.id)
            if existing is not None:
                return _to_record(existing), False
            if leases is not None and holding:
                holders = await lease_table.conflicts(session, record.id, leases)
                if holders:
                    raise LeaseConflict(holders)
            session.add(OperationRow(**_row_values(record)))
            try:
                await session.flush()
                if leases is not None and holding:
                    await lease_table.acquire(session, record.id, leases, record.started_at)
                await session.commit()
            except IntegrityError:
                await session.rollback()
                stored = await session.get(OperationRow, record.id)
                if stored is None:  # inserted and released again in between: let the caller retry
                    raise
                return _to_record(stored), False
        return record, True

    async def release_operation(self, operation_id: str) -> None:
        """Remove a reservation whose workflow could not be started, so that a retry of the request may start it."""
        async with self._writing(), self._sessions() as session, session.begin():
            row = await session.get(OperationRow, operation_id, with_for_update=True)
            if row is not None and row.phase == RESERVED_PHASE and not OperationState(row.state).ended:
                await session.delete(row)
                await lease_table.release(session, operation_id)

    async def release_leases(self, operation_id: str) -> int:
        """Drop what an operation holds; how many leases it held.

        Its end does it; this is for a workflow that ended without its code running, as a termination does.
        """
        async with self._writing(), self._sessions() as session, session.begin():
            return await lease_table.release(session, operation_id)

    async def extend_leases(self, operation_id: str, request: LeaseRequest) -> list[str]:
        """Hold more targets for a running operation (what it found only once it ran); what it newly holds.

        Targets it holds already are kept as they are; an operation that has ended holds nothing more.

        Raises:
            LeaseConflict: other running operations hold some of them; nothing was taken.
        """
        async with self._writing(), self._sessions() as session, session.begin():
            await lease_table.lock(session)
            row = await session.get(OperationRow, operation_id)
            if row is not None and OperationState(row.state).ended:
                return []
            held = {target for target, _ in await lease_table.held(session, operation_id, 100_000)}
            wanted = [lease for lease in request.leases if lease.target not in held]
            if not wanted:
                return []
            more = LeaseRequest(leases=wanted)
            holders = await lease_table.conflicts(session, operation_id, more)
            if holders:
                raise LeaseConflict(holders)
            await lease_table.acquire(session, operation_id, more, datetime.now(UTC))
            return [lease.target for lease in wanted]

    async def leases(self, operation_id: str, limit: int = 1000) -> list[tuple[str, str]]:
        """What an operation holds: ``(target, mode)``, at most ``limit``."""
        async with self._sessions() as session:
            return await lease_table.held(session, operation_id, limit)

    async def update_operation(self, change: OperationUpdate) -> OperationRecord | None:
        """Apply ``change`` to a stored operation. A record that has ended keeps its final state.

        Returns:
            The updated record, or ``None`` if there is no such operation.
        """
        async with self._writing(), self._sessions() as session, session.begin():
            row = await session.get(OperationRow, change.id, with_for_update=True)
            if row is None:
                return None
            if OperationState(row.state).ended:
                return _to_record(row)
            values = change.model_dump(exclude={"id", "at"}, exclude_none=True, mode="json")
            for name, value in values.items():
                setattr(row, name, value)
            row.updated_at = change.at
            if change.state is not None and change.state.ended:
                row.ended_at = change.at
                # Whatever the end, the targets are free again in the same transaction that records it.
                await lease_table.release(session, change.id)
            return _to_record(row)

    async def get_operation(self, operation_id: str) -> OperationRecord | None:
        """One operation, or ``None``."""
        async with self._sessions() as session:
            row = await session.get(OperationRow, operation_id)
            return _to_record(row) if row else None

    async def list_operations(
        self,
        *,
        state: OperationState | None = None,
        kind: str | None = None,
        dep: str | None = None,
        id_prefix: str | None = None,
        scheduled: bool | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[OperationRecord]:
        """Operations, newest first, filtered by state, kind, DEP, the start of their id, and starter.

        ``scheduled``: only the runs a Temporal Schedule started (``started_by`` ``schedule:<id>``), or none of them.
        """
        query = _operation_filters(
            select(OperationRow).order_by(OperationRow.started_at.desc(), OperationRow.id),
            state,
            kind,
            dep,
            id_prefix,
            scheduled,
        )
        async with self._sessions() as session:
            rows = (await session.scalars(query.limit(limit).offset(offset))).all()
            return [_to_record(row) for row in rows]

    async def count_operations(
        self,
        *,
        state: OperationState | None = None,
        kind: str | None = None,
        dep: str | None = None,
        id_prefix: str | None = None,
        scheduled: bool | None = None,
    ) -> int:
        """How many operations :meth:`list_operations` would list with these filters, on every page."""
        query = _operation_filters(
            select(func.count()).select_from(OperationRow), state, kind, dep, id_prefix, scheduled
        )
        async with self._sessions() as session:
            return int((await session.execute(query)).scalar_one())

    # Audit trail ---------------------------------------------------------------------------------------------

    async def append_audit(self, event: AuditEvent) -> AuditRecord:
        """Append one audit entry, chained to the previous one. A repeated key returns the entry already stored.

        With a signer, the same transaction stores a signed checkpoint of the new head every
        ``checkpoint_every`` entries and at each operation's end, so an entry and its checkpoint land together.
        """
        # Stored in UTC: SQLite keeps a time's wall clock without its offset, and the hash is over the UTC time.
        event = event.model_copy(update={"at": as_utc(event.at)})
        async with self._writing(), self._sessions() as session:
            # The UPDATE comes first so that it takes the write lock (SQLite) or the row lock (PostgreSQL) on the
            # chain head before anything is read: appends from many workers are serialized here.
            head = (
                await session.execute(
                    update(AuditHeadRow)
                    .where(AuditHeadRow.id == 1)
                    .values(seq=AuditHeadRow.seq + 1)
                    .returning(AuditHeadRow.seq, AuditHeadRow.hash)
                )
            ).one_or_none()
            if head is None:
                raise RuntimeError("audit chain head missing: run the migrations (ckey db upgrade)")
            existing = (await session.execute(_audit_select().where(AuditEventRow.key == event.key))).mappings().first()
            if existing is not None:
                stored = _to_audit(existing)
                await session.rollback()
                return stored
            seq, prev_hash = head
            digest = audit_hash(prev_hash, seq, event)
            session.add(AuditEventRow(seq=seq, prev_hash=prev_hash, hash=digest, **event.model_dump()))
            await session.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1).values(hash=digest))
            if self.signer is not None and (seq % self.checkpoint_every == 0 or event.action in END_ACTIONS):
                checkpoint = self.signer.sign(seq, digest, datetime.now(UTC))
                session.add(AuditCheckpointRow(**checkpoint.model_dump()))
            await session.commit()
        return AuditRecord(seq=seq, prev_hash=prev_hash, hash=digest, **event.model_dump())

    async def list_audit(
        self, *, operation_id: str | None = None, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditRecord]:
        """Audit entries in chain order, for one operation or all.

        A row that does not parse (an outcome outside the enum, a detail that is not a JSON object, a bad time)
        never fails the listing: it comes back as a marker, ``action="audit.malformed"``, ``outcome="failed"``,
        ``malformed`` saying why, its readable columns (seq, key, hashes, actor, operation) kept.
        """
        if after_seq >= _MAX_SEQ:
            return []  # nothing is stored past a signed 64-bit integer, and SQLite cannot even compare with it
        query = _audit_select().where(AuditEventRow.seq > after_seq).order_by(AuditEventRow.seq).limit(limit)
        if operation_id is not None:
            query = query.where(AuditEventRow.operation_id == operation_id)
        async with self._sessions() as session:
            return [_to_audit(row) for row in (await session.execute(query)).mappings().all()]

    async def list_checkpoints(self, *, after_seq: int = 0, limit: int = 1000) -> list[Checkpoint]:
        """Signed checkpoints of the audit chain in order of the entry they name."""
        if after_seq >= _MAX_SEQ:
            return []
        query = (
            select(
                AuditCheckpointRow.seq,
                AuditCheckpointRow.hash,
                type_coerce(AuditCheckpointRow.at, String).label("at"),
                AuditCheckpointRow.key_id,
                AuditCheckpointRow.signature,
            )
            .where(AuditCheckpointRow.seq > after_seq)
            .order_by(AuditCheckpointRow.seq)
            .limit(limit)
        )
        async with self._sessions() as session:
            return [_to_checkpoint(row) for row in (await session.execute(query)).mappings().all()]

    async def audit_head(self) -> tuple[int, str] | None:
        """The chain head: the last entry's sequence number and hash (``None`` if the head row is missing)."""
        async with self._sessions() as session:
            head = await session.get(AuditHeadRow, 1)
            return (head.seq, head.hash) if head is not None else None

    async def verify_audit_chain(
        self, batch: int = 5000, public_key: Ed25519PublicKey | None = None
    ) -> ChainVerification:
        """Recompute the whole chain and match it against the signed checkpoints.

        Reports the first entry that was changed, removed, inserted or is malformed, and truncation or
        recomputation that a checkpoint reveals.

        Args:
            batch: entries read per query.
            public_key: the checkpoint key to verify signatures with; default the signer's own.
        """
        key = public_key or (self.signer.public_key if self.signer is not None else None)
        # Checkpoints first: each names an entry that was committed before it, so every one is within the walk.
        checkpoints: list[Checkpoint] = []
        while page := await self.list_checkpoints(after_seq=checkpoints[-1].seq if checkpoints else 0, limit=batch):
            checkpoints.extend(page)
        checker = ChainChecker(checkpoints, key)

        async def walk() -> bool:
            while records := await self.list_audit(after_seq=checker.count, limit=batch):
                for record in records:
                    if not checker.feed(record.model_dump()):
                        return False
            return True

        head = None
        if await walk():
            # Appends that ran during the walk moved the head past it: follow them a few times.
            for _ in range(5):
                head = await self.audit_head()
                if head is None or head[0] <= checker.count or not await walk():
                    break
        return checker.finish(head)


def _row_values(record: OperationRecord) -> dict[str, Any]:
    return record.model_dump(mode="json") | {
        "started_at": record.started_at,
        "updated_at": record.updated_at,
        "ended_at": record.ended_at,
    }


def _operation_filters(
    query: Select[Any],
    state: OperationState | None,
    kind: str | None,
    dep: str | None,
    id_prefix: str | None,
    scheduled: bool | None = None,
) -> Select[Any]:
    if scheduled is not None:
        by_schedule = OperationRow.started_by.startswith(SCHEDULE_STARTER)
        query = query.where(by_schedule if scheduled else ~by_schedule)
    if state is not None:
        query = query.where(OperationRow.state == state.value)
    if kind is not None:
        query = query.where(OperationRow.kind == kind)
    if dep is not None:
        query = query.where(OperationRow.dep == dep)
    if id_prefix:
        query = query.where(OperationRow.id.startswith(id_prefix, autoescape=True))
    return query


def _to_record(row: OperationRow) -> OperationRecord:
    return OperationRecord.model_validate(
        {
            "id": row.id,
            "kind": row.kind,
            "state": row.state,
            "phase": row.phase,
            "progress": row.progress or {},
            "params": row.params or {},
            "started_by": row.started_by,
            "started_at": as_utc(row.started_at),
            "updated_at": as_utc(row.updated_at),
            "ended_at": as_utc(row.ended_at) if row.ended_at else None,
            "idempotency_key": row.idempotency_key,
            "fingerprint": row.fingerprint,
            "dep": row.dep,
            "escalations": row.escalations or [],
            "gates": row.gates or [],
            "result": row.result,
            "error": row.error,
        }
    )


def _audit_select() -> Any:
    # The time and the detail come back as stored (no type processing), so that a malformed value cannot fail
    # the whole query: _to_audit parses them one row at a time.
    return select(
        AuditEventRow.seq,
        AuditEventRow.key,
        AuditEventRow.operation_id,
        type_coerce(AuditEventRow.at, String).label("at"),
        AuditEventRow.actor,
        AuditEventRow.action,
        AuditEventRow.target,
        AuditEventRow.outcome,
        type_coerce(AuditEventRow.detail, String).label("detail"),
        AuditEventRow.prev_hash,
        AuditEventRow.hash,
    )


def _parse_at(value: Any) -> datetime:
    if isinstance(value, datetime):
        return as_utc(value)
    return as_utc(datetime.fromisoformat(str(value)))


def _to_audit(row: RowMapping | Mapping[str, Any]) -> AuditRecord:
    problems: list[str] = []
    values = dict(row)
    try:
        values["at"] = _parse_at(row["at"])
    except (TypeError, ValueError):
        problems.append(f"at: {row['at']!r} is not a time")
        values["at"] = _EPOCH
    detail = row["detail"]
    if isinstance(detail, str | bytes):
        try:
            detail = json.loads(detail)
        except ValueError:
            problems.append("detail: not JSON")
            detail = {}
    if detail is None:
        detail = {}
    if not isinstance(detail, dict):
        problems.append("detail: not a JSON object")
        detail = {}
    values["detail"] = detail
    if not problems:
        try:
            return AuditRecord.model_validate(values)
        except ValidationError as exc:
            problems.extend(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    reason = "; ".join(problems)
    # A marker in the row's place: its readable columns, and none of its content passed off as valid.
    return AuditRecord(
        seq=row["seq"],
        key=str(row["key"]),
        operation_id=None if row["operation_id"] is None else str(row["operation_id"]),
        at=values["at"] if isinstance(values["at"], datetime) else _EPOCH,
        actor=str(row["actor"]),
        action="audit.malformed",
        target=None,
        outcome=Outcome.FAILED,
        detail={"reason": reason},
        prev_hash=str(row["prev_hash"]),
        hash=str(row["hash"]),
        malformed=reason,
    )


def _to_checkpoint(row: RowMapping | Mapping[str, Any]) -> Checkpoint:
    try:
        at = _parse_at(row["at"])
    except (TypeError, ValueError):
        at = _EPOCH  # the signature over the real time then fails, which reports the checkpoint
    return Checkpoint(
        seq=row["seq"], hash=str(row["hash"]), at=at, key_id=str(row["key_id"]), signature=str(row["signature"])
    )


__all__: Sequence[str] = (
    "GENESIS_HASH",
    "ChainVerification",
    "Checkpoint",
    "LeaseConflict",
    "LeaseHolder",
    "Store",
    "audit_hash",
    "create_engine",
)
