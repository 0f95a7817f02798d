"""Operations that would fight each other: the second one is refused before it starts, naming the first."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from ckey.m365 import M365Gateway
from ckey.models import Role
from ckey.store import Store
from sandbox.m365 import SandboxM365Control
from tests.workflows.test_exchange import DEMO_KEYS
from tests.workflows.test_keyvault import Auth, run_operation


async def _wait(api: httpx.AsyncClient, headers: dict[str, str], op_id: str, phase: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        body: dict[str, Any] = (await api.get(f"/api/operations/{op_id}", headers=headers)).json()
        if (body["phase"] == phase and phase != "ended") or body["state"] != "running":
            return body
        await asyncio.sleep(0.25)
    raise AssertionError(f"{op_id} never reached {phase}: {body}")


async def test_two_assignments_of_different_deps_to_overlapping_mailboxes(
    client: Client,
    api: httpx.AsyncClient,
    product_worker: Worker,
    auth: Auth,
    m365: M365Gateway,
    tenant_control: SandboxM365Control,
    store: Store,
) -> None:
    operator = auth(Role.OPERATOR)
    deps = [f"LEASE{n}_{uuid.uuid4().hex[:6]}" for n in (1, 2)]
    for dep in deps:
        created, _ = await run_operation(
            api, operator, "exchange.dep.create", {"name": dep, "azure_key_ids": DEMO_KEYS}
        )
        assert created["state"] == "succeeded", created["error"]
    boxes = sorted(b.identity for b in await m365.get_mailbox(result_size=60))[40:46]
    await tenant_control.set_stuck(boxes[:1])  # keeps the first assignment following (the retry leaves it out)
    try:
        first = await api.post(
            "/api/operations",
            json={"kind": "exchange.dep.assign", "params": {"dep": deps[0], "mailboxes": boxes[:4]}},
            headers=operator,
        )
        assert first.status_code == 202, first.text
        first_id = first.json()["id"]
        assert (await _wait(api, operator, first_id, "following"))["state"] == "running"
        held = await store.leases(first_id)
        assert (f"dep:exchange:{deps[0].lower()}", "read") in held and len(held) == 5

        # Overlapping (one mailbox spelled in upper case), another DEP: refused before anything starts.
        overlap = [boxes[3].upper(), *boxes[4:]]
        second = await api.post(
            "/api/operations",
            json={"kind": "exchange.dep.assign", "params": {"dep": deps[1], "mailboxes": overlap}},
            headers=operator,
        )
        assert second.status_code == 409, second.text
        problem = second.json()
        assert problem["rule"] == "targets-leased" and problem["holders"] == [first_id]
        assert first_id in problem["detail"] and f"mailbox:{boxes[3].lower()}" in problem["detail"]
        assert "exchange.dep.assign" in problem["detail"]
        page = await api.get("/api/operations", params={"kind": "exchange.dep.assign"}, headers=operator)
        listed = page.json()["items"]
        assert first_id in str(listed) and str(listed).count(deps[1]) == 0  # nothing was stored for it
        # A verification only reads, but not beside an assignment of the same mailboxes; disjoint ones run.
        disjoint = await api.post(
            "/api/operations",
            json={"kind": "exchange.dep.assign", "params": {"dep": deps[1], "mailboxes": boxes[4:]}},
            headers=operator,
        )
        assert disjoint.status_code == 202, disjoint.text
        recreate = await api.post(
            "/api/operations",
            json={"kind": "exchange.dep.create", "params": {"name": deps[0], "azure_key_ids": DEMO_KEYS}},
            headers=operator,
        )
        assert recreate.status_code == 409 and recreate.json()["holders"] == [first_id], recreate.text

        # A holder terminated behind ckey's back never ran its end: its leases are found stale and freed.
        await client.get_workflow_handle(first_id).terminate(reason="test: an administrator's tctl")
        retried = await api.post(
            "/api/operations",
            json={"kind": "exchange.dep.assign", "params": {"dep": deps[1], "mailboxes": boxes[1:4]}},
            headers=operator,
        )
        assert retried.status_code == 202, retried.text
        assert await store.leases(first_id) == []
        for op_id in (disjoint.json()["id"], retried.json()["id"]):
            ended = await _wait(api, operator, op_id, "ended")
            assert ended["state"] == "succeeded", ended
            assert await store.leases(op_id) == []
    finally:
        await tenant_control.set_stuck(boxes[:1], stuck=False)
