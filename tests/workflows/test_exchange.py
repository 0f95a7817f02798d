"""exchange.dep.create, exchange.dep.assign, exchange.encryption.verify against the sandbox tenant.

The dev-server tests drive the operations through the API; the escalation runs on the time-skipping server, where
seven days pass in moments while the sandbox tenant runs at its own (fast) simulated speed.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import select
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities import build_activities
from activities.exchange import ExchangeActivities
from ckey.api.routes.operations import operation_id_for
from ckey.azure import AzureConnection
from ckey.config import Settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import Cmdlet, M365Gateway
from ckey.models import Role, ServicePrincipal
from ckey.store import Store
from ckey.store.schema import TargetItemRow
from ckey.store.targets import TargetStore
from ckey.support import SupportDesk
from contracts.exchange import AssignBatchInput, ExchangeDepAssignInput, FollowInput
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from sandbox.m365.tenant import TenantSpec
from tests.conftest import free_port
from tests.workflows.alert_receiver import alert_receiver
from tests.workflows.conftest import product_gateways, unique
from tests.workflows.test_keyvault import Auth, Recorder, run_operation
from workflows import all_workflows, product_registry
from workflows.exchange import RESOLVE_RECIPIENTS_FIRST, ExchangeDepAssignWorkflow
from workflows.operation import ESCALATED

EXO = ServicePrincipal.EXCHANGE_ONLINE.value
DEMO_KEYS = [
    "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01",
    "https://contoso-westus-kv1.vault.azure.net/keys/exo-key-02",
]


@pytest.fixture
def op_settings(stack_settings: Settings, task_queue: str) -> Settings:
    """The workflow tests' settings with a fast poll: the cadence is the deployment's, never a caller's."""
    return stack_settings.model_copy(
        update={
            "temporal_task_queue": task_queue,
            "exchange_poll_interval": timedelta(seconds=1),
            "allow_short_escalation": True,
        }
    )


async def recipients(m365: M365Gateway) -> list[str]:
    boxes = await m365.get_mailbox(result_size="Unlimited") + await m365.get_mail_user(result_size="Unlimited")
    return sorted(b.identity for b in boxes)


def as_csv(identities: list[str]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["Identity"])
    writer.writerows([i] for i in identities)
    return out.getvalue().encode()


async def make_keys(
    kv_control: SandboxKeyVaultControl,
    regions: tuple[str, str] = ("eastus", "westus"),
    *,
    exo_permissions: tuple[list[str], list[str]] | None = None,
    purge_protection: bool = True,
    soft_delete: bool = True,
) -> list[str]:
    """Two fresh keys in two fresh vaults, Exchange Online granted get/wrapKey/unwrapKey unless told otherwise."""
    uris = []
    permissions = exo_permissions or (["get", "wrapKey", "unwrapKey"], ["get", "wrapKey", "unwrapKey"])
    for region, granted in zip(regions, permissions, strict=True):
        vault = unique("ex")
        await kv_control.create_vault(
            vault, location=region, purge_protection=purge_protection, soft_delete=soft_delete
        )
        await kv_control.grant(vault, "ckey-automation@contoso.com", ["all"])
        await kv_control.create_key(vault, "exo-key")
        if granted:
            await kv_control.grant(vault, EXO, granted)
        uris.append(f"https://{vault}.vault.azure.net/keys/exo-key")
    return uris


# exchange.dep.create -----------------------------------------------------------------------------------------------


async def test_dep_create_is_idempotent_and_refuses_a_taken_name(
    api: httpx.AsyncClient,
    product_worker: Worker,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    m365: M365Gateway,
    record_history: Recorder,
) -> None:
    keys = await make_keys(kv_control)
    name = f"DEP_{uuid.uuid4().hex[:8]}"
    body, events = await run_operation(
        api,
        auth(Role.OPERATOR),
        "exchange.dep.create",
        {"name": name, "description": "Root key for mailboxes in the test", "azure_key_ids": keys},
    )
    assert body["state"] == "succeeded", body["error"]
    assert body["result"]["created"] is True
    await record_history(body["id"], "exchange_dep_create")
    assert any(e["target"] and e["target"].startswith(f"New-DataEncryptionPolicy -Name {name} ") for e in events)
    deps = {d["name"]: d for d in (await api.get("/api/deps", headers=auth(Role.VIEWER))).json()}
    assert deps[name]["guid"] == body["result"]["guid"]

    again, _ = await run_operation(
        api, auth(Role.OPERATOR), "exchange.dep.create", {"name": name, "azure_key_ids": keys}
    )
    assert (again["state"], again["result"]["created"], again["result"]["guid"]) == (
        "succeeded",
        False,
        deps[name]["guid"],
    )

    other = await make_keys(kv_control)
    taken, _ = await run_operation(
        api, auth(Role.OPERATOR), "exchange.dep.create", {"name": name, "azure_key_ids": other}
    )
    assert taken["state"] == "failed" and taken["error"].startswith("dep-name-taken")


