"""``support.ckey.test``: the support desk, modelled on the Azure Support API (``Microsoft.Support/supportTickets``).

Served under ``/providers/...`` and ``/subscriptions/{id}/providers/...``; every request needs ``api-version``.
The desk takes tokens for Azure Resource Manager or its own host; injected faults are not spent on it.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, Router

from sandbox.identity import Caller
from sandbox.m365.errors import DeskError, Family
from sandbox.m365.gate import SUPPORT_RESOURCES, Endpoint, Gate
from sandbox.m365.routes.body import json_object
from sandbox.m365.support import SupportDesk


def support_routes(gate: Gate, desk: SupportDesk, lock: asyncio.Lock) -> Router:
    """The routes of the support desk's host.

    Args:
        gate: authentication.
        desk: the support desk.
        lock: the tenant's lock, which changes to cases hold.
    """

    def versioned(handler: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            if not request.query_params.get("api-version"):
                raise DeskError(
                    400,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
            return await handler(request)

        return gate.guard(SUPPORT_RESOURCES, Family.SUPPORT, endpoint)

    async def put_ticket(request: Request) -> Response:
        caller: Caller = request.state.caller
        body = await json_object(request, Family.SUPPORT)
        async with lock:
            ticket, created = await desk.create(str(request.path_params["name"]), body, caller.principal)
        return JSONResponse(ticket, status_code=201 if created else 200)

    async def get_ticket(request: Request) -> Response:
        return JSONResponse(await desk.get(str(request.path_params["name"])))

    async def list_tickets(_: Request) -> Response:
        return JSONResponse({"value": await desk.tickets()})

    async def communications(request: Request) -> Response:
        return JSONResponse({"value": await desk.communications(str(request.path_params["name"]))})

    async def edocument(request: Request) -> Response:
        return JSONResponse(await desk.edocument(str(request.path_params["name"])))

    async def sign(request: Request) -> Response:
        body = await json_object(request, Family.SUPPORT)
        async with lock:
            ticket = await desk.sign(str(request.path_params["name"]), body)
        return JSONResponse(ticket)

    routes = []
    for prefix in ("", "/subscriptions/{subscription}"):
        tickets = f"{prefix}/providers/Microsoft.Support/supportTickets"
        routes += [
            Route(tickets, versioned(list_tickets), methods=["GET"]),
            Route(f"{tickets}/{{name}}", versioned(put_ticket), methods=["PUT"]),
            Route(f"{tickets}/{{name}}", versioned(get_ticket), methods=["GET"]),
            Route(f"{tickets}/{{name}}/communications", versioned(communications), methods=["GET"]),
            Route(f"{tickets}/{{name}}/eDocument", versioned(edocument), methods=["GET"]),
            Route(f"{tickets}/{{name}}/eDocument/signatures", versioned(sign), methods=["POST"]),
        ]
    return Router(routes)
