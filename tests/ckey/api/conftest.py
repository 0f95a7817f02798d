from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from temporalio.client import Client
from temporalio.worker import Worker

from activities import Gateways, build_activities
from ckey.api.app import create_app
from ckey.auth import mint_local_token
from ckey.config import Settings
from ckey.models import Role
from ckey.store import Store
from tests.support.steps import STEPS_KIND, StepsWorkflow
from workflows import product_registry


@pytest.fixture
async def worker(client: Client, settings: Settings, store: Store) -> AsyncIterator[Worker]:
    """A worker running the test kind and the product's activities against the test store."""
    async with Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=[StepsWorkflow],
        activities=build_activities(Gateways(store=store)),
    ) as running:
        yield running


@pytest.fixture
def steps_kind() -> object:
    product_registry().register(STEPS_KIND)
    yield STEPS_KIND
    product_registry().unregister(STEPS_KIND.name)


@pytest.fixture
async def api(client: Client, settings: Settings, store: Store, steps_kind: object) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, client=client, store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as http:
        yield http


@pytest.fixture
def token_for(settings: Settings) -> Callable[..., dict[str, str]]:
    def make(user: str = "alice@contoso.com", *roles: Role) -> dict[str, str]:
        token = mint_local_token(settings, user, list(roles) or [Role.OPERATOR])
        return {"Authorization": f"Bearer {token}"}

    return make
