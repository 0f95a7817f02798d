"""ckey's SQL store: operation records and the append-only, hash-chained audit trail.

SQLite by default (``sqlite+aiosqlite``), PostgreSQL in production (``postgresql+psycopg``). The schema is created
and upgraded by Alembic (:func:`ckey.store.migrate.upgrade`), never by ``create_all`` outside tests of the ORM.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from ckey.operations import (
    AuditEvent,
    AuditRecord,
    OperationRecord,
    OperationState,
    OperationUpdate,
    Outcome,
)
from ckey.store.schema import AuditEventRow, AuditHeadRow, OperationRow

GENESIS_HASH = "0" * 64
RESERVED_PHASE = "starting"
"""The phase of a record the API reserved and whose workflow has not reported yet."""


class ChainVerification(BaseModel):
    """Result of checking the audit trail's hash chain."""

    ok: bool
    events: int
    broken_at: int | None = None
    """The first sequence number whose hash or link does not match."""


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes and PostgreSQL answers in the session's time zone; ckey keeps UTC.
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def audit_hash(prev_hash: str, seq: int, event: AuditEvent) -> str:
    """The chain hash of one audit entry: SHA-256 over the previous hash and the entry's canonical JSON."""
    body = event.model_dump(mode="json")
    body["at"] = _utc(event.at).isoformat()
    canonical = json.dumps({"seq": seq, "prev": prev_hash, **body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``, with SQLite tuned for several writers (WAL, a busy timeout)."""
    is_sqlite = url.startswith("sqlite")
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


class Store:
    """Async access to ckey's tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
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

    async def reserve_operation(self, record: OperationRecord) -> tuple[OperationRecord, bool]:
        """Insert an operation's record before its workflow starts: the reservation of its id.

        The primary key makes this atomic across API processes and databases: of concurrent requests for the same
        id (the same caller and Idempotency-Key), exactly one inserts.

        Returns:
            The stored record and whether this call inserted it (``False``: another request holds the id).
        """
        async with self._writing(), self._sessions() as session:
            existing = await session.get(OperationRow, record.id)
            if existing is not None:
                return _to_record(existing), False
            session.add(OperationRow(**_row_values(record)))
            try:
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
        limit: int = 100,
        offset: int = 0,
    ) -> list[OperationRecord]:
        """Operations, newest first, filtered by state, kind and DEP."""
        query = select(OperationRow).order_by(OperationRow.started_at.desc(), OperationRow.id)
        if state is not None:
            query = query.where(OperationRow.state == state.value)
        if kind is not None:
            query = query.where(OperationRow.kind == kind)
        if dep is not None:
            query = query.where(OperationRow.dep == dep)
        async with self._sessions() as session:
            rows = (await session.scalars(query.limit(limit).offset(offset))).all()
            return [_to_record(row) for row in rows]

    # Audit trail ---------------------------------------------------------------------------------------------

    async def append_audit(self, event: AuditEvent) -> AuditRecord:
        """Append one audit entry, chained to the previous one. A repeated key returns the entry already stored."""
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
            existing = await session.scalar(select(AuditEventRow).where(AuditEventRow.key == event.key))
            if existing is not None:
                stored = _to_audit(existing)
                await session.rollback()
                return stored
            seq, prev_hash = head
            digest = audit_hash(prev_hash, seq, event)
            session.add(AuditEventRow(seq=seq, prev_hash=prev_hash, hash=digest, **event.model_dump()))
            await session.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1).values(hash=digest))
            await session.commit()
        return AuditRecord(seq=seq, prev_hash=prev_hash, hash=digest, **event.model_dump())

    async def list_audit(
        self, *, operation_id: str | None = None, after_seq: int = 0, limit: int = 1000
    ) -> list[AuditRecord]:
        """Audit entries in chain order, for one operation or all."""
        query = select(AuditEventRow).where(AuditEventRow.seq > after_seq).order_by(AuditEventRow.seq).limit(limit)
        if operation_id is not None:
            query = query.where(AuditEventRow.operation_id == operation_id)
        async with self._sessions() as session:
            return [_to_audit(row) for row in (await session.scalars(query)).all()]

    async def verify_audit_chain(self, batch: int = 5000) -> ChainVerification:
        """Recompute the whole chain; report the first entry that was changed, removed or inserted."""
        prev, count, after = GENESIS_HASH, 0, 0
        expected_seq = 1
        while True:
            records = await self.list_audit(after_seq=after, limit=batch)
            if not records:
                break
            for rec in records:
                event = AuditEvent.model_validate(rec.model_dump(exclude={"seq", "prev_hash", "hash"}))
                if rec.seq != expected_seq or rec.prev_hash != prev or rec.hash != audit_hash(prev, rec.seq, event):
                    return ChainVerification(ok=False, events=count, broken_at=expected_seq)
                prev, count, expected_seq = rec.hash, count + 1, expected_seq + 1
            after = records[-1].seq
        async with self._sessions() as session:
            head = await session.get(AuditHeadRow, 1)
        if head is not None and (head.seq != count or head.hash != prev):
            return ChainVerification(ok=False, events=count, broken_at=count + 1)
        return ChainVerification(ok=True, events=count)


def _row_values(record: OperationRecord) -> dict[str, Any]:
    return record.model_dump(mode="json") | {
        "started_at": record.started_at,
        "updated_at": record.updated_at,
        "ended_at": record.ended_at,
    }


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
            "started_at": _utc(row.started_at),
            "updated_at": _utc(row.updated_at),
            "ended_at": _utc(row.ended_at) if row.ended_at else None,
            "idempotency_key": row.idempotency_key,
            "fingerprint": row.fingerprint,
            "dep": row.dep,
            "escalations": row.escalations or [],
            "gates": row.gates or [],
            "result": row.result,
            "error": row.error,
        }
    )


def _to_audit(row: AuditEventRow) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        key=row.key,
        operation_id=row.operation_id,
        at=_utc(row.at),
        actor=row.actor,
        action=row.action,
        target=row.target,
        outcome=Outcome(row.outcome),
        detail=row.detail or {},
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


__all__: Sequence[str] = ("ChainVerification", "Store", "audit_hash", "create_engine")
