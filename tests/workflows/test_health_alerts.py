"""``keyvault.health`` over every key in use, started directly: each key's health in the inventory, alerts.

The scheduled run (``tests/workflows/test_schedules.py``) starts the same workflow with ``scope: in_use``; here it is
started by hand so that each outcome can be set up and checked precisely: the keys of the inventory's DEPs plus the
configured keys, each key's health in the inventory, and the alert in the log, the record, the audit trail and a
real local webhook (delivered after a retry, or given up on without changing the check's outcome).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from datetime import UTC, datetime

import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from activities import build_activities
from ckey.azure import AzureConnection
from ckey.config import Settings
from ckey.keyvault import KeyVaultGateway
from ckey.models import KeyUri, Role, ServicePrincipal, Workload
from ckey.operations import OperationRecord
from ckey.store import Store
from ckey.store.inventory import DepView, InventoryStore
from contracts.keyvault import HealthScope, KeyVaultHealthInput
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.m365 import SandboxM365Server
from tests.workflows.alert_receiver import alert_receiver
from tests.workflows.conftest import product_gateways, unique
from worker import WORKFLOW_FAILURE_TYPES
from workflows import all_workflows
from workflows.keyvault import KeyVaultHealthWorkflow

EXO = ServicePrincipal.EXCHANGE_ONLINE.value


@dataclasses.dataclass
class Keys:
    """A DEP's pair (two vaults, two regions) and a configured single key, all healthy when made."""

    dep: str
    first: str
    second: str
    configured: str


async def healthy_key(kv_control: SandboxKeyVaultControl, location: str) -> str:
    vault = unique("ha")
    await kv_control.create_vault(vault, location=location, purge_protection=True)
    await kv_control.grant(vault, "ckey-automation@contoso.com", ["all"])
    await kv_control.grant(vault, EXO, ["get", "wrapKey", "unwrapKey"])
    created = await kv_control.create_key(vault, "exo-key")
    # A DEP names versioned URIs (what New-DataEncryptionPolicy was given); the inventory keeps them versionless.
    return str(created["kid"])


@pytest.fixture
async def keys(kv_control: SandboxKeyVaultControl, store: Store) -> Keys:
    made = Keys(
        dep=unique("Dep"),
        first=await healthy_key(kv_control, "eastus"),
        second=await healthy_key(kv_control, "westus"),
        configured=await healthy_key(kv_control, "northeurope"),
    )
    now = datetime.now(UTC)
    dep = DepView(
        workload="exchange", name=made.dep, guid=str(uuid.uuid4()), azure_key_ids=[made.first, made.second], seen_at=now
    )
    await InventoryStore(store).record_deps("exchange", [dep], now, "test")
    return made


AlertingWorker = Callable[[list[str], str | None], AbstractAsyncContextManager[Worker]]
"""A worker with the given configured Exchange keys and alert webhook URL."""


@pytest.fixture
def alerting_worker(
    client: Client,
    op_settings: Settings,
    store: Store,
    keyvault: KeyVaultGateway,
    azure: AzureConnection,
    tenant_server: SandboxM365Server,
) -> AlertingWorker:
    """A product worker whose configured keys and alert webhook the test chooses."""

    @asynccontextmanager
    async def make(configured: list[str], webhook: str | None) -> AsyncIterator[Worker]:
        gateways = dataclasses.replace(
            product_gateways(op_settings, store, keyvault, azure),
            dep_keys={Workload.EXCHANGE: configured} if configured else {},
            alert_webhook_url=webhook,
        )
        async with Worker(
            client,
            task_queue=op_settings.temporal_task_queue,
            workflows=all_workflows(),
            activities=build_activities(gateways),
            workflow_failure_exception_types=WORKFLOW_FAILURE_TYPES,
        ) as worker:
            yield worker

    return make


