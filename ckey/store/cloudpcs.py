"""Windows 365 in SQL: the tenant's Cloud PCs with their disk encryption state, and the tenant's setting.

``GET /api/windows365/cloud-pcs`` and ``ckey w365 status`` answer from here. ``windows365.encrypt`` writes the rows it
touches as it goes (which batch of which operation a Cloud PC is in, its bulk action, whether it failed), and
``refresh_cloud_pcs`` reads every Cloud PC and the tenant setting from Graph into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import Boolean, Integer, String, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

from ckey.audit import as_utc
from ckey.store.schema import Base

if TYPE_CHECKING:
    from ckey.store import Store
    from ckey.windows365 import CloudPc, Windows365Gateway

TENANT_KEY = "tenant"


class CloudPcRow(Base):
    """A Cloud PC as ckey last read it from Graph, and what ckey did to it."""

    __tablename__ = "cloud_pcs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str | None] = mapped_column(String(256), default=None)
    user_principal_name: Mapped[str | None] = mapped_column(String(256), default=None)
    managed_device_name: Mapped[str | None] = mapped_column(String(256), default=None)
    disk_encryption_state: Mapped[str | None] = mapped_column(String(64), default=None)
    seen_at: Mapped[datetime]
    operation_id: Mapped[str | None] = mapped_column(String(128), default=None, index=True)
    """The ``windows365.encrypt`` that planned it last."""
    batch: Mapped[int | None] = mapped_column(Integer, default=None)
    """Its batch in that operation (None: it was customer-managed already, nothing sent)."""
    bulk_action_id: Mapped[str | None] = mapped_column(String(64), default=None)
    failed: Mapped[bool] = mapped_column(Boolean, default=False)
    """That operation's bulk action ended without it customer-managed."""


class CloudPcTenantRow(Base):
    """The tenant's Cloud PC encryption setting as last read (``retrieveTenantEncryptionSetting``)."""

    __tablename__ = "cloud_pc_tenant"

    key: Mapped[str] = mapped_column(String(16), primary_key=True)
    tenant_disk_encryption_type: Mapped[str | None] = mapped_column(String(64), default=None)
    seen_at: Mapped[datetime]


@dataclass
class CloudPcView:
    """A Cloud PC of the read model."""

    id: str
    display_name: str | None
    user_principal_name: str | None
    managed_device_name: str | None
    disk_encryption_state: str | None
    seen_at: datetime
    operation_id: str | None
    batch: int | None
    bulk_action_id: str | None
    failed: bool

    @property
    def label(self) -> str:
        """``name (id)``: how a result or a report names it."""
        return f"{self.display_name} ({self.id})" if self.display_name else self.id


def _view(row: CloudPcRow) -> CloudPcView:
    return CloudPcView(
        id=row.id,
        display_name=row.display_name,
        user_principal_name=row.user_principal_name,
        managed_device_name=row.managed_device_name,
        disk_encryption_state=row.disk_encryption_state,
        seen_at=as_utc(row.seen_at),
        operation_id=row.operation_id,
        batch=row.batch,
        bulk_action_id=row.bulk_action_id,
        failed=row.failed,
    )


