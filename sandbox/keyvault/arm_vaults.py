"""Resource Manager's ``Microsoft.KeyVault/vaults``: get, create or update, update, list, and access policies.

``azure-mgmt-keyvault`` 14.1 (api-version 2026-05-15): get, create or update (PUT, answered as a finished
long-running operation), update (PATCH), list by resource group and by subscription, and
``accessPolicies/{add|replace|remove}``.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from sandbox.keyvault import errors
from sandbox.keyvault.access import AccessPolicies, PolicyEntry
from sandbox.keyvault.arm_common import ArmAuth, ArmRequest, iso, method_not_allowed
from sandbox.keyvault.db import AccessPolicyRow, VaultRow
from sandbox.keyvault.errors import ServiceError
from sandbox.keyvault.vaults import Vaults, VaultSpec

RBAC_DEFAULT_SINCE = "2026-02-01"
"""From this api-version on, a new vault without ``enableRbacAuthorization`` uses Azure RBAC."""


def policy_json(row: AccessPolicyRow) -> dict[str, Any]:
    """An AccessPolicyEntry."""
    entry: dict[str, Any] = {"tenantId": row.tenant_id, "objectId": row.object_id}
    if row.application_id:
        entry["applicationId"] = row.application_id
    entry["permissions"] = {
        "keys": list(row.keys),
        "secrets": list(row.secrets),
        "certificates": list(row.certificates),
        "storage": list(row.storage),
    }
    return entry


def vault_json(vault: VaultRow, policies: list[AccessPolicyRow]) -> dict[str, Any]:
    """A Vault resource."""
    properties: dict[str, Any] = {
        "sku": {"family": "A", "name": vault.sku},
        "tenantId": vault.tenant_id,
        "accessPolicies": [policy_json(p) for p in policies],
        "enabledForDeployment": False,
        "enabledForDiskEncryption": False,
        "enabledForTemplateDeployment": False,
        "enableSoftDelete": vault.soft_delete,
        "softDeleteRetentionInDays": vault.soft_delete_retention_days,
        "enableRbacAuthorization": vault.rbac_authorization,
        "vaultUri": f"https://{vault.name}.vault.azure.net/",
        "provisioningState": "Succeeded",
        "publicNetworkAccess": "Enabled",
    }
    if vault.purge_protection:
        # Azure leaves the property out until purge protection is on (it can never be sent as false).
        properties["enablePurgeProtection"] = True
    return {
        "id": vault.scope,
        "name": vault.name,
        "type": "Microsoft.KeyVault/vaults",
        "location": vault.location,
        "tags": dict(vault.tags),
        "systemData": {"createdAt": iso(vault.created_at), "lastModifiedAt": iso(vault.updated_at)},
        "properties": properties,
    }


def _policy_entries(raw: Any) -> list[PolicyEntry]:
    if not isinstance(raw, list):
        raise errors.arm_bad_request("The property 'accessPolicies' must be an array.", "InvalidRequestContent")
    entries = []
    for item in raw:
        if not isinstance(item, dict) or not item.get("objectId") or not item.get("tenantId"):
            raise errors.arm_bad_request(
                "An access policy entry needs 'tenantId', 'objectId' and 'permissions'.", "InvalidRequestContent"
            )
        permissions = item.get("permissions") or {}
        entries.append(
            PolicyEntry(
                tenant_id=str(item["tenantId"]),
                object_id=str(item["objectId"]),
                application_id=item.get("applicationId"),
                keys=[str(p) for p in permissions.get("keys") or []],
                secrets=[str(p) for p in permissions.get("secrets") or []],
                certificates=[str(p) for p in permissions.get("certificates") or []],
                storage=[str(p) for p in permissions.get("storage") or []],
            )
        )
    return entries


class ArmVaults:
    """Handlers of the vault resources (the dispatcher matched the path).

    Args:
        auth: authorizes each request.
        vaults: the vaults.
        access: their access policies.
    """

    def __init__(self, auth: ArmAuth, vaults: Vaults, access: AccessPolicies) -> None:
        self.auth = auth
        self.vaults = vaults
        self.access = access

    async def _find_vault(self, sub: str, rg: str, name: str) -> VaultRow | None:
        vault = await self.vaults.get_vault(name)
        if vault is None or vault.subscription_id.lower() != sub.lower() or vault.resource_group.lower() != rg.lower():
            return None
        return vault

    async def _vault_response(self, vault: VaultRow, status: int = 200) -> Response:
        policies = await self.access.access_policies(vault.name)
        return JSONResponse(vault_json(vault, policies), status_code=status)

    async def vault(self, arm: ArmRequest, sub: str, rg: str, name: str) -> Response:
        """GET, PUT (create or update) or PATCH a vault."""
        method = arm.request.method
        action = {"GET": "read", "PUT": "write", "PATCH": "write"}.get(method)
        if action is None:
            raise method_not_allowed(method)
        await self.auth.authorize(arm, f"Microsoft.KeyVault/vaults/{action}", arm.path)
        vault = await self._find_vault(sub, rg, name)
        if method == "GET":
            if vault is None:
                raise errors.arm_not_found("Microsoft.KeyVault/vaults", name, rg)
            return await self._vault_response(vault)
        body = await arm.body()
        properties = body.get("properties")
        if not isinstance(properties, dict):
            raise errors.arm_bad_request("The property 'properties' is required.", "InvalidRequestContent")
        if properties.get("enablePurgeProtection") is False:
            raise errors.arm_bad_request(
                'The property "enablePurgeProtection" cannot be set to false. Enabling the purge protection for a '
                "vault is an irreversible action."
            )
        if method == "PATCH":
            if vault is None:
                raise errors.arm_not_found("Microsoft.KeyVault/vaults", name, rg)
            return await self._vault_response(await self._apply(vault, body, properties))
        if vault is None:
            return await self._create_vault(arm, sub, rg, name, body, properties)
        location = str(body.get("location", vault.location)).lower().replace(" ", "")
        if location != vault.location:
            raise ServiceError(
                400,
                "InvalidResourceLocation",
                f"The resource '{name}' already exists in location '{vault.location}' in resource group '{rg}'. A "
                f"resource with the same name cannot be created in location '{location}'. Please select a new "
                f"resource name.",
            )
        return await self._vault_response(await self._apply(vault, body, properties))

    async def _apply(self, vault: VaultRow, body: dict[str, Any], properties: dict[str, Any]) -> VaultRow:
        sku = properties.get("sku")
        updated = await self.vaults.update_vault(
            vault.name,
            purge_protection=properties.get("enablePurgeProtection"),
            rbac_authorization=properties.get("enableRbacAuthorization"),
            soft_delete_retention_days=properties.get("softDeleteRetentionInDays"),
            enable_soft_delete=properties.get("enableSoftDelete"),
            sku=str(sku["name"]) if isinstance(sku, dict) and sku.get("name") else None,
            tenant_id=properties.get("tenantId"),
            tags=body.get("tags"),
        )
        if "accessPolicies" in properties and properties["accessPolicies"] is not None:
            await self.access.replace_access_policies(vault.name, _policy_entries(properties["accessPolicies"]))
        return updated

    async def _create_vault(
        self, arm: ArmRequest, sub: str, rg: str, name: str, body: dict[str, Any], properties: dict[str, Any]
    ) -> Response:
        location, tenant, sku = body.get("location"), properties.get("tenantId"), properties.get("sku")
        if not location or not tenant or not isinstance(sku, dict):
            raise errors.arm_bad_request(
                "A new vault needs 'location', 'properties.tenantId' and 'properties.sku'.", "InvalidRequestContent"
            )
        rbac = properties.get("enableRbacAuthorization")
        if rbac is None:
            rbac = arm.api_version >= RBAC_DEFAULT_SINCE
        vault = await self.vaults.create_vault(
            VaultSpec(
                name=name,
                location=str(location),
                tenant_id=str(tenant),
                subscription_id=sub,
                resource_group=rg,
                sku=str(sku.get("name", "standard")),
                soft_delete_retention_days=int(properties.get("softDeleteRetentionInDays") or 90),
                purge_protection=bool(properties.get("enablePurgeProtection")),
                rbac_authorization=bool(rbac),
                tags={str(k): str(v) for k, v in (body.get("tags") or {}).items()},
            ),
            _policy_entries(properties.get("accessPolicies") or []),
        )
        return await self._vault_response(vault, status=201)

    async def list_vaults(self, arm: ArmRequest, sub: str, rg: str | None) -> Response:
        """The vaults of a resource group, or of a subscription when ``rg`` is None."""
        if arm.request.method != "GET":
            raise method_not_allowed(arm.request.method)
        await self.auth.authorize(arm, "Microsoft.KeyVault/vaults/read", arm.path.rsplit("/providers/", 1)[0])
        vaults = await self.vaults.list_vaults(sub, rg)
        top = arm.request.query_params.get("$top")
        if top and top.isdigit():
            vaults = vaults[: int(top)]
        return JSONResponse({"value": [vault_json(v, await self.access.access_policies(v.name)) for v in vaults]})

    async def access_policies(self, arm: ArmRequest, sub: str, rg: str, name: str, kind: str) -> Response:
        """PUT ``accessPolicies/{add|replace|remove}``."""
        vault_id = arm.path.rsplit("/accessPolicies/", 1)[0]
        await self.auth.authorize(arm, "Microsoft.KeyVault/vaults/accessPolicies/write", vault_id)
        vault = await self._find_vault(sub, rg, name)
        if vault is None:
            raise errors.arm_not_found("Microsoft.KeyVault/vaults", name, rg)
        body = await arm.body()
        entries = _policy_entries(((body.get("properties") or {}).get("accessPolicies")) or [])
        policies = await self.access.edit_access_policies(vault.name, kind.lower(), entries)
        return JSONResponse(
            {
                "id": f"{vault.scope}/accessPolicies/{kind.lower()}",
                "name": kind.lower(),
                "type": "Microsoft.KeyVault/vaults/accessPolicies",
                "location": vault.location,
                "properties": {"accessPolicies": [policy_json(p) for p in policies]},
            }
        )
