"""Fixtures for the operation workflows: the sandbox Key Vault, a worker with the product's gateways, the API."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from activities import Gateways, build_activities
from ckey.api.app import create_app
from ckey.auth import mint_local_token
from ckey.azure import AzureConnection
from ckey.config import Settings, load_settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway, build_transport
from ckey.models import Role
from ckey.store import Store
from ckey.support import HttpSupportDesk
from ckey.windows365 import Windows365Gateway
from sandbox.keyvault import SandboxKeyVaultControl, SandboxKeyVaultServer
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from sandbox.m365.tenant import TenantSpec
from tests.conftest import free_port, signed_in_to_sandbox
from worker import WORKFLOW_FAILURE_TYPES
from workflows import all_workflows


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of a sandbox stack for the workflow tests (its own data dir and ports)."""
    data_dir = tmp_path_factory.mktemp("workflows") / "data"
    return signed_in_to_sandbox(
        load_settings(
            data_dir=data_dir, sandbox_keyvault_port=free_port(), sandbox_m365_port=free_port(), _env_file=None
        )
    )


@pytest.fixture(scope="session")
def keyvault_server(stack_settings: Settings) -> Iterator[SandboxKeyVaultServer]:
    with SandboxKeyVaultServer(stack_settings) as server:
        yield server


@pytest.fixture(scope="session")
async def kv_control(
    stack_settings: Settings, keyvault_server: SandboxKeyVaultServer
) -> AsyncIterator[SandboxKeyVaultControl]:
    async with SandboxKeyVaultControl.from_settings(stack_settings) as control:
        yield control


TENANT = TenantSpec(mailboxes=900, mail_users=100, sites_per_geo=2, cloud_pcs=0, stuck_mailboxes=0)
"""The tenant of the workflow tests: 1,000 recipients, mixed mailboxes and mail users."""
TENANT_SPEED = 2_000_000.0
"""Simulated seconds per real second: a first-time move of days takes a fraction of a second."""


@pytest.fixture(scope="session")
def tenant_server(stack_settings: Settings, keyvault_server: SandboxKeyVaultServer) -> Iterator[SandboxM365Server]:
    with SandboxM365Server(stack_settings, seed=TENANT, speed=TENANT_SPEED) as server:
        yield server


@pytest.fixture(scope="session")
async def tenant_control(
    stack_settings: Settings, tenant_server: SandboxM365Server
) -> AsyncIterator[SandboxM365Control]:
    async with SandboxM365Control.from_settings(stack_settings) as control:
        yield control


@pytest.fixture
async def azure(stack_settings: Settings, keyvault_server: SandboxKeyVaultServer) -> AsyncIterator[AzureConnection]:
    async with AzureConnection(stack_settings) as connection:
        yield connection


@pytest.fixture
def m365(stack_settings: Settings, azure: AzureConnection, tenant_server: SandboxM365Server) -> M365Gateway:
    return M365Gateway(build_transport(stack_settings, azure))


@pytest.fixture
async def keyvault(azure: AzureConnection) -> AsyncIterator[KeyVaultGateway]:
    gateway = KeyVaultGateway(azure)
    try:
        yield gateway
    finally:
        await gateway.close()


@pytest.fixture
def op_settings(stack_settings: Settings, task_queue: str) -> Settings:
    return stack_settings.model_copy(update={"temporal_task_queue": task_queue})


def product_gateways(settings: Settings, store: Store, keyvault: KeyVaultGateway, azure: AzureConnection) -> Gateways:
    return Gateways(
        store=store,
        keyvault=keyvault,
        dep_keys=settings.dep_keys,
        m365=M365Gateway(build_transport(settings, azure)),
        support=HttpSupportDesk(azure, settings.support_url, settings.support_contact),
        windows365=Windows365Gateway(azure),
        spo_geo_admin_urls=settings.spo_geo_admin_urls,
    )


@pytest.fixture
async def product_worker(
    client: Client,
    op_settings: Settings,
    store: Store,
    keyvault: KeyVaultGateway,
    azure: AzureConnection,
    tenant_server: SandboxM365Server,
) -> AsyncIterator[Worker]:
    """A worker with every product workflow and activity, on the sandbox."""
    gateways = product_gateways(op_settings, store, keyvault, azure)
    async with Worker(
        client,
        task_queue=op_settings.temporal_task_queue,
        workflows=all_workflows(),
        activities=build_activities(gateways),
        workflow_failure_exception_types=WORKFLOW_FAILURE_TYPES,
    ) as worker:
        yield worker


@pytest.fixture
async def api(
    client: Client, op_settings: Settings, store: Store, keyvault: KeyVaultGateway, m365: M365Gateway
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(op_settings, client=client, store=store, keyvault=keyvault, m365=m365)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as http:
        yield http


@pytest.fixture
def auth(op_settings: Settings) -> Callable[..., dict[str, str]]:
    def make(role: Role = Role.ADMIN, user: str = "alice.admin@contoso.com") -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_local_token(op_settings, user, [role])}"}

    return make


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


HISTORIES = Path(__file__).parent / "histories"


@pytest.fixture
def record_history(client: Client) -> Callable[[str, str], Awaitable[None]]:
    """Save an operation's history for the replay tests, when ``CKEY_RECORD_HISTORIES=1``."""

    async def record(op_id: str, name: str) -> None:
        if os.environ.get("CKEY_RECORD_HISTORIES"):
            history = await client.get_workflow_handle(op_id).fetch_history()
            (HISTORIES / f"{name}.json").write_text(history.to_json())

    return record


async def closed_description(client: Client, workflow_id: str) -> Any:
    """The workflow's description once it has closed (or after 10 s).

    Its record's end is written by its last activity, a moment before the workflow itself completes.
    """
    handle = client.get_workflow_handle(workflow_id)
    for _ in range(100):
        described = await handle.describe()
        if described.status != WorkflowExecutionStatus.RUNNING:
            break
        await asyncio.sleep(0.1)
    return described
