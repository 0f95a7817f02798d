"""Leases in SQL: what each running operation holds, taken with its reservation and dropped with its end.

Every acquisition first updates the single ``lease_lock`` row, which serializes acquisitions on SQLite (the write
lock) and PostgreSQL (the row lock) alike, so two starts never both see a target free. The conflict check and the
insert of a claim-checked mailbox set run in SQL (a join on ``target_items``), so a 100,000-mailbox set is held
without its identities passing through Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import DateTime, String, delete, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from ckey.operations import LeaseMode, LeaseRequest
from ckey.store.schema import LeaseLockRow, LeaseRow, OperationRow, TargetItemRow

CONFLICTS_SHOWN = 5
"""How many held targets a refusal names per holder."""
_SCAN_LIMIT = 10_000
_CHUNK = 500


@dataclass
class LeaseHolder:
    """A running operation that holds targets another one asked for."""

    operation_id: str
    kind: str = ""
    started_by: str = ""
    targets: list[str] = field(default_factory=list)
    """The first of the contested targets (at most :data:`CONFLICTS_SHOWN`)."""
    count: int = 0
    """How many contested targets it holds (counted up to a scan limit)."""


class LeaseConflict(Exception):
    """Targets an operation needs are held by other running operations."""

    def __init__(self, holders: list[LeaseHolder]) -> None:
        self.holders = holders
        super().__init__(describe(holders))


def describe(holders: list[LeaseHolder]) -> str:
    """One sentence naming each holder and what it holds."""
    parts = []
    for h in holders:
        shown = ", ".join(h.targets)
        more = f" and {h.count - len(h.targets)} more" if h.count > len(h.targets) else ""
        parts.append(f"{h.kind or 'operation'} {h.operation_id} (started by {h.started_by}) holds {shown}{more}")
    return "; ".join(parts)


def _mailbox_target(identity: ColumnElement[str] | InstrumentedAttribute[str]) -> ColumnElement[str]:
    # The same lower-casing as Lease.on, in SQL: "mailbox:" || lower(identity).
    return literal("mailbox:", type_=String) + func.lower(identity)


async def lock(session: AsyncSession) -> None:
    """Take the lease lock for the rest of ``session``'s transaction."""
    await session.execute(
        update(LeaseLockRow).where(LeaseLockRow.id == 1).values(generation=LeaseLockRow.generation + 1)
    )


async def conflicts(session: AsyncSession, operation_id: str, request: LeaseRequest) -> list[LeaseHolder]:
    """The other operations holding what ``request`` asks for in a way that excludes it."""
    found: list[tuple[str, str]] = []
    by_mode: dict[LeaseMode, list[str]] = {}
    for lease in request.leases:
        by_mode.setdefault(lease.mode, []).append(lease.target)
    for mode, targets in by_mode.items():
        for start in range(0, len(targets), _CHUNK):
            query = select(LeaseRow.target, LeaseRow.operation_id).where(
                LeaseRow.target.in_(targets[start : start + _CHUNK]), LeaseRow.operation_id != operation_id
            )
            if mode == LeaseMode.READ:
                query = query.where(LeaseRow.mode == LeaseMode.WRITE.value)
            found.extend((r.target, r.operation_id) for r in (await session.execute(query)).all())
    if request.mailbox_set is not None:
        query = (
            select(LeaseRow.target, LeaseRow.operation_id)
            .join(TargetItemRow, LeaseRow.target == _mailbox_target(TargetItemRow.identity))
            .where(TargetItemRow.set_id == request.mailbox_set, LeaseRow.operation_id != operation_id)
            .limit(_SCAN_LIMIT)
        )
        if request.mailbox_mode == LeaseMode.READ:
            query = query.where(LeaseRow.mode == LeaseMode.WRITE.value)
        found.extend((r.target, r.operation_id) for r in (await session.execute(query)).all())
    holders: dict[str, LeaseHolder] = {}
    for target, holder in found:
        h = holders.setdefault(holder, LeaseHolder(operation_id=holder))
        h.count += 1
        if len(h.targets) < CONFLICTS_SHOWN:
            h.targets.append(target)
    if holders:
        rows = await session.execute(
            select(OperationRow.id, OperationRow.kind, OperationRow.started_by).where(OperationRow.id.in_(holders))
        )
        for row in rows.all():
            holders[row.id].kind, holders[row.id].started_by = row.kind, row.started_by
    return sorted(holders.values(), key=lambda h: h.operation_id)


async def acquire(session: AsyncSession, operation_id: str, request: LeaseRequest, at: datetime) -> None:
    """Hold ``request``'s targets for ``operation_id`` (call :func:`lock` and :func:`conflicts` first)."""
    explicit = {lease.target: lease.mode for lease in request.leases}
    if explicit:
        await session.execute(
            insert(LeaseRow),
            [
                {"target": target, "operation_id": operation_id, "mode": mode.value, "acquired_at": at}
                for target, mode in explicit.items()
            ],
        )
    if request.mailbox_set is not None:
        target = _mailbox_target(TargetItemRow.identity)
        rows = (
            select(
                target,
                literal(operation_id, type_=String),
                literal(request.mailbox_mode.value, type_=String),
                literal(at, type_=DateTime(timezone=True)),
            )
            .where(TargetItemRow.set_id == request.mailbox_set)
            .distinct()  # one row per mailbox, however its identity was cased in the file
        )
        if explicit:
            rows = rows.where(target.not_in(list(explicit)))
        await session.execute(insert(LeaseRow).from_select(["target", "operation_id", "mode", "acquired_at"], rows))


async def release(session: AsyncSession, operation_id: str) -> int:
    """Drop everything ``operation_id`` holds; how many leases it held."""
    result = await session.execute(delete(LeaseRow).where(LeaseRow.operation_id == operation_id))
    return int(getattr(result, "rowcount", 0) or 0)


async def held(session: AsyncSession, operation_id: str, limit: int = 1000) -> list[tuple[str, str]]:
    """What ``operation_id`` holds: ``(target, mode)`` in target order, at most ``limit``."""
    rows = await session.execute(
        select(LeaseRow.target, LeaseRow.mode)
        .where(LeaseRow.operation_id == operation_id)
        .order_by(LeaseRow.target)
        .limit(limit)
    )
    return [(r.target, r.mode) for r in rows.all()]
