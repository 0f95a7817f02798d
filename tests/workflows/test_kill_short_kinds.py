"""One ``kill -9`` of the worker while m365.dep.create, m365.dep.disable, spo.dep.restore and key.rotation.watch are
each in flight; a second worker ends every one of them once.

The four run on a sandbox tenant of this module's own (its own database and port, the session's Key Vault) and are
started through the API against a worker process. Each is held in its phase without hanging on a timeout of its own:

- ``m365.dep.create`` in ``creating``: New-M365DataAtRestEncryptionPolicy has reached the tenant, which is checking and
  wrapping with the two keys through Key Vault, slowed by the latency injected into those two vaults alone. The call
  holds the tenant's lock for state-changing cmdlets meanwhile.
- ``m365.dep.disable`` in ``disabling``: Set-M365DataAtRestEncryptionPolicy -Enabled $false has reached the tenant and
  waits behind that lock.
- ``spo.dep.restore`` in ``following``: the geo re-registers its sites under the restored keys at a speed where that
  takes about a minute; the follow-up's reads heartbeat, so a second worker takes them over within seconds.
- ``key.rotation.watch`` in ``acting``: the alert for a key version a geo does not use yet is recorded and its
  webhook answers 503, so the post waits out its retry back-off (no attempt in flight).

The New and the Set are activities without heartbeats: their retries come after their start-to-close timeout (two
minutes), which sets this test's length. The tenant goes on with both calls after the worker dies; the retries look
first, find the effect, and send nothing again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.m365 import M365Activities
from ckey.api.app import create_app
from ckey.azure import AzureConnection
from ckey.config import Settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway, build_transport
from ckey.models import KeyUri, Role, ServicePrincipal, SpoKeyRef
from ckey.operations import Outcome
from ckey.store import Store
from contracts.m365 import MultiDepRef
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from sandbox.m365.tenant import TenantSpec
from tests.conftest import free_port
from tests.workflows.alert_receiver import alert_receiver
from tests.workflows.conftest import unique
from tests.workflows.test_keyvault import Auth

M365 = ServicePrincipal.MICROSOFT_365.value
SPO = ServicePrincipal.SHAREPOINT_ONLINE.value
AUTOMATION = "ckey-automation@contoso.com"
SERVICE = ["get", "wrapKey", "unwrapKey"]
GEOS = ["NAM", "APC", "JPN"]
"""APC is restored; JPN's primary key gets a version it does not use (the watcher's find)."""
KILL_TENANT = TenantSpec(mailboxes=2, mail_users=0, sites_per_geo=3, cloud_pcs=0, stuck_mailboxes=0, geos=GEOS, seed=7)
KILL_SPEED = 30.0
"""A site registers in 15 simulated minutes: 30 real seconds, so a restored geo's three sites take 90 s."""
VAULT_LATENCY_MS = 2_500
"""Per request to the created DEP's two vaults: the tenant's New makes several, so it stays in flight for seconds."""
NEW = "New-M365DataAtRestEncryptionPolicy"
SET = "Set-M365DataAtRestEncryptionPolicy"
RESTORE = "Restore-SPODataEncryptionPolicy"


def admin_url(geo: str) -> str:
    return f"https://contoso{'' if geo == 'NAM' else geo.lower()}-admin.sharepoint.com"


@pytest.fixture(scope="module")
def kill_base(stack_settings: Settings) -> Settings:
    return stack_settings.model_copy(
        update={
            "sandbox_m365_port": free_port(),
            "spo_geo_admin_urls": {g: admin_url(g) for g in GEOS},
            "spo_poll_interval": timedelta(seconds=1),
        }
    )


@pytest.fixture(scope="module")
def kill_tenant(
    kill_base: Settings, keyvault_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SandboxM365Server]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('kill') / 'tenant.db'}"
    with SandboxM365Server(kill_base, seed=KILL_TENANT, speed=KILL_SPEED, database_url=url) as server:
        yield server


@pytest.fixture
async def control(kill_base: Settings, kill_tenant: SandboxM365Server) -> AsyncIterator[SandboxM365Control]:
    async with SandboxM365Control.from_settings(kill_base) as client:
        yield client


@pytest.fixture
def k_settings(kill_base: Settings, task_queue: str) -> Settings:
    return kill_base.model_copy(update={"temporal_task_queue": task_queue})


@pytest.fixture
async def k_azure(k_settings: Settings, kill_tenant: SandboxM365Server) -> AsyncIterator[AzureConnection]:
    async with AzureConnection(k_settings) as azure:
        yield azure


