"""``/api/audit`` and ``ckey audit``: bounded paging, malformed rows without 500s, tampering named by the CLI."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import uvicorn
from pydantic import SecretStr
from temporalio.client import Client
from typer.testing import CliRunner

from ckey import cli
from ckey.api.app import create_app
from ckey.audit import public_key_pem
from ckey.auth import mint_local_token
from ckey.config import Settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway
from ckey.models import Role
from ckey.store import Store
from ckey.store.migrate import upgrade
from tests.ckey.test_audit import EXPECTED_BREAK, _sql, _trail, tamper
from tests.ckey.test_store import _record, drop_append_only_guards
from tests.conftest import free_port


@pytest.fixture
def audit_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"audit_checkpoint_every": 2})


@pytest.fixture
async def audit_store(audit_settings: Settings) -> AsyncIterator[Store]:
    """The store the API builds from the settings: the data dir's database and checkpoint key."""
    store = Store.from_settings(audit_settings)
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def viewer(audit_settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_local_token(audit_settings, 'auditor@contoso.com', [Role.VIEWER])}"}


@pytest.fixture
async def audit_api(audit_settings: Settings, audit_store: Store) -> AsyncIterator[httpx.AsyncClient]:
    # The audit routes need the store only: no Temporal client.
    app = create_app(audit_settings, store=audit_store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ckey.test") as http:
        yield http


# Paging --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/audit", "/api/audit/checkpoints"])
@pytest.mark.parametrize(
    "params",
    [{"limit": -1}, {"limit": 0}, {"limit": 5001}, {"after": -1}, {"after": 2**62 + 1}, {"after": 10**30}],
    ids=["limit-negative", "limit-zero", "limit-too-big", "after-negative", "after-past-2^62", "after-huge"],
)
async def test_paging_parameters_are_bounded(
    audit_api: httpx.AsyncClient, viewer: dict[str, str], path: str, params: dict[str, int]
) -> None:
    response = await audit_api.get(path, params=params, headers=viewer)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_paging_walks_the_trail(audit_api: httpx.AsyncClient, audit_store: Store, viewer: dict[str, str]) -> None:
    await _trail(audit_store, 5)
    first = (await audit_api.get("/api/audit", params={"limit": 2}, headers=viewer)).json()
    rest = (await audit_api.get("/api/audit", params={"after": 2, "limit": 5000}, headers=viewer)).json()
    assert [e["seq"] for e in first + rest] == [1, 2, 3, 4, 5]
    edge = await audit_api.get("/api/audit", params={"after": 2**62}, headers=viewer)
    assert (edge.status_code, edge.json()) == (200, [])
    head = (await audit_api.get("/api/audit/head", headers=viewer)).json()
    assert head == {"seq": 5, "hash": rest[-1]["hash"]}
    checkpoints = (await audit_api.get("/api/audit/checkpoints", headers=viewer)).json()
    assert [c["seq"] for c in checkpoints] == [2, 4, 5]
    pem = (await audit_api.get("/api/audit/public-key", headers=viewer)).text
    assert audit_store.signer is not None and pem == public_key_pem(audit_store.signer.public_key)


async def test_audit_needs_a_token(audit_api: httpx.AsyncClient) -> None:
    for path in ("/api/audit", "/api/audit/verify", "/api/audit/checkpoints", "/api/audit/head"):
        assert (await audit_api.get(path)).status_code == 401


# Malformed rows ------------------------------------------------------------------------------------------------


async def test_malformed_rows_are_reported_not_500(
    audit_api: httpx.AsyncClient, audit_store: Store, viewer: dict[str, str]
) -> None:
    await audit_store.create_operation(_record("op-1"))
    await _trail(audit_store, 4)
    await drop_append_only_guards(audit_store)
    await _sql(audit_store, "UPDATE audit_events SET outcome = 'exploded' WHERE seq = 2")
    await _sql(audit_store, "UPDATE audit_events SET detail = '{not json' WHERE seq = 3")

    verdict = await audit_api.get("/api/audit/verify", headers=viewer)
    assert verdict.status_code == 200
    body = verdict.json()
    assert (body["ok"], body["broken_at"]) == (False, 2)
    assert "row 2 is malformed" in body["reason"] and "outcome" in body["reason"]

    for path in ("/api/audit", "/api/operations/op-1/events"):
        response = await audit_api.get(path, headers=viewer)
        assert response.status_code == 200, response.text
        entries = response.json()
        assert [e["seq"] for e in entries] == [1, 2, 3, 4]
        assert [e["action"] for e in entries] == ["step.1", "audit.malformed", "audit.malformed", "operation.succeeded"]
        assert "outcome" in entries[1]["malformed"] and "not JSON" in entries[2]["malformed"]
        assert entries[0]["malformed"] is None
    huge = await audit_api.get("/api/operations/op-1/events", params={"after": 2**63}, headers=viewer)
    assert huge.status_code == 422 and huge.headers["content-type"] == "application/problem+json"


# The CLI -------------------------------------------------------------------------------------------------------


@pytest.fixture
def served(audit_settings: Settings, audit_store: Store) -> Iterator[str]:
    """The API on a free port (uvicorn in a thread), building its own store from the settings like production."""
    app = create_app(
        audit_settings,
        client=cast(Client, object()),
        keyvault=cast(KeyVaultGateway, object()),
        m365=cast(M365Gateway, object()),
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def ckey(
    served: str, audit_settings: Settings, viewer: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[int, str]]:
    """Run ``ckey ...`` against the served API; returns the exit code and the output (whitespace collapsed)."""
    token = viewer["Authorization"].removeprefix("Bearer ")
    cli_settings = audit_settings.model_copy(update={"api_url": served, "token": SecretStr(token)})
    monkeypatch.setattr(cli, "_settings", lambda: cli_settings)

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(cli.app, list(args))
        return result.exit_code, " ".join(result.output.split())

    return run


@pytest.fixture
def public_key_file(audit_store: Store, tmp_path: Path) -> Path:
    """The auditor's pinned copy of the checkpoint public key."""
    assert audit_store.signer is not None
    path = tmp_path / "audit-checkpoint.pub.pem"
    path.write_text(public_key_pem(audit_store.signer.public_key))
    return path


@pytest.mark.parametrize("how", sorted(EXPECTED_BREAK))
@pytest.mark.parametrize("where", ["api", "pinned-key"])
async def test_ckey_audit_verify_names_the_broken_row(
    ckey: Callable[..., tuple[int, str]], audit_store: Store, public_key_file: Path, how: str, where: str
) -> None:
    """`ckey audit verify` exits non-zero and names the row after a direct edit, a deleted row, a deleted tail with a
    rewound head, and a recomputed chain."""
    args = ["audit", "verify"] + (["--public-key", str(public_key_file)] if where == "pinned-key" else [])
    await _trail(audit_store)
    code, output = ckey(*args)
    assert code == 0, output
    assert "audit trail intact: 6 entries, 3 checkpoints matched" in output
    assert "signatures verified" in output

    await tamper(audit_store, how)
    code, output = ckey(*args)
    seq, reason = EXPECTED_BREAK[how]
    assert code == 1, output
    assert f"BROKEN at row {seq}:" in output
    assert reason in output


async def test_ckey_audit_export_verifies_offline_with_the_public_key_alone(
    ckey: Callable[..., tuple[int, str]], audit_store: Store, public_key_file: Path, tmp_path: Path
) -> None:
    await _trail(audit_store)
    export = tmp_path / "audit.jsonl"
    code, output = ckey("audit", "export", "--output", str(export))
    assert code == 0, output
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    assert [line["type"] for line in lines] == ["header"] + ["event"] * 6 + ["checkpoint"] * 3
    assert lines[0]["head"]["seq"] == 6

    code, output = ckey("audit", "verify", "--file", str(export), "--public-key", str(public_key_file))
    assert (code, "audit trail intact: 6 entries" in output) == (0, True), output

    def rewrite(change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> Path:
        changed = tmp_path / "changed.jsonl"
        changed.write_text("".join(json.dumps(line) + "\n" for line in change(json.loads(json.dumps(lines)))))
        return changed

    def edit(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items[2]["actor"] = "mallory@contoso.com"  # the entry at seq 2
        return items

    def cut_tail(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items[0]["head"] = {"seq": 4, "hash": items[4]["hash"]}
        return [item for item in items if not (item["type"] == "event" and item["seq"] > 4)]

    for change, seq in ((edit, 2), (cut_tail, 5)):
        code, output = ckey("audit", "verify", "--file", str(rewrite(change)), "--public-key", str(public_key_file))
        assert code == 1, output
        assert f"BROKEN at row {seq}:" in output

    code, output = ckey("audit", "verify", "--file", str(export))
    assert code == 2 and "--file needs --public-key" in output
