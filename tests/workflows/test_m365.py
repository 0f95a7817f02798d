"""m365.dep.create, m365.dep.assign, m365.dep.disable against a sandbox tenant of their own.

The multi-workload assignment is tenant-wide: these tests run on a tenant of their own (its own database and port,
the session's Key Vault), with three Cloud PCs so that the assignment starts ``windows365.encrypt``, which encrypts
them. The time-skipping test of the deadline runs a stand-in of the child (``tests.support.windows365_stub``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
from temporalio import activity
from temporalio.api.enums.v1 import ParentClosePolicy
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities import build_activities
from activities.m365 import M365Activities
from ckey import temporal as sa
from ckey.api.app import create_app
from ckey.azure import AzureConnection
from ckey.config import Settings, SettingsError, load_settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway, build_transport
from ckey.models import Role, ServicePrincipal, Workload
from ckey.operations import OperationKind, OperationRecord, OperationState
from ckey.store import Store
from ckey.store.multiworkload import MultiWorkloadStore
from ckey.windows365 import Windows365Gateway
from contracts.alerts import Alert, AlertDelivery
from contracts.m365 import (
    SIGNAL,
    AssignmentInfo,
    AssignmentQuery,
    AssignMultiDepResult,
    FindMultiDepResult,
    M365DepAssignInput,
    M365DepCreateParams,
    M365DepDisableInput,
    M365DepRefParams,
    MultiDepInfo,
    MultiDepRef,
    RefreshMultiWorkloadInput,
    RefreshMultiWorkloadResult,
)
from contracts.operation import RecordOperationInput, RecordOperationResult
from contracts.windows365 import (
    WINDOWS365_ENCRYPT_WORKFLOW,
    CloudPcsInput,
    CloudPcsResult,
    Windows365EncryptResult,
)
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from sandbox.m365.tenant import TenantSpec
from tests.conftest import free_port
from tests.support.windows365_stub import Windows365EncryptStub
from tests.workflows.conftest import TENANT_SPEED, product_gateways, unique
from tests.workflows.test_keyvault import Auth, Recorder, run_operation
from worker import WORKFLOW_FAILURE_TYPES
from workflows import all_workflows, product_registry
from workflows.m365 import M365DepAssignWorkflow, M365DepDisableWorkflow, build_assign_input

M365 = ServicePrincipal.MICROSOFT_365.value
CLOUD_PCS = 3
DEMO_KEYS = [
    "https://contosowestusvault1.vault.azure.net/keys/key-01",
    "https://contosocentralusvault1.vault.azure.net/keys/key-02",
]
OWN_TENANT = TenantSpec(mailboxes=4, mail_users=0, sites_per_geo=0, cloud_pcs=CLOUD_PCS, stuck_mailboxes=0, seed=11)


@pytest.fixture(scope="module")
def tenant_settings(stack_settings: Settings) -> Settings:
    """The session's settings on a tenant of this module's own (another port; the same Key Vault and identity)."""
    return stack_settings.model_copy(update={"sandbox_m365_port": free_port()})


@pytest.fixture(scope="module")
def own_tenant(
    tenant_settings: Settings, keyvault_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SandboxM365Server]:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('m365') / 'tenant.db'}"
    with SandboxM365Server(tenant_settings, seed=OWN_TENANT, speed=TENANT_SPEED, database_url=url) as server:
        yield server


@pytest.fixture
async def control(tenant_settings: Settings, own_tenant: SandboxM365Server) -> AsyncIterator[SandboxM365Control]:
    async with SandboxM365Control.from_settings(tenant_settings) as client:
        yield client


@pytest.fixture
def m_settings(tenant_settings: Settings, task_queue: str) -> Settings:
    """Short window and cadence: the sandbox tenant's day passes in a fraction of a second."""
    return tenant_settings.model_copy(
        update={
            "temporal_task_queue": task_queue,
            "m365_assignment_window": timedelta(seconds=1),
            "m365_assignment_deadline": timedelta(seconds=30),
            "m365_assignment_poll_interval": timedelta(seconds=1),
            "windows365_ready_deadline": timedelta(hours=5),
            "windows365_poll_interval": timedelta(seconds=2),
            "windows365_batch_size": 7,
        }
    )


