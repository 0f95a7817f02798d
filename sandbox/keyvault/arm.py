"""The subset of Azure Resource Manager (``https://management.azure.com``) that ckey's SDK clients call.

``azure-mgmt-keyvault`` 14.1 (api-version 2026-05-15): get, create or update (PUT, answered as a finished
long-running operation), update (PATCH), list by resource group and by subscription, and
``accessPolicies/{add|replace|remove}``. ``azure-mgmt-authorization`` 4.0 (api-version 2022-04-01): role
assignments (create, get, delete, list at a scope, with ``atScope()`` / ``principalId eq`` / ``assignedTo()``
filters) and the built-in role definitions.

This module dispatches by path; :mod:`~sandbox.keyvault.arm_vaults` and :mod:`~sandbox.keyvault.arm_roles` answer,
:mod:`~sandbox.keyvault.arm_common` authenticates and authorizes.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from sandbox.keyvault.arm_common import ArmAuth, ArmRequest, method_not_allowed
from sandbox.keyvault.arm_roles import ArmRoles
from sandbox.keyvault.arm_vaults import ArmVaults
from sandbox.keyvault.errors import ServiceError

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


class Arm:
    """ARM requests on ``management.azure.com``, dispatched by path (scopes are paths of any depth).

    Args:
        auth: authenticates each request.
        vaults: the vault routes.
        roles: the role assignment and role definition routes.
    """

    def __init__(self, auth: ArmAuth, vaults: ArmVaults, roles: ArmRoles) -> None:
        self.auth = auth
        self.vaults = vaults
        self.roles = roles

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
        caller = self.auth.authenticate(request)
        path = "/" + "/".join(part for part in request.url.path.split("/") if part)
        arm = ArmRequest(request, path, caller, api_version)
        method = request.method
        if m := ACCESS_POLICIES.match(path):
            if method != "PUT":
                raise method_not_allowed(method)
            return await self.vaults.access_policies(arm, m["sub"], m["rg"], m["name"], m["kind"])
        if m := VAULT.match(path):
            return await self.vaults.vault(arm, m["sub"], m["rg"], m["name"])
        if m := VAULTS_IN_GROUP.match(path):
            return await self.vaults.list_vaults(arm, m["sub"], m["rg"])
        if m := VAULTS_IN_SUBSCRIPTION.match(path):
            return await self.vaults.list_vaults(arm, m["sub"], None)
        if m := ROLE_ASSIGNMENT.match(path):
            return await self.roles.role_assignment(arm, m["scope"] or "/", m["id"])
        if m := ROLE_ASSIGNMENTS.match(path):
            return await self.roles.list_role_assignments(arm, m["scope"] or "/")
        if m := ROLE_DEFINITION.match(path):
            return await self.roles.role_definition(arm, m["id"])
        if m := ROLE_DEFINITIONS.match(path):
            return await self.roles.list_role_definitions(arm, m["scope"] or "/")
        raise ServiceError(404, "InvalidResourceType", f"The sandbox's Resource Manager does not serve '{path}'.")