@pytest.mark.parametrize(
    ("params", "rule"),
    [
        ({"name": "USA mailboxes", "azure_key_ids": DEMO_KEYS}, "dep-name-no-spaces"),
        ({"name": "USA_one_key", "azure_key_ids": DEMO_KEYS[:1]}, "two-keys"),
        (
            {
                "name": "USA_one_vault",
                "azure_key_ids": [DEMO_KEYS[0], DEMO_KEYS[0].replace("exo-key-01", "spo-key-01")],
            },
            "two-keys-two-vaults",
        ),
        (
            {"name": "USA_bad_uri", "azure_key_ids": ["https://contoso.example.com/keys/k", DEMO_KEYS[1]]},
            "key-uri-format",
        ),
    ],
)
async def test_dep_rules_checked_by_the_api(
    api: httpx.AsyncClient, auth: Auth, store: Store, m365: M365Gateway, params: dict[str, Any], rule: str
) -> None:
    before = await m365.get_data_encryption_policy()
    response = await api.post(
        "/api/operations", json={"kind": "exchange.dep.create", "params": params}, headers=auth(Role.OPERATOR)
    )
    assert response.status_code == 422 and response.json()["rule"] == rule, response.text
    assert await store.list_operations() == []
    assert await m365.get_data_encryption_policy() == before


async def test_dep_rules_checked_against_the_vaults(
    api: httpx.AsyncClient, product_worker: Worker, auth: Auth, kv_control: SandboxKeyVaultControl, m365: M365Gateway
) -> None:
    cases = {
        "two-keys-two-regions": await make_keys(kv_control, ("eastus", "eastus")),
        "keys-purge-protection": await make_keys(kv_control, purge_protection=False),
        # A legacy vault from before soft delete became mandatory.
        "keys-soft-delete": await make_keys(kv_control, purge_protection=False, soft_delete=False),
        "service-principal-get-wrap-unwrap": await make_keys(
            kv_control, exo_permissions=(["get", "wrapKey"], ["get", "wrapKey"])
        ),
    }
    before = await m365.get_data_encryption_policy()
    for rule, keys in cases.items():
        body, _ = await run_operation(
            api,
            auth(Role.OPERATOR),
            "exchange.dep.create",
            {"name": f"DEP_{uuid.uuid4().hex[:8]}", "azure_key_ids": keys},
        )
        assert body["state"] == "failed" and body["error"].startswith(f"{rule}:"), (rule, body["error"])
        assert rule in body["error"]
    assert await m365.get_data_encryption_policy() == before


# Calls in flight at a crash (finding 8) ----------------------------------------------------------------------------


async def test_no_state_changing_call_is_sent_when_its_intent_cannot_be_recorded(
    m365: M365Gateway, tenant_control: SandboxM365Control
) -> None:
    mailbox = (await user_mailboxes(m365, 3))[0]
    seen: list[str] = []

    async def audit_down(cmdlet: Cmdlet, outcome: str, error: str | None) -> None:
        seen.append(f"{cmdlet.name}:{outcome}")
        if outcome == "intent":
            raise RuntimeError("the audit trail is unavailable")

    seq = max((c["seq"] for c in await tenant_control.calls(limit=100_000)), default=0)
    with pytest.raises(RuntimeError):
        await m365.with_on_call(audit_down).set_mailbox(mailbox, "USA_mailboxes")
    assert seen == ["Set-Mailbox:intent"]
    assert await tenant_control.calls(after=seq) == []
    # Reads are not announced: they change nothing.
    await m365.with_on_call(audit_down).get_mailbox(mailbox)
    assert seen[-1] == "Get-Mailbox:ok"


async def test_a_call_in_flight_at_a_crash_is_looked_up_in_the_tenant_before_it_is_sent_again(
    m365: M365Gateway, tenant_control: SandboxM365Control, store: Store
) -> None:
    name = f"FLIGHT_{uuid.uuid4().hex[:8]}"
    dep = await m365.new_data_encryption_policy(name, DEMO_KEYS, "in flight at a crash")
    landed, lost, fresh = await user_mailboxes(m365, 3)
    # Runs before the tests that complete the tenant's migrations (which turn its mail users into mailboxes).
    mail_user = sorted(b.identity for b in await m365.get_mail_user(result_size="Unlimited"))[-1]
    # The crashed attempt had sent four calls: two reached the tenant, one never did; one mailbox it never began.
    await m365.set_mailbox(landed, name)
    await m365.set_mail_user(mail_user, name)
    targets = TargetStore(store)
    boxes = [landed, lost, mail_user, fresh]
    target = await targets.create_set("mailboxes", "inline", boxes, "alice@contoso.com", time_env_now())
    op_id = f"op-{uuid.uuid4()}"
    await targets.register(op_id, boxes, 0)
    for identity in (landed, lost, mail_user):
        await targets.mark_sent(op_id, identity, time_env_now())
    assert await targets.in_flight(op_id) == [landed, lost, mail_user]
    seq = max((c["seq"] for c in await tenant_control.calls(limit=100_000)), default=0)

    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=op_id, attempt=2)
    activities = ExchangeActivities(m365, store, cast(SupportDesk, None))
    result = await env.run(
        activities.assign_dep_batch,
        AssignBatchInput(operation_id=op_id, set_id=target.id, offset=0, limit=10, dep=name, dep_guid=dep.guid),
    )

    assert (result.assigned, result.confirmed, result.failed) == (4, 2, 0)
    calls = [(c["cmdlet"], c["identity"]) for c in await tenant_control.calls(after=seq)]
    assert sorted(calls) == sorted([("Set-Mailbox", lost), ("Set-Mailbox", fresh)])
    assert await targets.in_flight(op_id) == []
    assert (await targets.counts(op_id)).assigned == 4
    audit = [(e.action, e.target, e.outcome.value) for e in await store.list_audit(operation_id=op_id)]
    assert ("exchange.assignment.confirmed", landed, "info") in audit
    assert ("exchange.assignment.confirmed", mail_user, "info") in audit
    line = f"Set-Mailbox -Identity {lost} -DataEncryptionPolicy {name}"
    assert [o for a, t, o in audit if t == line] == ["intent", "ok"]