async def run_health(client: Client, settings: Settings, store: Store) -> tuple[OperationRecord, list[str]]:
    """Start ``keyvault.health`` over every key in use as the schedule does; its record and audit actions."""
    op_id = unique("health-in-use")
    handle = await client.start_workflow(
        KeyVaultHealthWorkflow.run,
        KeyVaultHealthInput(scope=HealthScope.IN_USE),
        id=op_id,
        task_queue=settings.temporal_task_queue,
        memo={"kind": "keyvault.health", "started_by": "schedule:test"},
    )
    with suppress(WorkflowFailureError):
        await handle.result()
    record = await store.get_operation(op_id)
    assert record is not None, "the workflow's first activity writes the record"
    return record, [e.action for e in await store.list_audit(operation_id=op_id)]


def versionless(uri: str) -> str:
    return uri.rsplit("/", 1)[0]


async def test_in_use_checks_the_inventory_deps_and_the_configured_keys_and_records_each_key(
    client: Client, op_settings: Settings, store: Store, keys: Keys, alerting_worker: AlertingWorker
) -> None:
    async with alert_receiver() as receiver, alerting_worker([keys.configured], receiver.url):
        record, actions = await run_health(client, op_settings, store)
    assert record.state.value == "succeeded", record.error
    assert record.started_by == "schedule:test"
    assert record.params == {"workload": "exchange", "keys": [], "scope": "in_use"}
    lines = record.result["lines"] if record.result else []
    checked = {line["key"] for line in lines}
    # Every key of the DEP and the configured one; the DEP's pair also as a pair (two vaults, two regions).
    assert {keys.first, keys.second, keys.configured} < checked
    pair = [line["rule"] for line in lines if " + " in line["key"]]
    assert pair == ["two-keys-two-vaults", "two-keys-two-regions"]
    health = {k.key_id: k for k in await InventoryStore(store).keys()}
    for uri in (keys.first, keys.second, keys.configured):
        assert health[versionless(uri)].healthy is True
        assert health[versionless(uri)].problems == []
        assert health[versionless(uri)].source == record.id
    assert "alert.raised" not in actions
    assert receiver.attempts == 0


