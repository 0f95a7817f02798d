"""The sandbox tenant as one ASGI app that serves every host, chosen by the ``Host`` header.

| Host | What |
| --- | --- |
| ``outlook.office365.com`` | Exchange Online admin REST: ``POST /adminapi/beta/{tenant}/InvokeCommand`` |
| ``<tenant>[<geo>]-admin.sharepoint.com`` | the sandbox's stand-in for SharePoint PowerShell's CSOM calls: ``POST
  /adminapi/InvokeCommand`` with the same body and answer |
| ``graph.microsoft.com`` | Windows 365 (``/beta/deviceManagement/virtualEndpoint/...``); the directory lookups ckey
  makes (``/v1.0/users/{upn}``, ``/v1.0/servicePrincipals(appId='{id}')``, :class:`sandbox.entra.SandboxDirectory`) |
| ``support.ckey.test`` | the support desk (``/providers/Microsoft.Support/supportTickets/...``) |
| ``localhost``, ``127.0.0.1`` | the sandbox's control endpoint ``/sandbox/...`` |

Every workload request passes the same gate: injected latency, bearer token (401 with ``WWW-Authenticate``; only
``settings.azure_principal`` holds the admin roles, anyone else gets 403 naming the role), injected 5xx, throttling
(429 with ``Retry-After``), then Microsoft's due steps run (:meth:`SandboxM365.tick`) and the request is served.
Directory lookups only check the token: faults injected for the workloads are not spent on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any

import jwt
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Host, Route, Router

from ckey.config import Settings
from sandbox.common import sandbox_app
from sandbox.entra import SandboxDirectory, ensure_app_registrations
from sandbox.identity import Caller, SandboxIdentity
from sandbox.m365.admin import build_control_app
from sandbox.m365.clock import SimClock
from sandbox.m365.core import Core, Faults
from sandbox.m365.db import CallRow, Database, GeoRow, default_database_url
from sandbox.m365.durations import PAGE_SIZE, Durations
from sandbox.m365.errors import (
    ACCESS_DENIED,
    AD_TRANSIENT,
    COMMAND_NOT_FOUND,
    SPO_SERVER,
    THROTTLED,
    CmdletFailure,
    DeskError,
    GraphError,
    arm_error,
    graph_error,
)
from sandbox.m365.exchange import Exchange
from sandbox.m365.multiworkload import MultiWorkload
from sandbox.m365.params import Cmdlet
from sandbox.m365.sharepoint import SharePoint
from sandbox.m365.support import SupportDesk
from sandbox.m365.tenant import TenantSpec, generate
from sandbox.m365.vault import KEYVAULT_RETRIES, KeyVaultAccess

log = logging.getLogger(__name__)

EXCHANGE_RESOURCE = "https://outlook.office365.com"
GRAPH_RESOURCE = "https://graph.microsoft.com"
SUPPORT_RESOURCES = ("https://management.azure.com", "https://support.ckey.test")
TICK_SECONDS = 1.0
"""Real seconds between two runs of Microsoft's due steps while the server idles."""
DEMO_TENANT = TenantSpec()
"""The tenant ``python -m sandbox.m365`` seeds into a new database: 1,000 recipients, 2 geos, 8 Cloud PCs."""
EMPTY_TENANT = TenantSpec(mailboxes=0, mail_users=0, sites_per_geo=0, cloud_pcs=0, stuck_mailboxes=0)


class Family(StrEnum):
    """Which service's error shapes a host answers with."""

    EXCHANGE = "exchange"
    SHAREPOINT = "sharepoint"
    GRAPH = "graph"
    SUPPORT = "support"


_ROLES = {
    Family.EXCHANGE: "the Exchange Administrator role (or Global Administrator; Compliance Administrator for the "
    "multi-workload cmdlets)",
    Family.SHAREPOINT: "the SharePoint Administrator role (or Global Administrator)",
    Family.GRAPH: "the Intune Administrator or Windows 365 Administrator role",
    Family.SUPPORT: "the Support Request Contributor role",
}


