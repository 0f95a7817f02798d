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

Every workload request passes the same gate (:mod:`sandbox.m365.gate`): injected latency, bearer token, injected
5xx, throttling, then Microsoft's due steps run (:mod:`sandbox.m365.ticker`) and the request is served by its
host's routes (:mod:`sandbox.m365.routes`). This module only wires them to the parts (:mod:`sandbox.m365.lifecycle`).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Host, Router

from ckey.config import Settings
from sandbox.common import sandbox_app
from sandbox.m365.admin import build_control_app
from sandbox.m365.durations import Durations
from sandbox.m365.gate import Gate
from sandbox.m365.lifecycle import SandboxM365
from sandbox.m365.routes.directory import directory_routes
from sandbox.m365.routes.exchange import exchange_routes
from sandbox.m365.routes.invoke import CommandRunner
from sandbox.m365.routes.sharepoint import sharepoint_routes
from sandbox.m365.routes.support import support_routes
from sandbox.m365.routes.windows365 import windows365_routes
from sandbox.m365.tenant import DEMO_TENANT, TenantSpec
from sandbox.m365.vault import KEYVAULT_RETRIES

__all__ = ["DEMO_TENANT", "SandboxM365", "create_app"]


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
    gate = Gate(settings, sandbox.identity, sandbox.faults, sandbox.ticker.tick, sandbox.counters)
    runner = CommandRunner(sandbox.core, sandbox.counters)
    graph = Router([*directory_routes(gate, sandbox.directory), *windows365_routes(gate, sandbox.windows365)])
    control = build_control_app(
        settings,
        core=sandbox.core,
        exchange=sandbox.exchange,
        multi=sandbox.multi,
        sharepoint=sandbox.sharepoint,
        faults=sandbox.faults,
        ticker=sandbox.ticker,
        counters=sandbox.counters,
        set_faults=sandbox.set_faults,
        reseed=sandbox.reseed,
    )
    return sandbox_app(
        sandbox,
        [
            Host("outlook.office365.com", app=exchange_routes(gate, runner, sandbox.exchange_cmdlets(), sandbox.core)),
            Host("{site}.sharepoint.com", app=sharepoint_routes(gate, runner, sandbox.sharepoint)),
            Host("graph.microsoft.com", app=graph),
            Host("support.ckey.test", app=support_routes(gate, sandbox.desk, sandbox.core.lock)),
            Host("localhost", app=control),
            Host("127.0.0.1", app=control),
        ],
    )
