"""``windows365.encrypt`` on a sandbox tenant of its own with Cloud PCs: readiness, escalation, batches, a worker kill.

The module's tenant runs at real speed; each test reseeds it and moves its clock through the control endpoint, so
Microsoft's 3-4 hours (Intune) and 30 minutes-2 hours (a Cloud PC) pass when the test says.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities import build_activities
from activities.windows365 import Windows365Activities, bulk_action_name
from ckey.api.app import create_app
from ckey.azure import AzureConnection
from ckey.config import Settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway, build_transport
from ckey.store import Store
from ckey.store.cloudpcs import CloudPcStore
from ckey.windows365 import GraphRefusal, GraphUnavailable, Windows365Gateway
from contracts.windows365 import BatchInput, PlanInput, TenantSettingInput, Windows365EncryptInput
from sandbox.keyvault import SandboxKeyVaultServer
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from sandbox.m365.tenant import TenantSpec
from tests.conftest import free_port
from tests.workflows.conftest import product_gateways
from worker import WORKFLOW_FAILURE_TYPES
from workflows import all_workflows
from workflows.windows365 import Windows365EncryptWorkflow

Auth = Callable[..., dict[str, str]]
SPEC = TenantSpec(mailboxes=8, mail_users=0, sites_per_geo=0, cloud_pcs=7, stuck_mailboxes=0, seed=11)
M365_KEYS = [
    "https://contoso-eastus-kv1.vault.azure.net/keys/m365-key-01",
    "https://contoso-westus-kv1.vault.azure.net/keys/m365-key-02",
]


@pytest.fixture(scope="module")
def w365_settings(stack_settings: Settings) -> Settings:
    return stack_settings.model_copy(update={"sandbox_m365_port": free_port()})


@pytest.fixture(scope="module")
def w365_tenant(
    w365_settings: Settings, keyvault_server: SandboxKeyVaultServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SandboxM365Server]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('w365') / 'tenant.db'}"
    with SandboxM365Server(w365_settings, seed=SPEC, speed=1.0, database_url=url) as server:
        yield server


@pytest.fixture
async def control(w365_settings: Settings, w365_tenant: SandboxM365Server) -> AsyncIterator[SandboxM365Control]:
    async with SandboxM365Control.from_settings(w365_settings) as control:
        await control.seed(**SPEC.model_dump())
        yield control


@pytest.fixture
async def w365_azure(w365_settings: Settings, w365_tenant: SandboxM365Server) -> AsyncIterator[AzureConnection]:
    async with AzureConnection(w365_settings) as azure:
        yield azure


@pytest.fixture
def graph(w365_azure: AzureConnection) -> Windows365Gateway:
    return Windows365Gateway(w365_azure)


@pytest.fixture
def m365(w365_settings: Settings, w365_azure: AzureConnection) -> M365Gateway:
    return M365Gateway(build_transport(w365_settings, w365_azure))


async def assign_multi_workload_dep(m365: M365Gateway) -> str:
    name = f"W365_{uuid.uuid4().hex[:8]}"
    await m365.new_m365_data_at_rest_encryption_policy(name, M365_KEYS, "Cloud PCs test")
    await m365.set_m365_data_at_rest_encryption_policy_assignment(name)
    return name


@contextlib.asynccontextmanager
async def clock_running(control: SandboxM365Control, *, step_minutes: float = 30) -> AsyncIterator[None]:
    """Microsoft's time passes (the tenant's clock moved forward in steps) while the block runs."""

    async def tick() -> None:
        while True:
            await control.advance_clock(minutes=step_minutes)
            await asyncio.sleep(0.2)

    ticker = asyncio.create_task(tick())
    try:
        yield
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker


def fast(settings: Settings, task_queue: str) -> Settings:
    return settings.model_copy(
        update={
            "temporal_task_queue": task_queue,
            "windows365_poll_interval": timedelta(seconds=1),
            "windows365_batch_size": 3,
        }
    )


# The gateway ---------------------------------------------------------------------------------------------------------


async def test_graph_throttling_is_retried_after_retry_after_and_a_refusal_keeps_graphs_message(
    azure: AzureConnection,
) -> None:
    answers = [
        httpx.Response(429, headers={"Retry-After": "7"}, json={"error": {"code": "TooManyRequests", "message": "x"}}),
        httpx.Response(503, json={"error": {"code": "ServiceUnavailable", "message": "busy"}}),
        httpx.Response(200, json={"tenantDiskEncryptionType": "customerManagedKey"}),
    ]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    gateway = Windows365Gateway(azure, httpx.MockTransport(lambda _: answers.pop(0)), sleep=sleep)
    setting = await gateway.tenant_encryption_setting()
    assert setting.customer_managed and slept[0] == 7

    forbidden = httpx.Response(403, json={"error": {"code": "Forbidden", "message": "CloudPC.Read.All is missing"}})
    refusing = Windows365Gateway(azure, httpx.MockTransport(lambda _: forbidden), sleep=sleep)
    with pytest.raises(GraphRefusal) as refusal:
        await refusing.cloud_pcs()
    assert refusal.value.status == 403 and refusal.value.message == "CloudPC.Read.All is missing"

    long_wait = httpx.Response(429, headers={"Retry-After": "600"}, json={"error": {"code": "TooManyRequests"}})
    slept.clear()
    waiting = Windows365Gateway(azure, httpx.MockTransport(lambda _: long_wait), sleep=sleep)
    with pytest.raises(GraphUnavailable) as unavailable:
        await waiting.bulk_actions()
    assert unavailable.value.retry_after == 600 and slept == []  # the activity's retry waits, not a worker slot


async def test_a_graph_refusal_fails_the_activity_for_good_with_graphs_message(
    azure: AzureConnection, store: Store
) -> None:
    sent: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(f"{request.method} {request.url.path}")
        message = "Application is not authorized to perform this operation."
        return httpx.Response(403, json={"error": {"code": "Forbidden", "message": message}})

    activities = Windows365Activities(Windows365Gateway(azure, httpx.MockTransport(answer)), store)
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(
            activities.read_tenant_encryption_setting, TenantSettingInput(operation_id="op-refused")
        )
    assert refused.value.type == "graph-refused" and refused.value.non_retryable
    assert "Application is not authorized to perform this operation. (403 Forbidden)" in str(refused.value)
    assert sent == ["GET /beta/deviceManagement/virtualEndpoint/retrieveTenantEncryptionSetting"]


# A batch retried after a crash ---------------------------------------------------------------------------------------


async def test_a_batch_sent_again_finds_its_bulk_action_and_sends_nothing_twice(
    control: SandboxM365Control, graph: Windows365Gateway, m365: M365Gateway, store: Store
) -> None:
    await assign_multi_workload_dep(m365)
    await control.advance_clock(hours=5)
    activities = Windows365Activities(graph, store)
    op_id = f"op-{uuid.uuid4()}"
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=op_id)
    plan = await env.run(activities.plan_cloud_pc_batches, PlanInput(operation_id=op_id, batch_size=4))
    assert (plan.total, plan.already, plan.batches) == (SPEC.cloud_pcs, 0, 2)
    first = await env.run(activities.encrypt_cloud_pc_batch, BatchInput(operation_id=op_id, batch=0))
    # The worker died before the answer reached the workflow: the retry looks the bulk action up by its name.
    again = await env.run(activities.encrypt_cloud_pc_batch, BatchInput(operation_id=op_id, batch=0))
    assert first.created and not again.created and again.bulk_action_id == first.bulk_action_id
    actions = await graph.bulk_actions()
    assert [a.display_name for a in actions] == [bulk_action_name(op_id, 0)] and len(actions[0].cloud_pc_ids) == 4
    # Planned twice: the same plan.
    assert await env.run(activities.plan_cloud_pc_batches, PlanInput(operation_id=op_id, batch_size=2)) == plan
    audit = [(e.action, e.outcome.value) for e in await store.list_audit(operation_id=op_id)]
    assert audit.count(("graph.bulkActions.create", "intent")) == 1


# Through the API on the dev server ---------------------------------------------------------------------------------


@pytest.fixture
async def w365_api(
    client: Client, w365_settings: Settings, store: Store, w365_azure: AzureConnection, task_queue: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = fast(w365_settings, task_queue)
    keyvault = KeyVaultGateway(w365_azure)
    app = create_app(
        settings,
        client=client,
        store=store,
        keyvault=keyvault,
        m365=M365Gateway(build_transport(settings, w365_azure)),
        windows365=Windows365Gateway(w365_azure),
    )
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as http:
            yield http
    finally:
        await keyvault.close()


@pytest.fixture
async def w365_worker(
    client: Client, w365_settings: Settings, store: Store, w365_azure: AzureConnection, task_queue: str
) -> AsyncIterator[Worker]:
    settings = fast(w365_settings, task_queue)
    keyvault = KeyVaultGateway(w365_azure)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=all_workflows(),
        activities=build_activities(product_gateways(settings, store, keyvault, w365_azure)),
        workflow_failure_exception_types=WORKFLOW_FAILURE_TYPES,
    ) as worker:
        yield worker
    await keyvault.close()


async def test_without_a_multi_workload_assignment_the_api_refuses_and_nothing_changes(
    control: SandboxM365Control, graph: Windows365Gateway, w365_api: httpx.AsyncClient, auth: Auth
) -> None:
    answer = await w365_api.post("/api/operations", json={"kind": "windows365.encrypt", "params": {}}, headers=auth())
    assert answer.status_code == 422, answer.text
    assert "m365-assignment-exists" in answer.text
    assert await graph.bulk_actions() == []
    ops = await w365_api.get("/api/operations?kind=windows365.encrypt", headers=auth())
    assert ops.json()["items"] == []


async def test_every_cloud_pc_ends_encrypted_in_batches_with_progress_and_the_read_model(
    control: SandboxM365Control,
    graph: Windows365Gateway,
    m365: M365Gateway,
    w365_api: httpx.AsyncClient,
    w365_worker: Worker,
    auth: Auth,
    client: Client,
    store: Store,
    record_history: Callable[[str, str], Any],
) -> None:
    await assign_multi_workload_dep(m365)
    before = await w365_api.get("/api/windows365/cloud-pcs?refresh=true", headers=auth())
    assert before.status_code == 200, before.text
    assert before.json()["counts"] == {"encryptedUsingPlatformManagedKey": SPEC.cloud_pcs}
    assert before.json()["tenant_disk_encryption_type"] == "platformManagedKey"
    started = await w365_api.post("/api/operations", json={"kind": "windows365.encrypt", "params": {}}, headers=auth())
    assert started.status_code == 202, started.text
    op_id = started.json()["id"]
    # A second re-encryption of the tenant's Cloud PCs is refused while this one holds the tenant.
    second = await w365_api.post("/api/operations", json={"kind": "windows365.encrypt", "params": {}}, headers=auth())
    assert second.status_code == 409, second.text
    seen: set[int] = set()
    async with clock_running(control):
        for _ in range(600):
            view = (await w365_api.get(f"/api/operations/{op_id}", headers=auth())).json()
            if view["progress"]["unit"] == "cloud PCs":
                seen.add(view["progress"]["done"])
            if view["state"] != "running":
                break
            await asyncio.sleep(0.1)
    assert view["state"] == "succeeded", view
    result = view["result"]
    assert (result["total"], result["encrypted"], result["failed"]) == (SPEC.cloud_pcs, SPEC.cloud_pcs, 0)
    assert result["bulk_actions"] == 3 and result["failed_cloud_pcs"] == []
    assert view["progress"] == view["progress"] | {"done": SPEC.cloud_pcs, "total": SPEC.cloud_pcs}
    assert len(seen) > 1, seen  # progress moved Cloud PC by Cloud PC, not once at the end
    pcs = await graph.cloud_pcs()
    assert all(pc.customer_managed for pc in pcs)
    actions = await graph.bulk_actions()
    sent = [i for a in actions for i in a.cloud_pc_ids]
    assert len(actions) == 3 and sorted(sent) == sorted(pc.id for pc in pcs)
    # The read model answers from SQL, updated by the operation as it went.
    page = (await w365_api.get("/api/windows365/cloud-pcs", headers=auth())).json()
    assert page["counts"] == {"encryptedUsingCustomerManagedKey": SPEC.cloud_pcs}
    assert page["tenant_disk_encryption_type"] == "customerManagedKey" and page["failed"] == []
    assert {i["operation_id"] for i in page["items"]} == {op_id}
    audit = [(e.action, e.outcome.value) for e in await store.list_audit(operation_id=op_id)]
    assert audit.count(("graph.bulkActions.create", "intent")) == audit.count(("graph.bulkActions.create", "ok")) == 3
    await record_history(op_id, "windows365_encrypt")

    # Started again: every Cloud PC is customer-managed already, nothing is sent.
    again = await w365_api.post("/api/operations", json={"kind": "windows365.encrypt", "params": {}}, headers=auth())
    handle = client.get_workflow_handle_for(Windows365EncryptWorkflow.run, again.json()["id"])
    second_result = await handle.result()
    assert (second_result.already, second_result.bulk_actions) == (SPEC.cloud_pcs, 0)
    assert len(await graph.bulk_actions()) == 3


# On the time-skipping server ------------------------------------------------------------------------------------------


@pytest.fixture
async def time_gateways(w365_settings: Settings, w365_azure: AzureConnection, store: Store) -> AsyncIterator[Any]:
    keyvault = KeyVaultGateway(w365_azure)
    yield product_gateways(w365_settings, store, keyvault, w365_azure)
    await keyvault.close()


async def test_intune_never_ready_escalates_once_then_fails_at_the_hard_limit_with_nothing_sent(
    time_env: WorkflowEnvironment,
    control: SandboxM365Control,
    graph: Windows365Gateway,
    time_gateways: Any,
    store: Store,
    task_queue: str,
) -> None:
    op_id = f"op-{uuid.uuid4()}"
    async with Worker(
        time_env.client,
        task_queue=task_queue,
        workflows=[Windows365EncryptWorkflow],
        activities=build_activities(time_gateways),
        workflow_failure_exception_types=WORKFLOW_FAILURE_TYPES,
    ):
        with pytest.raises(WorkflowFailureError) as failure:
            await time_env.client.execute_workflow(
                Windows365EncryptWorkflow.run,
                Windows365EncryptInput(poll_interval=timedelta(hours=1), ready_limit=timedelta(hours=12)),
                id=op_id,
                task_queue=task_queue,
                memo={"started_by": "alice@contoso.com"},
            )
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError) and cause.type == "intune-not-ready", cause
    record = await store.get_operation(op_id)
    assert record is not None and record.state.value == "failed"
    (escalation,) = record.escalations
    assert timedelta(hours=6) <= escalation.at - record.started_at < timedelta(hours=6, minutes=5)
    assert await graph.bulk_actions() == []


async def test_intune_late_escalates_once_at_the_deadline_then_every_cloud_pc_is_encrypted(
    time_env: WorkflowEnvironment,
    control: SandboxM365Control,
    graph: Windows365Gateway,
    m365: M365Gateway,
    time_gateways: Any,
    store: Store,
    task_queue: str,
) -> None:
    dep = await assign_multi_workload_dep(m365)
    assigned_at = await time_env.get_current_time()
    op_id = f"op-{uuid.uuid4()}"

    async def microsoft() -> None:
        # The sandbox tenant's clock stands still until ckey has escalated; then Intune gets ready and the Cloud
        # PCs re-encrypt as Microsoft's time passes.
        for _ in range(6000):
            if await escalated(store, op_id):
                break
            await asyncio.sleep(0.05)
        await control.advance_clock(hours=5)
        while True:
            await control.advance_clock(minutes=30)
            await asyncio.sleep(0.1)

    tenant = asyncio.create_task(microsoft())
    try:
        async with Worker(
            time_env.client,
            task_queue=task_queue,
            workflows=[Windows365EncryptWorkflow],
            activities=build_activities(time_gateways),
            workflow_failure_exception_types=WORKFLOW_FAILURE_TYPES,
        ):
            result = await time_env.client.execute_workflow(
                Windows365EncryptWorkflow.run,
                Windows365EncryptInput(
                    dep=dep,
                    assigned_at=assigned_at,
                    poll_interval=timedelta(minutes=15),
                    batch_size=3,
                    ready_limit=timedelta(days=30),
                    # The two clocks are apart here (the server skips, the tenant's moves in steps): a batch's own
                    # limit is not what this test is about.
                    encrypt_limit=timedelta(days=30),
                ),
                id=op_id,
                task_queue=task_queue,
                memo={"started_by": "alice@contoso.com"},
            )
    finally:
        tenant.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await tenant
    assert result.escalated and (result.encrypted, result.failed, result.bulk_actions) == (SPEC.cloud_pcs, 0, 3)
    record = await store.get_operation(op_id)
    assert record is not None and record.state.value == "succeeded"
    (escalation,) = record.escalations
    assert escalation.subjects == [dep]
    assert timedelta(hours=6) <= escalation.at - assigned_at < timedelta(hours=6, minutes=5)
    assert all(pc.customer_managed for pc in await graph.cloud_pcs())


async def escalated(store: Store, op_id: str) -> bool:
    record = await store.get_operation(op_id)
    return record is not None and bool(record.escalations)


# A worker killed while encrypting ------------------------------------------------------------------------------------


async def test_killing_the_worker_while_encrypting_ends_once_with_no_cloud_pc_sent_twice(
    env: WorkflowEnvironment,
    client: Client,
    w365_settings: Settings,
    control: SandboxM365Control,
    graph: Windows365Gateway,
    m365: M365Gateway,
    store: Store,
    task_queue: str,
    tmp_path: Path,
) -> None:
    await assign_multi_workload_dep(m365)
    await control.advance_clock(hours=5)  # the Intune admin center is ready
    settings = w365_settings
    worker_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CKEY_")},
        "CKEY_DATA_DIR": str(settings.data_dir),
        "CKEY_SANDBOX": "true",
        "CKEY_DATABASE_URL": str(store.engine.url),
        "CKEY_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "CKEY_TEMPORAL_TASK_QUEUE": task_queue,
        "CKEY_SANDBOX_KEYVAULT_PORT": str(settings.sandbox_keyvault_port),
        "CKEY_SANDBOX_M365_PORT": str(settings.sandbox_m365_port),
        "CKEY_AZURE_CLIENT_ID": str(settings.azure_client_id),
        "CKEY_AZURE_CLIENT_SECRET": settings.azure_client_secret.get_secret_value()
        if settings.azure_client_secret
        else "",
        "CKEY_SCHEDULES": "false",
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
        Windows365EncryptWorkflow.run,
        Windows365EncryptInput(poll_interval=timedelta(seconds=1), batch_size=2),
        id=f"op-{uuid.uuid4()}",
        task_queue=task_queue,
    )
    # Killed in its longest phase: a bulk action sent and being followed (Microsoft's clock stands still).
    for _ in range(1200):
        if await graph.bulk_actions():
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    at_kill = len(await graph.bulk_actions())
    assert at_kill >= 1, (tmp_path / "worker-1.log").read_text()[-2000:]
    second = start_worker("worker-2.log")
    try:
        async with clock_running(control):
            result = await asyncio.wait_for(handle.result(), timeout=240)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    assert (result.total, result.encrypted, result.failed) == (SPEC.cloud_pcs, SPEC.cloud_pcs, 0)
    actions = await graph.bulk_actions()
    sent = [i for a in actions for i in a.cloud_pc_ids]
    print(f"worker kill: {at_kill} bulk actions at the kill, {len(actions)} in all")
    assert len(actions) == 4 == result.bulk_actions  # 7 Cloud PCs in batches of 2, each sent once
    assert sorted(sent) == sorted(pc.id for pc in await graph.cloud_pcs())
    record = await store.get_operation(handle.id)
    assert record is not None and record.state.value == "succeeded"
    assert (await CloudPcStore(store).counts()) == {"encryptedUsingCustomerManagedKey": SPEC.cloud_pcs}
