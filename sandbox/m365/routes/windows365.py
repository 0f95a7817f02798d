"""``graph.microsoft.com/beta/deviceManagement/virtualEndpoint/...``: Windows 365's Cloud PCs and their encryption."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.m365.errors import Family, GraphError
from sandbox.m365.gate import GRAPH_RESOURCE, Endpoint, Gate
from sandbox.m365.routes.body import json_object
from sandbox.m365.windows365 import Windows365

BASE = "/beta/deviceManagement/virtualEndpoint"
_CONTEXT = f"{GRAPH_RESOURCE}/beta/$metadata"


def windows365_routes(gate: Gate, windows365: Windows365) -> list[Route]:
    """Windows 365's routes on the Graph host.

    Args:
        gate: authentication and faults.
        windows365: the Cloud PCs and the tenant encryption setting.
    """

    async def cloud_pcs(_: Request) -> Response:
        return JSONResponse(
            {
                "@odata.context": f"{_CONTEXT}#deviceManagement/virtualEndpoint/cloudPCs",
                "value": await windows365.cloud_pcs(),
            }
        )

    async def cloud_pc(request: Request) -> Response:
        return JSONResponse(await windows365.get_cloud_pc(str(request.path_params["id"])))

    async def tenant_encryption_setting(_: Request) -> Response:
        # Graph documents the tenant's setting behind this function, not as a property of organizationSettings.
        return JSONResponse(
            {
                "@odata.context": f"{_CONTEXT}#microsoft.graph.cloudPcTenantEncryptionSetting",
                **{k: v for k, v in (await windows365.tenant_setting()).items() if k != "@odata.type"},
            }
        )

    async def organization_settings(request: Request) -> Response:
        if request.method == "PATCH":
            body = await json_object(request, Family.GRAPH)
            if "tenantEncryptionSetting" in body:
                raise GraphError(
                    400,
                    "BadRequest",
                    "tenantEncryptionSetting.tenantDiskEncryptionType is read-only: it follows the multi-workload data "
                    "encryption policy assignment (Set-M365DataAtRestEncryptionPolicyAssignment).",
                )
            return Response(status_code=204)
        return JSONResponse(
            {
                "@odata.context": f"{_CONTEXT}#deviceManagement/virtualEndpoint/organizationSettings/$entity",
                "@odata.type": "#microsoft.graph.cloudPcOrganizationSettings",
                "id": "sandbox-organization-settings",
                "osVersion": "windows11",
                "userAccountType": "standardUser",
                "enableMEMAutoEnroll": False,
                "enableSingleSignOn": False,
            }
        )

    async def create_bulk_action(request: Request) -> Response:
        body = await json_object(request, Family.GRAPH)
        return JSONResponse(await windows365.bulk_action(body), status_code=201)

    async def bulk_actions(_: Request) -> Response:
        return JSONResponse(
            {
                "@odata.context": f"{_CONTEXT}#deviceManagement/virtualEndpoint/bulkActions",
                "value": await windows365.bulk_actions(),
            }
        )

    async def bulk_action(request: Request) -> Response:
        return JSONResponse(await windows365.get_bulk_action(str(request.path_params["id"])))

    def guard(handler: Endpoint) -> Endpoint:
        return gate.guard((GRAPH_RESOURCE,), Family.GRAPH, handler)

    return [
        Route(f"{BASE}/cloudPCs", guard(cloud_pcs), methods=["GET"]),
        Route(f"{BASE}/cloudPCs/{{id}}", guard(cloud_pc), methods=["GET"]),
        Route(f"{BASE}/organizationSettings", guard(organization_settings), methods=["GET", "PATCH"]),
        Route(f"{BASE}/retrieveTenantEncryptionSetting", guard(tenant_encryption_setting), methods=["GET"]),
        Route(f"{BASE}/bulkActions", guard(create_bulk_action), methods=["POST"]),
        Route(f"{BASE}/bulkActions", guard(bulk_actions), methods=["GET"]),
        Route(f"{BASE}/bulkActions/{{id}}", guard(bulk_action), methods=["GET"]),
    ]
