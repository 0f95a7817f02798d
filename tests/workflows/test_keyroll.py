"""key.roll and key.rotation.watch against the sandbox Key Vault and a sandbox tenant of their own.

The tenant of these tests is theirs alone (its own port and database, the session's Key Vault): a roll refreshes the
mailbox DEPs, the multi-workload DEP and the SharePoint geos it finds, tenant-wide, and must not meet another test's.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.keyvault.keys import KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import build_activities
from ckey.api.app import create_app
from ckey.azure import AzureConnection
from ckey.config import Settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import MAILBOX, M365Gateway, build_transport
from ckey.models import KeyUri, Role, ServicePrincipal, SpoKeyRef
from ckey.operations import OperationRecord, OperationState
from ckey.schedules import KEY_ROTATION_WATCH, SCHEDULES, build_schedule
from ckey.store import Store
from ckey.store.keyroll import KeyRollStore
from ckey.store.targets import TargetStore
from contracts.keyroll import ROLL_TAG, KeyRollInput, KeyRotationWatchInput, RollSettings
from sandbox.keyvault import SandboxKeyVaultControl, SandboxKeyVaultServer
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from sandbox.m365.tenant import TenantSpec
from tests.conftest import free_port
from tests.workflows.conftest import product_gateways, unique
from tests.workflows.test_keyvault import Auth, Recorder
from worker import WORKFLOW_FAILURE_TYPES
from workflows import all_workflows
from workflows.keyroll import KeyRollWorkflow, KeyRotationWatchWorkflow

AUTOMATION = "ckey-automation@contoso.com"
PRINCIPALS = [p.value for p in ServicePrincipal]
"""Exchange Online, SharePoint Online and the Microsoft 365 data-at-rest principal."""
SERVICE = ["get", "wrapKey", "unwrapKey"]
ROLL_TENANT = TenantSpec(
    mailboxes=12,
    mail_users=0,
    sites_per_geo=3,
    cloud_pcs=0,
    stuck_mailboxes=0,
    geos=["NAM", "EUR", "APC", "JPN", "GBR", "CAN"],
)
ROLL_SPEED = 2_000_000.0
NAM, EUR = "https://contoso-admin.sharepoint.com", "https://contosoeur-admin.sharepoint.com"
APC = "https://contosoapc-admin.sharepoint.com"
JPN = "https://contosojpn-admin.sharepoint.com"
GBR = "https://contosogbr-admin.sharepoint.com"
CAN = "https://contosocan-admin.sharepoint.com"


# A tenant of the roll tests' own ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def roll_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def roll_tenant(
    stack_settings: Settings,
    keyvault_server: SandboxKeyVaultServer,
    roll_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SandboxM365Server]:
    settings = stack_settings.model_copy(update={"sandbox_m365_port": roll_port})
    database = tmp_path_factory.mktemp("roll-tenant") / "tenant.db"
    with SandboxM365Server(
        settings, seed=ROLL_TENANT, speed=ROLL_SPEED, database_url=f"sqlite+aiosqlite:///{database}"
    ) as server:
        yield server


@pytest.fixture
def op_settings(stack_settings: Settings, task_queue: str, roll_port: int) -> Settings:
    """The roll tests' settings: their tenant, fast polls, a short window for the multi-workload DEP."""
    return stack_settings.model_copy(
        update={
            "temporal_task_queue": task_queue,
            "sandbox_m365_port": roll_port,
            "exchange_poll_interval": timedelta(seconds=1),
            "key_roll_poll_interval": timedelta(seconds=1),
            "key_roll_m365_window": timedelta(seconds=20),
            "spo_geo_admin_urls": {"NAM": NAM, "EUR": EUR, "APC": APC, "JPN": JPN, "GBR": GBR, "CAN": CAN},
        }
    )


@pytest.fixture
async def roll_azure(op_settings: Settings, keyvault_server: SandboxKeyVaultServer) -> AsyncIterator[AzureConnection]:
    async with AzureConnection(op_settings) as connection:
        yield connection


@pytest.fixture
def roll_m365(op_settings: Settings, roll_azure: AzureConnection, roll_tenant: SandboxM365Server) -> M365Gateway:
    return M365Gateway(build_transport(op_settings, roll_azure))


@pytest.fixture
async def roll_keyvault(roll_azure: AzureConnection) -> AsyncIterator[KeyVaultGateway]:
    gateway = KeyVaultGateway(roll_azure)
    try:
        yield gateway
    finally:
        await gateway.close()


@pytest.fixture
async def roll_control(op_settings: Settings, roll_tenant: SandboxM365Server) -> AsyncIterator[SandboxM365Control]:
    async with SandboxM365Control.from_settings(op_settings) as control:
        yield control


@pytest.fixture
async def roll_worker(
    client: Client, op_settings: Settings, store: Store, roll_keyvault: KeyVaultGateway, roll_azure: AzureConnection
) -> AsyncIterator[Worker]:
    gateways = product_gateways(op_settings, store, roll_keyvault, roll_azure)
    async with Worker(
        client,
        task_queue=op_settings.temporal_task_queue,
        workflows=all_workflows(),
        activities=build_activities(gateways),
        workflow_failure_exception_types=WORKFLOW_FAILURE_TYPES,
    ) as worker:
        yield worker