@pytest.fixture
async def m_azure(m_settings: Settings, own_tenant: SandboxM365Server) -> AsyncIterator[AzureConnection]:
    async with AzureConnection(m_settings) as connection:
        yield connection


@pytest.fixture
async def m_worker(
    client: Client, m_settings: Settings, store: Store, m_azure: AzureConnection
) -> AsyncIterator[Worker]:
    """A worker with every product workflow on the module's tenant."""
    keyvault = KeyVaultGateway(m_azure)
    gateways = product_gateways(m_settings, store, keyvault, m_azure)
    workflows = all_workflows()
    async with Worker(
        client,
        task_queue=m_settings.temporal_task_queue,
        workflows=workflows,
        activities=build_activities(gateways),
        workflow_failure_exception_types=WORKFLOW_FAILURE_TYPES,
    ) as worker:
        yield worker
    await keyvault.close()


@pytest.fixture
def m365(m_settings: Settings, m_azure: AzureConnection) -> M365Gateway:
    return M365Gateway(build_transport(m_settings, m_azure))


@pytest.fixture
async def m_api(
    client: Client, m_settings: Settings, store: Store, m365: M365Gateway
) -> AsyncIterator[httpx.AsyncClient]:
    async with AzureConnection(m_settings) as azure:
        keyvault = KeyVaultGateway(azure)
        app = create_app(m_settings, client=client, store=store, keyvault=keyvault, m365=m365)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as http:
            yield http
        await keyvault.close()


async def make_keys(
    kv_control: SandboxKeyVaultControl,
    *,
    granted: tuple[list[str], list[str]] = (["get", "wrapKey", "unwrapKey"], ["get", "wrapKey", "unwrapKey"]),
    one_vault: bool = False,
) -> list[str]:
    """Two fresh keys in two vaults of two regions, the Microsoft 365 data-at-rest principal granted ``granted``."""
    uris = []
    vault = ""
    for region, permissions in zip(("eastus", "westus"), granted, strict=True):
        if not (one_vault and vault):
            vault = unique("mw")
            await kv_control.create_vault(vault, location=region, purge_protection=True, soft_delete=True)
            await kv_control.grant(vault, "ckey-automation@contoso.com", ["all"])
        key = f"mw-key-{region}"
        await kv_control.create_key(vault, key)
        await kv_control.grant(vault, M365, permissions)
        uris.append(f"https://{vault}.vault.azure.net/keys/{key}")
    return uris


async def last_seq(control: SandboxM365Control) -> int:
    return max((c["seq"] for c in await control.calls(limit=100_000)), default=0)


async def calls_since(control: SandboxM365Control, seq: int, cmdlet: str) -> list[dict[str, Any]]:
    return [c for c in await control.calls(after=seq, limit=100_000) if c["cmdlet"].lower() == cmdlet.lower()]


async def create_dep(api: httpx.AsyncClient, auth: Auth, keys: list[str], name: str | None = None) -> dict[str, Any]:
    name = name or f"MW_{uuid.uuid4().hex[:8]}"
    params = {"name": name, "description": "Policy for multiple workloads in the test", "azure_key_ids": keys}
    body, _ = await run_operation(api, auth(Role.OPERATOR), "m365.dep.create", params)
    assert body["state"] == "succeeded", body["error"]
    return body


async def start(api: httpx.AsyncClient, auth: Auth, kind: str, params: dict[str, Any]) -> httpx.Response:
    return await api.post("/api/operations", json={"kind": kind, "params": params}, headers=auth(Role.OPERATOR))


