"""Resource Manager's ``Microsoft.Authorization``: role assignments and the built-in role definitions.

``azure-mgmt-authorization`` 4.0 (api-version 2022-04-01): role assignments (create, get, delete, list at a scope,
with ``atScope()`` / ``principalId eq`` / ``assignedTo()`` filters) and the built-in role definitions.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import JSONResponse, Response

from sandbox.keyvault import errors
from sandbox.keyvault.access import RoleAssignments
from sandbox.keyvault.arm_common import ArmAuth, ArmRequest, iso, method_not_allowed
from sandbox.keyvault.authz import (
    BUILT_IN_ROLES,
    RoleDefinition,
    find_role,
    normalize_scope,
    role_definition_resource_id,
)
from sandbox.keyvault.db import RoleAssignmentRow
from sandbox.keyvault.errors import ServiceError

_QUOTED = r"'(?P<value>[^']*)'"
_PRINCIPAL_FILTER = re.compile(r"(?:principalId\s+eq\s+|assignedTo\()'(?P<value>[^']*)'", re.I)


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
            "createdOn": iso(row.created_on),
            "updatedOn": iso(row.updated_on),
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


class ArmRoles:
    """Handlers of role assignments and role definitions at any scope (the dispatcher matched the path).

    Args:
        auth: authorizes each request.
        roles: the role assignments.
        subscription: the subscription of ids at scopes above any subscription.
    """

    def __init__(self, auth: ArmAuth, roles: RoleAssignments, subscription: str) -> None:
        self.auth = auth
        self.roles = roles
        self.subscription = subscription

    async def role_assignment(self, arm: ArmRequest, scope: str, name: str) -> Response:
        """GET, PUT or DELETE a role assignment at ``scope``."""
        method = arm.request.method
        action = {"GET": "read", "PUT": "write", "DELETE": "delete"}.get(method)
        if action is None:
            raise method_not_allowed(method)
        await self.auth.authorize(arm, f"Microsoft.Authorization/roleAssignments/{action}", scope)
        if method == "GET":
            row = await self.roles.get_role_assignment(name)
            if row is None or normalize_scope(row.scope) != normalize_scope(scope):
                raise ServiceError(404, "RoleAssignmentNotFound", f"The role assignment '{name}' is not found.")
            return JSONResponse(role_assignment_json(row, self.subscription))
        if method == "DELETE":
            existing = await self.roles.get_role_assignment(name)
            if existing is None or normalize_scope(existing.scope) != normalize_scope(scope):
                return Response(status_code=204)
            deleted = await self.roles.delete_role_assignment(name)
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
        row, created = await self.roles.create_role_assignment(
            name,
            scope,
            str(role_id),
            str(principal),
            principal_type=str(properties.get("principalType") or "ServicePrincipal"),
            description=properties.get("description"),
            created_by=arm.caller.object_id,
        )
        return JSONResponse(role_assignment_json(row, self.subscription), status_code=201 if created else 200)

    async def list_role_assignments(self, arm: ArmRequest, scope: str) -> Response:
        """The role assignments at, above and (unless ``atScope()``) below ``scope``."""
        if arm.request.method != "GET":
            raise method_not_allowed(arm.request.method)
        await self.auth.authorize(arm, "Microsoft.Authorization/roleAssignments/read", scope)
        text = arm.request.query_params.get("$filter", "")
        m = _PRINCIPAL_FILTER.search(text)
        principal = m["value"] if m else None
        rows = await self.roles.list_role_assignments(
            scope, principal_id=principal, at_scope="atscope()" in text.lower().replace(" ", "")
        )
        return JSONResponse({"value": [role_assignment_json(r, self.subscription) for r in rows]})

    def _subscription_of(self, scope: str) -> str:
        match = re.match(r"^/subscriptions/([^/]+)", scope, re.I)
        return match.group(1) if match else self.subscription

    async def role_definition(self, arm: ArmRequest, role_id: str) -> Response:
        """A built-in role definition."""
        if arm.request.method != "GET":
            raise method_not_allowed(arm.request.method)
        role = BUILT_IN_ROLES.get(role_id.lower())
        if role is None:
            raise ServiceError(
                404, "RoleDefinitionDoesNotExist", f"The role definition '{role_id}' could not be found."
            )
        return JSONResponse(role_definition_json(role, self._subscription_of(arm.path)))

    async def list_role_definitions(self, arm: ArmRequest, scope: str) -> Response:
        """The built-in role definitions (``roleName eq`` filters them)."""
        if arm.request.method != "GET":
            raise method_not_allowed(arm.request.method)
        text = arm.request.query_params.get("$filter", "")
        roles = list(BUILT_IN_ROLES.values())
        if m := re.search(rf"roleName\s+eq\s+{_QUOTED}", text, re.I):
            found = find_role(m["value"])
            roles = [found] if found else []
        return JSONResponse({"value": [role_definition_json(r, self._subscription_of(scope)) for r in roles]})
