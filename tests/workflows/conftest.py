"""Fixtures for the operation workflows: the sandbox Key Vault, a worker with the product's gateways, the API."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities import Gateways, build_activities
from ckey.api.app import create_app
from ckey.auth import mint_local_token
from ckey.azure import AzureConnection
from ckey.config import Settings, load_settings
from ckey.keyvault import KeyVaultGateway
from ckey.models import Role
from ckey.store import Store
from sandbox.keyvault import SandboxKeyVaultControl, SandboxKeyVaultServer
from tests.conftest import free_port
from workflows import all_workflows


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings of a sandbox stack for the workflow tests (its own data dir and ports)."""
    data_dir = tmp_path_factory.mktemp("workflows") / "data"
    return load_settings(data_dir=data_dir, sandbox_keyvault_port=free_port(), _env_file=None)


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


@pytest.fixture
async def keyvault(stack_settings: Settings, keyvault_server: SandboxKeyVaultServer) -> AsyncIterator[KeyVaultGateway]:
    async with AzureConnection(stack_settings) as connection:
        gateway = KeyVaultGateway(connection)
        try:
            yield gateway
        finally:
            await gateway.close()


@pytest.fixture
def op_settings(stack_settings: Settings, task_queue: str) -> Settings:
    return stack_settings.model_copy(update={"temporal_task_queue": task_queue})


@pytest.fixture
async def product_worker(
    client: Client, op_settings: Settings, store: Store, keyvault: KeyVaultGateway
) -> AsyncIterator[Worker]:
    """A worker with every product workflow and activity, on the sandbox."""
    gateways = Gateways(store=store, keyvault=keyvault, dep_keys=op_settings.dep_keys)
    async with Worker(
        client,
        task_queue=op_settings.temporal_task_queue,
        workflows=all_workflows(),
        activities=build_activities(gateways),
    ) as worker:
        yield worker


@pytest.fixture
async def api(
    client: Client, op_settings: Settings, store: Store, keyvault: KeyVaultGateway
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(op_settings, client=client, store=store, keyvault=keyvault)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as http:
        yield http


@pytest.fixture
def auth(op_settings: Settings) -> Callable[..., dict[str, str]]:
    def make(role: Role = Role.ADMIN, user: str = "alice.admin@contoso.com") -> dict[str, str]:
        return {"Authorization": f"Bearer {mint_local_token(op_settings, user, [role])}"}

    return make


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
