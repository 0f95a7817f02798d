"""One Idempotency-Key, many concurrent requests: exactly one starts the operation, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from temporalio.client import Client

from ckey.api.app import create_app
from ckey.config import Settings
from ckey.models import Role
from ckey.store import Store

Headers = Callable[..., dict[str, str]]


@pytest.fixture
async def api_on_any_store(
    client: Client, settings: Settings, any_store: Store, steps_kind: object
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, client=client, store=any_store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as http:
        yield http


@pytest.mark.parametrize("round_", range(3))
async def test_concurrent_requests_with_one_key_start_one_operation(
    api_on_any_store: httpx.AsyncClient, any_store: Store, client: Client, token_for: Headers, round_: int
) -> None:
    alice = {**token_for("alice@contoso.com", Role.OPERATOR), "Idempotency-Key": f"race-{round_}-{id(any_store)}"}
    bodies = [{"kind": "test.steps", "params": {"dep": f"DEP_{n}", "steps": 1, "hold": True}} for n in range(3)]
    responses = await asyncio.gather(
        *(api_on_any_store.post("/api/operations", json=bodies[n % 3], headers=alice) for n in range(6))
    )
    started = [r for r in responses if r.status_code == 202 and not r.json()["replayed"]]
    assert len(started) == 1, [(r.status_code, r.text) for r in responses]
    winner = started[0]
    winning_body = bodies[next(n for n in range(6) if responses[n] is winner) % 3]
    op_id = winner.json()["id"]
    for n, response in enumerate(responses):
        if response is winner:
            continue
        if bodies[n % 3] == winning_body:
            assert response.status_code == 202 and response.json() == {**winner.json(), "replayed": True}
        else:
            assert response.status_code == 422, response.text
            assert response.json()["rule"] == "idempotency-key-reused"
    assert Counter(r.status_code for r in responses) == {202: 2, 422: 4}
    records = await any_store.list_operations(limit=1000)
    assert [r.id for r in records if r.started_by == "alice@contoso.com" and r.id == op_id] == [op_id]
    assert records[0].params["dep"] == winning_body["params"]["dep"]  # type: ignore[index]
    await client.get_workflow_handle(op_id).terminate("test over")


async def test_a_start_that_temporal_refuses_leaves_no_reservation(
    settings: Settings, store: Store, client: Client, steps_kind: object, token_for: Headers
) -> None:
    unreachable = settings.model_copy(update={"temporal_task_queue": ""})  # the server refuses an empty queue
    app = create_app(unreachable, client=client, store=store)
    headers = {**token_for("alice@contoso.com", Role.OPERATOR), "Idempotency-Key": "refused-start"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as http:
        response = await http.post(
            "/api/operations", json={"kind": "test.steps", "params": {"dep": "D", "steps": 1}}, headers=headers
        )
    assert response.status_code == 503, response.text
    assert response.json()["rule"] == "temporal-reachable"
    assert await store.list_operations() == []
