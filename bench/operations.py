"""Benchmark of the operation machinery: operations started through the API, run to the end on the dev server.

Prints figures; asserts nothing. ``python -m bench.operations [count]``.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import Gateways, build_activities
from ckey import temporal as sa
from ckey.api.app import create_app
from ckey.auth import mint_local_token
from ckey.config import load_settings
from ckey.models import Role
from ckey.store import Store
from ckey.store.migrate import upgrade
from tests.support.steps import STEPS_KIND, StepsWorkflow
from workflows import product_registry


async def main(count: int) -> None:
    """Start ``count`` three-step operations concurrently and wait for all of them."""
    tmp = Path(tempfile.mkdtemp(prefix="ckey-bench-"))
    temporal = str(Path(sys.executable).parent / "temporal")
    settings = load_settings(data_dir=tmp, temporal_task_queue=f"bench-{uuid.uuid4()}", _env_file=None)
    store = Store.from_url(settings.resolved_database_url)
    await upgrade(store.engine)
    product_registry().register(STEPS_KIND)
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal,
        data_converter=pydantic_data_converter,
        search_attributes=sa.SEARCH_ATTRIBUTES,
    ) as env:
        app = create_app(settings, client=env.client, store=store)
        headers = {"Authorization": f"Bearer {mint_local_token(settings, 'bench@contoso.com', [Role.OPERATOR])}"}
        async with (
            Worker(
                env.client,
                task_queue=settings.temporal_task_queue,
                workflows=[StepsWorkflow],
                activities=build_activities(Gateways(store=store)),
            ),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as api,
        ):
            started = time.perf_counter()
            responses = await asyncio.gather(
                *(
                    api.post(
                        "/api/operations", json={"kind": "test.steps", "params": {"dep": f"DEP_{i}"}}, headers=headers
                    )
                    for i in range(count)
                )
            )
            accepted = time.perf_counter() - started
            ids = [r.json()["id"] for r in responses]
            await asyncio.gather(*(env.client.get_workflow_handle(i).result() for i in ids))
            finished = time.perf_counter() - started
    events = len(await store.list_audit(limit=1_000_000))
    verdict = await store.verify_audit_chain()
    await store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    print(f"operations: {count}")
    print(f"accepted through the API: {accepted:.2f} s ({count / accepted:.1f} starts/s)")
    print(f"all finished: {finished:.2f} s ({count / finished:.1f} operations/s)")
    print(f"audit events: {events} ({events / count:.1f} per operation), chain intact: {verdict.ok}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
