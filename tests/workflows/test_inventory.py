"""``inventory.sync`` against the sandbox tenant: the read side's data comes from bulk reads into SQL."""

from __future__ import annotations

import uuid

import httpx
from temporalio.worker import Worker

from ckey.m365 import M365Gateway
from ckey.models import Role
from ckey.store import Store
from ckey.store.inventory import InventoryStore
from sandbox.keyvault.control import SandboxKeyVaultControl
from tests.workflows.conftest import TENANT, unique
from tests.workflows.test_exchange import DEMO_KEYS
from tests.workflows.test_keyvault import Auth, Recorder, run_operation


async def test_a_sync_reads_every_dep_and_recipient_and_the_statuses_it_is_allowed(
    api: httpx.AsyncClient,
    product_worker: Worker,
    auth: Auth,
    m365: M365Gateway,
    store: Store,
    record_history: Recorder,
    kv_control: SandboxKeyVaultControl,
) -> None:
    operator = auth(Role.OPERATOR)
    name = f"INV_{uuid.uuid4().hex[:8]}"
    created, _ = await run_operation(api, operator, "exchange.dep.create", {"name": name, "azure_key_ids": DEMO_KEYS})
    assert created["state"] == "succeeded", created["error"]
    mailboxes = sorted(b.identity for b in await m365.get_mailbox(result_size="Unlimited"))
    mail_users = sorted(b.identity for b in await m365.get_mail_user(result_size="Unlimited"))
    # Two mailboxes get the DEP behind ckey's back (as an admin's own Set-Mailbox would): the sync finds them.
    for identity in mailboxes[600:602]:
        await m365.set_mailbox(identity, name)

    body, events = await run_operation(api, operator, "inventory.sync", {})
    assert body["state"] == "succeeded", body["error"]
    result = body["result"]
    assert result["recipients"] == len(mailboxes) + len(mail_users)
    assert result["deps"] >= 1 and result["statuses"] >= 2
    await record_history(body["id"], "inventory_sync")
    inventory = InventoryStore(store)
    page = await inventory.page(dep=name)
    assert sorted(r.identity for r in page.items) == mailboxes[600:602]
    assert page.as_of is not None and all(r.dep_guid == created["result"]["guid"] for r in page.items)
    assert (await inventory.find_dep("exchange", name)) is not None
    # The session's tenant may have migrated its mail users already (other tests complete migrations).
    for identity in mail_users[:3]:
        user = await inventory.get(identity)
        assert user is not None and user.is_mail_user and user.is_encrypted is None
    mailbox = await inventory.get(mailboxes[0])
    assert mailbox is not None and not mailbox.is_mail_user
    # One audited call per listing; statistics summarised once, not one entry per mailbox.
    calls = [e["action"] for e in events if e["action"].startswith("m365.")]
    assert calls.count("m365.Get-Mailbox") == 1 and calls.count("m365.Get-MailboxStatistics") == 1, calls

    # The other workloads too, each answering from SQL afterwards: the geos, the multi-workload DEPs, the Cloud PCs.
    assert result["unread"] == {}, result["unread"]
    assert result["workloads"]["spo_geos"] == 2 and result["workloads"]["cloud_pcs"] == TENANT.cloud_pcs
    assert "multi_workload_deps" in result["workloads"]
    geos = (await api.get("/api/spo/geos", headers=operator)).json()
    assert sorted(g["geo"] for g in (geos["items"] if isinstance(geos, dict) else geos)) == ["EUR", "NAM"]
    assert (await api.get("/api/m365/assignment", headers=operator)).status_code == 200

    # The vaults too: /api/vaults answers from the inventory until someone asks for a fresh read.
    assert result["vaults"] >= 2
    listed = (await api.get("/api/vaults", headers=operator)).json()
    assert len(listed) == result["vaults"] and all(v["seen_at"] for v in listed)
    vault = unique("inv")
    await kv_control.create_vault(vault)
    await kv_control.grant(vault, "ckey-automation@contoso.com", ["all"])  # ckey may list its keys
    assert vault not in {v["name"] for v in (await api.get("/api/vaults", headers=operator)).json()}
    fresh = (await api.get("/api/vaults", params={"refresh": True}, headers=operator)).json()
    assert vault in {v["name"] for v in fresh}

    params = await api.post(
        "/api/operations", json={"kind": "inventory.sync", "params": {"status_batch": 5}}, headers=operator
    )
    assert params.status_code == 422 and "status_batch" in params.text  # the batch is the deployment's, not a caller's
