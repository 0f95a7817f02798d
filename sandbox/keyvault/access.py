"""Who may do what: a vault's access policies, and Azure RBAC role assignments at any scope."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select

from sandbox.keyvault import errors
from sandbox.keyvault.authz import BUILT_IN_ROLES, normalize_scope, scope_covers
from sandbox.keyvault.base import Store, VaultLookup
from sandbox.keyvault.db import AccessPolicyRow, RoleAssignmentRow
from sandbox.keyvault.errors import ServiceError


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


def policy_row(vault: str, entry: PolicyEntry) -> AccessPolicyRow:
    """The row of ``entry`` in ``vault`` (a new vault's policies are written with the vault)."""
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


class AccessPolicies:
    """A vault's access policy list (the authorization of vaults that are not on Azure RBAC).

    Args:
        store: database, lock and clock.
        vaults: finds the vault a change is for.
    """

    def __init__(self, store: Store, vaults: VaultLookup) -> None:
        self.store = store
        self.vaults = vaults

    async def access_policies(self, vault: str) -> list[AccessPolicyRow]:
        """A vault's access policy entries, in order."""
        async with self.store.db.session() as s:
            query = select(AccessPolicyRow).where(AccessPolicyRow.vault_name == vault.lower())
            return list((await s.scalars(query.order_by(AccessPolicyRow.id))).all())

    async def replace_access_policies(self, vault: str, entries: Sequence[PolicyEntry]) -> list[AccessPolicyRow]:
        """Set a vault's whole access policy list (ARM PUT of the vault)."""
        async with self.store.lock, self.store.db.session() as s, s.begin():
            await s.execute(delete(AccessPolicyRow).where(AccessPolicyRow.vault_name == vault.lower()))
            for entry in entries:
                s.add(policy_row(vault.lower(), entry))
        return await self.access_policies(vault)

    async def edit_access_policies(
        self, vault: str, kind: str, entries: Sequence[PolicyEntry]
    ) -> list[AccessPolicyRow]:
        """``accessPolicies/{add|replace|remove}``: merge permissions into, overwrite, or take them out of entries.

        An entry left without any permission disappears.
        """
        if kind not in ("add", "replace", "remove"):
            raise errors.arm_bad_request(f"The operation kind '{kind}' is invalid; use add, replace or remove.")
        await self.vaults.require_vault(vault)
        async with self.store.lock, self.store.db.session() as s, s.begin():
            rows = list(
                (await s.scalars(select(AccessPolicyRow).where(AccessPolicyRow.vault_name == vault.lower()))).all()
            )
            for entry in entries:
                row = next((r for r in rows if entry.same_principal(r)), None)
                if row is None:
                    if kind != "remove":
                        row = policy_row(vault.lower(), entry)
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


class RoleAssignments:
    """Azure RBAC role assignments (built-in roles only), shared by Resource Manager and the data plane.

    Args:
        store: database, lock and clock.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

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
        now = self.store.now()
        async with self.store.lock, self.store.db.session() as s, s.begin():
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
        async with self.store.db.session() as s:
            return await s.get(RoleAssignmentRow, name.lower())

    async def delete_role_assignment(self, name: str) -> RoleAssignmentRow | None:
        """Delete a role assignment; the deleted one, if it existed."""
        async with self.store.lock, self.store.db.session() as s, s.begin():
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
        async with self.store.db.session() as s:
            rows = list((await s.scalars(query)).all())
        if scope is None:
            return rows
        return [r for r in rows if scope_covers(r.scope, scope) or (not at_scope and scope_covers(scope, r.scope))]

    async def roles_at(self, principal_id: str, scope: str) -> list[str]:
        """The role ids ``principal_id`` holds at ``scope`` (assigned there or above)."""
        rows = await self.list_role_assignments(scope, principal_id=principal_id, at_scope=True)
        return [r.role_definition_id for r in rows]