async def test_a_follow_up_started_before_the_lookup_finishes_its_mail_users(m365: M365Gateway, store: Store) -> None:
    """An assignment running when this code is deployed registered its recipients without a kind: a round reads a
    mail user with Get-MailUser when Get-MailboxStatistics does not know it, and counts it done."""
    name = f"OLD_{uuid.uuid4().hex[:8]}"
    dep = await m365.new_data_encryption_policy(name, DEMO_KEYS, "a follow-up from before the lookup")
    # Runs before the tests that complete the tenant's migrations (which turn its mail users into mailboxes).
    mail_user = sorted(b.identity for b in await m365.get_mail_user(result_size="Unlimited"))[0]
    await m365.set_mail_user(mail_user, name)
    targets = TargetStore(store)
    op_id = f"op-{uuid.uuid4()}"
    await targets.register(op_id, [mail_user], 0)  # no kind, as before
    await targets.mark_all_assigned(op_id, time_env_now())

    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=op_id)
    activities = ExchangeActivities(m365, store, cast(SupportDesk, None))
    # A round scheduled by the old code carries no DEP name: the activity looks it up by GUID.
    result = await env.run(activities.follow_encryption, FollowInput(operation_id=op_id, dep_guid=dep.guid))
    assert (result.counts.assigned_encrypts_on_migration, result.counts.pending) == (1, 0)


# exchange.dep.assign -----------------------------------------------------------------------------------------------


async def test_a_mixed_assignment_names_the_unknown_ones_and_ends_with_mail_users_assigned(
    client: Client,
    api: httpx.AsyncClient,
    product_worker: Worker,
    auth: Auth,
    m365: M365Gateway,
    tenant_control: SandboxM365Control,
    store: Store,
) -> None:
    name = f"MIX_{uuid.uuid4().hex[:8]}"
    await m365.new_data_encryption_policy(name, DEMO_KEYS, "mailboxes, mail users and typos")
    mailboxes = await user_mailboxes(m365, 2)
    # Runs before the tests that complete the tenant's migrations (which turn its mail users into mailboxes).
    mail_users = sorted(b.identity for b in await m365.get_mail_user(result_size="Unlimited"))[:2]
    assert len(mail_users) == 2
    unknown = ["nobody-3@contoso.com", "typo.user@contoso.com"]
    seq = max((c["seq"] for c in await tenant_control.calls(limit=100_000)), default=0)
    named = [mailboxes[0], unknown[0], mail_users[0], mailboxes[1], unknown[1], mail_users[1]]
    body, events = await run_operation(
        api, auth(Role.OPERATOR), "exchange.dep.assign", {"dep": name, "mailboxes": named}
    )

    assert body["state"] == "succeeded", body["error"]
    result = body["result"]
    # The unknown ones were named up front and never sent a call; they are not in the total.
    assert (result["unknown"], result["unknown_count"]) == (unknown, 2)
    assert (result["total"], result["encrypted"], result["assigned_encrypts_on_migration"], result["failed"]) == (
        4,
        2,
        2,
        0,
    )
    assert result["escalated"] == 0 and result["case_id"] is None and body["escalations"] == []
    assert body["progress"]["percent"] == 100.0
    calls = [(c["cmdlet"], c["identity"]) for c in await tenant_control.calls(after=seq, limit=100_000)]
    assert sorted(calls) == sorted([("Set-Mailbox", m) for m in mailboxes] + [("Set-MailUser", u) for u in mail_users])
    assert "exchange.recipients.unknown" in [e["action"] for e in events]
    # The read side agrees: mailboxes encrypted, mail users assigned and encrypting on migration.
    viewer = auth(Role.VIEWER)
    for mailbox in mailboxes:
        shown = (await api.get(f"/api/mailboxes/{mailbox}", headers=viewer)).json()
        assert (shown["dep"], shown["is_encrypted"]) == (name, True), shown
    for user in mail_users:
        shown = (await api.get(f"/api/mailboxes/{user}", headers=viewer)).json()
        assert (shown["dep"], shown["is_encrypted"], shown["status"]) == (
            name,
            None,
            "assigned, encrypts on migration",
        ), shown
    counts = await TargetStore(store).counts(body["id"])
    assert (counts.total, counts.encrypted, counts.assigned_encrypts_on_migration, counts.pending) == (4, 2, 2, 0)
    # Verifying the DEP follows the mail users with Get-MailUser too, and ends.
    verified, _ = await run_operation(api, auth(Role.OPERATOR), "exchange.encryption.verify", {"dep": name})
    assert verified["state"] == "succeeded", verified["error"]
    assert (verified["result"]["total"], verified["result"]["encrypted"]) == (4, 2)
    assert verified["result"]["assigned_encrypts_on_migration"] == 2 and verified["escalations"] == []
    # The new command sequence is behind its patch (a marker in the history), and the run replays.
    history = await client.get_workflow_handle(body["id"]).fetch_history()
    markers = [
        e.marker_recorded_event_attributes for e in history.events if e.HasField("marker_recorded_event_attributes")
    ]
    assert any(RESOLVE_RECIPIENTS_FIRST in m.details["patch-data"].payloads[0].data.decode() for m in markers)
    replayer = Replayer(workflows=all_workflows(), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)


