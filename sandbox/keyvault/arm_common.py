"""What the Resource Manager routes share: the authenticated :class:`ArmRequest` and :class:`ArmAuth`.

ARM takes the bearer token on the first request (no challenge) and authorizes with the same role assignments the
data plane uses: the seeded automation principal is Owner of the subscription; anybody else needs a role whose
actions cover the request, or gets 403 ``AuthorizationFailed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from starlette.requests import Request

from sandbox.identity import Caller, SandboxIdentity
from sandbox.keyvault import errors
from sandbox.keyvault.access import RoleAssignments
from sandbox.keyvault.authz import rbac_allows
from sandbox.keyvault.errors import ServiceError

RESOURCES = ("https://management.azure.com", "https://management.core.windows.net")


def iso(ts: int) -> str:
    """ARM's timestamp format (seven fractional digits, ``Z``)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def method_not_allowed(method: str) -> ServiceError:
    """ARM's 405."""
    return ServiceError(405, "MethodNotAllowed", f"The HTTP method '{method}' is not supported for this resource.")


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


class ArmAuth:
    """Authentication (bearer token for Resource Manager) and authorization (role assignments) of ARM requests.

    Args:
        identity: verifies bearer tokens.
        roles: the role assignments that authorize.
        tenant_id: the tenant named in the 401 challenge.
    """

    def __init__(self, identity: SandboxIdentity, roles: RoleAssignments, tenant_id: str) -> None:
        self.identity = identity
        self.roles = roles
        self.tenant_id = tenant_id

    def authenticate(self, request: Request) -> Caller:
        """The caller of ``request``.

        Raises:
            ServiceError: 401 in ARM's wording.
        """
        tenant = self.tenant_id
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
                return self.identity.verify(token.strip(), resource)
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

    async def authorize(self, arm: ArmRequest, action: str, scope: str) -> None:
        """Whether the caller's roles at ``scope`` allow ``action``.

        Raises:
            ServiceError: 403 ``AuthorizationFailed``.
        """
        roles = await self.roles.roles_at(arm.caller.object_id, scope)
        if not rbac_allows(roles, action, data=False):
            raise ServiceError(
                403,
                "AuthorizationFailed",
                f"The client '{arm.caller.principal}' with object id '{arm.caller.object_id}' does not have "
                f"authorization to perform action '{action}' over scope '{scope}' or the scope is invalid. If access "
                f"was recently granted, please refresh your credentials.",
            )
