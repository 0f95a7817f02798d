"""``/api/schedules``: ckey's Temporal Schedules (the inventory sync, the health check): list, pause, unpause, trigger.

Only the ids of :data:`ckey.schedules.SCHEDULES` reach Temporal: any other path segment is a 404 before any call.
Reading is for viewers; pausing, unpausing and triggering change what runs, so they need the operator role (the role
that may start the scheduled kinds by hand).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import BaseModel
from temporalio.service import RPCError, RPCStatusCode

from ckey.api.deps import ClientDep, Operator, SettingsDep, StoreDep, Viewer
from ckey.api.problems import Problem
from ckey.auth import Principal
from ckey.operations import AuditEvent, Outcome
from ckey.schedules import SCHEDULES, ScheduleDef, ScheduleView, describe, known
from ckey.store import Store

router = APIRouter(prefix="/api/schedules", tags=["schedules"])

ScheduleId = Annotated[str, Path(max_length=100, description="A schedule id: " + ", ".join(SCHEDULES))]


class ScheduleList(BaseModel):
    """Every schedule of ckey, whether Temporal holds it yet or not."""

    items: list[ScheduleView]


def _definition(schedule_id: str) -> ScheduleDef:
    definition = known(schedule_id)
    if definition is None:
        raise Problem(404, "schedule-known", f"no schedule {schedule_id!r}; ckey's schedules: {', '.join(SCHEDULES)}")
    return definition


def _rpc_problem(definition: ScheduleDef, exc: RPCError) -> Problem:
    if exc.status == RPCStatusCode.NOT_FOUND:
        return Problem(
            404,
            "schedule-exists",
            f"schedule {definition.id} is not created: the worker creates it at start when CKEY_SCHEDULES is on",
        )
    return Problem(503, "temporal-reachable", f"Temporal did not answer for schedule {definition.id}: {exc.message}")


async def _audit(
    store: Store, principal: Principal, definition: ScheduleDef, verb: str, outcome: Outcome, change: str, **detail: str
) -> None:
    """Who paused, unpaused or triggered which schedule: the audit trail says it, as for every change."""
    await store.append_audit(
        AuditEvent(
            key=f"schedule/{definition.id}/{verb}/{change}/{outcome.value}",
            at=datetime.now(UTC),
            actor=principal.user,
            action=f"schedule.{verb}",
            outcome=outcome,
            target=definition.id,
            detail={"kind": definition.kind, **detail},
        )
    )


async def _change(
    store: Store,
    principal: Principal,
    definition: ScheduleDef,
    verb: str,
    send: Callable[[], Awaitable[None]],
) -> None:
    """Audit the intent, make the change in Temporal, audit its outcome: a crash between them leaves the intent."""
    change = str(uuid.uuid4())
    await _audit(store, principal, definition, verb, Outcome.INTENT, change)
    try:
        await send()
    except RPCError as exc:
        await _audit(store, principal, definition, verb, Outcome.FAILED, change, error=exc.message)
        raise
    await _audit(store, principal, definition, verb, Outcome.OK, change)


@router.get("", response_model=ScheduleList)
async def list_schedules(principal: Viewer, client: ClientDep, settings: SettingsDep) -> ScheduleList:
    """Every schedule: interval, paused or not, next and recent runs (their operation ids)."""
    items: list[ScheduleView] = []
    for definition in SCHEDULES.values():
        try:
            items.append(await describe(client, definition, settings))
        except RPCError as exc:
            raise _rpc_problem(definition, exc) from None
    return ScheduleList(items=items)


@router.get("/{schedule_id}", response_model=ScheduleView)
async def show_schedule(
    schedule_id: ScheduleId, principal: Viewer, client: ClientDep, settings: SettingsDep
) -> ScheduleView:
    """One schedule."""
    definition = _definition(schedule_id)
    try:
        return await describe(client, definition, settings)
    except RPCError as exc:
        raise _rpc_problem(definition, exc) from None


@router.post("/{schedule_id}/pause", response_model=ScheduleView)
async def pause_schedule(
    schedule_id: ScheduleId, principal: Operator, client: ClientDep, settings: SettingsDep, store: StoreDep
) -> ScheduleView:
    """Pause a schedule (its note names who paused it); a running run goes on."""
    definition = _definition(schedule_id)
    try:
        handle = client.get_schedule_handle(definition.id)
        await _change(store, principal, definition, "paused", lambda: handle.pause(note=f"paused by {principal.user}"))
        return await describe(client, definition, settings)
    except RPCError as exc:
        raise _rpc_problem(definition, exc) from None


@router.post("/{schedule_id}/unpause", response_model=ScheduleView)
async def unpause_schedule(
    schedule_id: ScheduleId, principal: Operator, client: ClientDep, settings: SettingsDep, store: StoreDep
) -> ScheduleView:
    """Resume a paused schedule."""
    definition = _definition(schedule_id)
    try:
        handle = client.get_schedule_handle(definition.id)
        await _change(
            store, principal, definition, "unpaused", lambda: handle.unpause(note=f"unpaused by {principal.user}")
        )
        return await describe(client, definition, settings)
    except RPCError as exc:
        raise _rpc_problem(definition, exc) from None


@router.post("/{schedule_id}/trigger", response_model=ScheduleView, status_code=202)
async def trigger_schedule(
    schedule_id: ScheduleId, principal: Operator, client: ClientDep, settings: SettingsDep, store: StoreDep
) -> ScheduleView:
    """Run a schedule's action now (skipped, as a due run would be, while a run of it is still going)."""
    definition = _definition(schedule_id)
    try:
        handle = client.get_schedule_handle(definition.id)
        await _change(store, principal, definition, "triggered", handle.trigger)
        return await describe(client, definition, settings)
    except RPCError as exc:
        raise _rpc_problem(definition, exc) from None
