"""The gate every workload request passes, in the order the real services answer: latency, token, faults, throttling.

A request without a valid bearer token for one of its host's resources gets 401 with ``WWW-Authenticate``; a token of
anyone but ``settings.azure_principal`` (the only holder of the admin roles) gets 403 naming the role it lacks; then
the fault switchboard may fail or throttle it (not the support desk's); then Microsoft's due steps run and the
request is served. Directory lookups only check the token (:meth:`Gate.authenticate`): faults injected for the
workloads are not spent on them. Every answer comes in the shape of the host's service (:class:`Family`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ckey.config import Settings
from sandbox.identity import Caller, SandboxIdentity
from sandbox.m365.errors import (
    ACCESS_DENIED,
    AD_TRANSIENT,
    CmdletFailure,
    DeskError,
    Family,
    GraphError,
    Reject,
    arm_error,
    graph_error,
)
from sandbox.m365.faults import FaultSwitchboard

log = logging.getLogger(__name__)

EXCHANGE_RESOURCE = "https://outlook.office365.com"
GRAPH_RESOURCE = "https://graph.microsoft.com"
SUPPORT_RESOURCES = ("https://management.azure.com", "https://support.ckey.test")

_ROLES = {
    Family.EXCHANGE: "the Exchange Administrator role (or Global Administrator; Compliance Administrator for the "
    "multi-workload cmdlets)",
    Family.SHAREPOINT: "the SharePoint Administrator role (or Global Administrator)",
    Family.GRAPH: "the Intune Administrator or Windows 365 Administrator role",
    Family.SUPPORT: "the Support Request Contributor role",
}

Endpoint = Callable[[Request], Awaitable[Response]]
"""A Starlette endpoint."""


class Gate:
    """Authentication, injected faults and Microsoft's due steps in front of the workload endpoints.

    Args:
        settings: the tenant id and the principal that holds the admin roles.
        identity: verifies the sandbox identity's bearer tokens.
        faults: the fault switchboard.
        tick: runs Microsoft's due steps (:meth:`~sandbox.m365.ticker.Ticker.tick`).
        counters: the tenant's counters; requests count under ``<family>.requests``.
    """

    def __init__(
        self,
        settings: Settings,
        identity: SandboxIdentity,
        faults: FaultSwitchboard,
        tick: Callable[[], Awaitable[int]],
        counters: Counter[str],
    ) -> None:
        self.tenant_id = settings.azure_tenant_id
        self.principal = settings.azure_principal
        self.identity = identity
        self.faults = faults
        self.tick = tick
        self.counters = counters

    def authenticate(self, request: Request, resources: tuple[str, ...], family: Family) -> Caller:
        """The caller behind the request's bearer token, if it holds the family's admin role.

        Raises:
            Reject: 401 (no valid token for one of ``resources``) or 403 (another principal).
        """
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        resource = resources[0]
        challenge = (
            f'Bearer authorization_uri="https://login.microsoftonline.com/{self.tenant_id}/oauth2/'
            f'authorize", resource_id="{resource}", error="invalid_token"'
        )
        if scheme.lower() != "bearer" or not token.strip():
            raise Reject(_unauthorized(family, "The request has no bearer token.", challenge))
        caller: Caller | None = None
        problem = ""
        for candidate in resources:
            try:
                caller = self.identity.verify(token.strip(), candidate)
                break
            except jwt.PyJWTError as exc:
                problem = str(exc)
        if caller is None:
            raise Reject(_unauthorized(family, f"The access token isn't valid: {problem}.", challenge))
        if caller.tenant_id.lower() != self.tenant_id.lower():
            raise Reject(_unauthorized(family, "The access token is for another tenant.", challenge))
        if caller.principal.lower() != self.principal.lower():
            message = f"Access denied: '{caller.principal}' doesn't have {_ROLES[family]}."
            raise Reject(_forbidden(family, message))
        return caller

    async def admit(self, request: Request, resources: tuple[str, ...], family: Family) -> Caller:
        """Latency, authentication, injected faults and throttling, then Microsoft's due steps.

        Raises:
            Reject: the request is answered here (401, 403, 5xx, 429).
        """
        self.counters[f"{family.value}.requests"] += 1
        await self.faults.delay()
        caller = self.authenticate(request, resources, family)
        if family is not Family.SUPPORT:
            await self.faults.inject(family)
        await self.tick()
        return caller

    def guard(self, resources: tuple[str, ...], family: Family, handler: Endpoint) -> Endpoint:
        """``handler`` behind the gate (the caller in ``request.state.caller``), its refusals in the family's shape."""

        async def endpoint(request: Request) -> Response:
            try:
                request.state.caller = await self.admit(request, resources, family)
                return await handler(request)
            except Reject as exc:
                return exc.response
            except (GraphError, DeskError, CmdletFailure) as exc:
                return exc.response()
            except Exception:
                log.exception("sandbox tenant: %s %s failed", request.method, request.url)
                if family is Family.GRAPH:
                    return graph_error(500, "InternalServerError", "The sandbox failed; see its log.")
                if family is Family.SUPPORT:
                    return arm_error(500, "InternalServerError", "The sandbox failed; see its log.")
                return CmdletFailure("The sandbox failed; see its log.", AD_TRANSIENT, 500).response()

        return endpoint


def _unauthorized(family: Family, message: str, challenge: str) -> Response:
    headers = {"WWW-Authenticate": challenge}
    if family is Family.GRAPH:
        return graph_error(401, "InvalidAuthenticationToken", message, headers)
    if family is Family.SUPPORT:
        return arm_error(401, "AuthenticationFailed", message, headers)
    return JSONResponse({"error": {"code": "Unauthorized", "message": message}}, status_code=401, headers=headers)


def _forbidden(family: Family, message: str) -> Response:
    if family is Family.GRAPH:
        return graph_error(403, "Forbidden", message)
    if family is Family.SUPPORT:
        return arm_error(403, "AuthorizationFailed", message)
    return CmdletFailure(message, ACCESS_DENIED, 403, code="AccessDenied").response()
