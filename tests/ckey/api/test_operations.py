"""The operation machinery through the API, on the real Temporal dev server, with the test-only kind."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.worker import Worker

from ckey import temporal as sa
from ckey.models import Role
from ckey.store import Store
from workflows import product_registry

Headers = Callable[..., dict[str, str]]
KEY_URI = "https://contosoWestUSvault1.vault.azure.net/keys/Key-01"


async def _wait_for(
    api: httpx.AsyncClient, headers: dict[str, str], op_id: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    for _ in range(200):
        body: dict[str, Any] = (await api.get(f"/api/operations/{op_id}", headers=headers)).json()
        if check(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"operation never reached the expected state: {body}")


def _done_at_least(step: int) -> Callable[[dict[str, Any]], bool]:
    return lambda body: bool(body["progress"]["done"] >= step)


async def test_operation_runs_with_record_progress_and_audit(
    api: httpx.AsyncClient, worker: Worker, client: Client, store: Store, token_for: Headers
) -> None:
    alice = token_for("alice@contoso.com", Role.OPERATOR)
    started = await api.post(
        "/api/operations",
        json={"kind": "test.steps", "params": {"dep": "USA_mailboxes", "key_uri": KEY_URI, "steps": 4, "hold": True}},
        headers=alice,
    )
    assert started.status_code == 202, started.text
    op_id = started.json()["id"]
    assert started.headers["Location"] == f"/api/operations/{op_id}"

    body = await _wait_for(api, alice, op_id, lambda b: b["phase"] == "stepping")
    assert (body["kind"], body["state"], body["started_by"]) == ("test.steps", "running", "alice@contoso.com")
    assert body["progress"] == {"done": 0, "total": 4, "unit": "steps", "percent": 0.0}

    handle = client.get_workflow_handle(op_id)
    seen = []
    for step in range(1, 5):
        await handle.signal("release", 1)
        body = await _wait_for(api, alice, op_id, _done_at_least(step))
        seen.append(body["progress"]["percent"])
    assert seen == [25.0, 50.0, 75.0, 100.0]

    body = await _wait_for(api, alice, op_id, lambda b: b["state"] == "succeeded" and b["ended_at"])
    assert body["result"] == {"steps_done": 4}
    assert body["phase"] == "done" and body["ended_at"] is not None

    events = (await api.get(f"/api/operations/{op_id}/events", headers=alice)).json()
    actions = [e["action"] for e in events]
    assert actions == ["operation.started", "phase.preparing", "phase.stepping", "phase.done", "operation.succeeded"]
    assert events[0]["actor"] == "alice@contoso.com"
    assert events[0]["detail"]["params"]["dep"] == "USA_mailboxes"
    assert all(e["operation_id"] == op_id for e in events)
    assert (await store.verify_audit_chain()).ok

    desc = await handle.describe()
    assert desc.typed_search_attributes.get(sa.KIND) == "test.steps"
    assert desc.typed_search_attributes.get(sa.DEP) == "USA_mailboxes"
    assert desc.typed_search_attributes.get(sa.STATE) == "succeeded"
    assert desc.typed_search_attributes.get(sa.STARTED_BY) == "alice@contoso.com"

    listed = (
        await api.get("/api/operations", params={"state": "succeeded", "kind": "test.steps"}, headers=alice)
    ).json()
    assert [o["id"] for o in listed["items"]] == [op_id] and listed["total"] == 1
    running = (await api.get("/api/operations", params={"state": "running"}, headers=alice)).json()
    assert running == {"items": [], "total": 0, "offset": 0, "limit": 100}


async def test_idempotency_key_returns_the_same_operation(
    api: httpx.AsyncClient, worker: Worker, client: Client, token_for: Headers
) -> None:
    alice = token_for("alice@contoso.com", Role.OPERATOR) | {"Idempotency-Key": "assign-usa-1"}
    request = {"kind": "test.steps", "params": {"dep": "USA_mailboxes", "steps": 2, "hold": True}}
    first = await api.post("/api/operations", json=request, headers=alice)
    retry = await api.post("/api/operations", json=request, headers=alice)
    assert first.status_code == retry.status_code == 202
    assert retry.json()["id"] == first.json()["id"]
    assert retry.json()["replayed"] is True and retry.headers["Idempotent-Replayed"] == "true"

    other = await api.post(
        "/api/operations", json={"kind": "test.steps", "params": {"dep": "EU_mailboxes"}}, headers=alice
    )
    assert other.status_code == 422
    assert other.json()["rule"] == "idempotency-key-reused"

    # Another caller's identical key is their own operation.
    bob = token_for("bob@contoso.com", Role.OPERATOR) | {"Idempotency-Key": "assign-usa-1"}
    bobs = await api.post("/api/operations", json=request, headers=bob)
    assert bobs.status_code == 202 and bobs.json()["id"] != first.json()["id"]

    op_id = first.json()["id"]
    handle = client.get_workflow_handle(op_id)
    await handle.signal("release", 2)
    await handle.result()
    after_end = await api.post("/api/operations", json=request, headers=alice)
    assert after_end.json() == {"id": op_id, "kind": "test.steps", "state": "succeeded", "replayed": True}
    # Exactly one run of that workflow id exists: the retries started nothing.
    runs = [w async for w in client.list_workflows(f'WorkflowId = "{op_id}"')]
    assert len(runs) == 1
    await client.get_workflow_handle(bobs.json()["id"]).terminate("test cleanup")


async def test_cancel_records_who_asked_and_ends_cancelled(
    api: httpx.AsyncClient, worker: Worker, client: Client, token_for: Headers
) -> None:
    alice = token_for("alice@contoso.com", Role.OPERATOR)
    op_id = (
        await api.post(
            "/api/operations",
            json={"kind": "test.steps", "params": {"dep": "USA_mailboxes", "hold": True}},
            headers=alice,
        )
    ).json()["id"]
    await _wait_for(api, alice, op_id, lambda b: b["phase"] == "stepping")

    viewer = token_for("victor@contoso.com", Role.VIEWER)
    assert (await api.post(f"/api/operations/{op_id}/cancel", headers=viewer)).status_code == 403

    bob = token_for("bob@contoso.com", Role.OPERATOR)
    cancelled = await api.post(f"/api/operations/{op_id}/cancel", headers=bob)
    assert cancelled.status_code == 202, cancelled.text
    body = await _wait_for(api, alice, op_id, lambda b: b["state"] == "cancelled" and b["ended_at"])
    assert body["ended_at"] is not None
    # The record's end is written by the workflow's last activity, a moment before the workflow itself completes.
    handle = client.get_workflow_handle(op_id)
    for _ in range(100):
        status = (await handle.describe()).status
        if status != WorkflowExecutionStatus.RUNNING:
            break
        await asyncio.sleep(0.1)
    assert status == WorkflowExecutionStatus.CANCELED

    events = (await api.get(f"/api/operations/{op_id}/events", headers=viewer)).json()
    asked = [e for e in events if e["action"] == "operation.cancel_requested"]
    assert [e["actor"] for e in asked] == ["bob@contoso.com"]
    assert events[-1]["action"] == "operation.cancelled"

    again = await api.post(f"/api/operations/{op_id}/cancel", headers=bob)
    assert (again.status_code, again.json()["rule"]) == (409, "operation-ended")


async def test_business_failure_is_recorded(api: httpx.AsyncClient, worker: Worker, token_for: Headers) -> None:
    alice = token_for()
    op_id = (
        await api.post(
            "/api/operations",
            json={"kind": "test.steps", "params": {"dep": "USA_mailboxes", "fail_at_step": 2}},
            headers=alice,
        )
    ).json()["id"]
    body = await _wait_for(api, alice, op_id, lambda b: b["state"] == "failed" and b["ended_at"])
    assert body["error"] == "StepRefused: step 2 refused"
    assert body["progress"]["done"] == 1


@pytest.mark.parametrize(
    ("request_body", "rule", "loc"),
    [
        ({"kind": "exchange.nothing", "params": {}}, "operation-kind-known", None),
        ({"kind": "test.steps", "params": {"dep": "USA mailboxes"}}, "dep-name-no-spaces", ["body", "params", "dep"]),
        (
            {"kind": "test.steps", "params": {"dep": "USA", "key_uri": "https://contoso.example.com/keys/k"}},
            "key-uri-format",
            ["body", "params", "key_uri"],
        ),
        (
            {"kind": "test.steps", "params": {"dep": "USA", "key_uri": "http://v1.vault.azure.net/keys/k"}},
            "key-uri-format",
            ["body", "params", "key_uri"],
        ),
        (
            {"kind": "test.steps", "params": {"dep": "USA", "steps": 0}},
            "greater-than-equal",
            ["body", "params", "steps"],
        ),
        ({"kind": "test.steps", "params": {}}, "missing", ["body", "params", "dep"]),
        ({"params": {}}, "missing", ["body", "kind"]),
    ],
)
async def test_invalid_requests_are_422_naming_the_rule_and_start_nothing(
    api: httpx.AsyncClient,
    client: Client,
    store: Store,
    token_for: Headers,
    request_body: dict[str, Any],
    rule: str,
    loc: list[str] | None,
) -> None:
    response = await api.post("/api/operations", json=request_body, headers=token_for())
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["rule"] == rule
    assert rule in problem["detail"] or problem["title"]
    if loc:
        assert problem["errors"][0]["loc"] == loc and problem["errors"][0]["rule"] == rule
    assert await store.list_operations() == []


async def test_auth_is_required_and_roles_are_enforced(
    api: httpx.AsyncClient, store: Store, token_for: Headers
) -> None:
    request = {"kind": "test.steps", "params": {"dep": "USA_mailboxes"}}
    for method, path in [
        ("POST", "/api/operations"),
        ("GET", "/api/operations"),
        ("GET", "/api/operations/x"),
        ("GET", "/api/operations/x/events"),
        ("POST", "/api/operations/x/cancel"),
        ("GET", "/api/operations/kinds"),
        ("GET", "/api/audit"),
    ]:
        response = await api.request(method, path, json=request if method == "POST" else None)
        assert response.status_code == 401, (method, path)
        assert response.json()["rule"] == "bearer-token-required"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    bad = await api.get("/api/operations", headers={"Authorization": "Bearer not-a-jwt"})
    assert (bad.status_code, bad.json()["rule"]) == (401, "bearer-token-invalid")

    viewer = await api.post("/api/operations", json=request, headers=token_for("victor@contoso.com", Role.VIEWER))
    assert (viewer.status_code, viewer.json()["rule"]) == (403, "role-required")
    approver = await api.post("/api/operations", json=request, headers=token_for("ann@contoso.com", Role.APPROVER))
    assert approver.status_code == 403
    assert (await api.get("/api/operations", headers=token_for("victor@contoso.com", Role.VIEWER))).status_code == 200
    assert await store.list_operations() == []


async def test_started_by_comes_from_the_token_not_the_body(
    api: httpx.AsyncClient, worker: Worker, token_for: Headers
) -> None:
    alice = token_for("alice@contoso.com", Role.ADMIN)
    forged = await api.post(
        "/api/operations",
        json={"kind": "test.steps", "params": {"dep": "USA_mailboxes", "steps": 1}, "started_by": "mallory"},
        headers=alice,
    )
    assert forged.status_code == 422, forged.text
    assert forged.json()["rule"] == "extra-forbidden" and forged.json()["errors"][0]["loc"] == ["body", "started_by"]
    response = await api.post(
        "/api/operations", json={"kind": "test.steps", "params": {"dep": "USA_mailboxes", "steps": 1}}, headers=alice
    )
    op_id = response.json()["id"]
    body = await _wait_for(api, alice, op_id, lambda b: b["state"] == "succeeded" and b["ended_at"])
    assert body["started_by"] == "alice@contoso.com"


async def test_kinds_lists_the_registered_kinds(api: httpx.AsyncClient, token_for: Headers) -> None:
    kinds = (await api.get("/api/operations/kinds", headers=token_for())).json()
    steps = next(k for k in kinds if k["kind"] == "test.steps")
    assert steps["role"] == "operator" and "dep" in steps["params_schema"]["properties"]


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/api/operations", {"offset": 10**12}),
        ("/api/operations", {"offset": -1}),
        ("/api/operations", {"limit": -1}),
        ("/api/operations", {"limit": 10**6}),
        ("/api/operations/op-x/events", {"after": 2**63}),
        ("/api/operations/op-x/events", {"limit": -1}),
    ],
)
async def test_paging_parameters_are_bounded(
    api: httpx.AsyncClient, token_for: Headers, path: str, query: dict[str, int]
) -> None:
    response = await api.get(path, params=query, headers=token_for("victor@contoso.com", Role.VIEWER))
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_cancel_of_an_ended_operation_adds_no_event_even_when_its_record_lags(
    api: httpx.AsyncClient, client: Client, store: Store, token_for: Headers
) -> None:
    alice = token_for("alice@contoso.com", Role.OPERATOR)
    started = await api.post(
        "/api/operations", json={"kind": "test.steps", "params": {"dep": "D", "steps": 1, "hold": True}}, headers=alice
    )
    op_id = started.json()["id"]
    # No worker runs: the workflow ends in Temporal while its record still says running.
    await client.get_workflow_handle(op_id).terminate("gone")
    for _ in range(3):
        refused = await api.post(f"/api/operations/{op_id}/cancel", headers=alice)
        assert refused.status_code == 409 and refused.json()["rule"] == "operation-ended"
    assert [e.action for e in await store.list_audit(operation_id=op_id)] == []


async def test_openapi_types_the_params_of_every_kind(api: httpx.AsyncClient) -> None:
    document = (await api.get("/openapi.json")).json()
    schema = document["paths"]["/api/operations"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    mapping = schema["discriminator"]["mapping"]
    assert schema["discriminator"]["propertyName"] == "kind"
    assert {k.name for k in product_registry()} == set(mapping) and "test.steps" in mapping
    for kind in product_registry():
        variant = document["components"]["schemas"][mapping[kind.name].rsplit("/", 1)[-1]]
        assert variant["properties"]["kind"]["const"] == kind.name
        assert variant["additionalProperties"] is False
        params = variant["properties"]["params"]["$ref"].rsplit("/", 1)[-1]
        assert set(document["components"]["schemas"][params]["properties"]) == set(kind.public_params.model_fields)
