"""Keys and their versions: create, import, read, update and list (soft delete is :mod:`~sandbox.keyvault.deleted`)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sandbox.keyvault import crypto, errors, material
from sandbox.keyvault.base import UNSET, Store, VaultLookup
from sandbox.keyvault.db import KeyRow, KeyVersionRow, VaultRow

KEY_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")


@dataclass(frozen=True)
class KeyView:
    """One version of a key, with its key and vault."""

    vault: VaultRow
    key: KeyRow
    version: KeyVersionRow


@dataclass(frozen=True)
class KeyAttributes:
    """Attributes a caller sets on a version."""

    enabled: bool = True
    not_before: int | None = None
    expires: int | None = None
    exportable: bool = False


def check_key_name(name: str) -> None:
    """Refuse a key name Key Vault refuses (1-127 letters, digits and dashes), in the service's words.

    Raises:
        ServiceError: 400 BadParameter.
    """
    if not KEY_NAME.match(name):
        raise errors.bad_parameter(f"The request URI contains an invalid name: {name}")


def _key_type_not_supported(kty: str) -> errors.ServiceError:
    return errors.ServiceError(400, "BadParameter", f"Invalid kty value: {kty}", inner="KeyTypeNotSupported")


def _default_ops(kty: str) -> tuple[str, ...]:
    kind = material.family(kty)
    if kind == "EC":
        return material.DEFAULT_EC_KEY_OPS
    return material.DEFAULT_OCT_KEY_OPS if kind == "oct" else material.DEFAULT_RSA_KEY_OPS


def _check_key_ops(key_ops: Sequence[str]) -> list[str]:
    unknown = [op for op in key_ops if op not in material.KEY_OPS]
    if unknown:
        raise errors.bad_parameter(f"Property key_ops has invalid values: {', '.join(unknown)}.")
    return list(key_ops)


async def key_row(s: AsyncSession, vault: str, name: str) -> KeyRow | None:
    """The key ``name`` of ``vault`` (case-insensitive, deleted or not)."""
    query = select(KeyRow).where(KeyRow.vault_name == vault.lower(), KeyRow.name_lower == name.lower())
    row: KeyRow | None = (await s.scalars(query)).first()
    return row


async def latest_version(s: AsyncSession, key: KeyRow) -> KeyVersionRow:
    """A key's current (newest) version."""
    query = select(KeyVersionRow).where(KeyVersionRow.key_id == key.id).order_by(KeyVersionRow.id.desc())
    version = (await s.scalars(query.limit(1))).first()
    assert version is not None, "a key always has a version"
    return version


