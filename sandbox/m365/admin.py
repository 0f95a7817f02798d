"""The sandbox tenant's own control endpoint, ``https://localhost:<port>/sandbox/...``: never under Microsoft's names.

It offers what Microsoft 365 offers no API for: the clock to shift, the fault switchboard, a tenant generator,
mailboxes that never finish moving, migrations to complete, and a look at the data (decrypting sample items through
the key hierarchy, to prove who can still read them). Callers present a token of ckey's own auth with the ``admin``
role (``ckey token --role admin``); ``/sandbox/health`` is open for readiness probes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from ckey.config import Settings
from sandbox.common import Admin, AdminTokens
from sandbox.m365.clock import iso
from sandbox.m365.core import Core
from sandbox.m365.db import CallRow, CaseRow, DepRow, GeoRow, MailboxRow
from sandbox.m365.errors import CmdletFailure
from sandbox.m365.exchange import Exchange
from sandbox.m365.faults import Faults, FaultSwitchboard
from sandbox.m365.multiworkload import MultiWorkload
from sandbox.m365.sharepoint import SharePoint
from sandbox.m365.sharepoint_recovery import enter_recovery
from sandbox.m365.tenant import TenantSpec
from sandbox.m365.ticker import Ticker


class ClockIn(BaseModel):
    """How far to move the sandbox clock forward."""

    days: float = Field(0, ge=0)
    hours: float = Field(0, ge=0)
    minutes: float = Field(0, ge=0)
    seconds: float = Field(0, ge=0)

    @property
    def total(self) -> float:
        """The shift in seconds."""
        return self.days * 86400 + self.hours * 3600 + self.minutes * 60 + self.seconds


class SpeedIn(BaseModel):
    """How fast the sandbox clock runs from now on."""

    speed: float = Field(gt=0, le=10_000_000)
    """Simulated seconds per real second (3600: an hour a second)."""


class StuckIn(BaseModel):
    """Mailboxes whose moves should never finish (or finish again)."""

    identities: list[str] = Field(min_length=1)
    stuck: bool = True


class MigrationsIn(BaseModel):
    """Mail users whose migration completes now (None: all of them)."""

    identities: list[str] | None = None


def build_control_app(
    settings: Settings,
    *,
    core: Core,
    exchange: Exchange,
    multi: MultiWorkload,
    sharepoint: SharePoint,
    faults: FaultSwitchboard,
    ticker: Ticker,
    counters: Counter[str],
    set_faults: Callable[[Faults], Awaitable[None]],
    reseed: Callable[[TenantSpec], Awaitable[None]],
) -> FastAPI:
    """The FastAPI app behind ``https://localhost:<port>/sandbox/``.

    Args:
        settings: the local stack's token settings (the control endpoint takes ckey's own admin tokens).
        core: the clock, the tenant's description, its database and alerts.
        exchange: mailboxes (status, stuck moves, migrations, sample items).
        multi: the multi-workload assignment.
        sharepoint: geos' progress and sites' sample items.
        faults: the fault switchboard, as it stands.
        ticker: moves the clock and runs Microsoft's due steps.
        counters: the tenant's request counters.
        set_faults: replaces the switchboard (stalling and releasing geos).
        reseed: replaces the tenant with a newly generated one.
    """
    app = FastAPI(title="ckey sandbox tenant control", docs_url="/sandbox/docs", openapi_url="/sandbox/openapi.json")
    app.state.verifier = AdminTokens(settings)

    @app.exception_handler(CmdletFailure)
    async def _failure(_: Request, exc: CmdletFailure) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    def clock() -> dict[str, Any]:
        return {
            "now": iso(core.now()),
            "now_unix": core.now(),
            "speed": core.clock.speed,
            "shifted_seconds": core.clock.shifted,
        }

    @app.get("/sandbox/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/sandbox/status")
    async def status(_: Admin) -> dict[str, Any]:
        now = core.now()
        async with core.db.session() as s:
            mailboxes = (await s.scalars(select(MailboxRow))).all()
            dep_rows = {d.guid: d for d in (await s.scalars(select(DepRow))).all()}
            geos = (await s.scalars(select(GeoRow).order_by(GeoRow.is_default.desc(), GeoRow.geo))).all()
            cases = (await s.scalars(select(CaseRow))).all()
        kinds = Counter(m.recipient_type_details for m in mailboxes if m.soft_deleted_at is None)
        assigned = [m for m in mailboxes if m.dep_guid and m.soft_deleted_at is None]
        encrypted = sum(1 for m in assigned if exchange.is_encrypted(m, dep_rows.get(m.dep_guid or ""), now))
        assignment = await multi.assignment()
        return {
            "clock": clock(),
            "tenant": {k: v for k, v in core.tenant.items() if k != "spec"},
            "recipients": dict(kinds),
            "assigned": len(assigned),
            "encrypted": encrypted,
            "stuck": sum(1 for m in mailboxes if m.stuck),
            "deps": [
                {"name": d.name, "guid": d.guid, "kind": d.kind, "deleted": d.deleted_at is not None}
                for d in dep_rows.values()
                if not d.is_default
            ],
            "geos": [
                {
                    "geo": g.geo,
                    "admin_host": g.admin_host,
                    **_progress(sharepoint, g, now),
                    "stalled": g.paused_at is not None,
                }
                for g in geos
            ],
            "multi_workload": None
            if assignment is None
            else {
                "dep": assignment.dep,
                "effective": iso(assignment.effective_at),
                "intune": iso(assignment.intune_ready_at),
            },
            "cases": {c.name: {"kind": c.kind, "status": c.status, "stage": c.stage} for c in cases},
            "faults": faults.faults.model_dump(),
            "counters": dict(counters),
            "alerts": len(await core.alerts()),
        }

    @app.get("/sandbox/clock")
    async def get_clock(_: Admin) -> dict[str, Any]:
        return clock()

    @app.post("/sandbox/clock/advance")
    async def advance(body: ClockIn, _: Admin) -> dict[str, Any]:
        await ticker.advance(body.total)
        return clock()

    @app.put("/sandbox/clock/speed")
    async def set_speed(body: SpeedIn, _: Admin) -> dict[str, Any]:
        await ticker.set_speed(body.speed)
        return clock()

    @app.post("/sandbox/seed")
    async def seed(body: TenantSpec, _: Admin) -> dict[str, Any]:
        await reseed(body)
        return {k: v for k, v in core.tenant.items()}

    @app.get("/sandbox/faults")
    async def get_faults(_: Admin) -> dict[str, Any]:
        return faults.faults.model_dump()

    @app.put("/sandbox/faults")
    async def put_faults(body: Faults, _: Admin) -> dict[str, Any]:
        await set_faults(body)
        return faults.faults.model_dump()

    @app.post("/sandbox/mailboxes/stuck")
    async def stuck(body: StuckIn, _: Admin) -> dict[str, Any]:
        async with core.lock:
            names = await exchange.set_stuck(body.identities, body.stuck)
        return {"mailboxes": names, "stuck": body.stuck}

    @app.post("/sandbox/migrations/complete")
    async def migrations(body: MigrationsIn, _: Admin) -> dict[str, Any]:
        async with core.lock:
            names = await exchange.complete_migrations(body.identities)
        return {"migrated": names}

    @app.get("/sandbox/mailboxes/{identity}")
    async def mailbox(identity: str, _: Admin) -> dict[str, Any]:
        row = await exchange.find_any(identity)
        if row is None:
            raise HTTPException(404, f"no mailbox {identity!r}")
        dep = await core.dep(row.dep_guid) if row.dep_guid else None
        now = core.now()
        return {
            "name": row.name,
            "upn": row.upn,
            "guid": row.guid,
            "recipient_type_details": row.recipient_type_details,
            "size_bytes": row.size_bytes,
            "dep": dep.name if dep else None,
            "dep_guid": row.dep_guid,
            "assigned_at": iso(row.assigned_at),
            "move_due_at": iso(row.move_due_at),
            "moved_once": row.moved_once,
            "assignments": row.assignments,
            "stuck": row.stuck,
            "is_encrypted": exchange.is_encrypted(row, dep, now),
            "data_dep_guid": exchange.data_wrap(row, now)[1],
            "migrated_at": iso(row.migrated_at),
            "soft_deleted_at": iso(row.soft_deleted_at),
        }

    @app.get("/sandbox/mailboxes/{identity}/items")
    async def mailbox_items(identity: str, _: Admin) -> dict[str, Any]:
        return await exchange.read_items(identity)

    @app.get("/sandbox/sites/items")
    async def site_items(url: str, _: Admin) -> dict[str, Any]:
        return await sharepoint.read_site(url)

    @app.post("/sandbox/geos/{geo}/recovery")
    async def geo_recovery(geo: str, _: Admin) -> dict[str, Any]:
        # Stands for Microsoft Support recovering the geo with its availability key (the customer lost its keys).
        return await enter_recovery(sharepoint, geo)

    @app.get("/sandbox/alerts")
    async def alerts(_: Admin) -> list[dict[str, Any]]:
        return [
            {
                "id": a.id,
                "at": iso(a.at),
                "kind": a.kind,
                "dep_guid": a.dep_guid,
                "subject": a.subject,
                "detail": a.detail,
            }
            for a in await core.alerts()
        ]

    @app.get("/sandbox/calls")
    async def calls(
        _: Admin, cmdlet: str | None = None, after: int = 0, limit: int = Query(10_000, ge=1, le=100_000)
    ) -> list[dict[str, Any]]:
        query = select(CallRow).where(CallRow.seq > after).order_by(CallRow.seq).limit(limit)
        if cmdlet:
            query = query.where(CallRow.cmdlet == cmdlet)
        async with core.db.session() as s:
            rows = (await s.scalars(query)).all()
        return [
            {
                "seq": r.seq,
                "received_at": r.received_at,
                "cmdlet": r.cmdlet,
                "identity": r.identity,
                "parameters": r.parameters,
                "status": r.status,
            }
            for r in rows
        ]

    @app.post("/sandbox/tick")
    async def tick(_: Admin) -> dict[str, int]:
        return {"ran": await ticker.tick()}

    return app


def _progress(sharepoint: SharePoint, geo: GeoRow, now: float) -> dict[str, Any]:
    progress = sharepoint.progress(geo, now)
    return {"state": progress.state.value, "percent": progress.percent, "done": progress.done, "total": progress.total}