async def run_directly(client: Client, store: Store, run: Any, input: Any, worker: Worker) -> OperationRecord | None:
    """Start a workflow on the worker's queue without the API (its preflight skipped); its record once ended."""
    op_id = f"op-{uuid.uuid4()}"
    handle = await client.start_workflow(
        run, input, id=op_id, task_queue=worker.task_queue, memo={"started_by": "alice@contoso.com"}
    )
    with contextlib.suppress(WorkflowFailureError):
        await handle.result()
    return await store.get_operation(op_id)


async def child_input(client: Client, child_id: str) -> dict[str, Any]:
    history = await client.get_workflow_handle(child_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    data: dict[str, Any] = json.loads(started.input.payloads[0].data)
    return data


# The forward path -------------------------------------------------------------------------------------------------


async def test_create_assign_in_effect_then_disable_once_another_is_assigned(
    m_api: httpx.AsyncClient,
    m_worker: Worker,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    control: SandboxM365Control,
    client: Client,
    m365: M365Gateway,
    store: Store,
    record_history: Recorder,
    m_azure: AzureConnection,
) -> None:
    keys = await make_keys(kv_control)
    name = f"MW_{uuid.uuid4().hex[:8]}"
    created, events = await run_operation(
        m_api,
        auth(Role.OPERATOR),
        "m365.dep.create",
        {"name": name, "description": "Policy for multiple workloads", "azure_key_ids": keys},
    )
    assert created["state"] == "succeeded", created["error"]
    await record_history(created["id"], "m365_dep_create")
    assert created["result"]["created"] is True
    assert any((e["target"] or "").startswith(f"New-M365DataAtRestEncryptionPolicy -Name {name} ") for e in events)
    # Idempotent: the same keys succeed with the DEP that exists; other keys are refused naming the difference.
    again, _ = await run_operation(m_api, auth(Role.OPERATOR), "m365.dep.create", {"name": name, "azure_key_ids": keys})
    assert (again["state"], again["result"]["created"]) == ("succeeded", False)
    other = await make_keys(kv_control)
    taken, _ = await run_operation(
        m_api, auth(Role.OPERATOR), "m365.dep.create", {"name": name, "azure_key_ids": other}
    )
    assert taken["state"] == "failed" and taken["error"].startswith("dep-name-taken"), taken["error"]
    assert other[0].lower() in taken["error"] and keys[0].lower() in taken["error"]

    seq = await last_seq(control)
    assigned, events = await run_operation(m_api, auth(Role.OPERATOR), "m365.dep.assign", {"dep": name})
    assert assigned["state"] == "succeeded", assigned["error"]
    await record_history(assigned["id"], "m365_dep_assign")
    result = assigned["result"]
    assert (result["dep"], result["signal"], result["sent"], result["escalated"]) == (name, SIGNAL, True, False)
    assert result["in_effect_at"] and result["in_effect_at"] >= result["assigned_at"]
    assert len(await calls_since(control, seq, "Set-M365DataAtRestEncryptionPolicyAssignment")) == 1
    # The plan is the first phase's detail: no in-effect state is documented, the window is waited out and verified.
    first = next(e for e in events if e["action"].startswith("phase."))
    assert first["action"] == "phase.validating" and first["detail"]["signal"] == SIGNAL
    assert "documents no in-effect state" in first["detail"]["plan"]
    # What the tenant says, through its real property (Name); and by the sandbox's own model (its Status, which
    # ckey never reads), the window waited out covered the time the assignment took to take effect.
    seen = await m365.get_m365_data_at_rest_encryption_policy_assignment()
    assert seen is not None and seen.dep == name and (seen.model_extra or {}).get("Status") == "Applied"

    # Windows 365: the tenant has Cloud PCs, so windows365.encrypt was started as a child, by name, abandoned on close.
    child_id = result["windows365_operation"]
    assert child_id == f"{assigned['id']}-windows365" and result["cloud_pcs"] == CLOUD_PCS
    described = await client.get_workflow_handle(child_id).describe()
    assert described.workflow_type == WINDOWS365_ENCRYPT_WORKFLOW and described.parent_id == assigned["id"]
    memo = await described.memo()
    assert (memo["started_by"], memo["dep"]) == ("alice.admin@contoso.com", name)
    attributes = described.typed_search_attributes
    assert (attributes.get(sa.KIND), attributes.get(sa.DEP)) == ("windows365.encrypt", name)
    assert attributes.get(sa.STARTED_BY) == "alice.admin@contoso.com"
    given = await child_input(client, child_id)
    assert (given["dep"], given["batch_size"]) == (name, 7)
    assert given["assigned_at"] and given["ready_deadline"] in ("PT5H", 18000.0, "18000.0")
    history = await client.get_workflow_handle(assigned["id"]).fetch_history()
    (initiated,) = [
        e.start_child_workflow_execution_initiated_event_attributes
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    assert initiated.parent_close_policy == ParentClosePolicy.PARENT_CLOSE_POLICY_ABANDON
    assert any(e["action"] == "m365.windows365.started" and e["detail"]["operation"] == child_id for e in events)
    # The child runs on its own record to the end: every Cloud PC of the tenant re-encrypted with the customer key.
    async with asyncio.timeout(120):
        encrypted = await client.get_workflow_handle(child_id, result_type=Windows365EncryptResult).result()
    assert (encrypted.total, encrypted.encrypted, encrypted.failed) == (CLOUD_PCS, CLOUD_PCS, 0), encrypted
    pcs = await Windows365Gateway(m_azure).cloud_pcs()
    assert [pc.disk_encryption_state for pc in pcs] == ["encryptedUsingCustomerManagedKey"] * CLOUD_PCS
    child_record = await store.get_operation(child_id)
    assert child_record is not None and child_record.state.value == "succeeded" and child_record.dep == name

    # The read models answer from SQL.
    viewer = auth(Role.VIEWER)
    assignment = (await m_api.get("/api/m365/assignment", headers=viewer)).json()
    assert (assignment["dep"], assignment["assigned_by"]) == (name, assigned["id"]), assignment
    dep = (await m_api.get(f"/api/m365/deps/{name}", headers=viewer)).json()
    assert (dep["assigned"], dep["azure_key_ids"]) == (True, keys)
    listed = {d["name"]: d for d in (await m_api.get("/api/m365/deps?refresh=true", headers=viewer)).json()}
    assert listed[name]["assigned"] is True
    missing = await m_api.get("/api/m365/deps/NO_SUCH_DEP", headers=viewer)
    assert missing.status_code == 404 and missing.json()["rule"] == "m365-dep-exists"

    # Disabling the assigned DEP is refused before anything is sent, naming the ways out: by the API, and by the
    # workflow itself (started directly, as if the DEP had been assigned after the API looked).
    seq = await last_seq(control)
    refused = await start(m_api, auth, "m365.dep.disable", {"dep": name})
    assert refused.status_code == 422 and refused.json()["rule"] == "m365-dep-assigned", refused.text
    assert "m365.dep.assign" in refused.json()["detail"] and "m365.rollback" in refused.json()["detail"]
    failed = await run_directly(client, store, M365DepDisableWorkflow.run, M365DepDisableInput(dep=name), m_worker)
    assert failed is not None and failed.state is OperationState.FAILED
    assert (failed.error or "").startswith("m365-dep-assigned") and "m365.rollback" in (failed.error or "")
    assert await control.calls(after=seq) == []

    # Another DEP assigned, the first one can be disabled, once (a second disable changes nothing).
    second = await create_dep(m_api, auth, await make_keys(kv_control))
    moved, _ = await run_operation(m_api, auth(Role.OPERATOR), "m365.dep.assign", {"dep": second["result"]["name"]})
    assert moved["state"] == "succeeded" and moved["result"]["previous"] == name, moved
    seq = await last_seq(control)
    disabled, _ = await run_operation(m_api, auth(Role.OPERATOR), "m365.dep.disable", {"dep": name})
    assert disabled["state"] == "succeeded" and disabled["result"]["disabled"] is True, disabled["error"]
    await record_history(disabled["id"], "m365_dep_disable")
    assert len(await calls_since(control, seq, "Set-M365DataAtRestEncryptionPolicy")) == 1
    twice, _ = await run_operation(m_api, auth(Role.OPERATOR), "m365.dep.disable", {"dep": name})
    assert (twice["state"], twice["result"]["disabled"]) == ("succeeded", False)
    assert len(await calls_since(control, seq, "Set-M365DataAtRestEncryptionPolicy")) == 1
    dep = (await m_api.get(f"/api/m365/deps/{name}", headers=viewer)).json()
    assert (dep["enabled"], dep["assigned"]) == (False, False)

    # A disabled or unknown DEP is refused before anything is sent, by the API and by the workflow.
    seq = await last_seq(control)
    refused_again = await start(m_api, auth, "m365.dep.assign", {"dep": name})
    assert refused_again.status_code == 422 and refused_again.json()["rule"] == "m365-dep-enabled", refused_again.text
    unknown = await start(m_api, auth, "m365.dep.assign", {"dep": "NO_SUCH_DEP"})
    assert unknown.status_code == 422 and unknown.json()["rule"] == "m365-dep-exists", unknown.text
    for dep_name, rule in ((name, "m365-dep-enabled"), ("NO_SUCH_DEP", "m365-dep-exists")):
        failed = await run_directly(
            client, store, M365DepAssignWorkflow.run, M365DepAssignInput(dep=dep_name), m_worker
        )
        assert failed is not None and (failed.error or "").startswith(rule), failed
    assert await control.calls(after=seq) == []
    still = await m365.get_m365_data_at_rest_encryption_policy_assignment()
    assert still is not None and still.dep == second["result"]["name"]


# Refusals with nothing changed ------------------------------------------------------------------------------------


async def test_keys_in_one_vault_are_refused_by_the_api(
    m_api: httpx.AsyncClient, auth: Auth, store: Store, kv_control: SandboxKeyVaultControl, control: SandboxM365Control
) -> None:
    keys = await make_keys(kv_control, one_vault=True)
    seq = await last_seq(control)
    response = await m_api.post(
        "/api/operations",
        json={"kind": "m365.dep.create", "params": {"name": "MW_one_vault", "azure_key_ids": keys}},
        headers=auth(Role.OPERATOR),
    )
    assert response.status_code == 422 and response.json()["rule"] == "two-keys-two-vaults", response.text
    assert await store.list_operations() == []
    assert await control.calls(after=seq) == []


async def test_a_key_without_the_microsoft_365_principals_unwrap_is_refused(
    m_api: httpx.AsyncClient,
    m_worker: Worker,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    control: SandboxM365Control,
    m365: M365Gateway,
) -> None:
    keys = await make_keys(kv_control, granted=(["get", "wrapKey", "unwrapKey"], ["get", "wrapKey"]))
    before = await m365.get_m365_data_at_rest_encryption_policy()
    seq = await last_seq(control)
    body, _ = await run_operation(
        m_api, auth(Role.OPERATOR), "m365.dep.create", {"name": f"MW_{uuid.uuid4().hex[:8]}", "azure_key_ids": keys}
    )
    assert body["state"] == "failed" and body["error"].startswith("service-principal-get-wrap-unwrap"), body["error"]
    assert M365 in body["error"] or "unwrap" in body["error"].lower()
    assert await control.calls(after=seq) == []
    assert await m365.get_m365_data_at_rest_encryption_policy() == before


# A worker killed while the assignment is followed -----------------------------------------------------------------


async def test_killing_the_worker_while_following_the_assignment_ends_it_once(
    env: WorkflowEnvironment,
    client: Client,
    m_settings: Settings,
    store: Store,
    m_api: httpx.AsyncClient,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    control: SandboxM365Control,
    tmp_path: Path,
) -> None:
    # Created through a worker of this process; assigned by a worker process killed in its window.
    async with AzureConnection(m_settings) as azure:
        keyvault = KeyVaultGateway(azure)
        gateways = product_gateways(m_settings, store, keyvault, azure)
        async with Worker(
            client,
            task_queue=m_settings.temporal_task_queue,
            workflows=all_workflows(),
            activities=build_activities(gateways),
        ):
            name = (await create_dep(m_api, auth, await make_keys(kv_control)))["result"]["name"]
        await keyvault.close()
    worker_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CKEY_")},
        "CKEY_DATA_DIR": str(m_settings.data_dir),
        "CKEY_SANDBOX": "true",
        "CKEY_DATABASE_URL": str(store.engine.url),
        "CKEY_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "CKEY_TEMPORAL_TASK_QUEUE": m_settings.temporal_task_queue,
        "CKEY_SANDBOX_KEYVAULT_PORT": str(m_settings.sandbox_keyvault_port),
        "CKEY_SANDBOX_M365_PORT": str(m_settings.sandbox_m365_port),
        "CKEY_SCHEDULES": "false",
        "CKEY_AZURE_CLIENT_ID": str(m_settings.azure_client_id),
        "CKEY_AZURE_CLIENT_SECRET": m_settings.azure_client_secret.get_secret_value()
        if m_settings.azure_client_secret
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

    seq = await last_seq(control)
    first = start_worker("worker-1.log")
    op_id = f"op-{uuid.uuid4()}"
    handle = await client.start_workflow(
        M365DepAssignWorkflow.run,
        M365DepAssignInput(
            dep=name, window=timedelta(seconds=6), deadline=timedelta(minutes=5), poll_interval=timedelta(seconds=1)
        ),
        id=op_id,
        task_queue=m_settings.temporal_task_queue,
        memo={"started_by": "alice@contoso.com"},
    )
    try:
        for _ in range(1200):
            record = await store.get_operation(op_id)
            if record is not None and record.phase == "waiting":
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError((tmp_path / "worker-1.log").read_text()[-3000:])
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    second = start_worker("worker-2.log")
    try:
        result = await asyncio.wait_for(handle.result(), timeout=120)
    except TimeoutError:
        raise AssertionError((tmp_path / "worker-2.log").read_text()[-3000:]) from None
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
        # No worker process runs the Windows 365 stand-in: its run is ended here.
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(f"{op_id}-windows365").terminate("test over")
    assert result.dep == name and result.in_effect_at is not None
    assert len(await calls_since(control, seq, "Set-M365DataAtRestEncryptionPolicyAssignment")) == 1
    events = await store.list_audit(operation_id=op_id, limit=10_000)
    assert [e.action for e in events].count("operation.succeeded") == 1
    assert [e.action for e in events].count("m365.assigned") == 1
    record = await store.get_operation(op_id)
    assert record is not None and record.state is OperationState.SUCCEEDED


# The deadline on the time-skipping server -------------------------------------------------------------------------


class NeverAssigned:
    """Activities of a tenant that accepts the assignment and never shows it (to drive the deadline)."""

    def __init__(self) -> None:
        self.reads = 0
        self.escalations: list[Any] = []
        self.alerts: list[Alert] = []

    @activity.defn(name="m365_find_dep")
    async def find(self, input: MultiDepRef) -> FindMultiDepResult:
        return FindMultiDepResult(dep=MultiDepInfo(name=input.dep, guid="g-1", enabled=True))

    @activity.defn(name="m365_assign_dep")
    async def assign(self, input: MultiDepRef) -> AssignMultiDepResult:
        return AssignMultiDepResult(previous=None, sent=True)

    @activity.defn(name="m365_get_assignment")
    async def get(self, input: AssignmentQuery) -> AssignmentInfo:
        self.reads += 1
        return AssignmentInfo()

    @activity.defn(name="refresh_multi_workload")
    async def refresh(self, input: RefreshMultiWorkloadInput) -> RefreshMultiWorkloadResult:
        return RefreshMultiWorkloadResult()

    @activity.defn(name="count_cloud_pcs")
    async def count(self, input: CloudPcsInput) -> CloudPcsResult:
        return CloudPcsResult(count=2)

    @activity.defn(name="post_alert_webhook")
    async def alert(self, input: Alert) -> AlertDelivery:
        self.alerts.append(input)
        return AlertDelivery(delivered=True, status=200)

    @activity.defn(name="record_operation")
    async def record(self, input: RecordOperationInput) -> RecordOperationResult:
        if input.event is not None and input.event.action == "escalated":
            self.escalations.append(input.event)
        return RecordOperationResult()


async def test_an_assignment_never_shown_is_escalated_once_at_the_deadline(
    time_env: WorkflowEnvironment, task_queue: str
) -> None:
    tenant = NeverAssigned()
    async with Worker(
        time_env.client,
        task_queue=task_queue,
        workflows=[M365DepAssignWorkflow, Windows365EncryptStub],
        activities=[
            tenant.find,
            tenant.assign,
            tenant.get,
            tenant.refresh,
            tenant.count,
            tenant.record,
            tenant.alert,
        ],
    ):
        # A parent id of 64 characters (the bound of an operation id): the child's is cut to fit, not refused.
        long_id = f"op-{uuid.uuid4()}-{'x' * 24}"
        handle = await time_env.client.start_workflow(
            M365DepAssignWorkflow.run,
            M365DepAssignInput(dep="MW_never", poll_interval=timedelta(hours=1)),
            id=long_id,
            task_queue=task_queue,
        )
        started = await time_env.get_current_time()
        for _ in range(200):
            if tenant.escalations:
                break
            await time_env.sleep(timedelta(hours=1))
        escalated_at = tenant.escalations[0].at if tenant.escalations else None
        await time_env.sleep(timedelta(days=2))
        status = await handle.query(M365DepAssignWorkflow.progress)
        history = await handle.fetch_history()
        await handle.terminate("test over")
    (child,) = [
        e.start_child_workflow_execution_initiated_event_attributes.workflow_id
        for e in history.events
        if e.HasField("start_child_workflow_execution_initiated_event_attributes")
    ]
    assert len(long_id) == 64 and len(child) <= 64 and child.endswith("-windows365") and child.startswith(long_id[:40])
    assert escalated_at is not None
    assert timedelta(hours=26) <= escalated_at - started < timedelta(hours=28), escalated_at - started
    assert len(tenant.escalations) == 1 and len(status.escalations) == 1
    assert status.phase == "escalated" and tenant.reads > 20


# Settings ---------------------------------------------------------------------------------------------------------


def test_the_assignment_takes_its_window_deadline_and_windows365_knobs_from_the_settings() -> None:
    settings = load_settings(
        _env_file=None,
        m365_assignment_window="20h",
        m365_assignment_deadline="30h",
        m365_assignment_poll_interval="5m",
        windows365_ready_deadline="5h",
        windows365_poll_interval="2m",
        windows365_batch_size=9,
    )
    built = build_assign_input(M365DepRefParams(dep="Contoso_Global"), settings)
    assert (built.window, built.deadline, built.poll_interval) == (
        timedelta(hours=20),
        timedelta(hours=30),
        timedelta(minutes=5),
    )
    assert (built.windows365_ready_deadline, built.windows365_poll_interval, built.windows365_batch_size) == (
        timedelta(hours=5),
        timedelta(minutes=2),
        9,
    )
    defaults = build_assign_input(M365DepRefParams(dep="Contoso_Global"), load_settings(_env_file=None))
    assert timedelta(hours=24) == defaults.window < defaults.deadline <= timedelta(hours=30)
    with pytest.raises(SettingsError, match="m365_assignment_deadline"):
        load_settings(_env_file=None, m365_assignment_window="24h", m365_assignment_deadline="2h")
    with pytest.raises(ValueError, match="deadline-after-window"):
        M365DepAssignInput(dep="Contoso_Global", window=timedelta(hours=2), deadline=timedelta(hours=1))
    # The knobs are the deployment's: a caller can't set them.
    with pytest.raises(ValueError, match="extra"):
        M365DepRefParams.model_validate({"dep": "Contoso_Global", "window": "PT1S"})


def leases_of(kind: OperationKind, params: Any) -> list[Any]:
    assert kind.leases_of is not None
    return list(kind.leases_of(params).leases)


def test_the_kinds_hold_the_dep_and_the_tenants_assignment() -> None:
    registry = product_registry()
    assign, disable, create = (registry.get(f"m365.dep.{verb}") for verb in ("assign", "disable", "create"))
    assert assign is not None and disable is not None and create is not None
    held = {
        kind.name: {(lease.target, lease.mode.value) for lease in leases_of(kind, params)}
        for kind, params in (
            (assign, M365DepRefParams(dep="Contoso_Global")),
            (disable, M365DepRefParams(dep="Contoso_Global")),
            (create, M365DepCreateParams.model_validate({"name": "Contoso_Global", "azure_key_ids": DEMO_KEYS})),
        )
    }
    assert held == {
        "m365.dep.assign": {("dep:multi_workload:contoso_global", "read"), ("m365:assignment:tenant", "write")},
        "m365.dep.disable": {("dep:multi_workload:contoso_global", "write"), ("m365:assignment:tenant", "read")},
        "m365.dep.create": {("dep:multi_workload:contoso_global", "write")},
    }


# The activities, on their own -------------------------------------------------------------------------------------


async def test_a_retried_assignment_sends_nothing_and_the_refresh_reads_it_into_the_inventory(
    m365: M365Gateway, store: Store, kv_control: SandboxKeyVaultControl, control: SandboxM365Control
) -> None:
    name = f"MW_{uuid.uuid4().hex[:8]}"
    await m365.new_m365_data_at_rest_encryption_policy(name, await make_keys(kv_control), "activity test")
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id="op-activity-test")
    activities = M365Activities(m365, store)
    seq = await last_seq(control)
    first = await env.run(activities.m365_assign_dep, MultiDepRef(dep=name))
    # The worker died after the call went through: the retry finds the DEP assigned and sends nothing.
    env.info = dataclasses.replace(env.info, attempt=2)
    retried = await env.run(activities.m365_assign_dep, MultiDepRef(dep=name))
    assert (first.sent, retried.sent, retried.previous) == (True, False, name)
    assert len(await calls_since(control, seq, "Set-M365DataAtRestEncryptionPolicyAssignment")) == 1

    read = await env.run(activities.refresh_multi_workload, RefreshMultiWorkloadInput(operation_id="op-sync"))
    inventory = MultiWorkloadStore(store)
    listed = await inventory.deps()
    assert read.assigned == name and read.deps == len(listed) >= 1
    assert name in [d.name for d in listed] and all(d.source == "op-sync" for d in listed)
    assignment = await inventory.assignment()
    assert assignment is not None and (assignment.dep, assignment.assigned_by) == (name, "op-activity-test")
    assert assignment.properties["Name"] == name


async def test_the_demo_keys_make_a_multi_workload_dep(
    m_api: httpx.AsyncClient, m_worker: Worker, auth: Auth, m_settings: Settings
) -> None:
    # What the README's commands use: the sandbox's demo keys for the Microsoft 365 principal (CKEY_DEP_KEYS).
    keys = m_settings.dep_keys[Workload.MULTI_WORKLOAD]
    body = await create_dep(m_api, auth, keys, f"MW_demo_{uuid.uuid4().hex[:6]}")
    assert body["result"]["created"] is True
