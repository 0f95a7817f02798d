"""Closing a follow-up: the update a kind declares (``OperationKind.updates``), sent through the API by reference."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
from temporalio import workflow
from temporalio.worker import Worker

from ckey.m365 import M365Gateway
from ckey.models import Role
from ckey.store import Store
from sandbox.m365 import SandboxM365Control
from tests.workflows.test_exchange import DEMO_KEYS
from tests.workflows.test_keyvault import Auth, run_operation
from workflows import product_registry
from workflows.exchange import MailboxFollowWorkflow


def test_each_declared_update_is_an_update_of_the_kinds_workflow() -> None:
    declared = [(kind, update) for kind in product_registry() for update in kind.updates]
    assert {kind.name for kind, _ in declared} == {"exchange.dep.assign", "exchange.encryption.verify"}
    for kind, update in declared:
        handlers = workflow._Definition.must_from_class(kind.workflow).updates
        assert update.name in handlers and handlers[update.name].fn is update.method, kind.name
    assert declared[0][1].name == "close" and declared[0][1].method is MailboxFollowWorkflow.close


async def test_an_operator_closes_a_follow_up_and_a_kind_without_one_cannot_be_closed(
    api: httpx.AsyncClient,
    product_worker: Worker,
    auth: Auth,
    m365: M365Gateway,
    tenant_control: SandboxM365Control,
    store: Store,
) -> None:
    operator, viewer = auth(Role.OPERATOR), auth(Role.VIEWER)
    name = f"CLOSE_{uuid.uuid4().hex[:8]}"
    created, _ = await run_operation(api, operator, "exchange.dep.create", {"name": name, "azure_key_ids": DEMO_KEYS})
    assert created["state"] == "succeeded", created["error"]
    refused = await api.post(f"/api/operations/{created['id']}/close", json={"reason": "no"}, headers=operator)
    assert refused.status_code == 409 and refused.json()["type"].endswith("operation-closable"), refused.text
    assert "exchange.dep.create" in refused.json()["detail"]

    boxes = sorted(b.identity for b in await m365.get_mailbox(result_size=40))[20:23]
    await tenant_control.set_stuck(boxes[:1])
    try:
        started = await api.post(
            "/api/operations",
            json={"kind": "exchange.dep.assign", "params": {"dep": name, "mailboxes": boxes}},
            headers=operator,
        )
        assert started.status_code == 202, started.text
        op_id = started.json()["id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            body = (await api.get(f"/api/operations/{op_id}", headers=viewer)).json()
            if body["phase"] == "following" and body["progress"]["done"] >= 2:
                break
            await asyncio.sleep(0.25)
        assert body["phase"] == "following", body

        assert body["progress"]["assigned"] == 3  # assigned and encrypted both shown, never a bare 0 %
        # The read side and the progress come from the same status rounds: they never contradict each other.
        shown = (await api.get("/api/mailboxes", params={"dep": name, "encrypted": True}, headers=viewer)).json()
        assert shown["total"] == body["progress"]["done"] == 2, (shown, body["progress"])

        forbidden = await api.post(f"/api/operations/{op_id}/close", json={"reason": "stop"}, headers=viewer)
        assert forbidden.status_code == 403, forbidden.text
        # The stuck one moves now; the next round is a poll interval away (15 minutes): only a last round sees it.
        await tenant_control.set_stuck(boxes[:1], stuck=False)
        while time.monotonic() < deadline:
            live = await api.get(f"/api/mailboxes/{boxes[0]}", params={"refresh": True}, headers=viewer)
            if live.json().get("is_encrypted"):
                break
            await asyncio.sleep(0.25)
        closed = await api.post(
            f"/api/operations/{op_id}/close", json={"reason": "stuck one left to support"}, headers=operator
        )
        assert closed.status_code == 200, closed.text
        assert closed.json() == {"encrypted": 3, "total": 3}
        while time.monotonic() < deadline:
            body = (await api.get(f"/api/operations/{op_id}", headers=viewer)).json()
            if body["state"] != "running":
                break
            await asyncio.sleep(0.25)
        assert (body["state"], body["phase"]) == ("succeeded", "closed"), body
        assert body["result"]["encrypted"] == 3 and body["progress"]["percent"] == 100.0
        again = await api.post(f"/api/operations/{op_id}/close", json={"reason": "again"}, headers=operator)
        assert again.status_code == 409, again.text

        # Assigning the same DEP again: every mailbox already shows it, is counted as assigned and sent nothing.
        seq = max([c["seq"] for c in await tenant_control.calls(limit=100_000)], default=0)
        repeat, events = await run_operation(
            api, operator, "exchange.dep.assign", {"dep": name, "mailboxes": [b.upper() for b in boxes]}
        )
        assert repeat["state"] == "succeeded", repeat["error"]
        assert repeat["result"]["encrypted"] == 3 and repeat["progress"]["assigned"] == 3
        already = [e for e in events if e["action"] == "exchange.assignment.already"]
        assert len(already) == 1 and already[0]["detail"]["count"] == 3
        sent = [c for c in await tenant_control.calls(after=seq, limit=100_000) if c["cmdlet"].startswith("Set-")]
        assert sent == []
    finally:
        await tenant_control.set_stuck(boxes[:1], stuck=False)
    kinds = (await api.get("/api/operations/kinds", headers=viewer)).json()
    assert {k["kind"]: k["updates"] for k in kinds}["exchange.dep.assign"] == ["close"]
