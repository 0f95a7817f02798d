"""The SharePoint/OneDrive geos in the inventory: each geo's encryption state as ckey last read it.

``/api/spo/geos`` answers from here. ``spo.dep.register`` and ``spo.dep.restore`` record each reading as they follow
a geo, a key roll records its own (:meth:`SpoGeoStore.record_geo`), and ``refresh_spo_geos`` reads every configured
geo for ``inventory.sync``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, mapped_column

from ckey.audit import as_utc
from ckey.store.schema import Base

if TYPE_CHECKING:
    from ckey.store import Store


class SpoGeoRow(Base):
    """A geo's last reading (Get-SPODataEncryptionPolicy) and the operation that moved it last."""

    __tablename__ = "spo_geos"

    geo: Mapped[str] = mapped_column(String(8), primary_key=True)
    """The geo's code in upper case."""
    state: Mapped[str] = mapped_column(String(32))
    percent: Mapped[int | None] = mapped_column(default=None)
    key_uris: Mapped[list[Any]] = mapped_column(default=list)
    """Primary, then secondary key URI (empty while unregistered)."""
    operation_id: Mapped[str | None] = mapped_column(String(64), default=None)
    """The last operation that changed the geo or followed it (None: read by a refresh)."""
    seen_at: Mapped[datetime]


class SpoGeoView(BaseModel):
    """A geo as the inventory holds it."""

    geo: str
    state: str
    percent: int | None = None
    key_uris: list[str] = Field(default_factory=list)
    operation_id: str | None = None
    """The operation that moved it last."""
    seen_at: datetime


class SpoGeoStore:
    """Reads and writes of the geos' rows.

    Args:
        store: ckey's SQL store.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record_geo(
        self,
        geo: str,
        state: str,
        percent: int | None,
        key_uris: Sequence[str],
        operation_id: str | None,
        at: datetime | None = None,
    ) -> None:
        """Record a geo's reading; ``operation_id`` None (a refresh) keeps the operation that moved it last.

        Args:
            geo: the geo's code (any case).
            state: ``Unregistered``, ``Registering``, ``Registered``, ``Rolling`` or ``Recovery``.
            percent: percent of sites done, as Get-SPODataEncryptionPolicy reports it.
            key_uris: primary, then secondary key URI (empty while unregistered).
            operation_id: the operation that changed or followed the geo.
            at: when it was read (default now).
        """
        code = geo.strip().upper()
        async with self.store.transaction() as session:
            row = await session.get(SpoGeoRow, code)
            if row is None:
                row = SpoGeoRow(geo=code, state=state, seen_at=at or datetime.now(UTC))
                session.add(row)
            row.state, row.percent, row.key_uris = state, percent, [str(u) for u in key_uris if u]
            row.seen_at = at or datetime.now(UTC)
            if operation_id is not None:
                row.operation_id = operation_id

    async def geos(self) -> list[SpoGeoView]:
        """Every geo the inventory holds, by code."""
        async with self.store.session() as session:
            rows = await session.execute(select(SpoGeoRow).order_by(SpoGeoRow.geo))
            return [_view(r) for r in rows.scalars()]

    async def geo(self, geo: str) -> SpoGeoView | None:
        """One geo, if the inventory holds it."""
        async with self.store.session() as session:
            row = await session.get(SpoGeoRow, geo.strip().upper())
            return _view(row) if row is not None else None


def _view(row: SpoGeoRow) -> SpoGeoView:
    return SpoGeoView(
        geo=row.geo,
        state=row.state,
        percent=row.percent,
        key_uris=list(row.key_uris),
        operation_id=row.operation_id,
        seen_at=as_utc(row.seen_at),
    )