@pytest.fixture
async def k_keyvault(k_azure: AzureConnection) -> AsyncIterator[KeyVaultGateway]:
    gateway = KeyVaultGateway(k_azure)
    try:
        yield gateway
    finally:
        await gateway.close()


@pytest.fixture
def k_m365(k_settings: Settings, k_azure: AzureConnection) -> M365Gateway:
    return M365Gateway(build_transport(k_settings, k_azure))


@pytest.fixture
async def k_api(
    client: Client, k_settings: Settings, store: Store, k_keyvault: KeyVaultGateway, k_m365: M365Gateway
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(k_settings, client=client, store=store, keyvault=k_keyvault, m365=k_m365)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as http:
        yield http


async def two_keys(kv_control: SandboxKeyVaultControl, principal: str) -> list[KeyUri]:
    """A key in each of two fresh vaults of two regions, ``principal`` granted get, wrapKey and unwrapKey."""
    uris = []
    for region in ("eastus", "westus"):
        vault = unique("kl")
        await kv_control.create_vault(vault, location=region, purge_protection=True, soft_delete=True)
        await kv_control.grant(vault, AUTOMATION, ["all"])
        await kv_control.grant(vault, principal, SERVICE)
        key = await kv_control.create_key(vault, "cmk")
        uris.append(KeyUri.parse(str(key["kid"])))
    return uris


def ref(uri: KeyUri) -> dict[str, str]:
    return {"vault": uri.vault, "key": uri.name, "version": uri.version or ""}


async def started(api: httpx.AsyncClient, auth: Auth, kind: str, params: dict[str, Any]) -> str:
    response = await api.post("/api/operations", json={"kind": kind, "params": params}, headers=auth(Role.OPERATOR))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def phase(store: Store, op_id: str) -> str | None:
    record = await store.get_operation(op_id)
    return record.phase if record is not None else None


async def tenant_calls(control: SandboxM365Control, cmdlet: str, identity: str, after: int) -> list[dict[str, Any]]:
    return [c for c in await control.calls(cmdlet=cmdlet, after=after) if c["identity"] == identity]


async def intents(store: Store, op_id: str, cmdlet: str) -> int:
    events = await store.list_audit(operation_id=op_id, limit=10_000)
    return sum(1 for e in events if e.action == f"m365.{cmdlet}" and e.outcome == Outcome.INTENT)


def tail(log: Path) -> str:
    """The end of a worker's log, for a failure's message."""
    return log.read_text()[-3000:] if log.exists() else ""


async def until(what: str, check: Any, log: Path, seconds: float = 90) -> None:
    """Poll ``check()`` until true; a bound on a hang (the machine is shared), not a timing."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never {what}:\n{tail(log)}")
        await asyncio.sleep(0.05)


async def test_killing_the_worker_mid_phase_ends_create_disable_restore_and_watch_once(
    env: WorkflowEnvironment,
    client: Client,
    k_settings: Settings,
    store: Store,
    k_api: httpx.AsyncClient,
    k_m365: M365Gateway,
    k_keyvault: KeyVaultGateway,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    control: SandboxM365Control,
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    async with alert_receiver() as webhook:
        worker_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CKEY_")},
            "CKEY_DATA_DIR": str(k_settings.data_dir),
            "CKEY_SANDBOX": "true",
            "CKEY_DATABASE_URL": str(store.engine.url),
            "CKEY_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
            "CKEY_TEMPORAL_TASK_QUEUE": k_settings.temporal_task_queue,
            "CKEY_SANDBOX_KEYVAULT_PORT": str(k_settings.sandbox_keyvault_port),
            "CKEY_SANDBOX_M365_PORT": str(k_settings.sandbox_m365_port),
            "CKEY_SPO_GEO_ADMIN_URLS": json.dumps(k_settings.spo_geo_admin_urls),
            "CKEY_ALERT_WEBHOOK_URL": webhook.url,
            "CKEY_SCHEDULES": "false",
            "CKEY_AZURE_CLIENT_ID": str(k_settings.azure_client_id),
            "CKEY_AZURE_CLIENT_SECRET": k_settings.azure_client_secret.get_secret_value()
            if k_settings.azure_client_secret
            else "",
            "PYTHONPATH": str(Path(__file__).parents[2]),
        }
        logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]

        def start_worker(log: Path) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "worker"],
                env=worker_env,
                cwd=tmp_path,
                stdout=open(log, "wb"),
                stderr=subprocess.STDOUT,
            )

        # The first worker starts while the preconditions are made (it needs a few seconds to import).
        first = start_worker(logs[0])
        try:
            # A multi-workload DEP to disable (not assigned: the tenant has no assignment), keys for one to create.
            to_disable = f"MW_{uuid.uuid4().hex[:8]}"
            await k_m365.new_m365_data_at_rest_encryption_policy(
                to_disable, [k.versionless for k in await two_keys(kv_control, M365)], "to disable"
            )
            create_keys = await two_keys(kv_control, M365)
            to_create = f"MW_{uuid.uuid4().hex[:8]}"
            # APC registered with keys then lost (revoked from SharePoint) and recovered by Microsoft; JPN registered
            # with a primary key that then gets a newer version.
            lost, fresh, watched = [await two_keys(kv_control, SPO) for _ in range(3)]
            for geo, keys in (("APC", lost), ("JPN", watched)):
                await k_m365.register_spo_data_encryption_policy(
                    admin_url(geo), SpoKeyRef(**ref(keys[0])), SpoKeyRef(**ref(keys[1]))
                )
            await control.advance_clock(hours=3)
            for key in lost:
                await kv_control.revoke(key.vault, SPO)
            await control.recover_geo("APC")
            rotated = await k_keyvault.key_client(watched[0].vault_url).rotate_key(watched[0].name)
            new_version = rotated.properties.version or ""
            seq = max((c["seq"] for c in await control.calls(limit=100_000)), default=0)
            prepared = time.monotonic()

            # spo.dep.restore first: its Restore takes the tenant's lock too, and must be done before New holds it.
            restore_id = await started(
                k_api, auth, "spo.dep.restore", {"geo": "APC", "primary": ref(fresh[0]), "secondary": ref(fresh[1])}
            )
            await until("following", lambda: _is(phase(store, restore_id), "following"), logs[0])
            # m365.dep.create, its two vaults slowed: held in `creating` once its New has reached the tenant.
            for key in create_keys:
                await kv_control.set_faults(key.vault, latency_ms=VAULT_LATENCY_MS)
            create_id = await started(
                k_api,
                auth,
                "m365.dep.create",
                {"name": to_create, "azure_key_ids": [k.versionless for k in create_keys]},
            )

            async def new_in_flight() -> bool:
                return any(c["status"] is None for c in await tenant_calls(control, NEW, to_create, seq))

            await until("New in flight", new_in_flight, logs[0])
            # The webhook refuses: the watch's post waits in its retry back-off.
            webhook.statuses = [503] * 100
            disable_id, watch_id = await asyncio.gather(
                started(k_api, auth, "m365.dep.disable", {"dep": to_disable}),
                started(k_api, auth, "key.rotation.watch", {}),
            )

            async def set_in_flight() -> bool:
                return any(c["status"] is None for c in await tenant_calls(control, SET, to_disable, seq))

            async def watch_acting() -> bool:
                raised = [
                    e for e in await store.list_audit(operation_id=watch_id, limit=1000) if e.action == "alert.raised"
                ]
                return await phase(store, watch_id) == "acting" and bool(raised) and webhook.attempts >= 1

            await until("Set in flight", set_in_flight, logs[0])
            await until("the watch acting", watch_acting, logs[0])
            at_kill = {op: await phase(store, op) for op in (create_id, disable_id, restore_id, watch_id)}
            still = await new_in_flight() and await set_in_flight()
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
        killed = time.monotonic()
        pending = {}
        for op in (create_id, disable_id, restore_id, watch_id):
            described = await client.get_workflow_handle(op).describe()
            pending[op] = [
                (a.activity_type.name, a.state, a.attempt) for a in described.raw_description.pending_activities
            ]
        print(f"phases at the kill: {at_kill}; New and Set still in flight: {still}; pending: {pending}")
        assert at_kill == {
            create_id: "creating",
            disable_id: "disabling",
            restore_id: "following",
            watch_id: "acting",
        }, (at_kill, tail(logs[0]))
        assert still, "New or Set answered before the kill: the test caught neither in flight"

        # Faults cleared, the webhook answers again; a second worker takes over.
        for key in create_keys:
            await kv_control.set_faults(key.vault)
        webhook.statuses = []
        second = start_worker(logs[1])
        try:
            bodies = {}
            for op in (create_id, disable_id, restore_id, watch_id):
                for _ in range(int(float(os.environ.get("KILL_TIMEOUT", "240")) * 10)):
                    body = (await k_api.get(f"/api/operations/{op}", headers=auth(Role.VIEWER))).json()
                    if body["state"] in ("succeeded", "failed", "cancelled") and body["ended_at"]:
                        break
                    await asyncio.sleep(0.1)
                bodies[op] = body
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
    ended = time.monotonic()
    print(
        f"wall: {ended - began:.1f}s (preconditions {prepared - began:.1f}s, to the kill {killed - prepared:.1f}s, "
        f"after it {ended - killed:.1f}s)"
    )
    for op, body in bodies.items():
        assert body["state"] == "succeeded", (op, body, tail(logs[1]))
        events = await store.list_audit(operation_id=op, limit=10_000)
        assert [e.action for e in events].count("operation.succeeded") == 1, op
        assert len([r for r in await store.list_operations(limit=1000) if r.id == op]) == 1

    # m365.dep.create: New reached the tenant once; the retry found the DEP and sent nothing.
    news = await tenant_calls(control, NEW, to_create, seq)
    assert len(news) == 1 <= await intents(store, create_id, NEW), news
    assert bodies[create_id]["result"]["name"] == to_create and bodies[create_id]["result"]["created"] is True
    assert [d.name for d in await k_m365.get_m365_data_at_rest_encryption_policy() if d.name == to_create] == [
        to_create
    ]

    # m365.dep.disable: Set -Enabled $false sent no more often than its intents show, the DEP disabled, and the
    # operation says it disabled it (its retry found it disabled by its own first attempt).
    sets = await tenant_calls(control, SET, to_disable, seq)
    assert 1 <= len(sets) <= min(2, await intents(store, disable_id, SET)), sets
    assert all(str(c["parameters"].get("Enabled")).lower().strip("$") == "false" for c in sets), sets
    (dep,) = await k_m365.get_m365_data_at_rest_encryption_policy(to_disable)
    assert dep.enabled is False
    assert bodies[disable_id]["result"]["disabled"] is True, bodies[disable_id]["result"]

    # spo.dep.restore: one Restore; the geo back to Registered on the new keys.
    restores = await tenant_calls(control, RESTORE, admin_url("APC"), seq)
    assert len(restores) == 1, restores
    result = bodies[restore_id]["result"]
    assert (result["state"], result["percent"], result["sent"]) == ("Registered", 100, True)
    assert (result["primary_key_uri"], result["secondary_key_uri"]) == tuple(
        f"https://{k.vault}.vault.azure.net/keys/{k.name}/{k.version}" for k in fresh
    )

    # key.rotation.watch: its alert raised once and delivered at most once, naming the version; no roll started.
    key_id = watched[0].versionless
    watch = bodies[watch_id]["result"]
    assert watch["alerted"].count(key_id) == 1 and watch["started"] == [], watch
    raised = [
        e.detail
        for e in await store.list_audit(operation_id=watch_id, limit=1000)
        if e.action == "alert.raised" and key_id in e.detail["summary"]
    ]
    assert len(raised) == 1 and new_version in raised[0]["summary"], raised
    delivered = [a for a in webhook.received if key_id in a["summary"]]
    assert len(delivered) <= 1, delivered


async def test_a_retried_disable_that_finds_its_own_set_done_reports_it_disabled(
    k_m365: M365Gateway, store: Store, kv_control: SandboxKeyVaultControl, control: SandboxM365Control
) -> None:
    name = f"MW_{uuid.uuid4().hex[:8]}"
    await k_m365.new_m365_data_at_rest_encryption_policy(
        name, [k.versionless for k in await two_keys(kv_control, M365)]
    )
    seq = max((c["seq"] for c in await control.calls(limit=100_000)), default=0)
    activities = M365Activities(k_m365, store)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id="op-disable-retried")
    first = await env.run(activities.m365_disable_dep, MultiDepRef(dep=name))
    # The worker died after the Set went through: the retry finds the DEP disabled, by this operation.
    env.info = dataclasses.replace(env.info, attempt=2)
    retried = await env.run(activities.m365_disable_dep, MultiDepRef(dep=name))
    # Another operation finding it disabled did not disable it.
    env.info = dataclasses.replace(env.info, workflow_id="op-disable-other", attempt=1)
    other = await env.run(activities.m365_disable_dep, MultiDepRef(dep=name))
    assert (first.changed, retried.changed, other.changed) == (True, True, False)
    assert len(await tenant_calls(control, SET, name, seq)) == 1


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)
