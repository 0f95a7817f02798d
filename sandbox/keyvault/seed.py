"""The demo tenant's vaults, keys and permissions, created when the sandbox's database is new.

Two vaults in two regions with access policies (what a Customer Key DEP needs: two keys in two vaults in two
regions, soft delete and purge protection on, get/wrapKey/unwrapKey for the Microsoft 365 service principals), and a
third vault on Azure RBAC (the target of ``keyvault.rbac.migrate``).
"""

from __future__ import annotations

import uuid

from ckey.config import Settings
from sandbox.identity import is_application, object_id
from sandbox.keyvault.access import PolicyEntry, RoleAssignments
from sandbox.keyvault.authz import KEY_PERMISSIONS, find_role
from sandbox.keyvault.keys import Keys
from sandbox.keyvault.vaults import Vaults, VaultSpec
from sandbox.vocabulary import ServicePrincipal

REGION_VAULTS = {"contoso-eastus-kv1": "eastus", "contoso-westus-kv1": "westus"}
RBAC_VAULT = ("contoso-rbac-kv1", "centralus")
DEMO_KEYS = {
    "contoso-eastus-kv1": ("exo-key-01", "spo-key-01", "m365-key-01"),
    "contoso-westus-kv1": ("exo-key-02", "spo-key-02", "m365-key-02"),
}
SERVICE_PERMISSIONS = ["get", "wrapKey", "unwrapKey"]
"""What Customer Key needs for each Microsoft 365 service principal."""
ALICE = "alice@contoso.com"
ALICE_PERMISSIONS = ["get", "list", "create", "update", "import", "delete", "recover", "backup", "restore"]
_ASSIGNMENT_NAMESPACE = uuid.UUID("6f1d8d0e-6c53-4c0b-9a53-0f6c0de5eed5")


def principal_type(principal: str) -> str:
    """``ServicePrincipal`` for an application id, ``User`` for a UPN."""
    return "ServicePrincipal" if is_application(principal) else "User"


async def assign(roles: RoleAssignments, settings: Settings, principal: str, role: str, scope: str) -> None:
    """Give ``principal`` (app id or UPN) a built-in role at ``scope``, idempotently."""
    definition = find_role(role)
    assert definition is not None, role
    oid = object_id(settings.azure_tenant_id, principal)
    name = str(uuid.uuid5(_ASSIGNMENT_NAMESPACE, f"{scope.lower()}|{definition.id}|{oid}"))
    if await roles.get_role_assignment(name) is None:
        await roles.create_role_assignment(
            name, scope, definition.id, oid, principal_type=principal_type(principal), created_by="sandbox-seed"
        )


async def seed_demo(vaults: Vaults, keys: Keys, roles: RoleAssignments, settings: Settings) -> None:
    """Create the demo vaults, keys, access policies and role assignments."""
    tenant = settings.azure_tenant_id

    def entry(principal: str, permissions: list[str]) -> PolicyEntry:
        return PolicyEntry(tenant_id=tenant, object_id=object_id(tenant, principal), keys=list(permissions))

    policies = [entry(sp.value, SERVICE_PERMISSIONS) for sp in ServicePrincipal]
    policies += [entry(settings.azure_principal, list(KEY_PERMISSIONS)), entry(ALICE, ALICE_PERMISSIONS)]
    for name, location in REGION_VAULTS.items():
        await vaults.create_vault(
            VaultSpec(
                name=name,
                location=location,
                tenant_id=tenant,
                subscription_id=settings.azure_subscription_id,
                resource_group=settings.azure_resource_group,
                sku="premium",
                soft_delete_retention_days=90,
                purge_protection=True,
                protected_subscription=True,
            ),
            policies,
        )
        for key in DEMO_KEYS[name]:
            await keys.create_key(name, key, kty="RSA", size=2048, tags={"purpose": "customer-key-demo"})

    rbac = await vaults.create_vault(
        VaultSpec(
            name=RBAC_VAULT[0],
            location=RBAC_VAULT[1],
            tenant_id=tenant,
            subscription_id=settings.azure_subscription_id,
            resource_group=settings.azure_resource_group,
            sku="premium",
            soft_delete_retention_days=90,
            purge_protection=True,
            rbac_authorization=True,
            protected_subscription=True,
        )
    )
    for sp in ServicePrincipal:
        await assign(roles, settings, sp.value, "Key Vault Crypto Service Encryption User", rbac.scope)
    await assign(roles, settings, settings.azure_principal, "Key Vault Administrator", rbac.scope)
    await assign(roles, settings, settings.azure_principal, "Owner", f"/subscriptions/{settings.azure_subscription_id}")