async def workflow_input(client: Client, op_id: str) -> dict[str, Any]:
    """The input a workflow was started with, as JSON."""
    history = await client.get_workflow_handle(op_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes
    decoded: dict[str, Any] = json.loads(started.input.payloads[0].data)
    return decoded


async def test_assign_a_dep_to_1000_mailboxes_until_every_one_is_encrypted(
    client: Client,
    api: httpx.AsyncClient,
    product_worker: Worker,
    auth: Auth,
    m365: M365Gateway,
    tenant_control: SandboxM365Control,
    store: Store,
    record_history: Recorder,
) -> None:
    operator = auth(Role.OPERATOR)
    name = f"ALL_{uuid.uuid4().hex[:8]}"
    created, _ = await run_operation(api, operator, "exchange.dep.create", {"name": name, "azure_key_ids": DEMO_KEYS})
    assert created["state"] == "succeeded", created["error"]

    everyone = await recipients(m365)
    assert len(everyone) == 1000
    upload = await api.post(
        "/api/uploads/mailboxes",
        params={"name": "everyone.csv"},
        content=as_csv(everyone),
        headers=operator | {"Content-Type": "text/csv"},
    )
    assert upload.status_code == 201 and upload.json()["count"] == 1000
    started = await api.post(
        "/api/operations",
        json={
            "kind": "exchange.dep.assign",
            "params": {"dep": name, "mailbox_file": upload.json()["id"]},
        },
        headers=operator,
    )
    assert started.status_code == 202, started.text
    op_id = started.json()["id"]

    percents: list[float] = []
    migrated = False
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        body = (await api.get(f"/api/operations/{op_id}", headers=operator)).json()
        if body["progress"]["percent"] is not None:
            percents.append(body["progress"]["percent"])
        if body["phase"] == "following" and not migrated:
            # Mail users are encrypted when their migration to the cloud completes.
            await tenant_control.complete_migrations()
            migrated = True
        if body["state"] != "running":
            break
        await asyncio.sleep(0.25)
    assert body["state"] == "succeeded", body
    done = body["result"]["encrypted"] + body["result"]["assigned_encrypts_on_migration"]
    assert done == body["result"]["total"] == 1000
    assert percents == sorted(percents) and percents[-1] == 100.0
    assert body["escalations"] == []
    await record_history(op_id, "exchange_dep_assign")
    # The timings came from the settings, and the operation records them (its input, in the started event).
    started_input = await workflow_input(client, op_id)
    assert (started_input["poll_interval"], started_input["escalate_after"]) == ("PT1S", "P7D")
    assert started_input["batch_size"] == 200 and started_input["follow_state"] is None

    for identity in (everyone[0], everyone[-1], everyone[500]):
        shown = (await api.get(f"/api/mailboxes/{identity}", headers=auth(Role.VIEWER))).json()
        assert (shown["dep"], shown["is_encrypted"]) == (name, True), shown
    counts = await TargetStore(store).counts(op_id)
    assert (counts.assigned, counts.done, counts.failed) == (1000, 1000, 0)
    encrypted = (await api.get("/api/mailboxes", params={"dep": name, "limit": 5}, headers=auth(Role.VIEWER))).json()
    assert encrypted["total"] == 1000


async def test_verify_follows_every_mailbox_of_a_dep_until_encrypted(
    api: httpx.AsyncClient, product_worker: Worker, auth: Auth, m365: M365Gateway, record_history: Recorder
) -> None:
    operator = auth(Role.OPERATOR)
    name = f"VER_{uuid.uuid4().hex[:8]}"
    created, _ = await run_operation(api, operator, "exchange.dep.create", {"name": name, "azure_key_ids": DEMO_KEYS})
    assert created["state"] == "succeeded", created["error"]
    mailboxes = sorted(b.identity for b in await m365.get_mailbox(result_size=3))
    assigned, _ = await run_operation(api, operator, "exchange.dep.assign", {"dep": name, "mailboxes": mailboxes})
    assert assigned["state"] == "succeeded", assigned["error"]

    # No mailboxes named: every mailbox the DEP is assigned to.
    verified, events = await run_operation(api, operator, "exchange.encryption.verify", {"dep": name})
    assert verified["state"] == "succeeded", verified["error"]
    assert (verified["result"]["total"], verified["result"]["encrypted"]) == (3, 3)
    assert verified["result"]["dep"] == name and verified["escalations"] == []
    assert "phase.resolving" in [e["action"] for e in events]
    await record_history(verified["id"], "exchange_encryption_verify")


async def test_a_dep_marked_for_purge_cannot_be_assigned(
    api: httpx.AsyncClient, product_worker: Worker, auth: Auth, kv_control: SandboxKeyVaultControl, m365: M365Gateway
) -> None:
    keys = await make_keys(kv_control)
    name = f"PURGE_{uuid.uuid4().hex[:8]}"
    created, _ = await run_operation(
        api, auth(Role.OPERATOR), "exchange.dep.create", {"name": name, "azure_key_ids": keys}
    )
    assert created["state"] == "succeeded", created["error"]
    for uri in keys:
        await kv_control.revoke(uri.split("//")[1].split(".")[0], EXO, ["wrapKey", "unwrapKey"])
    await m365.set_data_encryption_policy(
        name, permanent_data_purge_reason="Exit", permanent_data_purge_contact="a@contoso.com"
    )

    mailbox = (await recipients(m365))[3]
    before = await m365.get_mailbox_statistics(mailbox)
    body, _ = await run_operation(
        api, auth(Role.OPERATOR), "exchange.dep.assign", {"dep": name, "mailboxes": [mailbox]}
    )
    assert body["state"] == "failed" and body["error"].startswith("dep-purge-requested"), body["error"]
    assert await m365.get_mailbox_statistics(mailbox) == before


# Public params: what a caller may set (finding 4) ---------------------------------------------------------------


FORGED_STATE = {
    "dep": "FORGED",
    "dep_guid": "00000000-0000-0000-0000-000000000000",
    "assigned_at": "2026-01-01T00:00:00Z",
    "total": 1,
    "encrypted": 1,
    "case_id": "forged-case",
}
ASSIGN = {"dep": "USA_mailboxes", "mailboxes": ["alice@contoso.com"]}


@pytest.mark.parametrize(
    ("kind", "params", "field"),
    [
        ("exchange.dep.assign", ASSIGN | {"follow_state": FORGED_STATE}, "follow_state"),
        ("exchange.dep.assign", ASSIGN | {"escalate_after": "PT1S"}, "escalate_after"),
        ("exchange.dep.assign", ASSIGN | {"poll_interval": "PT0.000001S"}, "poll_interval"),
        ("exchange.dep.assign", ASSIGN | {"batch_size": 1}, "batch_size"),
        ("exchange.dep.assign", ASSIGN | {"surprise": True}, "surprise"),
        ("exchange.encryption.verify", {"dep": "USA_mailboxes", "follow_state": FORGED_STATE}, "follow_state"),
        ("exchange.encryption.verify", {"dep": "USA_mailboxes", "escalate_after": 1}, "escalate_after"),
        ("exchange.dep.create", {"name": "USA_x", "azure_key_ids": DEMO_KEYS, "surprise": 1}, "surprise"),
    ],
)
async def test_internal_and_unknown_fields_are_refused_and_nothing_starts(
    api: httpx.AsyncClient, client: Client, auth: Auth, store: Store, kind: str, params: dict[str, Any], field: str
) -> None:
    key = f"refused-{uuid.uuid4()}"
    response = await api.post(
        "/api/operations",
        json={"kind": kind, "params": params},
        headers=auth(Role.OPERATOR, "olga.operator@contoso.com") | {"Idempotency-Key": key},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["rule"] == "extra-forbidden", problem
    assert [e["loc"][-1] for e in problem["errors"]] == [field]
    assert await store.list_operations() == []
    with pytest.raises(RPCError):
        await client.get_workflow_handle(operation_id_for("olga.operator@contoso.com", key)).describe()


@pytest.mark.parametrize(
    ("kind", "params", "rule"),
    [
        (
            "exchange.dep.assign",
            {"dep": "USA_mailboxes", "mailboxes": [f"u{i}@contoso.com" for i in range(1001)]},
            "too-long",
        ),
        (
            "exchange.dep.assign",
            {"dep": "USA_mailboxes", "mailbox_file": "../../etc/passwd"},
            "string-pattern-mismatch",
        ),
        ("exchange.dep.assign", {"dep": "USA_mailboxes", "mailboxes": ["a@contoso.com\r\nb"]}, "no-control-characters"),
        ("exchange.dep.assign", {"dep": "USA_mailboxes"}, "mailboxes-or-file"),
        ("exchange.encryption.verify", {"dep": "USA mailboxes"}, "dep-name-no-spaces"),
        (
            "exchange.dep.create",
            {"name": "USA_x", "description": "one\nSet-Mailbox -Identity x", "azure_key_ids": DEMO_KEYS},
            "no-control-characters",
        ),
        (
            "exchange.dep.create",
            {"name": "USA_x", "description": "d" * 1025, "azure_key_ids": DEMO_KEYS},
            "string-too-long",
        ),
    ],
)
async def test_public_params_are_bounded(
    api: httpx.AsyncClient, auth: Auth, store: Store, kind: str, params: dict[str, Any], rule: str
) -> None:
    response = await api.post("/api/operations", json={"kind": kind, "params": params}, headers=auth(Role.OPERATOR))
    assert response.status_code == 422 and response.json()["rule"] == rule, response.text
    assert await store.list_operations() == []


def test_the_workflow_input_takes_its_timings_from_the_settings(op_settings: Settings) -> None:
    kind = product_registry().get("exchange.dep.assign")
    assert kind is not None
    params = kind.public_params.model_validate({"dep": "USA_mailboxes", "mailbox_file": f"ts-{uuid.uuid4()}"})
    settings = op_settings.model_copy(
        update={"exchange_escalate_after": timedelta(days=9), "exchange_assign_batch_size": 50}
    )
    made = kind.make_input(params, settings).model_dump()
    assert (made["escalate_after"], made["poll_interval"], made["batch_size"], made["follow_state"]) == (
        timedelta(days=9),
        timedelta(seconds=1),
        50,
        None,
    )


# Mailboxes that cannot be assigned (finding 10) ------------------------------------------------------------------


async def user_mailboxes(m365: M365Gateway, count: int) -> list[str]:
    return sorted(b.identity for b in await m365.get_mailbox(result_size="Unlimited"))[-count:]


async def test_a_single_unknown_address_is_refused_before_it_starts(
    api: httpx.AsyncClient, product_worker: Worker, auth: Auth, m365: M365Gateway, store: Store
) -> None:
    name = f"NONE_{uuid.uuid4().hex[:8]}"
    nobody = f"nobody-{uuid.uuid4().hex[:8]}@contoso.com"
    await m365.new_data_encryption_policy(name, DEMO_KEYS, "nobody to assign")
    started = await api.post(
        "/api/operations",
        json={"kind": "exchange.dep.assign", "params": {"dep": name, "mailboxes": [nobody]}},
        headers=auth(Role.OPERATOR),
    )
    # Refused by the API after one bulk lookup: no operation record, no workflow, no call to the tenant.
    assert started.status_code == 422, started.text
    problem = started.json()
    assert problem["rule"] == "recipients-unknown" and nobody in problem["detail"], problem
    assert await store.list_operations(dep=name) == []
    # Nor a stored copy of the list: the check runs before the inline list is stored as a target set.
    async with store.session() as session:
        stored = (await session.execute(select(TargetItemRow.identity))).scalars().all()
    assert nobody not in stored


async def test_an_assignment_of_unknown_ones_only_is_refused_by_its_first_step(
    client: Client, product_worker: Worker, op_settings: Settings, m365: M365Gateway, store: Store
) -> None:
    """Started without the API's check (or while it could not read the tenant): the workflow refuses, nothing sent."""
    name = f"NONE_{uuid.uuid4().hex[:8]}"
    await m365.new_data_encryption_policy(name, DEMO_KEYS, "nobody to assign")
    nobody = ["nobody-1@contoso.com", "nobody-2@contoso.com"]
    target = await TargetStore(store).create_set("mailboxes", "inline", nobody, "alice@contoso.com", time_env_now())
    handle = await client.start_workflow(
        ExchangeDepAssignWorkflow.run,
        ExchangeDepAssignInput(dep=name, mailbox_file=target.id, poll_interval=timedelta(seconds=1)),
        id=f"op-{uuid.uuid4()}",
        task_queue=op_settings.temporal_task_queue,
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    chain: list[BaseException] = []
    link: BaseException | None = failure.value
    while link is not None:
        chain.append(link)
        link = link.__cause__
    refusals = [c for c in chain if isinstance(c, ApplicationError) and c.type == "recipients-unknown"]
    assert refusals and all(n in str(refusals[0]) for n in nobody), chain
    actions = [e.action for e in await store.list_audit(operation_id=handle.id)]
    assert not any(a in ("m365.Set-Mailbox", "m365.Set-MailUser") for a in actions), actions


# Escalation on the time-skipping server ----------------------------------------------------------------------------


ESCALATION_TENANT = TenantSpec(mailboxes=8, mail_users=0, sites_per_geo=0, cloud_pcs=0, stuck_mailboxes=1, seed=7)


@pytest.fixture(scope="module")
def escalation_settings(tmp_path_factory: pytest.TempPathFactory, stack_settings: Settings) -> Settings:
    return stack_settings.model_copy(
        update={
            "data_dir": stack_settings.data_dir,
            "sandbox_m365_port": free_port(),
            "temporal_search_attributes": False,
        }
    )


@pytest.fixture(scope="module")
def escalation_tenant(
    escalation_settings: Settings, keyvault_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('escalation') / 'tenant.db'}"
    with SandboxM365Server(escalation_settings, seed=ESCALATION_TENANT, speed=2_000_000.0, database_url=url) as server:
        yield server


async def test_a_stuck_mailbox_is_escalated_once_seven_days_after_assignment(
    time_env: WorkflowEnvironment, escalation_settings: Settings, escalation_tenant: Any, store: Store, task_queue: str
) -> None:
    async with AzureConnection(escalation_settings) as azure, alert_receiver() as webhook:
        keyvault = KeyVaultGateway(azure)
        gateways = product_gateways(escalation_settings, store, keyvault, azure)
        gateways.alert_webhook_url = webhook.url
        m365 = gateways.m365
        assert m365 is not None
        everyone = await recipients(m365)
        async with SandboxM365Control.from_settings(escalation_settings) as control:
            stuck = [i for i in everyone if (await control.mailbox(i)).get("stuck")]
        assert len(stuck) == 1
        name = f"ESC_{uuid.uuid4().hex[:8]}"
        await m365.new_data_encryption_policy(name, DEMO_KEYS, "escalation test")
        target = await TargetStore(store).create_set(
            "mailboxes", "inline", everyone, "alice@contoso.com", time_env_now()
        )
        op_id = f"op-{uuid.uuid4()}"
        async with Worker(
            time_env.client,
            task_queue=task_queue,
            workflows=[ExchangeDepAssignWorkflow],
            activities=build_activities(gateways),
        ):
            result = await time_env.client.execute_workflow(
                ExchangeDepAssignWorkflow.run,
                ExchangeDepAssignInput(dep=name, mailbox_file=target.id, poll_interval=timedelta(hours=6)),
                id=op_id,
                task_queue=task_queue,
                memo={"started_by": "alice@contoso.com"},
            )
        history = await time_env.client.get_workflow_handle(op_id).fetch_history()
        assert gateways.support is not None
        case = await gateways.support.get_case(f"{op_id}-escalation")
        await keyvault.close()
    assert case is not None and case.kind == "mailboxEncryptionEscalation"
    assert case.details["mailboxes"] == stuck
    (evidence,) = case.details["evidence"]
    assert (evidence["mailbox"], evidence["dep"]) == (stuck[0], name)
    assert evidence["assigned_at"] and evidence["last_status"]["IsEncrypted"] is False
    record = await store.get_operation(op_id)
    assert record is not None and record.state.value == "succeeded"
    (escalation,) = record.escalations
    assert escalation.subjects == stuck
    assert escalation.case_id and result.case_id == escalation.case_id
    assert timedelta(days=7) <= escalation.at - record.started_at < timedelta(days=7, hours=7)
    assert result.encrypted == result.total == len(everyone)  # Microsoft restarted the stuck move
    # Every 6 hours for a week and more, yet the history holds no event per poll: polls are activity retries.
    rounds = [e for e in await store.list_audit(operation_id=op_id) if e.action == "m365.Get-MailboxStatistics"]
    follows = [
        e
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "follow_encryption"
    ]
    assert len(rounds) >= 28 and len(follows) <= 3, (len(rounds), len(follows), len(history.events))
    filed = [e for e in await store.list_audit(operation_id=op_id) if e.action == "support.case.filed"]
    assert len(filed) == 1
    alerts = [e for e in await store.list_audit(operation_id=op_id) if e.action == "alert.raised"]
    assert len(alerts) == 1
    # The escalation reached the alert webhook too, once, naming the mailbox and the case.
    (posted,) = webhook.received
    assert (posted["rule"], posted["operation_id"], posted["kind"]) == (ESCALATED, op_id, "exchange.dep.assign")
    assert [f["target"] for f in posted["findings"]] == stuck and escalation.case_id in posted["summary"]


def time_env_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


# A worker killed in the middle of an assignment --------------------------------------------------------------------


async def test_killing_the_worker_mid_assignment_assigns_every_mailbox_once(
    env: WorkflowEnvironment,
    client: Client,
    op_settings: Settings,
    store: Store,
    m365: M365Gateway,
    tenant_control: SandboxM365Control,
    tmp_path: Path,
    kv_control: SandboxKeyVaultControl,
) -> None:
    name = f"KILL_{uuid.uuid4().hex[:8]}"
    await m365.new_data_encryption_policy(name, DEMO_KEYS, "worker kill test")
    everyone = [i for i in await recipients(m365)][:600]
    target = await TargetStore(store).create_set("mailboxes", "inline", everyone, "alice@contoso.com", time_env_now())
    db_url = str(store.engine.url)
    worker_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CKEY_")},
        "CKEY_DATA_DIR": str(op_settings.data_dir),
        "CKEY_SANDBOX": "true",  # off by default (production): this worker reaches the sandboxes
        "CKEY_DATABASE_URL": db_url,
        "CKEY_TEMPORAL_ADDRESS": env.client.service_client.config.target_host,
        "CKEY_TEMPORAL_TASK_QUEUE": op_settings.temporal_task_queue,
        "CKEY_SANDBOX_KEYVAULT_PORT": str(op_settings.sandbox_keyvault_port),
        "CKEY_SANDBOX_M365_PORT": str(op_settings.sandbox_m365_port),
        # Signed in to the sandbox tenant as `ckey up` signs its worker in.
        "CKEY_AZURE_CLIENT_ID": str(op_settings.azure_client_id),
        "CKEY_AZURE_CLIENT_SECRET": op_settings.azure_client_secret.get_secret_value()
        if op_settings.azure_client_secret
        else "",
        "PYTHONPATH": str(Path(__file__).parents[2]),
    }

    def start_worker(log: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "worker"],
            env=worker_env,
            cwd=tmp_path,
            stdout=open(tmp_path / log, "wb"),
            stderr=subprocess.STDOUT,
        )

    before = {i: (await tenant_control.mailbox(i))["assignments"] for i in everyone}
    seq_before = max((c["seq"] for c in await tenant_control.calls(limit=100_000)), default=0)
    first = start_worker("worker-1.log")
    handle = await client.start_workflow(
        ExchangeDepAssignWorkflow.run,
        ExchangeDepAssignInput(dep=name, mailbox_file=target.id, batch_size=20, poll_interval=timedelta(seconds=1)),
        id=f"op-{uuid.uuid4()}",
        task_queue=op_settings.temporal_task_queue,
    )
    targets = TargetStore(store)
    for _ in range(2400):
        if (await targets.counts(handle.id)).assigned >= 150:
            break
        await asyncio.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    # Nothing runs the operation's activities now: what is in flight stays so until the second worker looks.
    assigned_at_kill = (await targets.counts(handle.id)).assigned
    in_flight = len(await targets.in_flight(handle.id))
    assert 150 <= assigned_at_kill < 600, (tmp_path / "worker-1.log").read_text()[-2000:]

    second = start_worker("worker-2.log")
    await tenant_control.complete_migrations()  # the mail users among them encrypt once migrated
    try:
        try:
            result = await asyncio.wait_for(handle.result(), timeout=float(os.environ.get("KILL_TIMEOUT", "240")))
        except TimeoutError:
            desc = await handle.describe()
            pending = [
                (a.activity_type.name, a.attempt, a.state, a.last_failure.message if a.last_failure else None)
                for a in desc.raw_description.pending_activities
            ]
            raise AssertionError(
                f"not finished: {pending}\n{(tmp_path / 'worker-2.log').read_text()[-3000:]}"
            ) from None
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    # Mail users among them are done once assigned (they encrypt on migration), or encrypted if migrated first.
    assert result.total == result.encrypted + result.assigned_encrypts_on_migration == 600
    counts = await targets.counts(handle.id)
    assert (counts.assigned, counts.failed) == (600, 0)
    # The tenant saw one assignment per mailbox: a re-sent Set-Mailbox to the same DEP changes nothing.
    twice = [i for i in everyone if (await tenant_control.mailbox(i))["assignments"] != before[i] + 1]
    assert twice == []
    # From the tenant's own call log: every call it received has its intent in ckey's audit trail, written before
    # it was sent, and only a call in flight at the kill was sent again.
    calls = [c for c in await tenant_control.calls(after=seq_before, limit=100_000) if c["identity"] in everyone]
    events = [
        (e.action, e.target or "", e.outcome.value)
        for e in await store.list_audit(operation_id=handle.id, limit=100_000)
    ]
    check = check_calls(calls, events)
    print(f"worker kill: {check.calls} Set-* calls, {check.repeated} repeated, {in_flight} in flight at the kill")
    assert check.unaudited == [], check
    assert check.repeated <= in_flight, (check, in_flight)
    assert check.assigned == set(everyone), set(everyone) - check.assigned


@dataclass
class CallCheck:
    """The tenant's state-changing calls held against ckey's audit trail."""

    calls: int
    unaudited: list[tuple[str, str]]
    """(cmdlet, identity) of calls the tenant received beyond the intents ckey recorded for them."""
    repeated: int
    """Calls beyond the first of the same cmdlet to the same mailbox."""
    assigned: set[str]
    """Mailboxes the tenant answered an assignment for (status 200)."""


def check_calls(calls: list[dict[str, Any]], events: list[tuple[str, str, str]]) -> CallCheck:
    """Hold the tenant's call log (``GET /sandbox/calls``) against audit ``(action, target, outcome)`` triples."""
    received = Counter((c["cmdlet"], c["identity"]) for c in calls)
    intents = Counter(
        (action.removeprefix("m365."), target.split()[2])
        for action, target, outcome in events
        if outcome == "intent" and action in ("m365.Set-Mailbox", "m365.Set-MailUser")
    )
    unaudited = sorted((received - intents).elements())
    return CallCheck(
        calls=len(calls),
        unaudited=unaudited,
        repeated=sum(n - 1 for n in received.values()),
        assigned={c["identity"] for c in calls if c["status"] == 200},
    )