class _Reject(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


class SandboxM365:
    """The sandbox tenant's moving parts.

    Args:
        settings: ckey's settings (data dir, tenant, identity key, principal, speed, Key Vault port).
        database_url: SQLAlchemy async URL; default ``<data_dir>/sandbox-m365.db``.
        seed: the tenant to generate when the database is new (None: an empty tenant).
        speed: simulated seconds per real second; default ``settings.sandbox_m365_speed`` or 1.0.
        keyvault_retries: retries of a failing Key Vault call before the vault counts as unavailable.
        durations: the service's process durations.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str | None = None,
        seed: TenantSpec | None = DEMO_TENANT,
        speed: float | None = None,
        keyvault_retries: int = KEYVAULT_RETRIES,
        durations: Durations | None = None,
    ) -> None:
        self.settings = settings
        self.database_url = database_url or default_database_url(settings.data_dir)
        self.db = Database(self.database_url)
        self.vault = KeyVaultAccess(settings, keyvault_retries)
        self.core = Core(settings, self.db, self.vault, durations or Durations())
        self.exchange = Exchange(self.core)
        self.multi = MultiWorkload(self.core)
        self.sharepoint = SharePoint(self.core)
        self.desk = SupportDesk(self.core, self.exchange, self.multi)
        self.identity = SandboxIdentity(settings.sandbox_identity_key_path, settings.azure_tenant_id)
        self.directory = SandboxDirectory(
            settings.azure_tenant_id, ensure_app_registrations(settings.data_dir, settings.azure_principal)
        )
        self.seed = seed or EMPTY_TENANT
        self.speed = speed or settings.sandbox_m365_speed or 1.0
        self.counters: Counter[str] = Counter()
        self._exchange_cmdlets = {**self.exchange.cmdlets(), **self.multi.cmdlets()}
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the database (seeding a new one), restore the clock at this run's speed, start the ticker."""
        await self.db.create_all()
        clock = await self.core.get_state("clock")
        if clock:
            self.core.clock = SimClock.from_state(clock)
            if self.core.clock.speed != self.speed:
                self.core.clock.set_speed(self.speed)
        else:
            self.core.clock = SimClock(self.speed)
        await self.core.save_clock()
        faults = await self.core.get_state("faults")
        self.core.faults = Faults.model_validate(faults) if faults else Faults()
        tenant = await self.core.get_state("tenant")
        if tenant:
            self.core.tenant = tenant
        else:
            await self._generate(self.seed)
            log.info("sandbox tenant: seeded %s in %s", self.seed.fqdn, self.database_url)
        await self.tick()
        self._ticker = asyncio.create_task(self._tick_forever(), name="sandbox-m365-ticker")

    async def stop(self) -> None:
        """Stop the ticker, close Key Vault clients and the database."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        await self.vault.close()
        await self.db.close()

    async def _generate(self, spec: TenantSpec) -> None:
        tenant, rows = generate(self.core, spec, self.core.now())
        async with self.db.session() as s, s.begin():
            s.add_all(rows)
        self.core.tenant = tenant
        await self.core.set_state("tenant", tenant)

    async def reseed(self, spec: TenantSpec) -> None:
        """Replace the whole tenant with a newly generated one (the clock and the faults stay)."""
        async with self.core.lock:
            self.desk.next_due = 0.0
            await self.db.drop_all()
            await self.db.create_all()
            await self.core.save_clock()
            await self.core.save_faults()
            await self._generate(spec)

    async def tick(self) -> int:
        """Carry out Microsoft's due steps (support cases); how many ran."""
        if self.core.now() < self.desk.next_due:
            return 0  # every request passes here: nothing due, no lock
        async with self.core.lock:
            return await self.desk.tick()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self.tick()
            except Exception:
                log.exception("sandbox tenant: a scheduled step failed; it runs again on the next tick")

    async def set_faults(self, faults: Faults) -> None:
        """Replace the fault switchboard; stalled geos stop, released ones resume."""
        now = self.core.now()
        stalled = {g.upper() for g in faults.stalled_geos}
        async with self.core.lock:
            async with self.db.session() as s, s.begin():
                for geo in (await s.scalars(select(GeoRow))).all():
                    if geo.geo in stalled:
                        self.sharepoint.pause(geo, now)
                    else:
                        self.sharepoint.resume(geo, now)
            self.core.faults = faults.model_copy(update={"stalled_geos": sorted(stalled)})
            await self.core.save_faults()

    async def set_speed(self, speed: float) -> None:
        """Run the clock at ``speed`` from now on (until a restart, which takes its speed from the settings)."""
        async with self.core.lock:
            self.core.clock.set_speed(speed)
            await self.core.save_clock()
        await self.tick()

    async def advance(self, seconds: float) -> float:
        """Shift the clock forward, run what became due; the new simulated instant."""
        async with self.core.lock:
            now = self.core.clock.shift(seconds)
            await self.core.save_clock()
        await self.tick()
        return now

    # The gate ---------------------------------------------------------------------------------------------------

    def authenticate(self, request: Request, resources: tuple[str, ...], family: Family) -> Caller:
        """The caller behind the request's bearer token, if it holds the family's admin role.

        Raises:
            _Reject: 401 (no valid token for one of ``resources``) or 403 (another principal).
        """
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        resource = resources[0]
        challenge = (
            f'Bearer authorization_uri="https://login.microsoftonline.com/{self.settings.azure_tenant_id}/oauth2/'
            f'authorize", resource_id="{resource}", error="invalid_token"'
        )
        if scheme.lower() != "bearer" or not token.strip():
            raise _Reject(self._unauthorized(family, "The request has no bearer token.", challenge))
        caller: Caller | None = None
        problem = ""
        for candidate in resources:
            try:
                caller = self.identity.verify(token.strip(), candidate)
                break
            except jwt.PyJWTError as exc:
                problem = str(exc)
        if caller is None:
            raise _Reject(self._unauthorized(family, f"The access token isn't valid: {problem}.", challenge))
        if caller.tenant_id.lower() != self.settings.azure_tenant_id.lower():
            raise _Reject(self._unauthorized(family, "The access token is for another tenant.", challenge))
        if caller.principal.lower() != self.settings.azure_principal.lower():
            message = f"Access denied: '{caller.principal}' doesn't have {_ROLES[family]}."
            raise _Reject(self._forbidden(family, message))
        return caller

    @staticmethod
    def _unauthorized(family: Family, message: str, challenge: str) -> Response:
        headers = {"WWW-Authenticate": challenge}
        if family is Family.GRAPH:
            return graph_error(401, "InvalidAuthenticationToken", message, headers)
        if family is Family.SUPPORT:
            return arm_error(401, "AuthenticationFailed", message, headers)
        return JSONResponse({"error": {"code": "Unauthorized", "message": message}}, status_code=401, headers=headers)

    @staticmethod
    def _forbidden(family: Family, message: str) -> Response:
        if family is Family.GRAPH:
            return graph_error(403, "Forbidden", message)
        if family is Family.SUPPORT:
            return arm_error(403, "AuthorizationFailed", message)
        return CmdletFailure(message, ACCESS_DENIED, 403, code="AccessDenied").response()

    async def _faults(self, family: Family) -> None:
        faults = self.core.faults
        fail = faults.fail_next > 0 or random.random() < faults.error_rate
        throttle = not fail and (faults.throttle_next > 0 or random.random() < faults.throttle_rate)
        if faults.fail_next > 0 or faults.throttle_next > 0:
            if fail and faults.fail_next > 0:
                faults.fail_next -= 1
            elif throttle and faults.throttle_next > 0:
                faults.throttle_next -= 1
            await self.core.save_faults()
        if fail:
            self.counters["faults"] += 1
            status = faults.error_status
            message = "The service is temporarily unavailable (sandbox fault injection)."
            if family is Family.GRAPH:
                raise _Reject(graph_error(status, "ServiceUnavailable", message))
            if family is Family.EXCHANGE:
                message = (
                    "The call to Microsoft Exchange Active Directory Topology service returned an error: Active "
                    "Directory server is not available (sandbox fault injection)."
                )
            raise _Reject(
                CmdletFailure(message, AD_TRANSIENT if family is Family.EXCHANGE else SPO_SERVER, status).response()
            )
        if throttle:
            self.counters["throttled"] += 1
            wait = faults.retry_after_seconds
            headers = {"Retry-After": str(wait)}
            message = f"The request was throttled: too many requests in a short time. Retry after {wait} seconds."
            if family is Family.GRAPH:
                raise _Reject(graph_error(429, "TooManyRequests", message, headers))
            raise _Reject(CmdletFailure(message, THROTTLED, 429, headers).response())

    async def gate(self, request: Request, resources: tuple[str, ...], family: Family) -> Caller:
        """Latency, authentication, injected faults and throttling, then Microsoft's due steps.

        Raises:
            _Reject: the request is answered here (401, 403, 5xx, 429).
        """
        self.counters[f"{family.value}.requests"] += 1
        if self.core.faults.latency_ms:
            await asyncio.sleep(self.core.faults.latency_ms / 1000)
        caller = self.authenticate(request, resources, family)
        if family is not Family.SUPPORT:
            await self._faults(family)
        await self.tick()
        return caller

    # InvokeCommand ----------------------------------------------------------------------------------------------

    async def invoke(self, request: Request, cmdlets: dict[str, Cmdlet], context: str) -> Response:
        """Run one cmdlet from an InvokeCommand body and answer with its output page."""
        try:
            body = json.loads(await request.body() or b"{}")
            cmdlet_input = body["CmdletInput"]
            name = str(cmdlet_input["CmdletName"])
            raw = cmdlet_input.get("Parameters") or {}
            if not isinstance(raw, dict):
                raise TypeError("Parameters is not an object")
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse(
                {"error": {"code": "BadRequest", "message": f"The request body isn't a valid CmdletInput: {exc}"}},
                status_code=400,
            )
        cmdlet = cmdlets.get(name.lower())
        call: int | None = None
        try:
            if cmdlet is None:
                raise CmdletFailure(
                    f"The term '{name}' is not recognized as a name of a cmdlet, function, script file, or executable "
                    f"program. Check the spelling of the name, or if a path was included, verify that the path is "
                    f"correct and try again.",
                    COMMAND_NOT_FOUND,
                )
            self.counters[f"cmdlet.{cmdlet.spec.name}"] += 1
            if cmdlet.changes:
                call = await self._log_call(cmdlet.spec.name, raw)
            params = cmdlet.spec.bind(raw)
            if cmdlet.changes:
                async with self.core.lock:
                    output = await cmdlet.handler(params)
            else:
                output = await cmdlet.handler(params)
        except CmdletFailure as exc:
            if call is not None:
                await self._answered(call, exc.status)
            return exc.response()
        if call is not None:
            await self._answered(call, 200)
        skip = _int(request.query_params.get("$skiptoken"))
        page = output.objects[skip : skip + PAGE_SIZE]
        answer: dict[str, Any] = {"@odata.context": f"{context}/$metadata#Collection(Exchange.GenericHashTable)"}
        if output.warnings:
            answer["@adminapi.warnings"] = output.warnings
        answer["value"] = page
        if skip + PAGE_SIZE < len(output.objects):
            answer["@odata.nextLink"] = f"{str(request.url).split('?', 1)[0]}?$skiptoken={skip + PAGE_SIZE}"
        return JSONResponse(answer)

    async def _log_call(self, name: str, raw: dict[str, Any]) -> int:
        """Record a state-changing call as it arrives (before it runs); its sequence number."""
        lowered = {str(k).lower(): v for k, v in raw.items()}
        identity = lowered.get("identity", lowered.get("name"))
        async with self.core.db.session() as s, s.begin():
            row = CallRow(
                received_at=time.time(),
                cmdlet=name,
                identity=None if identity is None else str(identity)[:512],
                parameters=json.loads(json.dumps(raw, default=str)),
            )
            s.add(row)
            await s.flush()
            return row.seq

    async def _answered(self, seq: int, status: int) -> None:
        async with self.core.db.session() as s, s.begin():
            row = await s.get(CallRow, seq)
            if row is not None:
                row.status = status


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


Endpoint = Callable[[Request], Awaitable[Response]]


def _guarded(sandbox: SandboxM365, resources: tuple[str, ...], family: Family, handler: Endpoint) -> Endpoint:
    async def endpoint(request: Request) -> Response:
        try:
            request.state.caller = await sandbox.gate(request, resources, family)
            return await handler(request)
        except _Reject as exc:
            return exc.response
        except GraphError as exc:
            return exc.response()
        except DeskError as exc:
            return exc.response()
        except CmdletFailure as exc:
            return exc.response()
        except Exception:
            log.exception("sandbox tenant: %s %s failed", request.method, request.url)
            if family is Family.GRAPH:
                return graph_error(500, "InternalServerError", "The sandbox failed; see its log.")
            if family is Family.SUPPORT:
                return arm_error(500, "InternalServerError", "The sandbox failed; see its log.")
            return CmdletFailure("The sandbox failed; see its log.", AD_TRANSIENT, 500).response()

    return endpoint


def _exchange(sandbox: SandboxM365) -> Router:
    async def invoke(request: Request) -> Response:
        tenant = str(request.path_params["tenant"]).lower()
        known = {sandbox.settings.azure_tenant_id.lower(), str(sandbox.core.tenant.get("fqdn", "")).lower()}
        if tenant not in known:
            return JSONResponse(
                {"error": {"code": "NotFound", "message": f"The tenant '{tenant}' isn't served by this sandbox."}},
                status_code=404,
            )
        return await sandbox.invoke(
            request, sandbox._exchange_cmdlets, f"{EXCHANGE_RESOURCE}/adminapi/beta/{request.path_params['tenant']}"
        )

    route = _guarded(sandbox, (EXCHANGE_RESOURCE,), Family.EXCHANGE, invoke)
    return Router([Route("/adminapi/beta/{tenant}/InvokeCommand", route, methods=["POST"])])


def _sharepoint(sandbox: SandboxM365) -> Router:
    async def invoke(request: Request) -> Response:
        host = _host(request)
        return await sandbox.invoke(request, sandbox.sharepoint.cmdlets(host), f"https://{host}/adminapi")

    async def endpoint(request: Request) -> Response:
        host = _host(request)
        admin_hosts = {g["admin_host"] for g in sandbox.core.tenant.get("geos", [])}
        if host not in admin_hosts:
            return JSONResponse(
                {"error": {"code": "NotFound", "message": f"'{host}' isn't a SharePoint admin site of this tenant."}},
                status_code=404,
            )
        return await _guarded(sandbox, (f"https://{host}",), Family.SHAREPOINT, invoke)(request)

    return Router([Route("/adminapi/InvokeCommand", endpoint, methods=["POST"])])


def _host(request: Request) -> str:
    return request.headers.get("host", "").split(":", 1)[0].lower()


_USER_BY_KEY = re.compile(r"users\('(?P<key>(?:[^']|'')*)'\)")
_SERVICE_PRINCIPAL_BY_APP_ID = re.compile(r"servicePrincipals\(appId='(?P<app_id>[^']*)'\)")


def _graph(sandbox: SandboxM365) -> Router:
    multi = sandbox.multi
    base = "/beta/deviceManagement/virtualEndpoint"
    context = f"{GRAPH_RESOURCE}/beta/$metadata"

    async def cloud_pcs(_: Request) -> Response:
        return JSONResponse(
            {"@odata.context": f"{context}#deviceManagement/virtualEndpoint/cloudPCs", "value": await multi.cloud_pcs()}
        )

    async def cloud_pc(request: Request) -> Response:
        return JSONResponse(await multi.get_cloud_pc(str(request.path_params["id"])))

    async def organization_settings(request: Request) -> Response:
        if request.method == "PATCH":
            body = await _json_body(request)
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
                "@odata.context": f"{context}#deviceManagement/virtualEndpoint/organizationSettings/$entity",
                "@odata.type": "#microsoft.graph.cloudPcOrganizationSettings",
                "id": "sandbox-organization-settings",
                "osVersion": "windows11",
                "userAccountType": "standardUser",
                "tenantEncryptionSetting": await multi.tenant_setting(),
            }
        )

    async def create_bulk_action(request: Request) -> Response:
        return JSONResponse(await multi.bulk_action(await _json_body(request)), status_code=201)

    async def bulk_action(request: Request) -> Response:
        return JSONResponse(await multi.get_bulk_action(str(request.path_params["id"])))

    def guard(handler: Endpoint) -> Endpoint:
        return _guarded(sandbox, (GRAPH_RESOURCE,), Family.GRAPH, handler)

    async def directory_object(request: Request) -> Response:
        try:
            sandbox.authenticate(request, (GRAPH_RESOURCE,), Family.GRAPH)
        except _Reject as exc:
            return exc.response
        entity = str(request.path_params["entity"])
        found: dict[str, Any] | None
        if match := _USER_BY_KEY.fullmatch(entity):
            found = sandbox.directory.user(match["key"].replace("''", "'"))
        elif entity.startswith("users/") and "/" not in entity.removeprefix("users/"):
            found = sandbox.directory.user(entity.removeprefix("users/"))
        elif match := _SERVICE_PRINCIPAL_BY_APP_ID.fullmatch(entity):
            found = sandbox.directory.service_principal(match["app_id"])
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
        try:
            sandbox.authenticate(request, (GRAPH_RESOURCE,), Family.GRAPH)
        except _Reject as exc:
            return exc.response
        try:
            body = await _json_body(request)
        except GraphError as exc:
            return exc.response()
        ids, types = body.get("ids"), body.get("types")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 1000:
            return graph_error(400, "Request_BadRequest", "ids: a list of at most 1000 object ids is required.")
        return JSONResponse(
            {
                "@odata.context": f"{GRAPH_RESOURCE}/v1.0/$metadata#directoryObjects",
                "value": sandbox.directory.by_ids(ids, types if isinstance(types, list) else None),
            }
        )

    return Router(
        [
            Route("/v1.0/directoryObjects/getByIds", directory_objects_by_ids, methods=["POST"]),
            Route("/v1.0/{entity:path}", directory_object, methods=["GET"]),
            Route(f"{base}/cloudPCs", guard(cloud_pcs), methods=["GET"]),
            Route(f"{base}/cloudPCs/{{id}}", guard(cloud_pc), methods=["GET"]),
            Route(f"{base}/organizationSettings", guard(organization_settings), methods=["GET", "PATCH"]),
            Route(f"{base}/bulkActions", guard(create_bulk_action), methods=["POST"]),
            Route(f"{base}/bulkActions/{{id}}", guard(bulk_action), methods=["GET"]),
        ]
    )


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise GraphError(400, "BadRequest", "The request body isn't valid JSON.") from None
    if not isinstance(body, dict):
        raise GraphError(400, "BadRequest", "The request body must be a JSON object.")
    return body