async def test_a_broken_rule_fails_the_check_alerts_and_marks_the_key_unhealthy(
    client: Client,
    op_settings: Settings,
    store: Store,
    keys: Keys,
    kv_control: SandboxKeyVaultControl,
    keyvault: KeyVaultGateway,
    alerting_worker: AlertingWorker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = versionless(keys.first)
    vault_url, name = first.split("/keys/")
    await keyvault.key_client(vault_url).update_key_properties(name, enabled=False)
    await kv_control.revoke(KeyUri.parse(keys.second).vault, EXO, ["unwrapKey"])

    caplog.set_level(logging.WARNING, logger="ckey.alerts")
    # The receiver is down for the first attempt (503): Temporal retries the webhook activity, the second lands.
    async with alert_receiver(503) as receiver, alerting_worker([keys.configured], receiver.url):
        record, actions = await run_health(client, op_settings, store)

    assert record.state.value == "failed"
    assert record.error is not None
    assert record.error.startswith(
        "keyvault-health-failed: 2 rule(s) broken: key-enabled, service-principal-get-wrap-unwrap"
    ), record.error
    assert record.result is not None and record.result["ok"] is False  # the report is kept with the failure
    health = {k.key_id: k for k in await InventoryStore(store).keys()}
    assert (health[first].healthy, health[first].problems) == (False, ["key-enabled"])
    second = health[versionless(keys.second)]
    assert (second.healthy, second.problems) == (False, ["service-principal-get-wrap-unwrap"])
    assert health[versionless(keys.configured)].healthy is True
    # The alert: the audit trail, the log and the webhook, each naming the rules.
    assert "alert.raised" in actions and "alert.webhook.failed" not in actions
    raised = next(e for e in await store.list_audit(operation_id=record.id) if e.action == "alert.raised")
    assert raised.detail["rules"] == ["key-enabled", "service-principal-get-wrap-unwrap"]
    assert any("ALERT keyvault-health-failed" in r.getMessage() and record.id in r.getMessage() for r in caplog.records)
    assert receiver.attempts == 2
    (posted,) = receiver.received
    assert posted["rule"] == "keyvault-health-failed" and posted["operation_id"] == record.id
    assert posted["summary"] == record.error.removeprefix("keyvault-health-failed: ")
    assert {f["rule"] for f in posted["findings"]} == {"key-enabled", "service-principal-get-wrap-unwrap"}


async def test_a_webhook_that_refuses_the_alert_does_not_change_the_outcome(
    client: Client,
    op_settings: Settings,
    store: Store,
    keys: Keys,
    kv_control: SandboxKeyVaultControl,
    alerting_worker: AlertingWorker,
) -> None:
    await kv_control.revoke(KeyUri.parse(keys.second).vault, EXO, ["wrapKey"])
    # 400 is the receiver refusing the alert for good: not retried, recorded, and the check ends as it found.
    async with alert_receiver(400) as receiver, alerting_worker([], receiver.url):
        record, actions = await run_health(client, op_settings, store)
    assert record.state.value == "failed"
    assert record.error is not None and "service-principal-get-wrap-unwrap" in record.error
    assert receiver.attempts == 1 and receiver.received == []
    assert "alert.raised" in actions and "alert.webhook.failed" in actions
    failed = next(e for e in await store.list_audit(operation_id=record.id) if e.action == "alert.webhook.failed")
    assert "400" in failed.detail["error"]


async def test_no_key_in_use_is_refused_by_name(
    client: Client, op_settings: Settings, store: Store, alerting_worker: AlertingWorker
) -> None:
    async with alerting_worker([], None):
        record, actions = await run_health(client, op_settings, store)
    assert record.state.value == "failed"
    assert record.error is not None and record.error.startswith("keys-required: no keys in use"), record.error
    assert "alert.raised" not in actions


async def test_named_keys_and_in_use_together_are_refused_before_anything_starts(
    api: httpx.AsyncClient, auth: Callable[..., dict[str, str]]
) -> None:
    key = "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01"
    answer = await api.post(
        "/api/operations",
        json={"kind": "keyvault.health", "params": {"keys": [key], "scope": "in_use"}},
        headers=auth(Role.OPERATOR),
    )
    assert answer.status_code == 422, answer.text
    assert "health-keys-or-in-use" in answer.text
    unknown = await api.post(
        "/api/operations",
        json={"kind": "keyvault.health", "params": {"scope": "everything"}},
        headers=auth(Role.OPERATOR),
    )
    assert unknown.status_code == 422, unknown.text


async def test_a_key_that_cannot_be_checked_fails_the_check_and_alerts(
    client: Client, op_settings: Settings, store: Store, keys: Keys, alerting_worker: AlertingWorker
) -> None:
    gone = f"https://{unique('gone')}.vault.azure.net/keys/exo-key"
    async with alert_receiver() as receiver, alerting_worker([gone], receiver.url):
        record, actions = await run_health(client, op_settings, store)
        posted = await receiver.first()
    # The operation fails with the service's answer (no vault), as before; now the operators hear of it too.
    assert record.state.value == "failed"
    assert record.error is not None and not record.error.startswith("keyvault-health-failed"), record.error
    assert "alert.raised" in actions
    assert posted["rule"] == "keyvault-health-incomplete" and posted["operation_id"] == record.id
    assert [f["target"] for f in posted["findings"]] == [gone]
    assert gone in posted["summary"]


async def test_the_alerting_run_replays(
    client: Client,
    op_settings: Settings,
    store: Store,
    keys: Keys,
    kv_control: SandboxKeyVaultControl,
    alerting_worker: AlertingWorker,
) -> None:
    await kv_control.revoke(KeyUri.parse(keys.first).vault, EXO, ["get"])
    async with alert_receiver() as receiver, alerting_worker([keys.configured], receiver.url):
        record, _ = await run_health(client, op_settings, store)
    assert record.state.value == "failed"
    history = await client.get_workflow_handle(record.id).fetch_history()
    replayed = await Replayer(workflows=all_workflows(), data_converter=pydantic_data_converter).replay_workflow(
        history
    )
    assert replayed.replay_failure is None
