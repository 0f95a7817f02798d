"""``GET /api/operations`` as a page with a total and an id-prefix filter; the kinds' schemas; 401 texts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from ckey.api.app import create_app
from ckey.auth import mint_local_token
from ckey.config import Settings
from ckey.models import Role
from ckey.operations import OperationRecord, OperationState
from ckey.store import Store
from workflows import product_registry

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
IDS = [
    "op-1a2b3c4d-0000-4000-8000-000000000001",
    "op-1a2b3c4d-0000-4000-8000-000000000002",
    "op-9f8e7d6c-0000-4000-8000-000000000003",
]


@pytest.fixture
async def http(settings: Settings, store: Store) -> AsyncIterator[httpx.AsyncClient]:
    for n, op_id in enumerate(IDS):
        at = T0 + timedelta(minutes=n)
        await store.create_operation(
            OperationRecord(
                id=op_id,
                kind="keyvault.health",
                state=OperationState.SUCCEEDED if n else OperationState.RUNNING,
                phase="done",
                params={},
                started_by="alice@contoso.com",
                started_at=at,
                updated_at=at,
            )
        )
    # Listing reads the store only: no Temporal client is needed.
    app = create_app(settings, client=None, store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as client:
        yield client


@pytest.fixture
def viewer(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_local_token(settings, 'victor@contoso.com', [Role.VIEWER])}"}


async def test_the_list_is_a_page_with_the_total(http: httpx.AsyncClient, viewer: dict[str, str]) -> None:
    page = (await http.get("/api/operations", params={"limit": 2}, headers=viewer)).json()
    assert set(page) == {"items", "total", "offset", "limit"}
    assert (page["total"], page["offset"], page["limit"]) == (3, 0, 2)
    assert [op["id"] for op in page["items"]] == [IDS[2], IDS[1]]
    last = (await http.get("/api/operations", params={"limit": 2, "offset": 2}, headers=viewer)).json()
    assert [op["id"] for op in last["items"]] == [IDS[0]] and last["total"] == 3
    done = (await http.get("/api/operations", params={"state": "succeeded", "limit": 1}, headers=viewer)).json()
    assert done["total"] == 2 and len(done["items"]) == 1


@pytest.mark.parametrize(
    ("prefix", "found"),
    [
        ("1a2b3c4d", [IDS[1], IDS[0]]),
        ("op-1a2b3c4d-0000-4000-8000-000000000002", [IDS[1]]),
        ("9f8e", [IDS[2]]),
        ("0000", []),
    ],
)
async def test_operations_are_found_by_the_start_of_their_id(
    http: httpx.AsyncClient, viewer: dict[str, str], prefix: str, found: list[str]
) -> None:
    page = (await http.get("/api/operations", params={"id_prefix": prefix}, headers=viewer)).json()
    assert [op["id"] for op in page["items"]] == found and page["total"] == len(found)


@pytest.mark.parametrize("prefix", ["op-%", "a_b", "", "x" * 65])
async def test_an_id_prefix_is_plain_characters(http: httpx.AsyncClient, viewer: dict[str, str], prefix: str) -> None:
    answer = await http.get("/api/operations", params={"id_prefix": prefix}, headers=viewer)
    assert answer.status_code == 422, answer.text


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "eyJhbGciOiJFZERTQSJ9.e30"])
async def test_a_malformed_token_is_answered_as_one(http: httpx.AsyncClient, token: str) -> None:
    answer = await http.get("/api/operations", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert answer.json()["detail"] == "the bearer token is not valid: malformed token"


INTERNAL = {"escalate_after", "poll_interval", "follow_state", "batch_size", "status_batch", "operation_id"}
"""Fields the deployment's settings or the API fill in; a caller never sets them."""


def _property_names(schema: object) -> set[str]:
    if isinstance(schema, dict):
        found = set(schema.get("properties", {})) if isinstance(schema.get("properties"), dict) else set()
        return found.union(*(_property_names(v) for v in schema.values()))
    if isinstance(schema, list):
        return set().union(*(_property_names(v) for v in schema))
    return set()


async def test_the_kinds_publish_no_internal_field(http: httpx.AsyncClient, viewer: dict[str, str]) -> None:
    kinds = (await http.get("/api/operations/kinds", headers=viewer)).json()
    assert {k["kind"] for k in kinds} == {k.name for k in product_registry()}
    for kind in kinds:
        registered = product_registry().get(kind["kind"])
        assert registered is not None
        published = _property_names(kind["params_schema"])
        hidden = set(registered.input_model.model_fields) - set(registered.public_params.model_fields)
        assert not published & (INTERNAL | hidden), (kind["kind"], published & (INTERNAL | hidden))