def _support(sandbox: SandboxM365) -> Router:
    desk = sandbox.desk

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise DeskError(400, "InvalidRequestContent", "The request body isn't valid JSON.") from None
        if not isinstance(body, dict):
            raise DeskError(400, "InvalidRequestContent", "The request body must be a JSON object.")
        return body

    def versioned(handler: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            if not request.query_params.get("api-version"):
                raise DeskError(
                    400,
                    "MissingApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests.",
                )
            return await handler(request)

        return _guarded(sandbox, SUPPORT_RESOURCES, Family.SUPPORT, endpoint)

    async def put_ticket(request: Request) -> Response:
        caller: Caller = request.state.caller
        body = await body_of(request)
        async with sandbox.core.lock:
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
        async with sandbox.core.lock:
            ticket = await desk.sign(str(request.path_params["name"]), await body_of(request))
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


def create_app(
    settings: Settings,
    *,
    database_url: str | None = None,
    seed: TenantSpec | None = DEMO_TENANT,
    speed: float | None = None,
    keyvault_retries: int = KEYVAULT_RETRIES,
    durations: Durations | None = None,
) -> Starlette:
    """The ASGI app of the sandbox tenant (its lifespan opens the database, seeds it, runs the ticker).

    Args:
        settings: ckey's settings.
        database_url: SQLAlchemy async URL; default ``<data_dir>/sandbox-m365.db``.
        seed: the tenant to generate when the database is new (None: an empty tenant).
        speed: simulated seconds per real second; default ``settings.sandbox_m365_speed`` or 1.0.
        keyvault_retries: retries of a failing Key Vault call.
        durations: the service's process durations.
    """
    sandbox = SandboxM365(
        settings,
        database_url=database_url,
        seed=seed,
        speed=speed,
        keyvault_retries=keyvault_retries,
        durations=durations,
    )
    control = build_control_app(sandbox)

    return sandbox_app(
        sandbox,
        [
            Host("outlook.office365.com", app=_exchange(sandbox)),
            Host("{site}.sharepoint.com", app=_sharepoint(sandbox)),
            Host("graph.microsoft.com", app=_graph(sandbox)),
            Host("support.ckey.test", app=_support(sandbox)),
            Host("localhost", app=control),
            Host("127.0.0.1", app=control),
        ],
    )
