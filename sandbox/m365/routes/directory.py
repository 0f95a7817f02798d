"""``graph.microsoft.com/v1.0/...``: the directory lookups ckey makes (:class:`sandbox.entra.SandboxDirectory`).

``/v1.0/users/{upn}``, ``/v1.0/users('{upn}')`` and ``/v1.0/servicePrincipals(appId='{id}')``, ``$select``
honoured. They check the token only: faults injected for the workloads are not spent on them.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.entra import SandboxDirectory
from sandbox.m365.errors import Family, Reject, graph_error
from sandbox.m365.gate import GRAPH_RESOURCE, Gate
from sandbox.m365.routes.body import json_object

_USER_BY_KEY = re.compile(r"users\('(?P<key>(?:[^']|'')*)'\)")
_SERVICE_PRINCIPAL_BY_APP_ID = re.compile(r"servicePrincipals\(appId='(?P<app_id>[^']*)'\)")


def directory_routes(gate: Gate, directory: SandboxDirectory) -> list[Route]:
    """The directory's routes on the Graph host.

    Args:
        gate: authentication (only).
        directory: the tenant's users and service principals.
    """

    async def directory_object(request: Request) -> Response:
        try:
            gate.authenticate(request, (GRAPH_RESOURCE,), Family.GRAPH)
        except Reject as exc:
            return exc.response
        entity = str(request.path_params["entity"])
        found: dict[str, Any] | None
        if match := _USER_BY_KEY.fullmatch(entity):
            found = directory.user(match["key"].replace("''", "'"))
        elif entity.startswith("users/") and "/" not in entity.removeprefix("users/"):
            found = directory.user(entity.removeprefix("users/"))
        elif match := _SERVICE_PRINCIPAL_BY_APP_ID.fullmatch(entity):
            found = directory.service_principal(match["app_id"])
        else:
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{entity.split('/')[0]}'.")
        if found is None:
            return graph_error(
                404,
                "Request_ResourceNotFound",
                f"Resource '{entity}' does not exist or one of its queried reference-property objects are not present.",
            )
        select = request.query_params.get("$select")
        if select:
            wanted = {name.strip() for name in select.split(",")}
            found = {k: v for k, v in found.items() if k in wanted or k.startswith("@odata.")}
        return JSONResponse(found)

    async def directory_objects_by_ids(request: Request) -> Response:
        # POST /v1.0/directoryObjects/getByIds: the bulk lookup ckey's access view makes.
        try:
            gate.authenticate(request, (GRAPH_RESOURCE,), Family.GRAPH)
            body = await json_object(request, Family.GRAPH)
        except Reject as exc:
            return exc.response
        ids, types = body.get("ids"), body.get("types")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 1000:
            return graph_error(400, "Request_BadRequest", "ids: a list of at most 1000 object ids is required.")
        return JSONResponse(
            {
                "@odata.context": f"{GRAPH_RESOURCE}/v1.0/$metadata#directoryObjects",
                "value": directory.by_ids(ids, types if isinstance(types, list) else None),
            }
        )

    return [
        Route("/v1.0/directoryObjects/getByIds", directory_objects_by_ids, methods=["POST"]),
        Route("/v1.0/{entity:path}", directory_object, methods=["GET"]),
    ]