class Keys:
    """The keys of every vault with their versions.

    Args:
        store: database, lock and clock.
        sealer: seals private keys at rest.
        vaults: finds the vault a key belongs to.
    """

    def __init__(self, store: Store, sealer: crypto.Sealer, vaults: VaultLookup) -> None:
        self.store = store
        self.sealer = sealer
        self.vaults = vaults

    def new_version(
        self,
        vault: str,
        key: KeyRow,
        private: material.Material,
        *,
        kty: str,
        key_ops: Sequence[str],
        attributes: KeyAttributes,
        tags: dict[str, str] | None,
        version: str | None = None,
        created: int | None = None,
        updated: int | None = None,
    ) -> KeyVersionRow:
        """A version row of ``key`` holding ``private`` sealed (a new id and timestamps unless given)."""
        version = version or uuid.uuid4().hex
        public = material.public_jwk(private)
        now = self.store.now()
        return KeyVersionRow(
            key_id=key.id,
            version=version,
            kty=kty,
            key_size=material.key_size(private),
            key_ops=list(key_ops),
            n=public.get("n", ""),
            e=public.get("e", ""),
            crv=public.get("crv"),
            x=public.get("x"),
            y=public.get("y"),
            sealed_private=self.sealer.seal_private(private, vault, key.name, version),
            enabled=attributes.enabled,
            not_before=attributes.not_before,
            expires=attributes.expires,
            exportable=attributes.exportable,
            created=created if created is not None else now,
            updated=updated if updated is not None else now,
            tags=dict(tags) if tags is not None else None,
        )

    async def add_version(
        self,
        vault_name: str,
        name: str,
        private: material.Material,
        *,
        kty: str,
        key_ops: Sequence[str],
        attributes: KeyAttributes,
        tags: dict[str, str] | None,
        must_exist: bool = False,
        created: int | None = None,
    ) -> KeyView:
        """Store ``private`` as the new current version of a key (created unless ``must_exist``).

        ``created`` is the version's creation time when the caller derived other times from it (a rotation's
        expiry); default now.

        Raises:
            ServiceError: the name belongs to a deleted key; KeyNotFound when ``must_exist``.
        """
        async with self.store.lock, self.store.db.session() as s, s.begin():
            vault = await s.get(VaultRow, vault_name.lower())
            assert vault is not None
            key = await key_row(s, vault_name, name)
            if key is not None and key.deleted_at is not None:
                raise errors.deleted_but_recoverable(key.name)
            if key is None:
                if must_exist:
                    raise errors.key_not_found(name)
                key = KeyRow(vault_name=vault.name, name=name, name_lower=name.lower())
                s.add(key)
                await s.flush()
            version = self.new_version(
                vault.name, key, private, kty=kty, key_ops=key_ops, attributes=attributes, tags=tags, created=created
            )
            s.add(version)
        return KeyView(vault, key, version)

    async def create_key(
        self,
        vault: str,
        name: str,
        *,
        kty: str = "RSA",
        size: int | None = None,
        curve: str | None = None,
        public_exponent: int | None = None,
        key_ops: Sequence[str] | None = None,
        attributes: KeyAttributes | None = None,
        tags: dict[str, str] | None = None,
    ) -> KeyView:
        """Create a key, or a new version of an existing one (as ``POST /keys/{name}/create`` does).

        RSA and EC keys (HSM or not) in any vault; ``oct-HSM`` only in a premium vault (Azure's preview of AES keys
        in vaults; Managed HSM, where they are at home, is not served); software ``oct`` nowhere, as in Azure.

        Raises:
            ServiceError: invalid name, key type, size or curve; the name belongs to a deleted key.
        """
        check_key_name(name)
        vault_row = await self.vaults.require_vault(vault)
        kind = material.family(kty)
        exponent = public_exponent or 65537
        crv = curve or "P-256"
        if kty not in (*material.RSA_KEY_TYPES, *material.EC_KEY_TYPES, "oct-HSM"):
            raise _key_type_not_supported(kty)
        if kty == "oct-HSM" and vault_row.sku.lower() != "premium":
            raise _key_type_not_supported(kty)
        if kind == "RSA":
            size = size or 2048
            if size not in material.RSA_KEY_SIZES:
                raise errors.bad_parameter(f"Property key_size has invalid value {size}: use 2048, 3072 or 4096.")
            if exponent not in (3, 65537):
                raise errors.bad_parameter(f"Property public_exponent has invalid value {exponent}.")
        elif kind == "EC":
            if crv not in material.CURVES:
                raise errors.bad_parameter(f"Invalid curve name: {crv}")
        else:
            size = size or 256
            if size not in material.OCT_KEY_SIZES:
                raise errors.bad_parameter(f"Property key_size has invalid value {size}: use 128, 192 or 256.")
        ops = _check_key_ops(key_ops if key_ops else _default_ops(kty))
        async with self.store.db.session() as s:
            existing = await key_row(s, vault, name)
        if existing is not None and existing.deleted_at is not None:
            raise errors.deleted_but_recoverable(existing.name)
        # RSA generation takes from milliseconds (2048) to seconds (4096): off the event loop.
        private = await asyncio.to_thread(material.generate, kty, size=size or 0, crv=crv, public_exponent=exponent)
        return await self.add_version(
            vault, name, private, kty=kty, key_ops=ops, attributes=attributes or KeyAttributes(), tags=tags
        )

    async def import_key(
        self,
        vault: str,
        name: str,
        jwk: dict[str, Any],
        *,
        hsm: bool = False,
        attributes: KeyAttributes | None = None,
        tags: dict[str, str] | None = None,
    ) -> KeyView:
        """Import an RSA or EC private key (or, into a premium vault, an AES key) as a new version (``PUT``).

        Raises:
            ServiceError: not a complete private key of a served type; the name belongs to a deleted key.
        """
        check_key_name(name)
        vault_row = await self.vaults.require_vault(vault)
        kty = str(jwk.get("kty", ""))
        kind = material.family(kty)
        if kty not in (*material.RSA_KEY_TYPES, *material.EC_KEY_TYPES, *material.OCT_KEY_TYPES):
            raise _key_type_not_supported(kty)
        if kind == "oct" and vault_row.sku.lower() != "premium":
            raise _key_type_not_supported(kty)
        try:
            private = material.from_jwk(jwk)
        except material.MaterialError as exc:
            raise errors.bad_parameter(str(exc)) from None
        ops = _check_key_ops(jwk.get("key_ops") or _default_ops(kty))
        kty = f"{kind}-HSM" if hsm or kty.endswith("-HSM") or kind == "oct" else kind
        return await self.add_version(
            vault, name, private, kty=kty, key_ops=ops, attributes=attributes or KeyAttributes(), tags=tags
        )

    async def get_key(self, vault: str, name: str, version: str | None = None) -> KeyView:
        """A version of an active key (the current one when ``version`` is empty).

        Raises:
            ServiceError: KeyNotFound (unknown, or deleted).
        """
        async with self.store.db.session() as s:
            vault_row = await s.get(VaultRow, vault.lower())
            key = await key_row(s, vault, name)
            if vault_row is None or key is None or key.deleted_at is not None:
                raise errors.key_not_found(name, version)
            if version:
                query = select(KeyVersionRow).where(KeyVersionRow.key_id == key.id, KeyVersionRow.version == version)
                row = (await s.scalars(query)).first()
                if row is None:
                    raise errors.key_not_found(name, version)
            else:
                row = await latest_version(s, key)
            return KeyView(vault_row, key, row)

    async def key_profile(self, vault: str, name: str) -> tuple[bool, int] | None:
        """(HSM-protected, size) of a key's current version, for throttling; None if there is no such key."""
        async with self.store.db.session() as s:
            key = await key_row(s, vault, name)
            if key is None:
                return None
            latest = await latest_version(s, key)
            return latest.hsm, latest.key_size

    async def list_keys(self, vault: str, *, deleted: bool = False) -> list[KeyView]:
        """The current version of each active (or each deleted) key, by name."""
        async with self.store.db.session() as s:
            vault_row = await s.get(VaultRow, vault.lower())
            if vault_row is None:
                return []
            state = KeyRow.deleted_at.is_not(None) if deleted else KeyRow.deleted_at.is_(None)
            query = select(KeyRow).where(KeyRow.vault_name == vault.lower(), state).order_by(KeyRow.name_lower)
            keys = list((await s.scalars(query)).all())
            return [KeyView(vault_row, key, await latest_version(s, key)) for key in keys]

    async def list_versions(self, vault: str, name: str) -> list[KeyView]:
        """Every version of an active key, oldest first.

        Raises:
            ServiceError: KeyNotFound.
        """
        async with self.store.db.session() as s:
            vault_row = await s.get(VaultRow, vault.lower())
            key = await key_row(s, vault, name)
            if vault_row is None or key is None or key.deleted_at is not None:
                raise errors.key_not_found(name)
            query = select(KeyVersionRow).where(KeyVersionRow.key_id == key.id).order_by(KeyVersionRow.id)
            return [KeyView(vault_row, key, v) for v in (await s.scalars(query)).all()]

    async def update_key(
        self,
        vault: str,
        name: str,
        version: str | None,
        *,
        key_ops: Sequence[str] | None = None,
        enabled: bool | None = None,
        not_before: int | None = UNSET,
        expires: int | None = UNSET,
        tags: dict[str, str] | None = None,
    ) -> KeyView:
        """Change a version's attributes, operations or tags (``PATCH /keys/{name}/{version}``).

        Raises:
            ServiceError: KeyNotFound, invalid operations.
        """
        view = await self.get_key(vault, name, version)
        ops = _check_key_ops(key_ops) if key_ops is not None else None
        async with self.store.lock, self.store.db.session() as s, s.begin():
            row = await s.get(KeyVersionRow, view.version.id)
            if row is None:
                raise errors.key_not_found(name, version)
            if ops is not None:
                row.key_ops = ops
            if enabled is not None:
                row.enabled = enabled
            if not_before is not UNSET:
                row.not_before = not_before
            if expires is not UNSET:
                row.expires = expires
            if tags is not None:
                row.tags = dict(tags)
            row.updated = self.store.now()
        return KeyView(view.vault, view.key, row)

    def private_key(self, view: KeyView) -> material.Material:
        """The private key of a version (only inside the service)."""
        return self.sealer.open_private(
            view.version.sealed_private, view.vault.name, view.key.name, view.version.version
        )