@pytest.fixture
async def roll_api(
    client: Client, op_settings: Settings, store: Store, roll_keyvault: KeyVaultGateway, roll_m365: M365Gateway
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(op_settings, client=client, store=store, keyvault=roll_keyvault, m365=roll_m365)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as http:
        yield http


# Helpers ------------------------------------------------------------------------------------------------------------


async def two_keys(kv_control: SandboxKeyVaultControl) -> tuple[KeyUri, KeyUri]:
    """A key in each of two fresh vaults in two regions; every Microsoft 365 principal may use both."""
    uris = []
    for region in ("eastus", "westus"):
        vault = unique("rk")
        await kv_control.create_vault(vault, location=region, purge_protection=True)
        await kv_control.grant(vault, AUTOMATION, ["all"])
        await kv_control.create_key(vault, "cmk")
        for principal in PRINCIPALS:
            await kv_control.grant(vault, principal, SERVICE)
        uris.append(KeyUri.parse(f"https://{vault}.vault.azure.net/keys/cmk"))
    return uris[0], uris[1]


async def start(api: httpx.AsyncClient, headers: dict[str, str], kind: str, params: dict[str, Any]) -> httpx.Response:
    return await api.post("/api/operations", json={"kind": kind, "params": params}, headers=headers)


async def ended(api: httpx.AsyncClient, headers: dict[str, str], op_id: str, seconds: float = 120) -> dict[str, Any]:
    """The operation's record once it has ended."""
    body: dict[str, Any] = {}
    for _ in range(int(seconds * 10)):
        body = (await api.get(f"/api/operations/{op_id}", headers=headers)).json()
        if body.get("state") in ("succeeded", "failed", "cancelled") and body.get("ended_at"):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{op_id} did not end: {body}")


async def events(api: httpx.AsyncClient, headers: dict[str, str], op_id: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = (await api.get(f"/api/operations/{op_id}/events", headers=headers)).json()
    return got


async def versions(keyvault: KeyVaultGateway, key: KeyUri) -> list[str]:
    return [v.version for v in await keyvault.key_versions(key)]


async def disable_version(keyvault: KeyVaultGateway, key: KeyUri, version: str) -> None:
    """Take an old version out of service (the test's proof only: ckey never disables a version)."""
    await keyvault.key_client(key.vault_url).update_key_properties(key.name, version, enabled=False)


async def registered(m365: M365Gateway, admin_url: str, seconds: float = 60) -> dict[str, Any]:
    for _ in range(int(seconds * 10)):
        policy = await m365.get_spo_data_encryption_policy(admin_url)
        if policy.state == "Registered":
            return policy.model_dump()
        await asyncio.sleep(0.1)
    raise AssertionError(f"{admin_url} never Registered")


async def mailbox_dep_with_data(
    m365: M365Gateway, control: SandboxM365Control, keys: list[str], count: int
) -> tuple[str, list[str]]:
    """A new mailbox DEP, assigned to ``count`` mailboxes nobody else uses, moved and encrypted."""
    name = f"ROLL_{uuid.uuid4().hex[:8]}"
    await m365.new_data_encryption_policy(name, keys, "key roll test")
    taken = {b.identity for b in await m365.get_mailbox(result_size="Unlimited") if b.data_encryption_policy}
    free = sorted(b.identity for b in await m365.get_mailbox(result_size="Unlimited") if b.identity not in taken)
    boxes = free[:count]
    for box in boxes:
        await m365.set_mailbox(box, name)
    for _ in range(600):
        if all([(await control.mailbox(b))["is_encrypted"] for b in boxes]):
            return name, boxes
        await asyncio.sleep(0.1)
    raise AssertionError("the mailboxes never encrypted")


# key.roll -----------------------------------------------------------------------------------------------------------


async def test_a_roll_refreshes_every_workload_onto_one_new_version_and_the_data_opens_under_it(
    roll_tenant: SandboxM365Server,
    roll_api: httpx.AsyncClient,
    roll_worker: Worker,
    auth: Auth,
    roll_m365: M365Gateway,
    roll_keyvault: KeyVaultGateway,
    roll_control: SandboxM365Control,
    kv_control: SandboxKeyVaultControl,
    store: Store,
    record_history: Recorder,
) -> None:
    operator = auth(Role.OPERATOR)
    rolled, other = await two_keys(kv_control)
    keys = [rolled.versionless, other.versionless]
    dep, boxes = await mailbox_dep_with_data(roll_m365, roll_control, keys, 2)
    multi = f"MW_{uuid.uuid4().hex[:8]}"
    await roll_m365.new_m365_data_at_rest_encryption_policy(multi, keys)
    before = await versions(roll_keyvault, rolled)
    other_before = await versions(roll_keyvault, other)
    await roll_m365.register_spo_data_encryption_policy(
        NAM,
        SpoKeyRef(vault=rolled.vault, key=rolled.name, version=before[-1]),
        SpoKeyRef(vault=other.vault, key=other.name, version=other_before[-1]),
    )
    await registered(roll_m365, NAM)

    # Nothing named: ckey finds the mailbox DEP, the multi-workload DEP and the geo in the tenant.
    started = await start(roll_api, operator, "key.roll", {"vault": rolled.vault, "key": rolled.name})
    assert started.status_code == 202, started.text
    op_id = started.json()["id"]
    body = await ended(roll_api, operator, op_id)
    assert body["state"] == "succeeded", body["error"]
    result = body["result"]

    # One new version, tagged with the roll; the old ones are still there and enabled; the other key untouched.
    after = await roll_keyvault.key_versions(rolled)
    assert [v.version for v in after[:-1]] == before and all(v.enabled for v in after)
    assert after[-1].tags[ROLL_TAG] == op_id and after[-1].expires_on is None
    assert result["version"] == after[-1].version and result["created"] is True
    assert await versions(roll_keyvault, other) == other_before
    states = {(w["workload"], w["target"]): w["state"] for w in result["workloads"]}
    assert states == {
        ("mailbox_dep", dep): "refreshed",
        ("multi_workload_dep", multi): "in_effect",
        ("spo_geo", "NAM"): "registered",
    }
    trail = await events(roll_api, operator, op_id)
    plan = next(e for e in trail if e["action"] == "key.roll.plan")["detail"]
    assert (plan["mailbox_deps"], plan["multi_workload_deps"], plan["spo_geos"]) == ([dep], [multi], ["NAM (Primary)"])
    assert plan["named"] is False and "LastRefreshedDateTime" in plan["multi_workload_follow"]
    created = [e["outcome"] for e in trail if e["action"] == "keyvault.key.version.create"]
    assert created == ["intent", "ok"]
    # The inventory's geo names the roll as the operation that moved it last, on the new version.
    shown = (await roll_api.get("/api/spo/geos/NAM", headers=operator)).json()
    assert shown["operation_id"] == op_id and shown["state"] == "Registered", shown
    assert any(after[-1].version in uri for uri in shown["key_uris"]), shown
    geo = await roll_m365.get_spo_data_encryption_policy(NAM)
    assert (geo.state, geo.primary_key_version, geo.secondary_key_version) == (
        "Registered",
        after[-1].version,
        other_before[-1],
    )
    in_effect = {(r.workload, r.target): r.version for r in await KeyRollStore(store).in_effect(rolled.versionless)}
    assert in_effect == {
        ("mailbox_dep", dep.lower()): after[-1].version,
        ("multi_workload_dep", multi.lower()): after[-1].version,
        ("spo_geo", "nam"): after[-1].version,
    }

    # The multi-workload DEP's key is wrapped by the new version (the sandbox has no items for it to read).
    multi_guid = (await roll_m365.get_m365_data_at_rest_encryption_policy(multi))[0].guid
    assert multi_guid is not None
    multi_row = await roll_tenant.sandbox.core.dep(multi_guid)
    assert multi_row is not None and multi_row.key_versions[0] == after[-1].uri

    # The sandbox's data opens through the first key, whose only version in service is now the new one.
    for version in before:
        await disable_version(roll_keyvault, rolled, version)
    for box in boxes:
        items = await roll_control.mailbox_items(box)
        assert (items["readable"], items["path"]) == (True, "customer-key-1"), items
    site = await roll_control.site_items("https://contoso.sharepoint.com/sites/site-001")
    assert (site["readable"], site["path"]) == (True, "customer-key-1"), site
    await record_history(op_id, "key_roll")


async def test_a_second_roll_touching_a_rolling_geo_is_refused_and_changes_nothing(
    roll_api: httpx.AsyncClient,
    roll_worker: Worker,
    auth: Auth,
    roll_m365: M365Gateway,
    roll_keyvault: KeyVaultGateway,
    roll_control: SandboxM365Control,
    kv_control: SandboxKeyVaultControl,
) -> None:
    operator = auth(Role.OPERATOR)
    primary, secondary = await two_keys(kv_control)
    p_versions, s_versions = await versions(roll_keyvault, primary), await versions(roll_keyvault, secondary)
    await roll_m365.register_spo_data_encryption_policy(
        EUR,
        SpoKeyRef(vault=primary.vault, key=primary.name, version=p_versions[-1]),
        SpoKeyRef(vault=secondary.vault, key=secondary.name, version=s_versions[-1]),
    )
    await registered(roll_m365, EUR)
    await roll_control.set_faults(stalled_geos=["EUR"])
    try:
        first = await start(
            roll_api, operator, "key.roll", {"vault": primary.vault, "key": primary.name, "geos": ["EUR"]}
        )
        assert first.status_code == 202, first.text
        for _ in range(600):
            if (await roll_m365.get_spo_data_encryption_policy(EUR)).state == "Rolling":
                break
            await asyncio.sleep(0.1)
        calls_before = len(await roll_control.calls(cmdlet="Update-SPODataEncryptionPolicy"))

        # ckey's own roll holds the geo: the second is refused by the API, before anything is created.
        second = await start(
            roll_api, operator, "key.roll", {"vault": secondary.vault, "key": secondary.name, "geos": ["EUR"]}
        )
        assert second.status_code == 409, second.text
        assert second.json()["rule"] == "targets-leased"
        assert first.json()["id"] in second.json()["holders"]

        # Nothing named: the roll finds the geo once it runs, and the first roll's lease on it refuses it.
        third = await start(roll_api, operator, "key.roll", {"vault": secondary.vault, "key": secondary.name})
        assert third.status_code == 202, third.text
        body = await ended(roll_api, operator, third.json()["id"])
        assert body["state"] == "failed" and body["error"].startswith("targets-leased"), body["error"]
        assert await versions(roll_keyvault, secondary) == s_versions
        assert len(await roll_control.calls(cmdlet="Update-SPODataEncryptionPolicy")) == calls_before
    finally:
        await roll_control.set_faults(stalled_geos=[])
    body = await ended(roll_api, operator, first.json()["id"])
    assert body["state"] == "succeeded", body["error"]
    assert [(w["target"], w["state"]) for w in body["result"]["workloads"]] == [("EUR", "registered")]


async def test_a_geo_rolling_outside_ckey_is_refused_before_any_version(
    roll_api: httpx.AsyncClient,
    roll_worker: Worker,
    auth: Auth,
    roll_m365: M365Gateway,
    roll_keyvault: KeyVaultGateway,
    roll_control: SandboxM365Control,
    kv_control: SandboxKeyVaultControl,
) -> None:
    operator = auth(Role.OPERATOR)
    primary, secondary = await two_keys(kv_control)
    p_versions, s_versions = await versions(roll_keyvault, primary), await versions(roll_keyvault, secondary)
    await roll_m365.register_spo_data_encryption_policy(
        APC,
        SpoKeyRef(vault=primary.vault, key=primary.name, version=p_versions[-1]),
        SpoKeyRef(vault=secondary.vault, key=secondary.name, version=s_versions[-1]),
    )
    await registered(roll_m365, APC)
    await roll_control.set_faults(stalled_geos=["APC"])
    try:
        # Someone rolls the primary key by hand (Update-SPODataEncryptionPolicy): the geo stays Rolling.
        made = await kv_control.create_key(primary.vault, primary.name)
        await roll_m365.update_spo_data_encryption_policy(
            APC, "Primary", SpoKeyRef(vault=primary.vault, key=primary.name, version=made["kid"].rsplit("/", 1)[-1])
        )
        assert (await roll_m365.get_spo_data_encryption_policy(APC)).state == "Rolling"
        calls_before = len(await roll_control.calls(cmdlet="Update-SPODataEncryptionPolicy"))
        started = await start(
            roll_api, operator, "key.roll", {"vault": secondary.vault, "key": secondary.name, "geos": ["APC"]}
        )
        body = await ended(roll_api, operator, started.json()["id"])
        assert body["state"] == "failed" and body["error"].startswith("spo-geo-rolling"), body["error"]
        assert "APC is Rolling" in body["error"]
        assert await versions(roll_keyvault, secondary) == s_versions
        assert len(await roll_control.calls(cmdlet="Update-SPODataEncryptionPolicy")) == calls_before
    finally:
        await roll_control.set_faults(stalled_geos=[])


async def test_adopting_a_version_that_expires_or_is_not_the_newest_is_refused_and_nothing_is_refreshed(
    roll_api: httpx.AsyncClient,
    roll_worker: Worker,
    auth: Auth,
    roll_m365: M365Gateway,
    roll_keyvault: KeyVaultGateway,
    roll_control: SandboxM365Control,
    kv_control: SandboxKeyVaultControl,
) -> None:
    operator = auth(Role.OPERATOR)
    rolled, other = await two_keys(kv_control)
    dep, _ = await mailbox_dep_with_data(roll_m365, roll_control, [rolled.versionless, other.versionless], 1)
    [first] = await versions(roll_keyvault, rolled)
    expiring = await roll_keyvault.key_client(rolled.vault_url).create_rsa_key(
        rolled.name, size=2048, expires_on=datetime(2030, 1, 1, tzinfo=UTC)
    )
    params = {"vault": rolled.vault, "key": rolled.name, "deps": [dep]}
    for version, rule in ((expiring.properties.version, "key-no-expiry"), (first, "adopt-newest-version")):
        started = await start(roll_api, operator, "key.roll", {**params, "adopt_version": version})
        body = await ended(roll_api, operator, started.json()["id"])
        assert body["state"] == "failed" and body["error"].startswith(rule), body["error"]
    assert [c for c in await roll_control.calls(cmdlet="Set-DataEncryptionPolicy") if c["identity"] == dep] == []
    assert await versions(roll_keyvault, rolled) == [first, expiring.properties.version]

    # A roll that creates its version gives it no expiry, whatever the current version carries.
    started = await start(roll_api, operator, "key.roll", params)
    body = await ended(roll_api, operator, started.json()["id"])
    assert body["state"] == "succeeded", body["error"]
    newest = (await roll_keyvault.key_versions(rolled))[-1]
    assert (newest.version, newest.expires_on) == (body["result"]["version"], None)


async def test_health_names_a_rotation_policy_that_would_give_a_key_an_expiry(
    roll_api: httpx.AsyncClient,
    roll_worker: Worker,
    auth: Auth,
    roll_keyvault: KeyVaultGateway,
    kv_control: SandboxKeyVaultControl,
) -> None:
    expiring, plain = await two_keys(kv_control)
    policy = KeyRotationPolicy(
        expires_in="P90D",
        lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P60D")],
    )
    await roll_keyvault.key_client(expiring.vault_url).update_key_rotation_policy(expiring.name, policy)
    started = await start(
        roll_api, auth(Role.OPERATOR), "keyvault.health", {"keys": [expiring.versionless, plain.versionless]}
    )
    body = await ended(roll_api, auth(Role.OPERATOR), started.json()["id"])
    assert body["state"] == "failed" and "key-rotation-policy-no-expiry" in body["error"], body["error"]
    broken = [(line["rule"], line["key"], line["detail"]) for line in body["result"]["lines"] if not line["ok"]]
    assert broken == [("key-rotation-policy-no-expiry", expiring.versionless, "expiryTime P90D")]


async def test_the_mailbox_week_counts_from_the_refresh_not_from_an_old_assignment(
    roll_api: httpx.AsyncClient,
    roll_worker: Worker,
    auth: Auth,
    roll_m365: M365Gateway,
    roll_control: SandboxM365Control,
    kv_control: SandboxKeyVaultControl,
    store: Store,
) -> None:
    operator = auth(Role.OPERATOR)
    rolled, other = await two_keys(kv_control)
    dep, [box] = await mailbox_dep_with_data(roll_m365, roll_control, [rolled.versionless, other.versionless], 1)
    # ckey assigned the DEP to the mailbox a month ago: the seed's week from that assignment is long past.
    month_ago = datetime.now(UTC) - timedelta(days=30)
    old = f"op-{uuid.uuid4()}"
    await store.create_operation(
        OperationRecord(
            id=old,
            kind="exchange.dep.assign",
            state=OperationState.SUCCEEDED,
            phase="done",
            started_by="alice@contoso.com",
            started_at=month_ago,
            updated_at=month_ago,
            dep=dep,
        )
    )
    targets = TargetStore(store)
    await targets.register(old, [box], 0, {box: MAILBOX})
    await targets.mark_all_assigned(old, month_ago)
    await roll_control.set_stuck([box])  # re-encrypting after the refresh, and not done yet
    started = await start(roll_api, operator, "key.roll", {"vault": rolled.vault, "key": rolled.name, "deps": [dep]})
    assert started.status_code == 202, started.text
    follow_up = None
    for _ in range(1200):
        follow_ups = [
            r for r in await store.list_operations(kind="exchange.encryption.verify", limit=1000) if r.dep == dep
        ]
        if follow_ups and follow_ups[0].phase == "following":
            follow_up = follow_ups[0]
            break
        await asyncio.sleep(0.1)
    assert follow_up is not None
    await asyncio.sleep(3)  # an escalation counted from the old assignment would be due at once
    during = await store.get_operation(follow_up.id)
    assert during is not None and during.escalations == [] and during.phase == "following", during
    await roll_control.set_stuck([box], stuck=False)
    body = await ended(roll_api, operator, started.json()["id"])
    assert body["state"] == "succeeded", body["error"]
    assert [(w["target"], w["escalated"]) for w in body["result"]["workloads"]] == [(dep, False)]


# The rotation watcher ----------------------------------------------------------------------------------------------


async def wait_status(client: Client, workflow_id: str, seconds: float = 120) -> WorkflowExecutionStatus | None:
    for _ in range(int(seconds * 10)):
        try:
            described = await client.get_workflow_handle(workflow_id).describe()
        except Exception:  # not started yet
            await asyncio.sleep(0.1)
            continue
        if described.status != WorkflowExecutionStatus.RUNNING:
            return described.status
        await asyncio.sleep(0.1)
    return None


async def test_the_watcher_adopts_a_version_made_by_hand_and_alerts_on_one_that_expires(
    client: Client,
    roll_api: httpx.AsyncClient,
    roll_worker: Worker,
    auth: Auth,
    op_settings: Settings,
    roll_m365: M365Gateway,
    roll_keyvault: KeyVaultGateway,
    roll_control: SandboxM365Control,
    kv_control: SandboxKeyVaultControl,
    store: Store,
    record_history: Recorder,
) -> None:
    operator = auth(Role.OPERATOR)
    rotated, other = await two_keys(kv_control)
    dep, boxes = await mailbox_dep_with_data(roll_m365, roll_control, [rotated.versionless, other.versionless], 1)
    # The key is also the multi-workload DEP's and the primary of a geo no other test registers.
    multi = f"MW_{uuid.uuid4().hex[:8]}"
    await roll_m365.new_m365_data_at_rest_encryption_policy(multi, [rotated.versionless, other.versionless])
    await roll_m365.register_spo_data_encryption_policy(
        GBR,
        SpoKeyRef(vault=rotated.vault, key=rotated.name, version=(await versions(roll_keyvault, rotated))[-1]),
        SpoKeyRef(vault=other.vault, key=other.name, version=(await versions(roll_keyvault, other))[-1]),
    )
    await registered(roll_m365, GBR)
    settings = op_settings.model_copy(
        update={"key_rotation_adopt": True, "key_rotation_watch_interval": timedelta(seconds=2)}
    )
    schedule = build_schedule(SCHEDULES[KEY_ROTATION_WATCH], settings)
    watch_id = f"{KEY_ROTATION_WATCH}-{uuid.uuid4().hex[:6]}"
    handle = await client.create_schedule(watch_id, schedule)
    try:
        # A first watch sees the DEP on its key's only version (the baseline).
        first_version = (await versions(roll_keyvault, rotated))[-1]
        for _ in range(600):
            seen = {(r.workload, r.target) for r in await KeyRollStore(store).in_effect(rotated.versionless)}
            if {("mailbox_dep", dep.lower()), ("multi_workload_dep", multi.lower())} <= seen:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no watch saw the DEP")

        # Someone rotates the key by hand: the watcher starts a roll that adopts it, nobody starts anything.
        made = await roll_keyvault.key_client(rotated.vault_url).rotate_key(rotated.name)
        new = made.properties.version or ""
        roll_id = f"key-roll-{rotated.vault}-{rotated.name}-{new}".lower()
        assert await wait_status(client, roll_id) == WorkflowExecutionStatus.COMPLETED
        body = await ended(roll_api, operator, roll_id)
        assert body["state"] == "succeeded", body["error"]
        assert body["started_by"].startswith("schedule:")
        assert body["result"]["created"] is False and body["result"]["version"] == new
        assert sorted((w["target"], w["state"]) for w in body["result"]["workloads"]) == sorted(
            [("GBR", "registered"), (dep, "refreshed"), (multi, "in_effect")]
        )
        assert await versions(roll_keyvault, rotated) == [first_version, new]  # nothing created besides
        in_effect = {
            (r.workload, r.target): r.version for r in await KeyRollStore(store).in_effect(rotated.versionless)
        }
        assert in_effect[("mailbox_dep", dep.lower())] == in_effect[("multi_workload_dep", multi.lower())] == new
        assert (await roll_m365.get_spo_data_encryption_policy(GBR)).primary_key_version == new
        await disable_version(roll_keyvault, rotated, first_version)
        items = await roll_control.mailbox_items(boxes[0])
        assert (items["readable"], items["path"]) == (True, "customer-key-1"), items
        site = await roll_control.site_items("https://contosogbr.sharepoint.com/sites/site-001")
        assert (site["readable"], site["path"]) == (True, "customer-key-1"), site
        refreshes = [c for c in await roll_control.calls(cmdlet="Set-DataEncryptionPolicy") if c["identity"] == dep]
        assert len(refreshes) == 1, refreshes
    finally:
        await handle.delete()

    # A version with an expiry is never adopted: the watch alerts instead.
    expiring = await roll_keyvault.key_client(rotated.vault_url).create_rsa_key(
        rotated.name, size=2048, expires_on=datetime(2030, 1, 1, tzinfo=UTC)
    )
    op_id = f"watch-{uuid.uuid4()}"
    watch = await client.execute_workflow(
        KeyRotationWatchWorkflow.run,
        KeyRotationWatchInput(adopt=True, roll=RollSettings(geo_admin_urls={"GBR": GBR})),
        id=op_id,
        task_queue=op_settings.temporal_task_queue,
    )
    mine = [p for p in watch.pending if p.key_id.lower() == rotated.versionless.lower()]
    assert [p.version for p in mine] == [expiring.properties.version]
    assert rotated.versionless in watch.alerted and not any(rotated.vault in s for s in watch.started)
    alerts = [e.detail for e in await store.list_audit(operation_id=op_id, limit=100) if e.action == "alert.raised"]
    assert [a["rule"] for a in alerts if rotated.versionless in a["summary"]] == ["key-rotation-version-expires"]
    await record_history(op_id, "key_rotation_watch")


async def test_a_rotation_policy_that_fires_is_adopted_by_the_watcher_on_every_workload(
    client: Client,
    roll_api: httpx.AsyncClient,
    roll_worker: Worker,
    auth: Auth,
    op_settings: Settings,
    roll_m365: M365Gateway,
    roll_keyvault: KeyVaultGateway,
    roll_control: SandboxM365Control,
    kv_control: SandboxKeyVaultControl,
    store: Store,
) -> None:
    """Key Vault rotates the key by itself (its policy fires on the vault's clock); nobody starts anything."""
    rotated, other = await two_keys(kv_control)
    dep, boxes = await mailbox_dep_with_data(roll_m365, roll_control, [rotated.versionless, other.versionless], 1)
    multi = f"MW_{uuid.uuid4().hex[:8]}"
    await roll_m365.new_m365_data_at_rest_encryption_policy(multi, [rotated.versionless, other.versionless])
    first_version = (await versions(roll_keyvault, rotated))[-1]
    await roll_m365.register_spo_data_encryption_policy(
        CAN,
        SpoKeyRef(vault=rotated.vault, key=rotated.name, version=first_version),
        SpoKeyRef(vault=other.vault, key=other.name, version=(await versions(roll_keyvault, other))[-1]),
    )
    await registered(roll_m365, CAN)
    # Rotate a day after each version's creation, and no expiry: a policy that keeps the Customer Key rules.
    policy = KeyRotationPolicy(
        lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P1D")]
    )
    await roll_keyvault.key_client(rotated.vault_url).update_key_rotation_policy(rotated.name, policy)
    settings = op_settings.model_copy(
        update={"key_rotation_adopt": True, "key_rotation_watch_interval": timedelta(seconds=2)}
    )
    handle = await client.create_schedule(
        f"{KEY_ROTATION_WATCH}-{uuid.uuid4().hex[:6]}", build_schedule(SCHEDULES[KEY_ROTATION_WATCH], settings)
    )
    try:
        for _ in range(600):  # a first watch takes the workloads' versions as its baseline
            seen = {(r.workload, r.target) for r in await KeyRollStore(store).in_effect(rotated.versionless)}
            if {("mailbox_dep", dep.lower()), ("multi_workload_dep", multi.lower())} <= seen:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("no watch saw the DEPs")

        # A day and a half later on the vault's clock, the policy has made exactly one new version.
        await kv_control.advance_clock(hours=36)
        made = await versions(roll_keyvault, rotated)
        assert made[:-1] == [first_version] and len(made) == 2, made
        new = made[-1]
        roll_id = f"key-roll-{rotated.vault}-{rotated.name}-{new}".lower()
        assert await wait_status(client, roll_id) == WorkflowExecutionStatus.COMPLETED
        body = await ended(roll_api, auth(Role.VIEWER), roll_id)
        assert body["state"] == "succeeded", body["error"]
        assert body["started_by"].startswith("schedule:") and body["result"]["created"] is False
        assert sorted((w["target"], w["state"]) for w in body["result"]["workloads"]) == sorted(
            [("CAN", "registered"), (dep, "refreshed"), (multi, "in_effect")]
        )
        in_effect = {
            (r.workload, r.target): r.version for r in await KeyRollStore(store).in_effect(rotated.versionless)
        }
        assert in_effect[("mailbox_dep", dep.lower())] == in_effect[("multi_workload_dep", multi.lower())] == new
        assert (await roll_m365.get_spo_data_encryption_policy(CAN)).primary_key_version == new
        # The data opens under the new version alone.
        await disable_version(roll_keyvault, rotated, first_version)
        items = await roll_control.mailbox_items(boxes[0])
        assert (items["readable"], items["path"]) == (True, "customer-key-1"), items
        site = await roll_control.site_items("https://contosocan.sharepoint.com/sites/site-001")
        assert (site["readable"], site["path"]) == (True, "customer-key-1"), site
    finally:
        await handle.delete()
        await roll_keyvault.key_client(rotated.vault_url).update_key_rotation_policy(
            rotated.name, KeyRotationPolicy(lifetime_actions=[])
        )


# A worker killed in the roll's longest phase ------------------------------------------------------------------------


async def test_killing_the_worker_while_the_roll_follows_its_mailboxes_ends_it_once(
    env: WorkflowEnvironment,
    client: Client,
    op_settings: Settings,
    store: Store,
    roll_m365: M365Gateway,
    roll_keyvault: KeyVaultGateway,
    roll_control: SandboxM365Control,
    kv_control: SandboxKeyVaultControl,
    tmp_path: Path,
) -> None:
    rolled, other = await two_keys(kv_control)
    dep, boxes = await mailbox_dep_with_data(roll_m365, roll_control, [rolled.versionless, other.versionless], 2)
    before = await versions(roll_keyvault, rolled)
    # One mailbox's move never finishes: after the refresh the roll follows it until it is let go.
    await roll_control.set_stuck([boxes[0]])
    worker_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CKEY_")},
        "CKEY_DATA_DIR": str(op_settings.data_dir),
        "CKEY_SANDBOX": "true",
        "CKEY_DATABASE_URL": str(store.engine.url),
        "CKEY_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "CKEY_TEMPORAL_TASK_QUEUE": op_settings.temporal_task_queue,
        "CKEY_SANDBOX_KEYVAULT_PORT": str(op_settings.sandbox_keyvault_port),
        "CKEY_SANDBOX_M365_PORT": str(op_settings.sandbox_m365_port),
        "CKEY_SCHEDULES": "false",
        "CKEY_AZURE_CLIENT_ID": str(op_settings.azure_client_id),
        "CKEY_AZURE_CLIENT_SECRET": op_settings.azure_client_secret.get_secret_value()
        if op_settings.azure_client_secret
        else "",
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }

    def start_worker(log: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env=worker_env,
            cwd=tmp_path,
            stdout=open(tmp_path / log, "wb"),
            stderr=subprocess.STDOUT,
        )

    first = start_worker("worker-1.log")
    op_id = f"op-{uuid.uuid4()}"
    handle = await client.start_workflow(
        KeyRollWorkflow.run,
        KeyRollInput(
            vault=rolled.vault,
            key=rolled.name,
            deps=[dep],
            geo_admin_urls=op_settings.spo_geo_admin_urls,
            poll_interval=timedelta(seconds=1),
            exchange_poll_interval=timedelta(seconds=1),
        ),
        id=op_id,
        task_queue=op_settings.temporal_task_queue,
    )
    started_at = (await handle.describe()).start_time
    try:
        for _ in range(3000):  # the worker starts on a machine others share: a bound on a hang, not a timing
            follow_ups = await store.list_operations(kind="exchange.encryption.verify", limit=1000)
            # Killed while the follow-up follows (its round heartbeats: a second worker takes it over within 10 s).
            if any(r.dep == dep and r.started_at >= started_at and r.phase == "following" for r in follow_ups):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError((tmp_path / "worker-1.log").read_text()[-3000:])
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    record = await store.get_operation(op_id)
    assert record is not None and record.phase == "refreshing", record

    second = start_worker("worker-2.log")
    await roll_control.set_stuck([boxes[0]], stuck=False)
    try:
        result = await asyncio.wait_for(handle.result(), timeout=float(os.environ.get("KILL_TIMEOUT", "240")))
    except TimeoutError:
        raise AssertionError((tmp_path / "worker-2.log").read_text()[-3000:]) from None
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    # One new version, one refresh, one follow-up: the roll ended once.
    after = await roll_keyvault.key_versions(rolled)
    assert [v.version for v in after] == [*before, result.version]
    assert after[-1].tags[ROLL_TAG] == op_id
    refreshes = [c for c in await roll_control.calls(cmdlet="Set-DataEncryptionPolicy") if c["identity"] == dep]
    assert len(refreshes) == 1, refreshes
    assert [(w.target, w.state, w.detail["encrypted"], w.detail["total"]) for w in result.workloads] == [
        (dep, "refreshed", 2, 2)
    ]
    ended_record = await store.get_operation(op_id)
    assert ended_record is not None and ended_record.state.value == "succeeded"
    follow_ups = [
        r
        for r in await store.list_operations(kind="exchange.encryption.verify", limit=1000)
        if r.dep == dep and r.started_at >= ended_record.started_at
    ]
    assert [r.state.value for r in follow_ups] == ["succeeded"]


# A geo that stops advancing during a roll (time-skipping server) ---------------------------------------------------


async def test_a_geo_that_stops_rolling_is_escalated_once_after_the_stall_deadline(
    time_env: WorkflowEnvironment,
    op_settings: Settings,
    store: Store,
    roll_m365: M365Gateway,
    roll_keyvault: KeyVaultGateway,
    roll_azure: AzureConnection,
    roll_control: SandboxM365Control,
    kv_control: SandboxKeyVaultControl,
    task_queue: str,
) -> None:
    primary, secondary = await two_keys(kv_control)
    geo = "JPN"  # a geo no other test of the roll tenant registers
    admin_url = op_settings.spo_geo_admin_urls[geo]
    p_versions, s_versions = await versions(roll_keyvault, primary), await versions(roll_keyvault, secondary)
    await roll_m365.register_spo_data_encryption_policy(
        admin_url,
        SpoKeyRef(vault=primary.vault, key=primary.name, version=p_versions[-1]),
        SpoKeyRef(vault=secondary.vault, key=secondary.name, version=s_versions[-1]),
    )
    await registered(roll_m365, admin_url)
    await roll_control.set_faults(stalled_geos=[geo])
    gateways = product_gateways(op_settings, store, roll_keyvault, roll_azure)
    op_id = f"op-{uuid.uuid4()}"
    stall = timedelta(days=2)
    try:
        async with Worker(
            time_env.client,
            task_queue=task_queue,
            workflows=[KeyRollWorkflow],
            activities=build_activities(gateways),
        ):
            result = await time_env.client.execute_workflow(
                KeyRollWorkflow.run,
                KeyRollInput(
                    vault=secondary.vault,
                    key=secondary.name,
                    geos=[geo],
                    geo_admin_urls=op_settings.spo_geo_admin_urls,
                    poll_interval=timedelta(hours=1),
                    spo_stall_after=stall,
                ),
                id=op_id,
                task_queue=task_queue,
                memo={"started_by": "alice@contoso.com"},
            )
    finally:
        await roll_control.set_faults(stalled_geos=[])
    [outcome] = result.workloads
    assert (outcome.target, outcome.state, outcome.escalated) == (geo, "stalled", True)
    assert outcome.detail == {"key_type": "Secondary", "percent": 0}
    record = await store.get_operation(op_id)
    assert record is not None and record.state.value == "succeeded"
    (escalation,) = record.escalations
    assert escalation.subjects == [geo] and "has not advanced for 2 days" in escalation.reason
    assert stall <= escalation.at - record.started_at < stall + timedelta(hours=2)
    assert record.ended_at is not None and 2 * stall <= record.ended_at - record.started_at < 2 * stall + timedelta(
        hours=3
    )
