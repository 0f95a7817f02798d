"""The sandbox's own control endpoint, ``https://localhost:<port>/sandbox/...``: never under Azure's host names.

It sets up what tests and demos need and Azure offers no API for (a clock to shift, limits to lower, faults to
inject), and shortcuts for what Azure does offer (vaults, keys, access policies, role assignments). Callers present a
token of ckey's own auth (``ckey token --role admin``) and must hold the ``admin`` role; ``/sandbox/health`` is open.
"""

from __future__ import annotations

import base64
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from ckey.config import Settings
from sandbox.common import Admin, AdminTokens
from sandbox.identity import object_id
from sandbox.keyvault.access import AccessPolicies, PolicyEntry, RoleAssignments
from sandbox.keyvault.authz import KEY_PERMISSIONS, find_role
from sandbox.keyvault.backup import Backups
from sandbox.keyvault.base import Store
from sandbox.keyvault.db import VaultRow
from sandbox.keyvault.deleted import DeletedKeys
from sandbox.keyvault.errors import ServiceError
from sandbox.keyvault.keys import KeyAttributes, Keys
from sandbox.keyvault.limits import Throttle, VaultCounters
from sandbox.keyvault.seed import principal_type
from sandbox.keyvault.vaults import Vaults, VaultSpec


class VaultIn(BaseModel):
    """A vault to create."""

    name: str
    location: str = "eastus"
    tenant_id: str | None = None
    subscription_id: str | None = None
    resource_group: str | None = None
    sku: str = "standard"
    soft_delete_retention_days: int = Field(90, ge=7, le=90)
    purge_protection: bool = False
    rbac: bool = False
    protected_subscription: bool = False
    tags: dict[str, str] = Field(default_factory=dict)
    soft_delete: bool = True
    """False: a legacy vault from before soft delete became mandatory (Azure no longer creates these)."""


class VaultChange(BaseModel):
    """Properties of a vault to change (ARM's rules apply: purge protection never turns off)."""

    purge_protection: bool | None = None
    rbac: bool | None = None
    soft_delete_retention_days: int | None = Field(None, ge=7, le=90)


class KeyIn(BaseModel):
    """A key to create (or a new version of it)."""

    name: str
    kty: str = "RSA"
    size: int = 2048
    key_ops: list[str] | None = None
    tags: dict[str, str] | None = None
    enabled: bool = True
    expires: datetime | None = None


class PrincipalRef(BaseModel):
    """A principal by application id or UPN (``principal``), or by object id."""

    principal: str | None = None
    object_id: str | None = None

    @model_validator(mode="after")
    def _one(self) -> PrincipalRef:
        if not (self.principal or self.object_id):
            raise ValueError("name the principal (application id or UPN) or its object_id")
        return self


class AccessIn(PrincipalRef):
    """Key permissions to grant or revoke in a vault's access policies."""

    permissions: list[str] | None = None
    """For a grant: the permissions (``all`` for every one). For a revoke: None removes the whole entry."""


class RoleAssignmentIn(PrincipalRef):
    """A role assignment: a built-in role (name or id) at a vault or any scope."""

    role: str
    vault: str | None = None
    scope: str | None = None
    name: str | None = None


class ClockIn(BaseModel):
    """How far to move the sandbox clock forward."""

    days: float = Field(0, ge=0)
    hours: float = Field(0, ge=0)
    seconds: float = Field(0, ge=0)


class LoseKeyIn(BaseModel):
    """How a key is lost, for a restore rehearsal."""

    purge: bool = False
    """Purge it too, as if its retention period had ended (purge protection does not stop the clock)."""
    backup: bool = False
    """Answer its backup (``Backup-AzKeyVaultKey``), taken just before it is deleted."""


class LimitsIn(BaseModel):
    """A vault's limits; a field left out (None) takes the documented value."""

    create: int | None = Field(None, ge=1)
    """CREATE transactions per window, in RSA 2,048-bit software-key units (documented: 20)."""
    other: int | None = Field(None, ge=1)
    """All other transactions per window, in the same units (documented: 4,000)."""
    window_seconds: float | None = Field(None, gt=0)
    retry_after_seconds: int | None = Field(None, ge=1)


