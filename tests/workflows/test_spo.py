"""spo.dep.register and spo.dep.restore against a sandbox tenant of their own.

Registering a geo changes it for every later test of the tenant, so these tests run on a tenant of this module (its
own database and port) with geos of its own, at a speed where a geo's four sites take a few real seconds: the
follow-up sees the percent rise. The stall runs on the time-skipping server, the worker kill on the dev server with a
worker process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities import build_activities
from activities.spo import SpoActivities
from ckey.api.app import create_app
from ckey.azure import AzureConnection
from ckey.config import Settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway, build_transport
from ckey.models import Role, ServicePrincipal
from ckey.store import Store
from ckey.store.spo import SpoGeoStore
from contracts.spo import RefreshSpoGeosInput, SpoDepRegisterParams
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from sandbox.m365.tenant import TenantSpec
from tests.conftest import free_port
from tests.workflows.conftest import product_gateways, unique
from tests.workflows.test_keyvault import Auth, Recorder, run_operation
from workflows import all_workflows
from workflows.spo import SpoDepRegisterWorkflow, build_geo_input

SPO = ServicePrincipal.SHAREPOINT_ONLINE.value
GEOS = ["NAM", "EUR", "APC", "CAN", "JPN", "GBR", "AUS"]
"""NAM and EUR register together; APC is restored; CAN's worker is killed; JPN stalls; GBR is refused things; AUS is
held by one operation while a second asks for it."""
SPO_TENANT = TenantSpec(mailboxes=4, mail_users=0, sites_per_geo=4, cloud_pcs=0, stuck_mailboxes=0, geos=GEOS, seed=11)
SPO_SPEED = 600.0
"""A site registers in 15 simulated minutes: 1.5 real seconds, so the four sites of a geo take 6 s."""


def admin_url(geo: str) -> str:
    return f"https://contoso{'' if geo == 'NAM' else geo.lower()}-admin.sharepoint.com"


@pytest.fixture(scope="module")
def spo_base(stack_settings: Settings) -> Settings:
    return stack_settings.model_copy(
        update={
            "sandbox_m365_port": free_port(),
            "spo_geo_admin_urls": {g: admin_url(g) for g in GEOS},
            "spo_poll_interval": timedelta(seconds=1),
        }
    )


@pytest.fixture(scope="module")
def spo_tenant(
    spo_base: Settings, keyvault_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SandboxM365Server]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('spo') / 'tenant.db'}"
    with SandboxM365Server(spo_base, seed=SPO_TENANT, speed=SPO_SPEED, database_url=url) as server:
        yield server


@pytest.fixture
async def spo_control(spo_base: Settings, spo_tenant: SandboxM365Server) -> AsyncIterator[SandboxM365Control]:
    async with SandboxM365Control.from_settings(spo_base) as control:
        yield control


@pytest.fixture
def spo_settings(spo_base: Settings, task_queue: str) -> Settings:
    return spo_base.model_copy(update={"temporal_task_queue": task_queue})


@pytest.fixture
async def spo_worker(
    client: Client, spo_settings: Settings, store: Store, spo_tenant: SandboxM365Server
) -> AsyncIterator[Worker]:
    async with AzureConnection(spo_settings) as azure:
        keyvault = KeyVaultGateway(azure)
        async with Worker(
            client,
            task_queue=spo_settings.temporal_task_queue,
            workflows=all_workflows(),
            activities=build_activities(product_gateways(spo_settings, store, keyvault, azure)),
        ) as worker:
            yield worker
        await keyvault.close()


@pytest.fixture
async def spo_api(client: Client, spo_settings: Settings, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    async with AzureConnection(spo_settings) as azure:
        keyvault = KeyVaultGateway(azure)
        m365 = M365Gateway(build_transport(spo_settings, azure))
        app = create_app(spo_settings, client=client, store=store, keyvault=keyvault, m365=m365)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as http:
            yield http
        await keyvault.close()


async def spo_keys(
    kv_control: SandboxKeyVaultControl,
    *,
    regions: tuple[str, str] = ("eastus", "westus"),
    permissions: list[str] | None = None,
    one_vault: bool = False,
) -> list[dict[str, str]]:
    """Two fresh keys (vault, key, version) SharePoint Online may use; in one vault if told so."""
    refs = []
    vaults = [unique("spo"), unique("spo")]
    for index, region in enumerate(regions):
        vault = vaults[0] if one_vault else vaults[index]
        if index == 0 or not one_vault:
            await kv_control.create_vault(vault, location=region, purge_protection=True, soft_delete=True)
            await kv_control.grant(vault, "ckey-automation@contoso.com", ["all"])
            await kv_control.grant(vault, SPO, permissions or ["get", "wrapKey", "unwrapKey"])
        key = await kv_control.create_key(vault, f"spo-key-{index + 1}")
        refs.append({"vault": vault, "key": f"spo-key-{index + 1}", "version": str(key["kid"]).rsplit("/", 1)[1]})
    return refs


def uri(ref: dict[str, str]) -> str:
    return f"https://{ref['vault']}.vault.azure.net/keys/{ref['key']}/{ref['version']}"


async def sent(control: SandboxM365Control, cmdlet: str, geo: str, after: int = 0) -> list[dict[str, Any]]:
    return [c for c in await control.calls(cmdlet=cmdlet, after=after) if c["identity"] == admin_url(geo)]


async def last_seq(control: SandboxM365Control) -> int:
    return max((c["seq"] for c in await control.calls(limit=100_000)), default=0)


# spo.dep.register ---------------------------------------------------------------------------------------------------


async def test_two_geos_register_with_rising_percentages_to_registered(
    spo_api: httpx.AsyncClient,
    spo_worker: Worker,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    spo_control: SandboxM365Control,
    record_history: Recorder,
) -> None:
    keys = {geo: await spo_keys(kv_control) for geo in ("NAM", "EUR")}
    headers = auth(Role.OPERATOR)
    runs = await asyncio.gather(
        *(
            run_operation(
                spo_api, headers, "spo.dep.register", {"geo": geo.lower(), "primary": k[0], "secondary": k[1]}
            )
            for geo, k in keys.items()
        )
    )
    for (body, events), geo in zip(runs, keys, strict=True):
        assert body["state"] == "succeeded", body["error"]
        result = body["result"]
        percents = result["percents"]
        print(f"{geo}: percents seen {percents}")
        assert result["state"] == "Registered" and result["percent"] == 100 and result["sent"] is True
        assert percents == sorted(percents) and percents[-1] == 100 and any(0 < p < 100 for p in percents)
        assert (result["primary_key_uri"], result["secondary_key_uri"]) == (uri(keys[geo][0]), uri(keys[geo][1]))
        actions = [e["action"] for e in events]
        assert actions.count("m365.Register-SPODataEncryptionPolicy") == 2  # its intent, then its outcome
        assert body["escalations"] == []
    await record_history(runs[0][0]["id"], "spo_dep_register")
    for geo in keys:
        assert len(await sent(spo_control, "Register-SPODataEncryptionPolicy", geo)) == 1
    # The read model, from SQL: state, percent, keys, the operation that moved each geo last.
    listed = {g["geo"]: g for g in (await spo_api.get("/api/spo/geos", headers=auth(Role.VIEWER))).json()}
    for (body, _), geo in zip(runs, keys, strict=True):
        view = listed[geo]
        assert (view["state"], view["percent"], view["operation_id"]) == ("Registered", 100, body["id"])
        assert view["key_uris"] == [uri(keys[geo][0]), uri(keys[geo][1])]
    one = await spo_api.get("/api/spo/geos/eur", params={"refresh": "true"}, headers=auth(Role.VIEWER))
    assert one.status_code == 200 and one.json()["state"] == "Registered"
    assert one.json()["operation_id"] == runs[1][0]["id"]  # a refresh keeps the operation that moved it
    unknown = await spo_api.get("/api/spo/geos/XYZ", headers=auth(Role.VIEWER))
    assert unknown.status_code == 404 and "NAM" in unknown.json()["detail"]

    # Again with the same keys: succeeds without a second Register; with other keys: refused, naming them.
    seq = await last_seq(spo_control)
    nam = keys["NAM"]
    again, _ = await run_operation(
        spo_api, headers, "spo.dep.register", {"geo": "NAM", "primary": nam[0], "secondary": nam[1]}
    )
    assert again["state"] == "succeeded" and again["result"]["sent"] is False, again["error"]
    other = await spo_keys(kv_control)
    refused, _ = await run_operation(
        spo_api, headers, "spo.dep.register", {"geo": "NAM", "primary": other[0], "secondary": other[1]}
    )
    assert refused["state"] == "failed" and "spo-geo-registered" in refused["error"]
    assert uri(nam[0]) in refused["error"] and uri(nam[1]) in refused["error"]
    assert await sent(spo_control, "Register-SPODataEncryptionPolicy", "NAM", seq) == []
    view = (await spo_api.get("/api/spo/geos/NAM", headers=auth(Role.VIEWER))).json()
    assert view["operation_id"] == again["id"]  # the refused one moved nothing


@pytest.mark.parametrize("case", ["one vault", "no unwrap", "unknown geo"])
async def test_refusals_send_nothing(
    spo_api: httpx.AsyncClient,
    spo_worker: Worker,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    spo_control: SandboxM365Control,
    case: str,
) -> None:
    geo = "GBR"
    if case == "one vault":
        keys, rule = await spo_keys(kv_control, one_vault=True), "two-keys-two-vaults"
    elif case == "no unwrap":
        keys, rule = await spo_keys(kv_control, permissions=["get", "wrapKey"]), "unwrapKey"
    else:
        keys, rule, geo = await spo_keys(kv_control), "spo-geo-known", "XYZ"
    seq = await last_seq(spo_control)
    before = (await spo_control.status())["geos"]
    body, events = await run_operation(
        spo_api, auth(Role.OPERATOR), "spo.dep.register", {"geo": geo, "primary": keys[0], "secondary": keys[1]}
    )
    assert body["state"] == "failed" and rule in body["error"], body["error"]
    if case == "unknown geo":
        assert "NAM" in body["error"] and "EUR" in body["error"]
    assert await spo_control.calls(after=seq) == []
    assert not any(e["action"].startswith("m365.Register") for e in events)
    assert [(g["geo"], g["state"]) for g in (await spo_control.status())["geos"]] == [
        (g["geo"], g["state"]) for g in before
    ]


async def test_a_geo_being_registered_is_held_a_second_operation_is_refused(
    spo_api: httpx.AsyncClient,
    spo_worker: Worker,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    spo_control: SandboxM365Control,
    store: Store,
) -> None:
    headers = auth(Role.OPERATOR)
    first_keys, second_keys = await spo_keys(kv_control), await spo_keys(kv_control)
    await spo_control.set_faults(stalled_geos=["AUS"])
    try:
        started = await spo_api.post(
            "/api/operations",
            json={
                "kind": "spo.dep.register",
                "params": {"geo": "AUS", "primary": first_keys[0], "secondary": first_keys[1]},
            },
            headers=headers,
        )
        assert started.status_code == 202, started.text
        holder = started.json()["id"]
        for _ in range(400):
            record = await store.get_operation(holder)
            if record is not None and record.phase == "following":
                break
            await asyncio.sleep(0.05)
        seq = await last_seq(spo_control)
        second = await spo_api.post(
            "/api/operations",
            json={
                "kind": "spo.dep.register",
                "params": {"geo": "aus", "primary": second_keys[0], "secondary": second_keys[1]},
            },
            headers=headers,
        )
        assert second.status_code == 409, second.text
        assert second.json()["rule"] == "targets-leased" and second.json()["holders"] == [holder]
        assert await spo_control.calls(after=seq) == []
        cancelled = await spo_api.post(f"/api/operations/{holder}/cancel", headers=headers)
        assert cancelled.status_code == 202, cancelled.text
    finally:
        await spo_control.set_faults()


# spo.dep.restore ----------------------------------------------------------------------------------------------------


async def test_restore_refuses_a_geo_not_in_recovery_then_restores_one_in_recovery(
    spo_api: httpx.AsyncClient,
    spo_worker: Worker,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    spo_control: SandboxM365Control,
    record_history: Recorder,
) -> None:
    headers = auth(Role.OPERATOR)
    lost = await spo_keys(kv_control)
    registered, _ = await run_operation(
        spo_api, headers, "spo.dep.register", {"geo": "APC", "primary": lost[0], "secondary": lost[1]}
    )
    assert registered["state"] == "succeeded", registered["error"]
    fresh = await spo_keys(kv_control)
    params = {"geo": "APC", "primary": fresh[0], "secondary": fresh[1]}
    seq = await last_seq(spo_control)
    refused, _ = await run_operation(spo_api, headers, "spo.dep.restore", params)
    assert refused["state"] == "failed" and "spo-geo-recovery" in refused["error"], refused["error"]
    assert await spo_control.calls(after=seq) == []
    view = (await spo_api.get("/api/spo/geos/APC", headers=auth(Role.VIEWER))).json()
    assert (view["state"], view["operation_id"]) == ("Registered", registered["id"])
    # The keys are lost; Microsoft recovers the geo (the support path); ckey restores it with new keys.
    for ref in lost:
        await kv_control.revoke(ref["vault"], SPO)
    await spo_control.recover_geo("APC")
    restored, _ = await run_operation(spo_api, headers, "spo.dep.restore", params)
    assert restored["state"] == "succeeded", restored["error"]
    result = restored["result"]
    assert (result["state"], result["percent"], result["sent"]) == ("Registered", 100, True)
    assert (result["primary_key_uri"], result["secondary_key_uri"]) == (uri(fresh[0]), uri(fresh[1]))
    assert len(await sent(spo_control, "Restore-SPODataEncryptionPolicy", "APC", seq)) == 1
    await record_history(restored["id"], "spo_dep_restore")
    view = (await spo_api.get("/api/spo/geos/APC", headers=auth(Role.VIEWER))).json()
    assert (view["state"], view["operation_id"]) == ("Registered", restored["id"])
    # A restore of the healthy geo, even with the keys it holds, is refused too: there is nothing to restore.
    again_seq = await last_seq(spo_control)
    again, _ = await run_operation(spo_api, headers, "spo.dep.restore", params)
    assert again["state"] == "failed" and "spo-geo-recovery" in again["error"], again["error"]
    assert await spo_control.calls(after=again_seq) == []


# A stalled geo on the time-skipping server --------------------------------------------------------------------------


async def test_a_stalled_geo_is_escalated_once_then_the_follow_limit_ends_it(
    time_env: WorkflowEnvironment,
    spo_base: Settings,
    spo_control: SandboxM365Control,
    kv_control: SandboxKeyVaultControl,
    store: Store,
    task_queue: str,
) -> None:
    settings = spo_base.model_copy(
        update={
            "temporal_search_attributes": False,
            "spo_poll_interval": timedelta(hours=1),
            "spo_stall_deadline": timedelta(hours=6),
            "spo_follow_limit": timedelta(days=2),
        }
    )
    keys = await spo_keys(kv_control)
    await spo_control.set_faults(stalled_geos=["JPN"])
    try:
        await spo_control.advance_clock(days=1)  # the tenant's clock moves on; a stalled geo does not
        params = SpoDepRegisterParams.model_validate({"geo": "JPN", "primary": keys[0], "secondary": keys[1]})
        op_id = f"op-{uuid.uuid4()}"
        async with AzureConnection(settings) as azure:
            keyvault = KeyVaultGateway(azure)
            async with Worker(
                time_env.client,
                task_queue=task_queue,
                workflows=[SpoDepRegisterWorkflow],
                activities=build_activities(product_gateways(settings, store, keyvault, azure)),
            ):
                with pytest.raises(WorkflowFailureError):
                    await time_env.client.execute_workflow(
                        SpoDepRegisterWorkflow.run,
                        build_geo_input(params, settings),
                        id=op_id,
                        task_queue=task_queue,
                        memo={"started_by": "alice@contoso.com"},
                    )
            await keyvault.close()
    finally:
        await spo_control.set_faults()
    record = await store.get_operation(op_id)
    assert record is not None and record.state.value == "failed"
    assert record.error and "spo-follow-limit" in record.error and "0%" in record.error
    (escalation,) = record.escalations
    assert escalation.subjects == ["JPN"]
    # The percent stopped at the first reading; the first reading more than six hours later escalates.
    waited = escalation.at - record.started_at
    assert timedelta(hours=6) < waited <= timedelta(hours=7, minutes=5), waited
    assert len(await sent(spo_control, "Register-SPODataEncryptionPolicy", "JPN")) == 1
    geo = await SpoGeoStore(store).geo("JPN")
    assert geo is not None and (geo.state, geo.percent, geo.operation_id) == ("Registering", 0, op_id)


# A worker killed while it follows Registering -----------------------------------------------------------------------


async def test_killing_the_worker_while_following_registers_once(
    env: WorkflowEnvironment,
    client: Client,
    spo_settings: Settings,
    store: Store,
    spo_control: SandboxM365Control,
    kv_control: SandboxKeyVaultControl,
    tmp_path: Path,
) -> None:
    keys = await spo_keys(kv_control)
    params = SpoDepRegisterParams.model_validate({"geo": "CAN", "primary": keys[0], "secondary": keys[1]})
    worker_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CKEY_")},
        "CKEY_DATA_DIR": str(spo_settings.data_dir),
        "CKEY_SANDBOX": "true",
        "CKEY_DATABASE_URL": str(store.engine.url),
        "CKEY_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "CKEY_TEMPORAL_TASK_QUEUE": spo_settings.temporal_task_queue,
        "CKEY_SANDBOX_KEYVAULT_PORT": str(spo_settings.sandbox_keyvault_port),
        "CKEY_SANDBOX_M365_PORT": str(spo_settings.sandbox_m365_port),
        "CKEY_SPO_GEO_ADMIN_URLS": json.dumps(spo_settings.spo_geo_admin_urls),
        "CKEY_AZURE_CLIENT_ID": str(spo_settings.azure_client_id),
        "CKEY_AZURE_CLIENT_SECRET": spo_settings.azure_client_secret.get_secret_value()
        if spo_settings.azure_client_secret
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
    handle = await client.start_workflow(
        SpoDepRegisterWorkflow.run,
        build_geo_input(params, spo_settings),
        id=f"op-{uuid.uuid4()}",
        task_queue=spo_settings.temporal_task_queue,
    )
    geos = SpoGeoStore(store)
    seen = None
    for _ in range(1200):
        seen = await geos.geo("CAN")
        record = await store.get_operation(handle.id)
        following = record is not None and record.phase == "following"
        if following and seen is not None and seen.state == "Registering" and seen.operation_id == handle.id:
            break
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert seen is not None and seen.state == "Registering", (tmp_path / "worker-1.log").read_text()[-2000:]
    killed_at = seen.percent
    second = start_worker("worker-2.log")
    try:
        result = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    print(f"worker kill: killed at {killed_at}% of CAN's sites; percents seen {result.percents}")
    assert (result.state, result.percent) == ("Registered", 100)
    assert len(await sent(spo_control, "Register-SPODataEncryptionPolicy", "CAN")) == 1
    record = await store.get_operation(handle.id)
    assert record is not None and record.state.value == "succeeded"
    ended = [e for e in await store.list_audit(operation_id=handle.id) if e.action == "operation.succeeded"]
    assert len(ended) == 1


# The inventory's refresh (the lead wires it into inventory.sync) ----------------------------------------------------


async def test_the_refresh_activity_reads_every_configured_geo_into_the_inventory(
    spo_settings: Settings, store: Store, spo_tenant: SandboxM365Server
) -> None:
    async with AzureConnection(spo_settings) as azure:
        family = SpoActivities(
            M365Gateway(build_transport(spo_settings, azure)), store, spo_settings.spo_geo_admin_urls
        )
        result = await ActivityEnvironment().run(family.refresh_spo_geos, RefreshSpoGeosInput())
    assert sorted(g.geo for g in result.geos) == sorted(GEOS)
    stored = {g.geo: g for g in await SpoGeoStore(store).geos()}
    assert set(stored) == set(GEOS)
    for read in result.geos:
        assert (stored[read.geo].state, stored[read.geo].percent) == (read.state, read.percent)
        assert stored[read.geo].operation_id is None  # read by a refresh, moved by nobody in this store
