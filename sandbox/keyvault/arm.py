"""The subset of Azure Resource Manager (``https://management.azure.com``) that ckey's SDK clients call.

``azure-mgmt-keyvault`` 14.1 (api-version 2026-05-15): get, create or update (PUT, answered as a finished
long-running operation), update (PATCH), list by resource group and by subscription, and
``accessPolicies/{add|replace|remove}``. ``azure-mgmt-authorization`` 4.0 (api-version 2022-04-01): role
assignments (create, get, delete, list at a scope, with ``atScope()`` / ``principalId eq`` / ``assignedTo()``
filters) and the built-in role definitions.

ARM takes the bearer token on the first request (no challenge) and authorizes with the same role assignments the
data plane uses: the seeded automation principal is Owner of the subscription; anybody else needs a role whose
actions cover the request, or gets 403 ``AuthorizationFailed``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from sandbox.identity import Caller
from sandbox.keyvault import errors
from sandbox.keyvault.authz import (
    BUILT_IN_ROLES,
    RoleDefinition,
    find_role,
    normalize_scope,
    rbac_allows,
    role_definition_resource_id,
)
from sandbox.keyvault.db import AccessPolicyRow, RoleAssignmentRow, VaultRow
from sandbox.keyvault.errors import ServiceError
from sandbox.keyvault.service import PolicyEntry, VaultSpec

if TYPE_CHECKING:
    from sandbox.keyvault.app import SandboxKeyVault

RESOURCES = ("https://management.azure.com", "https://management.core.windows.net")
RBAC_DEFAULT_SINCE = "2026-02-01"
"""From this api-version on, a new vault without ``enableRbacAuthorization`` uses Azure RBAC."""

_SEG = r"[^/]+"
_VAULTS = rf"/subscriptions/(?P<sub>{_SEG})/resourceGroups/(?P<rg>{_SEG})/providers/Microsoft\.KeyVault/vaults"
VAULT = re.compile(rf"^{_VAULTS}/(?P<name>{_SEG})$", re.I)
ACCESS_POLICIES = re.compile(rf"^{_VAULTS}/(?P<name>{_SEG})/accessPolicies/(?P<kind>{_SEG})$", re.I)
VAULTS_IN_GROUP = re.compile(rf"^{_VAULTS}$", re.I)
VAULTS_IN_SUBSCRIPTION = re.compile(rf"^/subscriptions/(?P<sub>{_SEG})/providers/Microsoft\.KeyVault/vaults$", re.I)
ROLE_ASSIGNMENT = re.compile(
    rf"^(?P<scope>.*)/providers/Microsoft\.Authorization/roleAssignments/(?P<id>{_SEG})$", re.I
)
ROLE_ASSIGNMENTS = re.compile(r"^(?P<scope>.*)/providers/Microsoft\.Authorization/roleAssignments$", re.I)
ROLE_DEFINITION = re.compile(
    rf"^(?P<scope>.*)/providers/Microsoft\.Authorization/roleDefinitions/(?P<id>{_SEG})$", re.I
)
ROLE_DEFINITIONS = re.compile(r"^(?P<scope>.*)/providers/Microsoft\.Authorization/roleDefinitions$", re.I)
_QUOTED = r"'(?P<value>[^']*)'"
_PRINCIPAL_FILTER = re.compile(r"(?:principalId\s+eq\s+|assignedTo\()'(?P<value>[^']*)'", re.I)


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


@dataclass
class ArmRequest:
    """One authenticated ARM request."""

    request: Request
    path: str
    caller: Caller
    api_version: str

    async def body(self) -> dict[str, Any]:
        """The JSON body."""
        try:
            data = await self.request.json()
        except ValueError:
            raise errors.arm_bad_request(
                "The request content was invalid and could not be deserialized.", "InvalidRequestContent"
            ) from None
        if not isinstance(data, dict):
            raise errors.arm_bad_request("The request content must be a JSON object.", "InvalidRequestContent")
        return data


# JSON shapes --------------------------------------------------------------------------------------------------


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
        "systemData": {"createdAt": _iso(vault.created_at), "lastModifiedAt": _iso(vault.updated_at)},
        "properties": properties,
    }


def role_assignment_json(row: RoleAssignmentRow, default_subscription: str) -> dict[str, Any]:
    """A RoleAssignment (api-version 2022-04-01)."""
    match = re.match(r"^/subscriptions/([^/]+)", row.scope, re.I)
    subscription = match.group(1) if match else default_subscription
    return {
        "id": f"{row.scope.rstrip('/')}/providers/Microsoft.Authorization/roleAssignments/{row.name}",
        "name": row.name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": role_definition_resource_id(subscription, row.role_definition_id),
            "principalId": row.principal_id,
            "principalType": row.principal_type,
            "scope": row.scope,
            "condition": None,
            "conditionVersion": None,
            "description": row.description,
            "createdOn": _iso(row.created_on),
            "updatedOn": _iso(row.updated_on),
            "createdBy": row.created_by,
            "updatedBy": row.created_by,
            "delegatedManagedIdentityResourceId": None,
        },
    }


def role_definition_json(role: RoleDefinition, subscription: str) -> dict[str, Any]:
    """A built-in RoleDefinition."""
    return {
        "id": role_definition_resource_id(subscription, role.id),
        "name": role.id,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": role.role_name,
            "description": role.description,
            "type": "BuiltInRole",
            "permissions": [
                {
                    "actions": list(role.actions),
                    "notActions": list(role.not_actions),
                    "dataActions": list(role.data_actions),
                    "notDataActions": list(role.not_data_actions),
                }
            ],
            "assignableScopes": ["/"],
        },
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


# The dispatcher -----------------------------------------------------------------------------------------------


class Arm:
    """ARM requests on ``management.azure.com``, dispatched by path (scopes are paths of any depth).

    Args:
        sandbox: the running sandbox.
    """

    def __init__(self, sandbox: SandboxKeyVault) -> None:
        self.sandbox = sandbox
        self.service = sandbox.service
        self.subscription = sandbox.settings.azure_subscription_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        request = Request(scope, receive)
        try:
            response = await self._handle(request)
        except ServiceError as exc:
            response = exc.response()
        response.headers["x-ms-request-id"] = request.headers.get("x-ms-client-request-id", "")
        await response(scope, receive, send)

    async def _handle(self, request: Request) -> Response:
        api_version = request.query_params.get("api-version")
        if not api_version:
            raise ServiceError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        caller = self._authenticate(request)
        path = "/" + "/".join(part for part in request.url.path.split("/") if part)
        arm = ArmRequest(request, path, caller, api_version)
        method = request.method
        if m := ACCESS_POLICIES.match(path):
            if method != "PUT":
                raise self._method_not_allowed(method)
            return await self._access_policies(arm, m["sub"], m["rg"], m["name"], m["kind"])
        if m := VAULT.match(path):
            return await self._vault(arm, m["sub"], m["rg"], m["name"])
        if m := VAULTS_IN_GROUP.match(path):
            return await self._list_vaults(arm, m["sub"], m["rg"])
        if m := VAULTS_IN_SUBSCRIPTION.match(path):
            return await self._list_vaults(arm, m["sub"], None)
        if m := ROLE_ASSIGNMENT.match(path):
            return await self._role_assignment(arm, m["scope"] or "/", m["id"])
        if m := ROLE_ASSIGNMENTS.match(path):
            return await self._list_role_assignments(arm, m["scope"] or "/")
        if m := ROLE_DEFINITION.match(path):
            return await self._role_definition(arm, m["id"])
        if m := ROLE_DEFINITIONS.match(path):
            return await self._list_role_definitions(arm, m["scope"] or "/")
        raise ServiceError(404, "InvalidResourceType", f"The sandbox's Resource Manager does not serve '{path}'.")

    @staticmethod
    def _method_not_allowed(method: str) -> ServiceError:
        return ServiceError(405, "MethodNotAllowed", f"The HTTP method '{method}' is not supported for this resource.")

    def _authenticate(self, request: Request) -> Caller:
        tenant = self.sandbox.settings.azure_tenant_id
        challenge = (
            f'Bearer authorization_uri="https://login.microsoftonline.com/{tenant}", error="invalid_token", '
            f"error_description=\"The authentication failed because of missing 'Authorization' header.\""
        )
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ServiceError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
                headers={"WWW-Authenticate": challenge},
            )
        last: jwt.PyJWTError | None = None
        for resource in RESOURCES:
            try:
                return self.sandbox.identity.verify(token.strip(), resource)
            except jwt.InvalidAudienceError as exc:
                last = exc
            except jwt.ExpiredSignatureError:
                raise ServiceError(
                    401,
                    "ExpiredAuthenticationToken",
                    "The access token expiry UTC time is earlier than current UTC time.",
                ) from None
            except jwt.PyJWTError:
                raise ServiceError(401, "InvalidAuthenticationToken", "The access token is invalid.") from None
        assert last is not None
        raise ServiceError(
            401,
            "InvalidAuthenticationTokenAudience",
            "The access token has been obtained for wrong audience or resource. It should exactly match with one of "
            "the allowed audiences 'https://management.core.windows.net/','https://management.core.windows.net',"
            "'https://management.azure.com/','https://management.azure.com'.",
        )

    async def _authorize(self, arm: ArmRequest, action: str, scope: str) -> None:
        roles = await self.service.roles_at(arm.caller.object_id, scope)
        if not rbac_allows(roles, action, data=False):
            raise ServiceError(
                403,
                "AuthorizationFailed",
                f"The client '{arm.caller.principal}' with object id '{arm.caller.object_id}' does not have "
                f"authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access "
                f"was recently granted, please refresh your credentials.",
            )

    # Vaults -----------------------------------------------------------------------------------------------------

    async def _find_vault(self, sub: str, rg: str, name: str) -> VaultRow | None:
        vault = await self.service.get_vault(name)
        if vault is None or vault.subscription_id.lower() != sub.lower() or vault.resource_group.lower() != rg.lower():
            return None
        return vault

    async def _vault_response(self, vault: VaultRow, status: int = 200) -> Response:
        policies = await self.service.access_policies(vault.name)
        return JSONResponse(vault_json(vault, policies), status_code=status)

    async def _vault(self, arm: ArmRequest, sub: str, rg: str, name: str) -> Response:
        method = arm.request.method
        action = {"GET": "read", "PUT": "write", "PATCH": "write"}.get(method)
        if action is None:
            raise self._method_not_allowed(method)
        await self._authorize(arm, f"Microsoft.KeyVault/vaults/{action}", arm.path)
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
        updated = await self.service.update_vault(
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
            await self.service.replace_access_policies(vault.name, _policy_entries(properties["accessPolicies"]))
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
        vault = await self.service.create_vault(
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

    async def _list_vaults(self, arm: ArmRequest, sub: str, rg: str | None) -> Response:
        if arm.request.method != "GET":
            raise self._method_not_allowed(arm.request.method)
        await self._authorize(arm, "Microsoft.KeyVault/vaults/read", arm.path.rsplit("/providers/", 1)[0])
        vaults = await self.service.list_vaults(sub, rg)
        top = arm.request.query_params.get("$top")
        if top and top.isdigit():
            vaults = vaults[: int(top)]
        return JSONResponse({"value": [vault_json(v, await self.service.access_policies(v.name)) for v in vaults]})

    async def _access_policies(self, arm: ArmRequest, sub: str, rg: str, name: str, kind: str) -> Response:
        vault_id = arm.path.rsplit("/accessPolicies/", 1)[0]
        await self._authorize(arm, "Microsoft.KeyVault/vaults/accessPolicies/write", vault_id)
        vault = await self._find_vault(sub, rg, name)
        if vault is None:
            raise errors.arm_not_found("Microsoft.KeyVault/vaults", name, rg)
        body = await arm.body()
        entries = _policy_entries(((body.get("properties") or {}).get("accessPolicies")) or [])
        policies = await self.service.edit_access_policies(vault.name, kind.lower(), entries)
        return JSONResponse(
            {
                "id": f"{vault.scope}/accessPolicies/{kind.lower()}",
                "name": kind.lower(),
                "type": "Microsoft.KeyVault/vaults/accessPolicies",
                "location": vault.location,
                "properties": {"accessPolicies": [policy_json(p) for p in policies]},
            }
        )

    # Role assignments and definitions ---------------------------------------------------------------------------

    async def _role_assignment(self, arm: ArmRequest, scope: str, name: str) -> Response:
        method = arm.request.method
        action = {"GET": "read", "PUT": "write", "DELETE": "delete"}.get(method)
        if action is None:
            raise self._method_not_allowed(method)
        await self._authorize(arm, f"Microsoft.Authorization/roleAssignments/{action}", scope)
        if method == "GET":
            row = await self.service.get_role_assignment(name)
            if row is None or normalize_scope(row.scope) != normalize_scope(scope):
                raise ServiceError(404, "RoleAssignmentNotFound", f"The role assignment '{name}' is not found.")
            return JSONResponse(role_assignment_json(row, self.subscription))
        if method == "DELETE":
            existing = await self.service.get_role_assignment(name)
            if existing is None or normalize_scope(existing.scope) != normalize_scope(scope):
                return Response(status_code=204)
            deleted = await self.service.delete_role_assignment(name)
            assert deleted is not None
            return JSONResponse(role_assignment_json(deleted, self.subscription))
        body = await arm.body()
        properties = body.get("properties") or {}
        role_id, principal = properties.get("roleDefinitionId"), properties.get("principalId")
        if not role_id or not principal:
            raise errors.arm_bad_request(
                "A role assignment needs 'properties.roleDefinitionId' and 'properties.principalId'.",
                "InvalidRequestContent",
            )
        row, created = await self.service.create_role_assignment(
            name,
            scope,
            str(role_id),
            str(principal),
            principal_type=str(properties.get("principalType") or "ServicePrincipal"),
            description=properties.get("description"),
            created_by=arm.caller.object_id,
        )
        return JSONResponse(role_assignment_json(row, self.subscription), status_code=201 if created else 200)

    async def _list_role_assignments(self, arm: ArmRequest, scope: str) -> Response:
        if arm.request.method != "GET":
            raise self._method_not_allowed(arm.request.method)
        await self._authorize(arm, "Microsoft.Authorization/roleAssignments/read", scope)
        text = arm.request.query_params.get("$filter", "")
        m = _PRINCIPAL_FILTER.search(text)
        principal = m["value"] if m else None
        rows = await self.service.list_role_assignments(
            scope, principal_id=principal, at_scope="atscope()" in text.lower().replace(" ", "")
        )
        return JSONResponse({"value": [role_assignment_json(r, self.subscription) for r in rows]})

    def _subscription_of(self, scope: str) -> str:
        match = re.match(r"^/subscriptions/([^/]+)", scope, re.I)
        return match.group(1) if match else self.subscription

    async def _role_definition(self, arm: ArmRequest, role_id: str) -> Response:
        if arm.request.method != "GET":
            raise self._method_not_allowed(arm.request.method)
        role = BUILT_IN_ROLES.get(role_id.lower())
        if role is None:
            raise ServiceError(
                404, "RoleDefinitionDoesNotExist", f"The role definition '{role_id}' could not be found."
            )
        return JSONResponse(role_definition_json(role, self._subscription_of(arm.path)))

    async def _list_role_definitions(self, arm: ArmRequest, scope: str) -> Response:
        if arm.request.method != "GET":
            raise self._method_not_allowed(arm.request.method)
        text = arm.request.query_params.get("$filter", "")
        roles = list(BUILT_IN_ROLES.values())
        if m := re.search(rf"roleName\s+eq\s+{_QUOTED}", text, re.I):
            found = find_role(m["value"])
            roles = [found] if found else []
        return JSONResponse({"value": [role_definition_json(r, self._subscription_of(scope)) for r in roles]})
