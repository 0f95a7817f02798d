"""``outlook.office365.com``: Exchange Online's admin REST endpoint, ``POST /adminapi/beta/{tenant}/InvokeCommand``.

It serves the Exchange cmdlets of Customer Key and the multi-workload ones (Exchange Online PowerShell runs both).
The tenant in the path is the tenant id or the initial domain; another tenant is 404.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router

from sandbox.m365.core import Core
from sandbox.m365.errors import Family
from sandbox.m365.gate import EXCHANGE_RESOURCE, Gate
from sandbox.m365.params import Cmdlet
from sandbox.m365.routes.invoke import CommandRunner


def exchange_routes(gate: Gate, runner: CommandRunner, cmdlets: Mapping[str, Cmdlet], core: Core) -> Router:
    """The routes of ``outlook.office365.com``.

    Args:
        gate: authentication and faults.
        runner: runs the cmdlets.
        cmdlets: the cmdlets served, by lower-case name.
        core: the tenant's description (its id and initial domain name it in the path).
    """

    async def invoke(request: Request) -> Response:
        tenant = str(request.path_params["tenant"]).lower()
        known = {core.settings.azure_tenant_id.lower(), str(core.tenant.get("fqdn", "")).lower()}
        if tenant not in known:
            return JSONResponse(
                {"error": {"code": "NotFound", "message": f"The tenant '{tenant}' isn't served by this sandbox."}},
                status_code=404,
            )
        return await runner.invoke(
            request, cmdlets, f"{EXCHANGE_RESOURCE}/adminapi/beta/{request.path_params['tenant']}"
        )

    route = gate.guard((EXCHANGE_RESOURCE,), Family.EXCHANGE, invoke)
    return Router([Route("/adminapi/beta/{tenant}/InvokeCommand", route, methods=["POST"])])
