"""The sandbox Key Vault's domain: vaults, keys and their versions, access policies, role assignments, the clock.

Everything here is independent of HTTP; :mod:`sandbox.keyvault.dataplane`, :mod:`sandbox.keyvault.arm` and
:mod:`sandbox.keyvault.admin` translate requests into these calls. Rule violations raise
:class:`~sandbox.keyvault.errors.ServiceError` in the shape and wording of the real service.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from sandbox.keyvault import crypto, errors
from sandbox.keyvault.authz import BUILT_IN_ROLES, normalize_scope, scope_covers
from sandbox.keyvault.db import (
    AccessPolicyRow,
    Database,
    KeyRow,
    KeyVersionRow,
    RoleAssignmentRow,
    StateRow,
    VaultRow,
)
from sandbox.keyvault.errors import ServiceError

KEY_NAME = re.compile(r"^[0-9A-Za-z-]{1,127}$")
VAULT_NAME = re.compile(r"^[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]$")
DAY = 86400
_DURATION = re.compile(
    r"^P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$"
)
_DURATION_SECONDS = {"years": 365 * DAY, "months": 30 * DAY, "weeks": 7 * DAY, "days": DAY, "hours": 3600}
_DURATION_SECONDS |= {"minutes": 60, "seconds": 1}
UNSET: Any = object()
"""Marks an attribute an update leaves alone (``None`` clears it)."""


def duration_seconds(text: str) -> int:
    """Seconds in an ISO 8601 duration as Key Vault's rotation policies write them (``P90D``, ``P1Y``, ``PT48H``).

    Years and months count as 365 and 30 days, which is how far a sandbox needs them to be exact.

    Raises:
        ValueError: not such a duration.
    """
    match = _DURATION.match(text.strip().upper())
    if not match or text.strip().upper() in ("P", "PT"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    return sum(int(value) * _DURATION_SECONDS[unit] for unit, value in match.groupdict().items() if value)


@dataclass(frozen=True)
class VaultSpec:
    """What a new vault is made of."""

    name: str
    location: str
    tenant_id: str
    subscription_id: str
    resource_group: str
    sku: str = "standard"
    soft_delete_retention_days: int = 90
    purge_protection: bool = False
    rbac_authorization: bool = False
    protected_subscription: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    soft_delete: bool = True
    """False only for a legacy vault from before soft delete became mandatory (the control endpoint's scenario)."""


@dataclass
class PolicyEntry:
    """An access policy entry as ARM carries it."""

    tenant_id: str
    object_id: str
    keys: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    certificates: list[str] = field(default_factory=list)
    storage: list[str] = field(default_factory=list)
    application_id: str | None = None

    def same_principal(self, row: AccessPolicyRow) -> bool:
        """Whether ``row`` is this entry's (tenant, object, application)."""
        return (
            row.tenant_id.lower() == self.tenant_id.lower()
            and row.object_id.lower() == self.object_id.lower()
            and (row.application_id or "").lower() == (self.application_id or "").lower()
        )


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


def _union(existing: Iterable[str], added: Iterable[str]) -> list[str]:
    result = list(existing)
    seen = {p.lower() for p in result}
    for permission in added:
        if permission.lower() not in seen:
            seen.add(permission.lower())
            result.append(permission)
    return result


def _minus(existing: Iterable[str], removed: Iterable[str]) -> list[str]:
    gone = {p.lower() for p in removed}
    return [p for p in existing if p.lower() not in gone]


class KeyVaultService:
    """State and rules of the sandbox vaults.

    Args:
        db: the sandbox's database.
        sealer: seals private keys and backups.
    """

    def __init__(self, db: Database, sealer: crypto.Sealer) -> None:
        self.db = db
        self.sealer = sealer
        self.clock_offset = 0.0
        """Seconds the sandbox clock runs ahead of the real one (persisted)."""
        # One writer at a time keeps read-modify-write sequences (versions, policies) consistent on SQLite.
        self._lock = asyncio.Lock()

    # State and clock -------------------------------------------------------------------------------------------

    async def open(self) -> bool:
        """Create the tables and load the clock; whether the database is new (never seeded)."""
        await self.db.create_all()
        clock = await self.get_state("clock")
        self.clock_offset = float(clock["offset_seconds"]) if clock else 0.0
        return await self.get_state("seeded") is None

    def now(self) -> int:
        """The sandbox clock, Unix seconds."""
        return int(time.time() + self.clock_offset)

    async def get_state(self, key: str) -> dict[str, Any] | None:
        """A service-wide state value."""
        async with self.db.session() as s:
            row = await s.get(StateRow, key)
            return row.value if row else None

    async def set_state(self, key: str, value: dict[str, Any]) -> None:
        """Set a service-wide state value."""
        async with self.db.session() as s, s.begin():
            await s.merge(StateRow(key=key, value=value))

    async def advance_clock(self, seconds: float) -> int:
        """Move the sandbox clock forward and purge what is due; the number of keys purged."""
        if seconds < 0:
            raise errors.bad_parameter("the sandbox clock only moves forward")
        self.clock_offset += seconds
        await self.set_state("clock", {"offset_seconds": self.clock_offset})
        return await self.purge_expired()

    # Vaults ----------------------------------------------------------------------------------------------------

    async def get_vault(self, name: str) -> VaultRow | None:
        """The vault named ``name`` (case-insensitive)."""
        async with self.db.session() as s:
            return await s.get(VaultRow, name.lower())

    async def require_vault(self, name: str) -> VaultRow:
        """The vault, or a 404 in ARM's wording."""
        vault = await self.get_vault(name)
        if vault is None:
            raise ServiceError(404, "VaultNotFound", f"The vault '{name}' does not exist in the sandbox.")
        return vault

    async def list_vaults(
        self, subscription_id: str | None = None, resource_group: str | None = None
    ) -> list[VaultRow]:
        """Vaults, optionally of one subscription and resource group."""
        query = select(VaultRow).order_by(VaultRow.name)
        if subscription_id is not None:
            query = query.where(func.lower(VaultRow.subscription_id) == subscription_id.lower())
        if resource_group is not None:
            query = query.where(func.lower(VaultRow.resource_group) == resource_group.lower())
        async with self.db.session() as s:
            return list((await s.scalars(query)).all())

    @staticmethod
    def _check_retention(days: int) -> None:
        if not 7 <= days <= 90:
            raise errors.arm_bad_request(
                f'The property "softDeleteRetentionInDays" has an invalid value {days}: it must be between 7 and 90.'
            )

    async def create_vault(self, spec: VaultSpec, policies: Sequence[PolicyEntry] = ()) -> VaultRow:
        """Create a vault.

        Raises:
            ServiceError: invalid name or retention, or the name is taken (names are global).
        """
        if not VAULT_NAME.match(spec.name):
            raise errors.arm_bad_request(
                f"The vault name '{spec.name}' is invalid. A vault's name must be between 3-24 alphanumeric "
                f"characters. The name must begin with a letter, end with a letter or digit, and not contain "
                f"consecutive hyphens.",
                code="VaultNameNotValid",
            )
        self._check_retention(spec.soft_delete_retention_days)
        now = self.now()
        async with self._lock, self.db.session() as s, s.begin():
            if await s.get(VaultRow, spec.name.lower()) is not None:
                raise ServiceError(
                    409,
                    "VaultAlreadyExists",
                    f"The vault name '{spec.name}' is already in use. Vault names are globally unique so it is "
                    f"possible that the name is already taken.",
                )
            vault = VaultRow(
                name=spec.name.lower(),
                location=spec.location.lower().replace(" ", ""),
                tenant_id=spec.tenant_id,
                subscription_id=spec.subscription_id,
                resource_group=spec.resource_group,
                sku=spec.sku,
                soft_delete_retention_days=spec.soft_delete_retention_days,
                purge_protection=spec.purge_protection,
                rbac_authorization=spec.rbac_authorization,
                protected_subscription=spec.protected_subscription,
                soft_delete=spec.soft_delete,
                tags=dict(spec.tags),
                created_at=now,
                updated_at=now,
            )
            s.add(vault)
            await s.flush()
            for entry in policies:
                s.add(self._policy_row(vault.name, entry))
        return vault

    async def update_vault(
        self,
        name: str,
        *,
        purge_protection: bool | None = None,
        rbac_authorization: bool | None = None,
        soft_delete_retention_days: int | None = None,
        enable_soft_delete: bool | None = None,
        sku: str | None = None,
        tenant_id: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> VaultRow:
        """Change a vault's properties (ARM PUT/PATCH and the control endpoint).

        Raises:
            ServiceError: purge protection or soft delete turned off, retention out of range, unknown vault.
        """
        if purge_protection is False:
            current = await self.require_vault(name)
            if current.purge_protection:
                raise errors.arm_bad_request(
                    'The property "enablePurgeProtection" cannot be set to false. Enabling the purge protection for '
                    "a vault is an irreversible action."
                )
        if enable_soft_delete is False:
            raise errors.arm_bad_request(
                "The property \"enableSoftDelete\" cannot be set to false. Enabling the 'soft delete' functionality "
                "is an irreversible action."
            )
        if soft_delete_retention_days is not None:
            self._check_retention(soft_delete_retention_days)
        async with self._lock, self.db.session() as s, s.begin():
            vault = await s.get(VaultRow, name.lower())
            if vault is None:
                raise ServiceError(404, "VaultNotFound", f"The vault '{name}' does not exist in the sandbox.")
            if purge_protection is not None:
                vault.purge_protection = purge_protection
            if rbac_authorization is not None:
                vault.rbac_authorization = rbac_authorization
            if soft_delete_retention_days is not None:
                vault.soft_delete_retention_days = soft_delete_retention_days
            if sku is not None:
                vault.sku = sku
            if tenant_id is not None:
                vault.tenant_id = tenant_id
            if tags is not None:
                vault.tags = dict(tags)
            vault.updated_at = self.now()
        return vault

    async def set_knobs(self, name: str, **knobs: Any) -> VaultRow:
        """Set sandbox knobs of a vault (limits and faults; see :class:`~sandbox.keyvault.db.VaultRow`)."""
        async with self._lock, self.db.session() as s, s.begin():
            vault = await s.get(VaultRow, name.lower())
            if vault is None:
                raise ServiceError(404, "VaultNotFound", f"The vault '{name}' does not exist in the sandbox.")
            for attr, value in knobs.items():
                if not hasattr(vault, attr):
                    raise ValueError(f"no vault knob {attr!r}")
                setattr(vault, attr, value)
        return vault

    # Access policies -------------------------------------------------------------------------------------------

    @staticmethod
    def _policy_row(vault: str, entry: PolicyEntry) -> AccessPolicyRow:
        return AccessPolicyRow(
            vault_name=vault,
            tenant_id=entry.tenant_id,
            object_id=entry.object_id,
            application_id=entry.application_id,
            keys=list(entry.keys),
            secrets=list(entry.secrets),
            certificates=list(entry.certificates),
            storage=list(entry.storage),
        )

    async def access_policies(self, vault: str) -> list[AccessPolicyRow]:
        """A vault's access policy entries, in order."""
        async with self.db.session() as s:
            query = select(AccessPolicyRow).where(AccessPolicyRow.vault_name == vault.lower())
            return list((await s.scalars(query.order_by(AccessPolicyRow.id))).all())

    async def replace_access_policies(self, vault: str, entries: Sequence[PolicyEntry]) -> list[AccessPolicyRow]:
        """Set a vault's whole access policy list (ARM PUT of the vault)."""
        async with self._lock, self.db.session() as s, s.begin():
            await s.execute(delete(AccessPolicyRow).where(AccessPolicyRow.vault_name == vault.lower()))
            for entry in entries:
                s.add(self._policy_row(vault.lower(), entry))
        return await self.access_policies(vault)

    async def edit_access_policies(
        self, vault: str, kind: str, entries: Sequence[PolicyEntry]
    ) -> list[AccessPolicyRow]:
        """``accessPolicies/{add|replace|remove}``: merge permissions into, overwrite, or take them out of entries.

        An entry left without any permission disappears.
        """
        if kind not in ("add", "replace", "remove"):
            raise errors.arm_bad_request(f"The operation kind '{kind}' is invalid; use add, replace or remove.")
        await self.require_vault(vault)
        async with self._lock, self.db.session() as s, s.begin():
            rows = list(
                (await s.scalars(select(AccessPolicyRow).where(AccessPolicyRow.vault_name == vault.lower()))).all()
            )
            for entry in entries:
                row = next((r for r in rows if entry.same_principal(r)), None)
                if row is None:
                    if kind != "remove":
                        row = self._policy_row(vault.lower(), entry)
                        s.add(row)
                        rows.append(row)
                    continue
                for attr in ("keys", "secrets", "certificates", "storage"):
                    given = getattr(entry, attr)
                    current = getattr(row, attr)
                    if kind == "add":
                        setattr(row, attr, _union(current, given))
                    elif kind == "replace":
                        setattr(row, attr, list(given))
                    else:
                        setattr(row, attr, _minus(current, given))
                if not (row.keys or row.secrets or row.certificates or row.storage):
                    await s.delete(row)
        return await self.access_policies(vault)

    # Keys ------------------------------------------------------------------------------------------------------

    @staticmethod
    def _check_key_name(name: str) -> None:
        if not KEY_NAME.match(name):
            raise errors.bad_parameter(
                f"The request URI contains an invalid name: {name}. Key names may only contain alphanumeric "
                f"characters and dashes and must be between 1 and 127 characters long."
            )

    async def _key_row(self, s: AsyncSession, vault: str, name: str) -> KeyRow | None:
        query = select(KeyRow).where(KeyRow.vault_name == vault.lower(), KeyRow.name_lower == name.lower())
        row: KeyRow | None = (await s.scalars(query)).first()
        return row

    async def _versions(self, s: AsyncSession, key: KeyRow) -> list[KeyVersionRow]:
        query = select(KeyVersionRow).where(KeyVersionRow.key_id == key.id).order_by(KeyVersionRow.id)
        return list((await s.scalars(query)).all())

    async def _latest(self, s: AsyncSession, key: KeyRow) -> KeyVersionRow:
        query = select(KeyVersionRow).where(KeyVersionRow.key_id == key.id).order_by(KeyVersionRow.id.desc())
        version = (await s.scalars(query.limit(1))).first()
        assert version is not None, "a key always has a version"
        return version

    def _new_version(
        self,
        vault: str,
        key: KeyRow,
        private: rsa.RSAPrivateKey,
        *,
        kty: str,
        key_ops: Sequence[str],
        attributes: KeyAttributes,
        tags: dict[str, str] | None,
        version: str | None = None,
        created: int | None = None,
        updated: int | None = None,
    ) -> KeyVersionRow:
        version = version or uuid.uuid4().hex
        n, e = crypto.public_parts(private)
        now = self.now()
        return KeyVersionRow(
            key_id=key.id,
            version=version,
            kty=kty,
            key_size=private.key_size,
            key_ops=list(key_ops),
            n=n,
            e=e,
            sealed_private=self.sealer.seal_private(private, vault, key.name, version),
            enabled=attributes.enabled,
            not_before=attributes.not_before,
            expires=attributes.expires,
            exportable=attributes.exportable,
            created=created if created is not None else now,
            updated=updated if updated is not None else now,
            tags=dict(tags) if tags is not None else None,
        )

    @staticmethod
    def _check_key_ops(key_ops: Sequence[str]) -> list[str]:
        unknown = [op for op in key_ops if op not in crypto.KEY_OPS]
        if unknown:
            raise errors.bad_parameter(f"Property key_ops has invalid values: {', '.join(unknown)}.")
        return list(key_ops)

    async def _add_version(
        self,
        vault_name: str,
        name: str,
        private: rsa.RSAPrivateKey,
        *,
        kty: str,
        key_ops: Sequence[str],
        attributes: KeyAttributes,
        tags: dict[str, str] | None,
        must_exist: bool = False,
    ) -> KeyView:
        async with self._lock, self.db.session() as s, s.begin():
            vault = await s.get(VaultRow, vault_name.lower())
            assert vault is not None
            key = await self._key_row(s, vault_name, name)
            if key is not None and key.deleted_at is not None:
                raise errors.deleted_but_recoverable(key.name)
            if key is None:
                if must_exist:
                    raise errors.key_not_found(name)
                key = KeyRow(vault_name=vault.name, name=name, name_lower=name.lower())
                s.add(key)
                await s.flush()
            version = self._new_version(
                vault.name, key, private, kty=kty, key_ops=key_ops, attributes=attributes, tags=tags
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
        public_exponent: int | None = None,
        key_ops: Sequence[str] | None = None,
        attributes: KeyAttributes | None = None,
        tags: dict[str, str] | None = None,
    ) -> KeyView:
        """Create a key, or a new version of an existing one (as ``POST /keys/{name}/create`` does).

        Raises:
            ServiceError: invalid name, key type or size; the name belongs to a deleted key.
        """
        self._check_key_name(name)
        if kty not in crypto.RSA_KEY_TYPES:
            raise errors.bad_parameter(
                f"Property kty has invalid value {kty}: the sandbox creates RSA and RSA-HSM keys only."
            )
        size = size or 2048
        if size not in crypto.RSA_KEY_SIZES:
            raise errors.bad_parameter(f"Property key_size has invalid value {size}: use 2048, 3072 or 4096.")
        exponent = public_exponent or 65537
        if exponent not in (3, 65537):
            raise errors.bad_parameter(f"Property public_exponent has invalid value {exponent}.")
        ops = self._check_key_ops(key_ops if key_ops else crypto.DEFAULT_RSA_KEY_OPS)
        await self.require_vault(vault)
        async with self.db.session() as s:
            existing = await self._key_row(s, vault, name)
        if existing is not None and existing.deleted_at is not None:
            raise errors.deleted_but_recoverable(existing.name)
        # RSA generation takes from milliseconds (2048) to seconds (4096): off the event loop.
        private = await asyncio.to_thread(crypto.generate_rsa, size, exponent)
        return await self._add_version(
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
        """Import an RSA private key as a new version (``PUT /keys/{name}``).

        Raises:
            ServiceError: not an RSA private key; the name belongs to a deleted key.
        """
        self._check_key_name(name)
        kty = str(jwk.get("kty", ""))
        if kty not in crypto.RSA_KEY_TYPES:
            raise errors.bad_parameter(f"Property kty has invalid value {kty}: the sandbox imports RSA keys only.")
        try:
            private = crypto.private_key_from_jwk(jwk)
        except crypto.CryptoError as exc:
            raise errors.bad_parameter(str(exc)) from None
        ops = self._check_key_ops(jwk.get("key_ops") or crypto.DEFAULT_RSA_KEY_OPS)
        await self.require_vault(vault)
        kty = "RSA-HSM" if hsm or kty == "RSA-HSM" else "RSA"
        return await self._add_version(
            vault, name, private, kty=kty, key_ops=ops, attributes=attributes or KeyAttributes(), tags=tags
        )

    async def get_key(self, vault: str, name: str, version: str | None = None) -> KeyView:
        """A version of an active key (the current one when ``version`` is empty).

        Raises:
            ServiceError: KeyNotFound (unknown, or deleted).
        """
        async with self.db.session() as s:
            vault_row = await s.get(VaultRow, vault.lower())
            key = await self._key_row(s, vault, name)
            if vault_row is None or key is None or key.deleted_at is not None:
                raise errors.key_not_found(name, version)
            if version:
                query = select(KeyVersionRow).where(KeyVersionRow.key_id == key.id, KeyVersionRow.version == version)
                row = (await s.scalars(query)).first()
                if row is None:
                    raise errors.key_not_found(name, version)
            else:
                row = await self._latest(s, key)
            return KeyView(vault_row, key, row)

    async def key_profile(self, vault: str, name: str) -> tuple[bool, int] | None:
        """(HSM-protected, size) of a key's current version, for throttling; None if there is no such key."""
        async with self.db.session() as s:
            key = await self._key_row(s, vault, name)
            if key is None:
                return None
            latest = await self._latest(s, key)
            return latest.hsm, latest.key_size

    async def list_keys(self, vault: str, *, deleted: bool = False) -> list[KeyView]:
        """The current version of each active (or each deleted) key, by name."""
        async with self.db.session() as s:
            vault_row = await s.get(VaultRow, vault.lower())
            if vault_row is None:
                return []
            state = KeyRow.deleted_at.is_not(None) if deleted else KeyRow.deleted_at.is_(None)
            query = select(KeyRow).where(KeyRow.vault_name == vault.lower(), state).order_by(KeyRow.name_lower)
            keys = list((await s.scalars(query)).all())
            return [KeyView(vault_row, key, await self._latest(s, key)) for key in keys]

    async def list_versions(self, vault: str, name: str) -> list[KeyView]:
        """Every version of an active key, oldest first.

        Raises:
            ServiceError: KeyNotFound.
        """
        async with self.db.session() as s:
            vault_row = await s.get(VaultRow, vault.lower())
            key = await self._key_row(s, vault, name)
            if vault_row is None or key is None or key.deleted_at is not None:
                raise errors.key_not_found(name)
            return [KeyView(vault_row, key, v) for v in await self._versions(s, key)]

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
        ops = self._check_key_ops(key_ops) if key_ops is not None else None
        async with self._lock, self.db.session() as s, s.begin():
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
            row.updated = self.now()
        return KeyView(view.vault, view.key, row)

    async def delete_key(self, vault: str, name: str) -> KeyView:
        """Soft-delete a key with all its versions; it is purged after the vault's retention period.

        Raises:
            ServiceError: KeyNotFound.
        """
        view = await self.get_key(vault, name)
        now = self.now()
        async with self._lock, self.db.session() as s, s.begin():
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
        async with self.db.session() as s:
            vault_row = await s.get(VaultRow, vault.lower())
            key = await self._key_row(s, vault, name)
            if vault_row is None or key is None or key.deleted_at is None:
                raise errors.deleted_key_not_found(name)
            return KeyView(vault_row, key, await self._latest(s, key))

    async def recover(self, vault: str, name: str) -> KeyView:
        """Bring a soft-deleted key back with all its versions.

        Raises:
            ServiceError: KeyNotFound (no such deleted key).
        """
        view = await self.get_deleted(vault, name)
        async with self._lock, self.db.session() as s, s.begin():
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
        async with self._lock, self.db.session() as s, s.begin():
            await self._purge_rows(s, [view.key.id])

    @staticmethod
    async def _purge_rows(s: AsyncSession, key_ids: Sequence[int]) -> None:
        await s.execute(delete(KeyVersionRow).where(KeyVersionRow.key_id.in_(key_ids)))
        await s.execute(delete(KeyRow).where(KeyRow.id.in_(key_ids)))

    async def purge_expired(self, vault: str | None = None) -> int:
        """Purge the soft-deleted keys whose scheduled purge date has come, as the service does; how many."""
        query = select(KeyRow.id).where(KeyRow.scheduled_purge_at.is_not(None), KeyRow.scheduled_purge_at <= self.now())
        if vault is not None:
            query = query.where(KeyRow.vault_name == vault.lower())
        async with self.db.session() as s:
            due = list((await s.scalars(query)).all())
        if not due:
            return 0
        async with self._lock, self.db.session() as s, s.begin():
            await self._purge_rows(s, due)
        return len(due)

    # Backup and restore ----------------------------------------------------------------------------------------

    async def backup(self, vault: str, name: str) -> bytes:
        """A sealed backup of a key: every version, its attributes and tags, and the rotation policy.

        Raises:
            ServiceError: KeyNotFound.
        """
        views = await self.list_versions(vault, name)
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
        await self.require_vault(vault)
        async with self._lock, self.db.session() as s, s.begin():
            vault_row = await s.get(VaultRow, vault.lower())
            assert vault_row is not None
            existing = await self._key_row(s, vault, name)
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
                row = self._new_version(
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

    # Rotation --------------------------------------------------------------------------------------------------

    async def rotate(self, vault: str, name: str) -> KeyView:
        """A new version like the current one (type, size, operations, tags); earlier versions stay usable.

        The expiry comes from the rotation policy's ``expiryTime``, if it sets one.

        Raises:
            ServiceError: KeyNotFound.
        """
        current = await self.get_key(vault, name)
        private = await asyncio.to_thread(crypto.generate_rsa, current.version.key_size)
        expires = None
        expiry_time = ((current.key.rotation_policy or {}).get("attributes") or {}).get("expiryTime")
        if expiry_time:
            expires = self.now() + duration_seconds(str(expiry_time))
        return await self._add_version(
            vault,
            current.key.name,
            private,
            kty=current.version.kty,
            key_ops=current.version.key_ops,
            attributes=KeyAttributes(exportable=current.version.exportable, expires=expires),
            tags=current.version.tags,
            must_exist=True,
        )

    async def set_rotation_policy(self, vault: str, name: str, policy: dict[str, Any]) -> KeyView:
        """Store a key's rotation policy (``lifetimeActions`` and ``attributes.expiryTime``).

        Raises:
            ServiceError: KeyNotFound; BadParameter for an unreadable policy.
        """
        view = await self.get_key(vault, name)
        actions = policy.get("lifetimeActions") or []
        attributes = dict(policy.get("attributes") or {})
        if not isinstance(actions, list) or len(actions) > 2:
            raise errors.bad_parameter("lifetimeActions holds at most two actions: one rotate, one notify.")
        expiry = attributes.get("expiryTime")
        try:
            for text in [expiry] + [
                (a.get("trigger") or {}).get(t) for a in actions for t in ("timeAfterCreate", "timeBeforeExpiry")
            ]:
                if text:
                    duration_seconds(str(text))
        except (ValueError, AttributeError) as exc:
            raise errors.bad_parameter(f"The rotation policy is invalid: {exc}") from None
        now = self.now()
        previous = view.key.rotation_policy or {}
        stored = {
            "lifetimeActions": actions,
            "attributes": {
                **({"expiryTime": expiry} if expiry else {}),
                "created": (previous.get("attributes") or {}).get("created", now),
                "updated": now,
            },
        }
        async with self._lock, self.db.session() as s, s.begin():
            key = await s.get(KeyRow, view.key.id)
            assert key is not None
            key.rotation_policy = stored
        return KeyView(view.vault, key, view.version)

    def private_key(self, view: KeyView) -> rsa.RSAPrivateKey:
        """The private key of a version (only inside the service)."""
        return self.sealer.open_private(
            view.version.sealed_private, view.vault.name, view.key.name, view.version.version
        )

    # Role assignments ------------------------------------------------------------------------------------------

    async def create_role_assignment(
        self,
        name: str,
        scope: str,
        role_definition_id: str,
        principal_id: str,
        *,
        principal_type: str = "ServicePrincipal",
        description: str | None = None,
        created_by: str | None = None,
    ) -> tuple[RoleAssignmentRow, bool]:
        """Create a role assignment; (the assignment, whether it is new).

        Raises:
            ServiceError: invalid id, unknown role, or the same principal already holds the role at the scope.
        """
        try:
            name = str(uuid.UUID(name))
        except ValueError:
            raise errors.arm_bad_request(
                f"The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID.",
                code="InvalidRoleAssignmentId",
            ) from None
        role_id = role_definition_id.rsplit("/", 1)[-1].lower()
        if role_id not in BUILT_IN_ROLES:
            raise errors.arm_bad_request(
                f"The specified role definition with ID '{role_id}' does not exist.", code="RoleDefinitionDoesNotExist"
            )
        scope = "/" + "/".join(part for part in scope.split("/") if part)
        now = self.now()
        async with self._lock, self.db.session() as s, s.begin():
            current = await s.get(RoleAssignmentRow, name)
            same = select(RoleAssignmentRow).where(
                func.lower(RoleAssignmentRow.principal_id) == principal_id.lower(),
                RoleAssignmentRow.role_definition_id == role_id,
                func.lower(RoleAssignmentRow.scope) == normalize_scope(scope),
            )
            duplicate = (await s.scalars(same)).first()
            if current is not None:
                if duplicate is not None and duplicate.name == current.name:
                    return current, False
                raise ServiceError(
                    409,
                    "RoleAssignmentUpdateNotPermitted",
                    "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
                )
            if duplicate is not None:
                raise ServiceError(409, "RoleAssignmentExists", "The role assignment already exists.")
            row = RoleAssignmentRow(
                name=name,
                scope=scope,
                role_definition_id=role_id,
                principal_id=principal_id.lower(),
                principal_type=principal_type,
                description=description,
                created_on=now,
                updated_on=now,
                created_by=created_by,
            )
            s.add(row)
        return row, True

    async def get_role_assignment(self, name: str) -> RoleAssignmentRow | None:
        """A role assignment by its GUID."""
        async with self.db.session() as s:
            return await s.get(RoleAssignmentRow, name.lower())

    async def delete_role_assignment(self, name: str) -> RoleAssignmentRow | None:
        """Delete a role assignment; the deleted one, if it existed."""
        async with self._lock, self.db.session() as s, s.begin():
            row = await s.get(RoleAssignmentRow, name.lower())
            if row is not None:
                await s.delete(row)
            return row

    async def list_role_assignments(
        self, scope: str | None = None, *, principal_id: str | None = None, at_scope: bool = False
    ) -> list[RoleAssignmentRow]:
        """Role assignments that apply at ``scope`` (above it) and, unless ``at_scope``, below it."""
        query = select(RoleAssignmentRow).order_by(RoleAssignmentRow.created_on, RoleAssignmentRow.name)
        if principal_id is not None:
            query = query.where(func.lower(RoleAssignmentRow.principal_id) == principal_id.lower())
        async with self.db.session() as s:
            rows = list((await s.scalars(query)).all())
        if scope is None:
            return rows
        return [r for r in rows if scope_covers(r.scope, scope) or (not at_scope and scope_covers(scope, r.scope))]

    async def roles_at(self, principal_id: str, scope: str) -> list[str]:
        """The role ids ``principal_id`` holds at ``scope`` (assigned there or above)."""
        rows = await self.list_role_assignments(scope, principal_id=principal_id, at_scope=True)
        return [r.role_definition_id for r in rows]