class CloudPcStore:
    """Reads and writes of the Windows 365 tables."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(self, pcs: Sequence[CloudPc], seen_at: datetime) -> None:
        """Store what Graph answered for these Cloud PCs (what ckey did to them is kept)."""
        async with self.store.transaction() as session:
            existing = {
                r.id: r
                for r in (await session.scalars(select(CloudPcRow).where(CloudPcRow.id.in_([p.id for p in pcs]))))
            }
            for pc in pcs:
                row = existing.get(pc.id)
                if row is None:
                    row = CloudPcRow(id=pc.id, seen_at=seen_at, failed=False)
                    session.add(row)
                row.display_name, row.user_principal_name = pc.display_name, pc.user_principal_name
                row.managed_device_name, row.disk_encryption_state = pc.managed_device_name, pc.disk_encryption_state
                row.seen_at = seen_at
                if pc.customer_managed:
                    row.failed = False

    async def forget_others(self, ids: Sequence[str]) -> int:
        """Remove the Cloud PCs Graph no longer lists (a full read); how many."""
        async with self.store.transaction() as session:
            gone = [r for r in await session.scalars(select(CloudPcRow)) if r.id not in set(ids)]
            for row in gone:
                await session.delete(row)
        return len(gone)

    async def set_tenant(self, tenant_disk_encryption_type: str | None, seen_at: datetime) -> None:
        """Store the tenant's setting as read."""
        async with self.store.transaction() as session:
            row = await session.get(CloudPcTenantRow, TENANT_KEY)
            if row is None:
                session.add(
                    CloudPcTenantRow(
                        key=TENANT_KEY, tenant_disk_encryption_type=tenant_disk_encryption_type, seen_at=seen_at
                    )
                )
            else:
                row.tenant_disk_encryption_type, row.seen_at = tenant_disk_encryption_type, seen_at

    async def tenant(self) -> tuple[str | None, datetime | None]:
        """The tenant's setting and when it was read (None, None: never read)."""
        async with self.store.session() as session:
            row = await session.get(CloudPcTenantRow, TENANT_KEY)
        return (row.tenant_disk_encryption_type, as_utc(row.seen_at)) if row else (None, None)

    async def plan(self, operation_id: str, pcs: Sequence[CloudPc], batch_size: int) -> tuple[int, int, int]:
        """Put the Cloud PCs not customer-managed in batches of ``operation_id``: ``(total, already, batches)``.

        Idempotent: an operation that planned already gets its plan back unchanged.
        """
        async with self.store.transaction() as session:
            mine = list(await session.scalars(select(CloudPcRow).where(CloudPcRow.operation_id == operation_id)))
            if not mine:
                rows = {r.id: r for r in await session.scalars(select(CloudPcRow))}
                pending = 0
                for pc in sorted(pcs, key=lambda p: (p.display_name or "", p.id)):
                    row = rows[pc.id]
                    row.operation_id, row.bulk_action_id, row.failed = operation_id, None, False
                    row.batch = None if pc.customer_managed else pending // batch_size
                    pending += 0 if pc.customer_managed else 1
                    mine.append(row)
        batches = {r.batch for r in mine if r.batch is not None}
        return len(mine), sum(1 for r in mine if r.batch is None), len(batches)

    async def batch(self, operation_id: str, batch: int) -> list[CloudPcView]:
        """The Cloud PCs of one batch of an operation."""
        async with self.store.session() as session:
            rows = await session.scalars(
                select(CloudPcRow)
                .where(CloudPcRow.operation_id == operation_id, CloudPcRow.batch == batch)
                .order_by(CloudPcRow.id)
            )
            return [_view(r) for r in rows]

    async def set_bulk_action(self, ids: Sequence[str], bulk_action_id: str) -> None:
        """These Cloud PCs were sent in that bulk action."""
        async with self.store.transaction() as session:
            await session.execute(
                update(CloudPcRow).where(CloudPcRow.id.in_(list(ids))).values(bulk_action_id=bulk_action_id)
            )

    async def mark_failed(self, ids: Sequence[str]) -> None:
        """These Cloud PCs did not end customer-managed."""
        if ids:
            async with self.store.transaction() as session:
                await session.execute(update(CloudPcRow).where(CloudPcRow.id.in_(list(ids))).values(failed=True))

    async def page(
        self, *, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[CloudPcView], int]:
        """A page of Cloud PCs (by name), optionally of one ``diskEncryptionState``, and how many match."""
        query = select(CloudPcRow)
        if state:
            query = query.where(CloudPcRow.disk_encryption_state == state)
        async with self.store.session() as session:
            total = await session.scalar(select(func.count()).select_from(query.subquery()))
            rows = await session.scalars(
                query.order_by(CloudPcRow.display_name, CloudPcRow.id).limit(limit).offset(offset)
            )
            return [_view(r) for r in rows], int(total or 0)

    async def counts(self) -> dict[str, int]:
        """How many Cloud PCs per ``diskEncryptionState``."""
        async with self.store.session() as session:
            rows = await session.execute(
                select(CloudPcRow.disk_encryption_state, func.count()).group_by(CloudPcRow.disk_encryption_state)
            )
            return {str(state or "unknown"): int(n) for state, n in rows.all()}

    async def failed(self, limit: int = 100) -> list[CloudPcView]:
        """Cloud PCs an operation's bulk action left without the customer-managed key."""
        async with self.store.session() as session:
            rows = await session.scalars(
                select(CloudPcRow).where(CloudPcRow.failed.is_(True)).order_by(CloudPcRow.display_name).limit(limit)
            )
            return [_view(r) for r in rows]


@dataclass
class Refreshed:
    """What a refresh read: the Cloud PCs by state and the tenant setting (None: Graph refused to say)."""

    total: int
    by_state: dict[str, int]
    tenant_disk_encryption_type: str | None
    setting_error: str | None = None


async def refresh(gateway: Windows365Gateway, cloud_pcs: CloudPcStore, now: datetime) -> Refreshed:
    """Read every Cloud PC and the tenant setting from Graph into SQL (Cloud PCs Graph no longer lists removed).

    Graph's errors are the gateway's (``GraphRefusal``, ``GraphUnavailable``), except the tenant setting's
    refusal: Microsoft documents ``retrieveTenantEncryptionSetting`` for delegated access only, so an app-only
    token may be refused it, and the Cloud PCs are still worth recording.
    """
    from ckey.windows365 import GraphRefusal

    pcs = await gateway.cloud_pcs()
    await cloud_pcs.record(pcs, now)
    await cloud_pcs.forget_others([pc.id for pc in pcs])
    kind, error = None, None
    try:
        setting = await gateway.tenant_encryption_setting()
    except GraphRefusal as exc:
        error = str(exc)
    else:
        kind = setting.tenant_disk_encryption_type
        await cloud_pcs.set_tenant(kind, now)
    by_state: dict[str, int] = {}
    for pc in pcs:
        by_state[pc.disk_encryption_state or "unknown"] = by_state.get(pc.disk_encryption_state or "unknown", 0) + 1
    return Refreshed(total=len(pcs), by_state=by_state, tenant_disk_encryption_type=kind, setting_error=error)
