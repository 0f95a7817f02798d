"""schemathesis against the API's own OpenAPI document, over real HTTP, with a token of every role and none.

For every operation of the document (``POST /api/operations`` reaches every kind's params model through the
discriminated union): no 5xx; every 4xx is problem+json naming a rule; a refused request changes nothing in the
store; and, as no worker runs, nothing the API does changes either sandbox. A bounded number of examples per
operation runs in ``make test``; ``CKEY_HYPOTHESIS_LONG=1`` runs many more.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from ckey.api.app import create_app
from ckey.config import load_settings
from tests.hostile.conftest import LONG, HostileStack


def _document() -> dict[str, Any]:
    # The document the served API answers at /openapi.json, built in-process so that the operations are known when
    # the tests are collected (schemathesis' from_fixture does not work with this pytest).
    with tempfile.TemporaryDirectory() as data_dir:
        document: dict[str, Any] = create_app(load_settings(data_dir=Path(data_dir), _env_file=None)).openapi()
    return document


schema = schemathesis.openapi.from_dict(_document())
EXAMPLES = 400 if LONG else 12
ROLES = ("none", "viewer", "operator", "approver", "admin")


@pytest.fixture(scope="session")
def session() -> requests.Session:
    return requests.Session()


@pytest.fixture(scope="session")
def sandboxes_before(hostile_stack: HostileStack) -> dict[str, list[tuple[object, ...]]]:
    return hostile_stack.sandbox_snapshot()


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not LONG,
)
def test_no_request_breaks_the_api(
    case: schemathesis.Case[Any],
    hostile_stack: HostileStack,
    session: requests.Session,
    sandboxes_before: dict[str, list[tuple[object, ...]]],
) -> None:
    for role in ROLES:
        before = hostile_stack.store_snapshot()
        headers = dict(case.headers or {})
        if hostile_stack.tokens[role]:
            headers["Authorization"] = hostile_stack.tokens[role]
        else:
            headers.pop("Authorization", None)
        response = case.call(base_url=hostile_stack.url, session=session, headers=headers, timeout=30)
        where = f"{case.method} {case.formatted_path} as {role}: {response.status_code} {response.text[:300]}"
        assert response.status_code < 500, where
        if response.status_code >= 400:
            assert response.headers.get("content-type") == ["application/problem+json"], where
            problem = response.json()
            assert problem["status"] == response.status_code and problem["rule"], where
            assert hostile_stack.store_snapshot() == before, f"a refused request changed the store: {where}"


def test_the_served_document_is_the_one_fuzzed(openapi_document: dict[str, Any]) -> None:
    assert openapi_document == _document()


def test_the_sandboxes_are_unchanged(
    hostile_stack: HostileStack, sandboxes_before: dict[str, list[tuple[object, ...]]]
) -> None:
    # Runs after the fuzzing above (file order): reads only, and no worker ran any operation.
    assert hostile_stack.sandbox_snapshot() == sandboxes_before
