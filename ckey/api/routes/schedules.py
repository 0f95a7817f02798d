"""``/api/schedules``: ckey's Temporal Schedules (the inventory sync, the health check): list, pause, unpause, trigger.

Only the ids of :data:`ckey.schedules.SCHEDULES` reach Temporal: any other path segment is a 404 before any call.
Reading is for viewers; pausing, unpausing and triggering change what runs, so they need the operator role (the role
that may start the scheduled kinds by hand).
"""

from __future__ import annotations

import uuid
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


async def _audit(store: Store, principal: Principal, definition: ScheduleDef, verb: str) -> None:
    """Who paused, unpaused or triggered which schedule: the audit trail says it, as for every change."""
    await store.append_audit(
        AuditEvent(
            key=f"schedule/{definition.id}/{verb}/{uuid.uuid4()}",
            at=datetime.now(UTC),
            actor=principal.user,
            action=f"schedule.{verb}",
            outcome=Outcome.OK,
            target=definition.id,
            detail={"kind": definition.kind},
        )
    )


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
        await client.get_schedule_handle(definition.id).pause(note=f"paused by {principal.user}")
        await _audit(store, principal, definition, "paused")
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
        await client.get_schedule_handle(definition.id).unpause(note=f"unpaused by {principal.user}")
        await _audit(store, principal, definition, "unpaused")
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
        await client.get_schedule_handle(definition.id).trigger()
        await _audit(store, principal, definition, "triggered")
        return await describe(client, definition, settings)
    except RPCError as exc:
        raise _rpc_problem(definition, exc) from None
