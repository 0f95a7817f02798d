"""Vaults: create, change and look up, and the sandbox's per-vault knobs (limits, faults)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from sandbox.keyvault import errors
from sandbox.keyvault.access import PolicyEntry, policy_row
from sandbox.keyvault.base import Store
from sandbox.keyvault.db import VaultRow
from sandbox.keyvault.errors import ServiceError

VAULT_NAME = re.compile(r"^[A-Za-z](?!.*--)[A-Za-z0-9-]{1,22}[A-Za-z0-9]$")


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


def _not_found(name: str) -> ServiceError:
    return ServiceError(404, "VaultNotFound", f"The vault '{name}' does not exist in the sandbox.")


def _check_retention(days: int) -> None:
    if not 7 <= days <= 90:
        raise errors.arm_bad_request(
            f'The property "softDeleteRetentionInDays" has an invalid value {days}: it must be between 7 and 90.'
        )


class Vaults:
    """The sandbox's vaults (a :class:`~sandbox.keyvault.base.VaultLookup` for the other parts).

    Args:
        store: database, lock and clock.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    async def get_vault(self, name: str) -> VaultRow | None:
        """The vault named ``name`` (case-insensitive)."""
        async with self.store.db.session() as s:
            return await s.get(VaultRow, name.lower())

    async def require_vault(self, name: str) -> VaultRow:
        """The vault, or a 404 in ARM's wording."""
        vault = await self.get_vault(name)
        if vault is None:
            raise _not_found(name)
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
        async with self.store.db.session() as s:
            return list((await s.scalars(query)).all())

    async def create_vault(self, spec: VaultSpec, policies: Sequence[PolicyEntry] = ()) -> VaultRow:
        """Create a vault with its access policies.

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
        _check_retention(spec.soft_delete_retention_days)
        now = self.store.now()
        async with self.store.lock, self.store.db.session() as s, s.begin():
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
                s.add(policy_row(vault.name, entry))
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
            _check_retention(soft_delete_retention_days)
        async with self.store.lock, self.store.db.session() as s, s.begin():
            vault = await s.get(VaultRow, name.lower())
            if vault is None:
                raise _not_found(name)
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
            vault.updated_at = self.store.now()
        return vault

    async def set_knobs(self, name: str, **knobs: Any) -> VaultRow:
        """Set sandbox knobs of a vault (limits and faults; see :class:`~sandbox.keyvault.db.VaultRow`)."""
        async with self.store.lock, self.store.db.session() as s, s.begin():
            vault = await s.get(VaultRow, name.lower())
            if vault is None:
                raise _not_found(name)
            for attr, value in knobs.items():
                if not hasattr(vault, attr):
                    raise ValueError(f"no vault knob {attr!r}")
                setattr(vault, attr, value)
        return vault