class FaultsIn(BaseModel):
    """Faults to inject into a vault's data plane."""

    error_rate: float = Field(0.0, ge=0, le=1)
    latency_ms: int = Field(0, ge=0, le=60_000)
    down: bool = False


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def build_control_app(
    settings: Settings,
    *,
    store: Store,
    vaults: Vaults,
    access: AccessPolicies,
    roles: RoleAssignments,
    keys: Keys,
    deleted: DeletedKeys,
    throttle: Throttle,
    counters: defaultdict[str, VaultCounters],
    backups: Backups,
) -> FastAPI:
    """The FastAPI app behind ``https://localhost:<port>/sandbox/``.

    Args:
        settings: ckey's settings (tenant, subscription and resource group of new vaults; admin tokens).
        store: the sandbox clock.
        vaults: vaults and their knobs.
        access: access policies.
        roles: role assignments.
        keys: keys.
        deleted: purges what the clock makes due.
        throttle: the limits (reset when a vault's limits change).
        counters: per-vault request counters, shown in a vault's summary.
        backups: a lost key's backup, for a restore rehearsal.
    """
    app = FastAPI(title="ckey sandbox Key Vault control", docs_url="/sandbox/docs", openapi_url="/sandbox/openapi.json")
    app.state.verifier = AdminTokens(settings)

    @app.exception_handler(ServiceError)
    async def _service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    def oid_of(ref: PrincipalRef) -> str:
        return (ref.object_id or object_id(settings.azure_tenant_id, str(ref.principal))).lower()

    async def vault_or_404(name: str) -> VaultRow:
        vault = await vaults.get_vault(name)
        if vault is None:
            raise HTTPException(404, f"no vault {name!r}")
        return vault

    async def summary(vault: VaultRow) -> dict[str, Any]:
        active = await keys.list_keys(vault.name)
        gone = await keys.list_keys(vault.name, deleted=True)
        policies = await access.access_policies(vault.name)
        return {
            "name": vault.name,
            "id": vault.scope,
            "location": vault.location,
            "vault_uri": f"https://{vault.name}.vault.azure.net/",
            "tenant_id": vault.tenant_id,
            "subscription_id": vault.subscription_id,
            "resource_group": vault.resource_group,
            "sku": vault.sku,
            "soft_delete_retention_days": vault.soft_delete_retention_days,
            "purge_protection": vault.purge_protection,
            "rbac": vault.rbac_authorization,
            "protected_subscription": vault.protected_subscription,
            "recovery_level": vault.recovery_level,
            "keys": [v.key.name for v in active],
            "deleted_keys": [
                {"name": v.key.name, "scheduled_purge": _iso(v.key.scheduled_purge_at or 0)} for v in gone
            ],
            "access_policies": [{"object_id": p.object_id, "keys": list(p.keys)} for p in policies],
            "limits": {
                "create": vault.create_limit,
                "other": vault.other_limit,
                "window_seconds": vault.limit_window_seconds,
                "retry_after_seconds": vault.retry_after_seconds,
            },
            "faults": {"error_rate": vault.error_rate, "latency_ms": vault.latency_ms, "down": vault.down},
            "counters": counters[vault.name].as_dict(),
        }

    def clock() -> dict[str, Any]:
        return {"offset_seconds": store.clock_offset, "now": _iso(store.now())}

    @app.get("/sandbox/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/sandbox/status")
    async def status(_: Admin) -> dict[str, Any]:
        return {"clock": clock(), "vaults": [await summary(v) for v in await vaults.list_vaults()]}

    @app.get("/sandbox/vaults")
    async def list_vaults(_: Admin) -> list[dict[str, Any]]:
        return [await summary(v) for v in await vaults.list_vaults()]

    @app.post("/sandbox/vaults", status_code=201)
    async def create_vault(body: VaultIn, _: Admin) -> dict[str, Any]:
        vault = await vaults.create_vault(
            VaultSpec(
                name=body.name,
                location=body.location,
                tenant_id=body.tenant_id or settings.azure_tenant_id,
                subscription_id=body.subscription_id or settings.azure_subscription_id,
                resource_group=body.resource_group or settings.azure_resource_group,
                sku=body.sku,
                soft_delete_retention_days=body.soft_delete_retention_days,
                purge_protection=body.purge_protection,
                rbac_authorization=body.rbac,
                protected_subscription=body.protected_subscription,
                tags=body.tags,
                soft_delete=body.soft_delete,
            )
        )
        return await summary(vault)

    @app.get("/sandbox/vaults/{name}")
    async def get_vault(name: str, _: Admin) -> dict[str, Any]:
        return await summary(await vault_or_404(name))

    @app.patch("/sandbox/vaults/{name}")
    async def change_vault(name: str, body: VaultChange, _: Admin) -> dict[str, Any]:
        vault = await vaults.update_vault(
            name,
            purge_protection=body.purge_protection,
            rbac_authorization=body.rbac,
            soft_delete_retention_days=body.soft_delete_retention_days,
        )
        return await summary(vault)

    @app.post("/sandbox/vaults/{name}/keys", status_code=201)
    async def create_key(name: str, body: KeyIn, _: Admin) -> dict[str, Any]:
        vault = await vault_or_404(name)
        view = await keys.create_key(
            vault.name,
            body.name,
            kty=body.kty,
            size=body.size,
            key_ops=body.key_ops,
            attributes=KeyAttributes(
                enabled=body.enabled, expires=int(body.expires.timestamp()) if body.expires else None
            ),
            tags=body.tags,
        )
        return {
            "vault": vault.name,
            "name": view.key.name,
            "version": view.version.version,
            "kid": f"https://{vault.name}.vault.azure.net/keys/{view.key.name}/{view.version.version}",
            "kty": view.version.kty,
            "key_size": view.version.key_size,
        }

    @app.post("/sandbox/vaults/{name}/keys/{key}/lose")
    async def lose_key(name: str, key: str, body: LoseKeyIn, _: Admin) -> dict[str, Any]:
        vault = await vault_or_404(name)  # the outage a restore rehearsal starts from
        blob = await backups.backup(vault.name, key) if body.backup else None
        view = await deleted.delete_key(vault.name, key)
        if body.purge:
            await deleted.purge(vault.name, key, system=True)
        purge_at = None if body.purge or view.key.scheduled_purge_at is None else _iso(view.key.scheduled_purge_at)
        uri = f"https://{vault.name}.vault.azure.net/keys/{view.key.name}"
        backup = None if blob is None else base64.b64encode(blob).decode()
        return {"key_uri": uri, "purged": body.purge, "scheduled_purge": purge_at, "backup": backup}

    @app.post("/sandbox/vaults/{name}/access-policies/grant")
    async def grant(name: str, body: AccessIn, _: Admin) -> dict[str, Any]:
        vault = await vault_or_404(name)
        permissions = body.permissions or []
        unknown = [p for p in permissions if p.lower() not in {k.lower() for k in (*KEY_PERMISSIONS, "all")}]
        if unknown or not permissions:
            raise HTTPException(422, f"grant needs key permissions from {', '.join(KEY_PERMISSIONS)}; got {unknown}")
        entry = PolicyEntry(tenant_id=vault.tenant_id, object_id=oid_of(body), keys=permissions)
        await access.edit_access_policies(vault.name, "add", [entry])
        return await summary(vault)

    @app.post("/sandbox/vaults/{name}/access-policies/revoke")
    async def revoke(name: str, body: AccessIn, _: Admin) -> dict[str, Any]:
        vault = await vault_or_404(name)
        oid = oid_of(body)
        if body.permissions is None:
            remaining = [
                PolicyEntry(
                    tenant_id=p.tenant_id,
                    object_id=p.object_id,
                    application_id=p.application_id,
                    keys=list(p.keys),
                    secrets=list(p.secrets),
                    certificates=list(p.certificates),
                    storage=list(p.storage),
                )
                for p in await access.access_policies(vault.name)
                if p.object_id.lower() != oid
            ]
            await access.replace_access_policies(vault.name, remaining)
        else:
            entry = PolicyEntry(tenant_id=vault.tenant_id, object_id=oid, keys=body.permissions)
            await access.edit_access_policies(vault.name, "remove", [entry])
        return await summary(vault)

    @app.post("/sandbox/role-assignments", status_code=201)
    async def assign(body: RoleAssignmentIn, principal: Admin) -> dict[str, Any]:
        role = find_role(body.role)
        if role is None:
            raise HTTPException(422, f"no built-in role {body.role!r}")
        if body.scope:
            scope = body.scope
        elif body.vault:
            scope = (await vault_or_404(body.vault)).scope
        else:
            raise HTTPException(422, "name the vault or the scope of the assignment")
        row, _ = await roles.create_role_assignment(
            body.name or str(uuid.uuid4()),
            scope,
            role.id,
            oid_of(body),
            principal_type=principal_type(body.principal) if body.principal else "ServicePrincipal",
            created_by=principal,
        )
        return {
            "name": row.name,
            "scope": row.scope,
            "role": role.role_name,
            "role_definition_id": row.role_definition_id,
            "principal_id": row.principal_id,
        }

    @app.delete("/sandbox/role-assignments/{name}", status_code=204)
    async def unassign(name: str, _: Admin) -> None:
        if await roles.delete_role_assignment(name) is None:
            raise HTTPException(404, f"no role assignment {name!r}")

    @app.get("/sandbox/clock")
    async def get_clock(_: Admin) -> dict[str, Any]:
        return clock()

    @app.post("/sandbox/clock/advance")
    async def advance(body: ClockIn, _: Admin) -> dict[str, Any]:
        moved = await store.advance_clock(body.days * 86400 + body.hours * 3600 + body.seconds)
        purged = await deleted.purge_expired()
        return {**clock(), "purged": purged, **moved}

    @app.put("/sandbox/vaults/{name}/limits")
    async def set_limits(name: str, body: LimitsIn, _: Admin) -> dict[str, Any]:
        vault = await vaults.set_knobs(
            name,
            create_limit=body.create,
            other_limit=body.other,
            limit_window_seconds=body.window_seconds,
            retry_after_seconds=body.retry_after_seconds,
        )
        throttle.reset(vault.name)
        return await summary(vault)

    @app.put("/sandbox/vaults/{name}/faults")
    async def set_faults(name: str, body: FaultsIn, _: Admin) -> dict[str, Any]:
        vault = await vaults.set_knobs(name, error_rate=body.error_rate, latency_ms=body.latency_ms, down=body.down)
        return await summary(vault)

    return app
