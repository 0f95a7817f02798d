"""Backup and restore: a key with every version, sealed so that only this sandbox can open it."""

from __future__ import annotations

import base64

from sandbox.keyvault import crypto, errors
from sandbox.keyvault.base import Store, VaultLookup
from sandbox.keyvault.db import KeyRow, KeyVersionRow, VaultRow
from sandbox.keyvault.keys import KeyAttributes, Keys, KeyView, key_row


class Backups:
    """``POST /keys/{name}/backup`` and ``POST /keys/restore``.

    Args:
        store: database, lock and clock.
        sealer: seals backups (and opens the private keys they carry).
        vaults: finds the vault a key is restored into.
        keys: reads the versions to back up and builds the restored ones.
    """

    def __init__(self, store: Store, sealer: crypto.Sealer, vaults: VaultLookup, keys: Keys) -> None:
        self.store = store
        self.sealer = sealer
        self.vaults = vaults
        self.keys = keys

    async def backup(self, vault: str, name: str) -> bytes:
        """A sealed backup of a key: every version, its attributes and tags, and the rotation policy.

        Raises:
            ServiceError: KeyNotFound.
        """
        views = await self.keys.list_versions(vault, name)
        key = views[0].key
        versions = []
        for view in views:
            v = view.version
            private = self.sealer.open_private(v.sealed_private, view.vault.name, key.name, v.version)
            versions.append(
                {
                    "version": v.version,
                    "kty": v.kty,
                    "key_ops": v.key_ops,
                    "private": base64.b64encode(crypto.private_der(private)).decode(),
                    "enabled": v.enabled,
                    "nbf": v.not_before,
                    "exp": v.expires,
                    "exportable": v.exportable,
                    "created": v.created,
                    "updated": v.updated,
                    "tags": v.tags,
                }
            )
        payload = {
            "format": 1,
            "source_vault": views[0].vault.name,
            "name": key.name,
            "rotation_policy": key.rotation_policy,
            "versions": versions,
        }
        return self.sealer.seal_backup(payload)

    async def restore(self, vault: str, blob: bytes) -> KeyView:
        """Restore a backup under its name: every version with its ids, attributes and tags.

        Raises:
            ServiceError: BadParameter (not a backup of this service); Conflict (the name exists, deleted or not).
        """
        try:
            payload = self.sealer.open_backup(blob)
            name = str(payload["name"])
            versions = list(payload["versions"])
        except (crypto.InvalidBackup, KeyError, TypeError, ValueError):
            raise errors.bad_parameter("Backup blob contains invalid or corrupt version.") from None
        await self.vaults.require_vault(vault)
        async with self.store.lock, self.store.db.session() as s, s.begin():
            vault_row = await s.get(VaultRow, vault.lower())
            assert vault_row is not None
            existing = await key_row(s, vault, name)
            if existing is not None:
                if existing.deleted_at is not None:
                    raise errors.deleted_but_recoverable(existing.name)
                raise errors.key_exists(existing.name)
            key = KeyRow(
                vault_name=vault_row.name,
                name=name,
                name_lower=name.lower(),
                rotation_policy=payload.get("rotation_policy"),
            )
            s.add(key)
            await s.flush()
            row: KeyVersionRow | None = None
            for item in versions:
                private = crypto.private_from_der(base64.b64decode(item["private"]))
                row = self.keys.new_version(
                    vault_row.name,
                    key,
                    private,
                    kty=item["kty"],
                    key_ops=item["key_ops"],
                    attributes=KeyAttributes(
                        enabled=item["enabled"],
                        not_before=item["nbf"],
                        expires=item["exp"],
                        exportable=item["exportable"],
                    ),
                    tags=item["tags"],
                    version=item["version"],
                    created=item["created"],
                    updated=item["updated"],
                )
                s.add(row)
            if row is None:
                raise errors.bad_parameter("Backup blob contains invalid or corrupt version.")
        return KeyView(vault_row, key, row)
