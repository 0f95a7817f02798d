"""ckey's Temporal Schedules: the inventory sync, the health check of every key in use, the rotation watcher.

The worker creates them when it starts (``CKEY_SCHEDULES``, on by default) and updates them on every later start,
so a changed interval takes effect with the next deploy; whether a schedule is paused, and the note of who paused
it, survive that update. Each run is an ordinary operation: its workflow id is the schedule's id with the scheduled
time appended by Temporal (``ckey-inventory-sync-2026-12-01T05:00:00Z``), and its first activity writes its record
(``OperationWorkflow.operate``), started by ``schedule:<id>``. A run still going when the next is due makes that one
skip (overlap policy SKIP), so a slow sync never piles up behind itself.

Only the ids of :data:`SCHEDULES` ever reach Temporal from the API and the CLI (:func:`known`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from ckey import temporal as sa
from ckey.config import Settings
from ckey.operations import OperationState
from contracts.inventory import InventorySyncParams
from contracts.keyroll import KeyRotationWatchParams
from contracts.keyvault import HealthScope, KeyVaultHealthInput
from workflows import product_registry

INVENTORY_SYNC = "ckey-inventory-sync"
KEYVAULT_HEALTH = "ckey-keyvault-health"
KEY_ROTATION_WATCH = "ckey-key-rotation-watch"


@dataclass(frozen=True)
class ScheduleDef:
    """One of ckey's schedules: which kind it starts, with which public params, how often."""

    id: str
    kind: str
    params: Callable[[], BaseModel]
    interval: Callable[[Settings], timedelta]
    description: str


SCHEDULES: dict[str, ScheduleDef] = {
    s.id: s
    for s in (
        ScheduleDef(
            id=INVENTORY_SYNC,
            kind="inventory.sync",
            params=InventorySyncParams,
            interval=lambda settings: settings.inventory_sync_interval,
            description="Read the DEPs, every mailbox and mail user and a batch of statuses into the inventory "
            "(CKEY_INVENTORY_SYNC_INTERVAL).",
        ),
        ScheduleDef(
            id=KEYVAULT_HEALTH,
            kind="keyvault.health",
            params=lambda: KeyVaultHealthInput(scope=HealthScope.IN_USE),
            interval=lambda settings: settings.health_check_interval,
            description="Check every key in use (the inventory's DEPs and CKEY_DEP_KEYS) and alert on a broken rule "
            "(CKEY_HEALTH_CHECK_INTERVAL).",
        ),
        ScheduleDef(
            id=KEY_ROTATION_WATCH,
            kind="key.rotation.watch",
            params=KeyRotationWatchParams,
            interval=lambda settings: settings.key_rotation_watch_interval,
            description="Find key versions the workloads do not use yet: roll onto them (CKEY_KEY_ROTATION_ADOPT) or "
            "alert (CKEY_KEY_ROTATION_WATCH_INTERVAL).",
        ),
    )
}
"""ckey's schedules by id: the only ids the API and the CLI pass to Temporal."""


def known(schedule_id: str) -> ScheduleDef | None:
    """The schedule of that id, or ``None`` for any other text (never passed on to Temporal)."""
    return SCHEDULES.get(schedule_id)


def started_by(schedule_id: str) -> str:
    """Who the record of a scheduled run names as its starter."""
    return f"schedule:{schedule_id}"


def build_schedule(definition: ScheduleDef, settings: Settings, state: ScheduleState | None = None) -> Schedule:
    """The Temporal Schedule of ``definition`` under ``settings`` (``state``: keep a paused schedule paused)."""
    kind = product_registry().get(definition.kind)
    if kind is None:  # a programming error: SCHEDULES names a kind the registry lacks
        raise LookupError(f"schedule {definition.id} starts unknown kind {definition.kind}")
    params = definition.params()
    attributes = TypedSearchAttributes.empty
    if settings.temporal_search_attributes:
        attributes = TypedSearchAttributes(
            [
                SearchAttributePair(sa.KIND, kind.name),
                SearchAttributePair(sa.STATE, OperationState.RUNNING.value),
                SearchAttributePair(sa.STARTED_BY, started_by(definition.id)),
            ]
        )
    interval = definition.interval(settings)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            kind.workflow.run,  # type: ignore[attr-defined]
            kind.make_input(params, settings),
            id=definition.id,
            task_queue=settings.temporal_task_queue,
            memo={"kind": kind.name, "started_by": started_by(definition.id)},
            typed_search_attributes=attributes,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
        # A run missed while the server was down is made up once, within one interval; never a backlog of runs.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=max(interval, timedelta(minutes=1))),
        state=state or ScheduleState(note=definition.description),
    )


async def ensure_schedules(client: Client, settings: Settings) -> list[str]:
    """Create each of ckey's schedules, or update it to the current settings; pause state and note are kept.

    Returns:
        What was done, one ``<id>: created|updated`` per schedule.
    """
    done: list[str] = []
    for definition in SCHEDULES.values():
        schedule = build_schedule(definition, settings)
        try:
            await client.create_schedule(definition.id, schedule)
            done.append(f"{definition.id}: created")
            continue
        except ScheduleAlreadyRunningError:
            pass

        def updater(current: ScheduleUpdateInput, definition: ScheduleDef = definition) -> ScheduleUpdate:
            return ScheduleUpdate(build_schedule(definition, settings, current.description.schedule.state))

        await client.get_schedule_handle(definition.id).update(updater)
        done.append(f"{definition.id}: updated")
    return done


class ScheduledRun(BaseModel):
    """One run a schedule started: the operation id (its workflow id) and when."""

    operation_id: str
    scheduled_at: datetime
    started_at: datetime


class ScheduleView(BaseModel):
    """A schedule as the API and the CLI show it."""

    id: str
    kind: str
    description: str
    interval_seconds: float
    exists: bool = Field(description="Whether Temporal holds it (the worker creates it when CKEY_SCHEDULES is on).")
    paused: bool = False
    note: str | None = None
    next_runs: list[datetime] = Field(default_factory=list)
    recent_runs: list[ScheduledRun] = Field(default_factory=list)
    running: list[str] = Field(default_factory=list)
    """Operation ids of runs still going."""
    skipped_overlap: int = 0


async def describe(client: Client, definition: ScheduleDef, settings: Settings) -> ScheduleView:
    """What Temporal says of one schedule; ``exists`` false when it was never created."""
    base = ScheduleView(
        id=definition.id,
        kind=definition.kind,
        description=definition.description,
        interval_seconds=definition.interval(settings).total_seconds(),
        exists=False,
    )
    try:
        description = await client.get_schedule_handle(definition.id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return base
        raise
    intervals = description.schedule.spec.intervals
    info = description.info
    return base.model_copy(
        update={
            "exists": True,
            "interval_seconds": intervals[0].every.total_seconds() if intervals else base.interval_seconds,
            "paused": description.schedule.state.paused,
            "note": description.schedule.state.note,
            "next_runs": list(info.next_action_times[:5]),
            "recent_runs": [
                ScheduledRun(
                    operation_id=getattr(r.action, "workflow_id", ""),
                    scheduled_at=r.scheduled_at,
                    started_at=r.started_at,
                )
                for r in info.recent_actions[-10:]
            ],
            "running": [getattr(r, "workflow_id", "") for r in info.running_actions],
            "skipped_overlap": info.num_actions_skipped_overlap,
        }
    )
