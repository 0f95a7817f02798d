"""ckey's Temporal Schedules on the real dev server (the time-skipping server does not implement Schedules).

With intervals of a few seconds: ``inventory.sync`` and the health check of every key in use each fire on their own,
and a key broken on the sandbox is reported by the next health run (failed record naming the rule, the key unhealthy
in the inventory, ``alert.raised`` in the audit trail, the webhook called). Also: the worker's create-or-update is
idempotent and keeps a pause, and the API and its roles, with problem+json for an unknown schedule.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from temporalio.client import Client, ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities import build_activities
from ckey import temporal as sa
from ckey.azure import AzureConnection
from ckey.config import Settings
from ckey.keyvault import KeyVaultGateway
from ckey.models import Role, Workload
from ckey.operations import OperationRecord
from ckey.schedules import INVENTORY_SYNC, KEY_ROTATION_WATCH, KEYVAULT_HEALTH, SCHEDULES, ensure_schedules
from ckey.store import Store
from ckey.store.inventory import InventoryStore
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.m365 import SandboxM365Server
from tests.workflows.alert_receiver import alert_receiver
from tests.workflows.conftest import product_gateways
from tests.workflows.test_health_alerts import healthy_key, versionless
from worker import WORKFLOW_FAILURE_TYPES, start_schedules
from workflows import all_workflows

Auth = Callable[..., dict[str, str]]
WAIT = 180.0
"""Seconds a test waits for a scheduled run at most (a bound on a hang, never a timing claim)."""


async def _delete_schedules(client: Client) -> None:
    for schedule_id in SCHEDULES:
        with suppress(RPCError):  # not there
            await client.get_schedule_handle(schedule_id).delete()


@pytest.fixture
async def clean_schedules(client: Client) -> AsyncIterator[None]:
    """The schedules' ids are the namespace's: none before the test, none left after it."""
    await _delete_schedules(client)
    try:
        yield
    finally:
        await _delete_schedules(client)


async def wait_for_run(
    store: Store, schedule_id: str, *, after: datetime | None = None, ended: bool = True
) -> OperationRecord:
    """The first run of ``schedule_id`` (started after ``after``) with a record, ended unless ``ended`` is false."""
    kind = SCHEDULES[schedule_id].kind
    async with asyncio.timeout(WAIT):
        while True:
            runs = [
                r
                for r in await store.list_operations(kind=kind, limit=1000)
                if r.started_by == f"schedule:{schedule_id}" and (after is None or r.started_at > after)
            ]
            runs.sort(key=lambda r: r.started_at)
            if runs and (not ended or runs[0].ended_at is not None):
                return runs[0]
            await asyncio.sleep(0.2)


async def test_the_schedules_fire_and_a_broken_key_is_reported_by_the_next_run(
    client: Client,
    op_settings: Settings,
    store: Store,
    keyvault: KeyVaultGateway,
    azure: AzureConnection,
    kv_control: SandboxKeyVaultControl,
    tenant_server: SandboxM365Server,
    clean_schedules: None,
) -> None:
    first = await healthy_key(kv_control, "eastus")
    second = await healthy_key(kv_control, "westus")
    settings = op_settings.model_copy(
        update={"inventory_sync_interval": timedelta(seconds=2), "health_check_interval": timedelta(seconds=3)}
    )
    async with alert_receiver() as receiver:
        gateways = dataclasses.replace(
            product_gateways(settings, store, keyvault, azure),
            dep_keys={Workload.EXCHANGE: [first, second]},
            alert_webhook_url=receiver.url,
        )
        async with Worker(
            client,
            task_queue=settings.temporal_task_queue,
            workflows=all_workflows(),
            activities=build_activities(gateways),
            workflow_failure_exception_types=WORKFLOW_FAILURE_TYPES,
        ):
            assert await ensure_schedules(client, settings) == [
                f"{INVENTORY_SYNC}: created",
                f"{KEYVAULT_HEALTH}: created",
                f"{KEY_ROTATION_WATCH}: created",
            ]
            # The inventory sync fires on its own: a succeeded operation whose id Temporal derived from the schedule.
            sync = await wait_for_run(store, INVENTORY_SYNC)
            assert sync.state.value == "succeeded", sync.error
            assert sync.result is not None and sync.result["recipients"] > 0
            assert sync.id.startswith(f"{INVENTORY_SYNC}-")
            assert await InventoryStore(store).as_of("recipients") is not None

            # The health check fires too, over the keys in use: ours are healthy.
            before = await wait_for_run(store, KEYVAULT_HEALTH)
            assert before.id.startswith(f"{KEYVAULT_HEALTH}-")
            assert before.params["scope"] == "in_use"
            health = {k.key_id: k for k in await InventoryStore(store).keys()}
            assert health[versionless(first)].healthy is True, health

            # A key is disabled on the sandbox: the next run reports it.
            vault_url, name = versionless(first).split("/keys/")
            await keyvault.key_client(vault_url).update_key_properties(name, enabled=False)
            broke_at = datetime.now(UTC)
            after = await wait_for_run(store, KEYVAULT_HEALTH, after=broke_at)
            alert = await receiver.first()

    assert after.state.value == "failed"
    assert after.error is not None and after.error.startswith("keyvault-health-failed: "), after.error
    assert f"key-enabled ({versionless(first)}" in after.error or f"key-enabled ({first}" in after.error, after.error
    health = {k.key_id: k for k in await InventoryStore(store).keys()}
    assert (health[versionless(first)].healthy, health[versionless(first)].problems) == (False, ["key-enabled"])
    assert health[versionless(first)].source == after.id
    raised = [e for e in await store.list_audit(operation_id=after.id) if e.action == "alert.raised"]
    assert raised and "key-enabled" in raised[0].detail["rules"]
    assert alert["rule"] == "keyvault-health-failed" and alert["kind"] == "keyvault.health"
    assert any(f["rule"] == "key-enabled" and f["target"] in (first, versionless(first)) for f in alert["findings"])
    assert alert["operation_id"] in {r.id for r in await store.list_operations(kind="keyvault.health", limit=1000)}
    # Search attributes as every operation: a dashboard filters scheduled runs like the others.
    described = await client.get_workflow_handle(after.id).describe()
    assert described.typed_search_attributes.get(sa.KIND) == "keyvault.health"
    assert described.typed_search_attributes.get(sa.STARTED_BY) == f"schedule:{KEYVAULT_HEALTH}"
    assert described.typed_search_attributes.get(sa.STATE) == "failed"


async def test_the_worker_creates_or_updates_the_schedules_and_keeps_a_pause(
    client: Client, op_settings: Settings, clean_schedules: None
) -> None:
    settings = op_settings.model_copy(update={"inventory_sync_interval": timedelta(hours=1)})
    assert await ensure_schedules(client, settings) == [
        f"{INVENTORY_SYNC}: created",
        f"{KEYVAULT_HEALTH}: created",
        f"{KEY_ROTATION_WATCH}: created",
    ]
    handle = client.get_schedule_handle(INVENTORY_SYNC)
    described = await handle.describe()
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert (action.workflow, action.id, action.task_queue) == (
        "InventorySyncWorkflow",
        INVENTORY_SYNC,
        settings.temporal_task_queue,
    )
    assert described.schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
    assert described.schedule.spec.intervals[0].every == timedelta(hours=1)
    assert action.typed_search_attributes.get(sa.STARTED_BY) == f"schedule:{INVENTORY_SYNC}"
    health = (await client.get_schedule_handle(KEYVAULT_HEALTH).describe()).schedule
    assert health.spec.intervals[0].every == settings.health_check_interval == timedelta(days=1)

    await handle.pause(note="paused by carol for a migration")
    # The next start of the worker updates the interval and leaves the operator's pause alone.
    changed = settings.model_copy(update={"inventory_sync_interval": timedelta(minutes=30)})
    assert await ensure_schedules(client, changed) == [
        f"{INVENTORY_SYNC}: updated",
        f"{KEYVAULT_HEALTH}: updated",
        f"{KEY_ROTATION_WATCH}: updated",
    ]
    after = (await handle.describe()).schedule
    assert after.spec.intervals[0].every == timedelta(minutes=30)
    assert after.state.paused is True and after.state.note == "paused by carol for a migration"


async def test_the_schedules_api_lists_pauses_unpauses_and_triggers(
    api: httpx.AsyncClient,
    auth: Auth,
    client: Client,
    op_settings: Settings,
    store: Store,
    product_worker: Worker,
    clean_schedules: None,
) -> None:
    listed = await api.get("/api/schedules", headers=auth(Role.VIEWER))
    assert listed.status_code == 200, listed.text
    assert [(s["id"], s["exists"]) for s in listed.json()["items"]] == [
        (INVENTORY_SYNC, False),
        (KEYVAULT_HEALTH, False),
        (KEY_ROTATION_WATCH, False),
    ]
    absent = await api.post(f"/api/schedules/{KEYVAULT_HEALTH}/pause", headers=auth(Role.OPERATOR))
    assert (absent.status_code, absent.json()["rule"]) == (404, "schedule-exists")

    settings = op_settings.model_copy(
        update={"inventory_sync_interval": timedelta(hours=1), "health_check_interval": timedelta(hours=1)}
    )
    await ensure_schedules(client, settings)
    shown = (await api.get("/api/schedules", headers=auth(Role.VIEWER))).json()["items"]
    assert [(s["id"], s["exists"], s["paused"], s["interval_seconds"]) for s in shown] == [
        (INVENTORY_SYNC, True, False, 3600.0),
        (KEYVAULT_HEALTH, True, False, 3600.0),
        (KEY_ROTATION_WATCH, True, False, 3600.0),
    ]
    assert shown[0]["next_runs"]

    refused = await api.post(f"/api/schedules/{INVENTORY_SYNC}/pause", headers=auth(Role.VIEWER))
    assert (refused.status_code, refused.json()["rule"]) == (403, "role-required")
    for bad in ("ckey-nope", "nope", "ckey-inventory-sync-2026"):
        unknown = await api.post(f"/api/schedules/{bad}/trigger", headers=auth(Role.OPERATOR))
        assert unknown.status_code == 404, unknown.text
        assert unknown.headers["content-type"].startswith("application/problem+json")
        assert unknown.json()["rule"] == "schedule-known"

    paused = await api.post(
        f"/api/schedules/{INVENTORY_SYNC}/pause", headers=auth(Role.OPERATOR, "olga.operator@contoso.com")
    )
    assert paused.status_code == 200, paused.text
    assert (paused.json()["paused"], paused.json()["note"]) == (True, "paused by olga.operator@contoso.com")
    assert (await client.get_schedule_handle(INVENTORY_SYNC).describe()).schedule.state.paused is True
    unpaused = await api.post(f"/api/schedules/{INVENTORY_SYNC}/unpause", headers=auth(Role.OPERATOR))
    assert unpaused.status_code == 200 and unpaused.json()["paused"] is False

    # Triggered now, not in an hour: the run is an operation with its record, started by the schedule.
    triggered = await api.post(f"/api/schedules/{KEYVAULT_HEALTH}/trigger", headers=auth(Role.OPERATOR))
    assert triggered.status_code == 202, triggered.text
    run = await wait_for_run(store, KEYVAULT_HEALTH, ended=False)
    assert run.id.startswith(f"{KEYVAULT_HEALTH}-") and run.kind == "keyvault.health"
    # Who paused, unpaused and triggered is in the audit trail.
    # Each change is audited as an intent before Temporal is called and with its outcome after.
    changes = [
        (e.action, e.outcome.value, e.actor, e.target)
        for e in await store.list_audit()
        if e.action.startswith("schedule.")
    ]
    # The pause of the schedule that did not exist yet was refused by Temporal: its intent and its failure.
    assert changes[:2] == [
        ("schedule.paused", "intent", "alice.admin@contoso.com", KEYVAULT_HEALTH),
        ("schedule.paused", "failed", "alice.admin@contoso.com", KEYVAULT_HEALTH),
    ]
    assert changes[2:] == [
        (f"schedule.{verb}", outcome, actor, target)
        for verb, actor, target in (
            ("paused", "olga.operator@contoso.com", INVENTORY_SYNC),
            ("unpaused", "alice.admin@contoso.com", INVENTORY_SYNC),
            ("triggered", "alice.admin@contoso.com", KEYVAULT_HEALTH),
        )
        for outcome in ("intent", "ok")
    ]
    # The schedule lists it among its recent runs.
    async with asyncio.timeout(WAIT):
        while True:
            view = (await api.get(f"/api/schedules/{KEYVAULT_HEALTH}", headers=auth(Role.VIEWER))).json()
            if run.id in [r["operation_id"] for r in view["recent_runs"]]:
                break
            await asyncio.sleep(0.2)


async def test_the_worker_makes_the_schedules_only_when_the_setting_says(
    client: Client, op_settings: Settings, clean_schedules: None
) -> None:
    await start_schedules(client, op_settings.model_copy(update={"schedules": False}))
    with pytest.raises(RPCError):
        await client.get_schedule_handle(INVENTORY_SYNC).describe()
    await start_schedules(client, op_settings.model_copy(update={"schedules": True}))
    for schedule_id in SCHEDULES:
        assert (await client.get_schedule_handle(schedule_id).describe()).id == schedule_id
