"""Which version of a customer key each workload has in effect, as ckey last refreshed it (the key rolls' family).

Exchange Online and the multi-workload service show a DEP's key URIs without a version (Get-DataEncryptionPolicy,
Get-M365DataAtRestEncryptionPolicy): the version a DEP wraps with is the newest one at its last ``-Refresh``, which
the tenant does not name. ckey records it here when a roll refreshes a DEP, so that the rotation watcher can tell a
DEP that runs behind its key. SharePoint names the versions itself (Get-SPODataEncryptionPolicy), so its geos are
read live and recorded only for the history.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel
from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, mapped_column

from ckey.store.inventory import _insert
from ckey.store.schema import Base

if TYPE_CHECKING:
    from ckey.store import Store


class KeyInEffectRow(Base):
    """The version of a key a workload's DEP (or geo) was last refreshed to by ckey."""

    __tablename__ = "key_versions_in_effect"

    workload: Mapped[str] = mapped_column(String(32), primary_key=True)
    target: Mapped[str] = mapped_column(String(128), primary_key=True)
    """The DEP's name in lower case, or the geo's code."""
    key_id: Mapped[str] = mapped_column(String(400), primary_key=True)
    """The versionless key URI in lower case."""
    version: Mapped[str] = mapped_column(String(64))
    refreshed_at: Mapped[datetime]
    operation_id: Mapped[str | None] = mapped_column(String(64), default=None)


class KeyInEffect(BaseModel):
    """A workload's version of a key, as ckey last refreshed it."""

    workload: str
    target: str
    key_id: str
    version: str
    refreshed_at: datetime
    operation_id: str | None = None


class KeyRollStore:
    """Reads and writes of the versions in effect."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record(self, entry: KeyInEffect) -> None:
        """Record (or replace) the version a workload's target has in effect for a key."""
        values = {
            "workload": entry.workload,
            "target": entry.target.lower(),
            "key_id": entry.key_id.lower().rstrip("/"),
            "version": entry.version,
            "refreshed_at": entry.refreshed_at,
            "operation_id": entry.operation_id,
        }
        async with self.store.transaction() as session:
            statement = _insert(session, KeyInEffectRow).values(**values)
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["workload", "target", "key_id"],
                    set_={k: values[k] for k in ("version", "refreshed_at", "operation_id")},
                )
            )

    async def in_effect(self, key_id: str) -> list[KeyInEffect]:
        """Every workload's recorded version of a key (versionless URI, any case)."""
        async with self.store.transaction() as session:
            rows = await session.scalars(
                select(KeyInEffectRow).where(KeyInEffectRow.key_id == key_id.lower().rstrip("/"))
            )
            return [
                KeyInEffect(
                    workload=r.workload,
                    target=r.target,
                    key_id=r.key_id,
                    version=r.version,
                    refreshed_at=r.refreshed_at,
                    operation_id=r.operation_id,
                )
                for r in rows.all()
            ]
