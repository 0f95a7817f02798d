"""Soft delete: a deleted key waits out its vault's retention period, to be recovered or purged."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from sandbox.keyvault import errors
from sandbox.keyvault.base import DAY, Store
from sandbox.keyvault.db import KeyRow, KeyVersionRow, VaultRow
from sandbox.keyvault.keys import Keys, KeyView, key_row, latest_version


class DeletedKeys:
    """Deleting, recovering and purging keys, and purging those whose retention ran out.

    Args:
        store: database, lock and clock.
        keys: the active keys.
    """

    def __init__(self, store: Store, keys: Keys) -> None:
        self.store = store
        self.keys = keys

    async def delete_key(self, vault: str, name: str) -> KeyView:
        """Soft-delete a key with all its versions; it is purged after the vault's retention period.

        Raises:
            ServiceError: KeyNotFound.
        """
        view = await self.keys.get_key(vault, name)
        now = self.store.now()
        async with self.store.lock, self.store.db.session() as s, s.begin():
            key = await s.get(KeyRow, view.key.id)
            if key is None or key.deleted_at is not None:
                raise errors.key_not_found(name)
            key.deleted_at = now
            # Without soft delete (a legacy vault) a deleted key is gone at once.
            retention = view.vault.soft_delete_retention_days * DAY if view.vault.soft_delete else 0
            key.scheduled_purge_at = now + retention
        return KeyView(view.vault, key, view.version)

    async def get_deleted(self, vault: str, name: str) -> KeyView:
        """A soft-deleted key (its current version).

        Raises:
            ServiceError: KeyNotFound (no such deleted key).
        """
        await self.purge_expired(vault)
        async with self.store.db.session() as s:
            vault_row = await s.get(VaultRow, vault.lower())
            key = await key_row(s, vault, name)
            if vault_row is None or key is None or key.deleted_at is None:
                raise errors.deleted_key_not_found(name)
            return KeyView(vault_row, key, await latest_version(s, key))

    async def recover(self, vault: str, name: str) -> KeyView:
        """Bring a soft-deleted key back with all its versions.

        Raises:
            ServiceError: KeyNotFound (no such deleted key).
        """
        view = await self.get_deleted(vault, name)
        async with self.store.lock, self.store.db.session() as s, s.begin():
            key = await s.get(KeyRow, view.key.id)
            if key is None or key.deleted_at is None:
                raise errors.deleted_key_not_found(name)
            key.deleted_at = None
            key.scheduled_purge_at = None
        return KeyView(view.vault, key, view.version)

    async def purge(self, vault: str, name: str, *, system: bool = False) -> None:
        """Permanently delete a soft-deleted key; only the system may while purge protection is on.

        Raises:
            ServiceError: KeyNotFound; Forbidden under purge protection.
        """
        view = await self.get_deleted(vault, name)
        if view.vault.purge_protection and not system:
            raise errors.purge_protected(view.vault.name, view.vault.location)
        async with self.store.lock, self.store.db.session() as s, s.begin():
            await _purge_rows(s, [view.key.id])

    async def purge_expired(self, vault: str | None = None) -> int:
        """Purge the soft-deleted keys whose scheduled purge date has come, as the service does; how many."""
        now = self.store.now()
        query = select(KeyRow.id).where(KeyRow.scheduled_purge_at.is_not(None), KeyRow.scheduled_purge_at <= now)
        if vault is not None:
            query = query.where(KeyRow.vault_name == vault.lower())
        async with self.store.db.session() as s:
            due = list((await s.scalars(query)).all())
        if not due:
            return 0
        async with self.store.lock, self.store.db.session() as s, s.begin():
            await _purge_rows(s, due)
        return len(due)


async def _purge_rows(s: AsyncSession, key_ids: Sequence[int]) -> None:
    await s.execute(delete(KeyVersionRow).where(KeyVersionRow.key_id.in_(key_ids)))
    await s.execute(delete(KeyRow).where(KeyRow.id.in_(key_ids)))
