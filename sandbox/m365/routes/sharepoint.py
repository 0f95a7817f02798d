"""``<tenant>[<geo>]-admin.sharepoint.com``: the sandbox's stand-in for SharePoint PowerShell's CSOM calls.

``POST /adminapi/InvokeCommand`` with InvokeCommand's body and answer; each geo's admin host is its own token
resource, and a host that is no admin site of the tenant is 404 (before any token check).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router

from sandbox.m365.errors import Family
from sandbox.m365.gate import Gate
from sandbox.m365.routes.invoke import CommandRunner
from sandbox.m365.sharepoint import SharePoint


def sharepoint_routes(gate: Gate, runner: CommandRunner, sharepoint: SharePoint) -> Router:
    """The routes of the SharePoint admin hosts.

    Args:
        gate: authentication and faults.
        runner: runs the cmdlets.
        sharepoint: the SharePoint cmdlets and the tenant's admin hosts.
    """

    async def invoke(request: Request) -> Response:
        host = _host(request)
        return await runner.invoke(request, sharepoint.cmdlets(host), f"https://{host}/adminapi")

    async def endpoint(request: Request) -> Response:
        host = _host(request)
        if host not in sharepoint.admin_hosts():
            return JSONResponse(
                {"error": {"code": "NotFound", "message": f"'{host}' isn't a SharePoint admin site of this tenant."}},
                status_code=404,
            )
        return await gate.guard((f"https://{host}",), Family.SHAREPOINT, invoke)(request)

    return Router([Route("/adminapi/InvokeCommand", endpoint, methods=["POST"])])


def _host(request: Request) -> str:
    return request.headers.get("host", "").split(":", 1)[0].lower()
