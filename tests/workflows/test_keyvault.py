"""keyvault.health, keyvault.key.restore and keyvault.access.revoke on the real dev server, against the sandbox."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, Worker

from ckey import temporal as sa
from ckey.config import Settings
from ckey.keyvault import KeyVaultGateway
from ckey.models import KeyUri, Role, ServicePrincipal
from ckey.store import Store
from sandbox.keyvault import SandboxKeyVaultControl
from tests.workflows.conftest import closed_description, unique
from workflows import all_workflows

Auth = Callable[..., dict[str, str]]
Recorder = Callable[[str, str], Awaitable[None]]
EXO = ServicePrincipal.EXCHANGE_ONLINE.value


async def run_operation(
    api: httpx.AsyncClient, headers: dict[str, str], kind: str, params: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Start an operation through the API, wait for its end; its record and its audit events."""
    started = await api.post("/api/operations", json={"kind": kind, "params": params}, headers=headers)
    assert started.status_code == 202, started.text
    op_id = started.json()["id"]
    for _ in range(600):
        body: dict[str, Any] = (await api.get(f"/api/operations/{op_id}", headers=headers)).json()
        if body["state"] in ("succeeded", "failed", "cancelled") and body["ended_at"]:
            events: list[dict[str, Any]] = (await api.get(f"/api/operations/{op_id}/events", headers=headers)).json()
            return body, events
        await asyncio.sleep(0.05)
    raise AssertionError(f"{kind} did not end: {body}")


def targets(events: list[dict[str, Any]]) -> list[str]:
    return [e["target"] for e in events if e["target"]]


# keyvault.health ----------------------------------------------------------------------------------------------------


async def test_health_of_the_configured_exchange_keys(
    api: httpx.AsyncClient, product_worker: Worker, auth: Auth, record_history: Recorder
) -> None:
    body, events = await run_operation(api, auth(Role.OPERATOR), "keyvault.health", {"workload": "exchange"})
    await record_history(body["id"], "keyvault_health")
    assert body["state"] == "succeeded", body["error"]
    report = body["result"]
    assert report["ok"] is True, [line for line in report["lines"] if not line["ok"]]
    rules = {line["rule"] for line in report["lines"]}
    assert rules == {
        "keys-soft-delete",
        "keys-purge-protection",
        "key-exists",
        "key-enabled",
        "key-no-expiry",
        "key-is-rsa",
        "key-rotation-policy-no-expiry",
        "service-principal-get-wrap-unwrap",
        "two-keys-two-vaults",
        "two-keys-two-regions",
    }
    assert body["progress"] == {"done": 2, "total": 2, "unit": "keys", "percent": 100.0}
    assert "Get-AzKeyVault -VaultName contoso-eastus-kv1" in targets(events)
    assert "Get-AzKeyVaultKey -VaultName contoso-westus-kv1 -Name exo-key-02" in targets(events)


async def test_health_reports_each_broken_rule(
    api: httpx.AsyncClient, product_worker: Worker, auth: Auth, kv_control: SandboxKeyVaultControl
) -> None:
    # Two vaults in one region; the second without purge protection; Exchange without unwrap on the second.
    first, second = unique("hc"), unique("hc")
    await kv_control.create_vault(first, location="eastus", purge_protection=True)
    await kv_control.create_vault(second, location="eastus", purge_protection=False)
    for vault in (first, second):
        await kv_control.grant(vault, "ckey-automation@contoso.com", ["all"])
        await kv_control.create_key(vault, "exo-key")
    await kv_control.grant(first, EXO, ["get", "wrapKey", "unwrapKey"])
    await kv_control.grant(second, EXO, ["get", "wrapKey"])
    keys = [f"https://{first}.vault.azure.net/keys/exo-key", f"https://{second}.vault.azure.net/keys/exo-key"]

    body, _ = await run_operation(api, auth(Role.OPERATOR), "keyvault.health", {"keys": keys})
    # A broken rule turns the operation red; its error names the rules, its result still holds every line.
    assert body["state"] == "failed"
    assert body["error"].startswith("keyvault-health-failed: 3 rule(s) broken: ")
    for rule in ("keys-purge-protection", "service-principal-get-wrap-unwrap", "two-keys-two-regions"):
        assert rule in body["error"]
    report = body["result"]
    failed = {(line["rule"], line["key"].split("/")[2].split(".")[0]) for line in report["lines"] if not line["ok"]}
    assert report["ok"] is False
    assert failed == {
        ("keys-purge-protection", second),
        ("service-principal-get-wrap-unwrap", second),
        ("two-keys-two-regions", first),
    }
    access = next(
        line for line in report["lines"] if line["rule"] == "service-principal-get-wrap-unwrap" and not line["ok"]
    )
    assert "missing unwrapKey" in access["detail"]


async def test_health_of_a_missing_key(api: httpx.AsyncClient, product_worker: Worker, auth: Auth) -> None:
    keys = ["https://contoso-eastus-kv1.vault.azure.net/keys/no-such-key"]
    body, _ = await run_operation(api, auth(Role.OPERATOR), "keyvault.health", {"keys": keys})
    assert body["state"] == "failed" and "key-exists" in body["error"]
    lines = {line["rule"]: line["ok"] for line in body["result"]["lines"]}
    assert lines["key-exists"] is False and "key-enabled" not in lines


async def test_health_after_a_key_was_soft_deleted_fails_and_says_so(
    api: httpx.AsyncClient,
    product_worker: Worker,
    auth: Auth,
    client: Client,
    kv_control: SandboxKeyVaultControl,
    keyvault: KeyVaultGateway,
) -> None:
    vault = unique("hd")
    await kv_control.create_vault(vault, purge_protection=True)
    await kv_control.grant(vault, "ckey-automation@contoso.com", ["all"])
    await kv_control.grant(vault, EXO, ["get", "wrapKey", "unwrapKey"])
    await kv_control.create_key(vault, "exo-key")
    key = f"https://{vault}.vault.azure.net/keys/exo-key"
    await keyvault.key_client(f"https://{vault}.vault.azure.net").delete_key("exo-key")

    body, events = await run_operation(api, auth(Role.OPERATOR), "keyvault.health", {"keys": [key]})
    assert body["state"] == "failed", body
    assert body["error"].startswith("keyvault-health-failed: 1 rule(s) broken: key-exists"), body["error"]
    assert body["result"]["ok"] is False
    assert [line["rule"] for line in body["result"]["lines"] if not line["ok"]] == ["key-exists"]
    ended = next(e for e in events if e["action"] == "operation.failed")
    assert "key-exists" in ended["detail"]["error"]
    # The search attribute a dashboard filters on says failed too.
    described = await closed_description(client, body["id"])
    assert described.status is not None and described.status.name == "FAILED"
    assert described.typed_search_attributes.get(sa.STATE) == "failed"
    # The new ending replays (its patch marker is in the history).
    history = await client.get_workflow_handle(body["id"]).fetch_history()
    replayed = await Replayer(workflows=all_workflows(), data_converter=pydantic_data_converter).replay_workflow(
        history
    )
    assert replayed.replay_failure is None
    assert any(e.HasField("marker_recorded_event_attributes") for e in history.events)


# keyvault.key.restore -----------------------------------------------------------------------------------------------


async def _fresh_key(kv_control: SandboxKeyVaultControl, *, purge_protection: bool = False) -> KeyUri:
    vault = unique("rs")
    await kv_control.create_vault(vault, purge_protection=purge_protection)
    await kv_control.grant(vault, "ckey-automation@contoso.com", ["all"])
    await kv_control.create_key(vault, "exo-key")
    return KeyUri.parse(f"https://{vault}.vault.azure.net/keys/exo-key")


async def test_restore_recovers_from_soft_delete_first(
    api: httpx.AsyncClient,
    product_worker: Worker,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    keyvault: KeyVaultGateway,
    record_history: Recorder,
) -> None:
    uri = await _fresh_key(kv_control, purge_protection=True)
    client = keyvault.key_client(uri.vault_url)
    backup = await upload_backup(api, auth(Role.OPERATOR), await client.backup_key(uri.name))
    await client.delete_key(uri.name)

    # Even with a backup at hand, a soft-deleted key is recovered, not restored.
    body, events = await run_operation(
        api, auth(Role.OPERATOR), "keyvault.key.restore", {"key_uri": str(uri), "backup": backup["id"]}
    )
    assert body["state"] == "succeeded", body["error"]
    assert body["result"]["method"] == "recovered"
    await record_history(body["id"], "keyvault_key_restore")
    assert f"Undo-AzKeyVaultKeyRemoval -VaultName {uri.vault} -Name exo-key" in targets(events)
    assert not any(t.startswith("Restore-AzKeyVaultKey") for t in targets(events))
    assert any(e["action"] == "keyvault.key.verify" and e["outcome"] == "ok" for e in events)
    assert body["params"]["backup"] == backup["id"]  # the request is kept, so a retry can be compared


async def test_restore_from_an_uploaded_backup_when_the_key_was_purged_and_the_blob_is_seen_nowhere(
    api: httpx.AsyncClient,
    product_worker: Worker,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    keyvault: KeyVaultGateway,
    client: Client,
    store: Store,
) -> None:
    uri = await _fresh_key(kv_control)
    client_ = keyvault.key_client(uri.vault_url)
    blob = await client_.backup_key(uri.name)
    backup = await upload_backup(api, auth(Role.OPERATOR), blob)
    assert backup["sha256"] == hashlib.sha256(blob).hexdigest() and backup["size"] == len(blob)
    assert set(backup) == {"id", "sha256", "size", "created_by", "created_at"}
    await client_.delete_key(uri.name)
    await client_.purge_deleted_key(uri.name)

    without, _ = await run_operation(api, auth(Role.OPERATOR), "keyvault.key.restore", {"key_uri": str(uri)})
    assert without["state"] == "failed" and without["error"].startswith("backup-required")
    assert await keyvault.key(uri) is None  # nothing changed

    body, events = await run_operation(
        api, auth(Role.OPERATOR), "keyvault.key.restore", {"key_uri": str(uri), "backup": backup["id"]}
    )
    assert body["state"] == "succeeded", body["error"]
    assert body["result"]["method"] == "restored"
    assert f"Restore-AzKeyVaultKey -VaultName {uri.vault} -InputFile <{backup['id']}>" in targets(events)
    assert (await keyvault.key(uri)) is not None
    restore = next(e for e in events if e["action"] == "keyvault.key.restore")
    assert {k: restore["detail"][k] for k in ("backup", "sha256", "size")} == {
        "backup": backup["id"],
        "sha256": backup["sha256"],
        "size": backup["size"],
    }

    # The blob, as base64 or as the raw bytes' hex, is in no parameters, no audit event and no history.
    secrets = (base64.b64encode(blob).decode(), blob.hex())
    stored = await store.get_operation(body["id"])
    assert stored is not None and stored.params == {"key_uri": str(uri), "backup": backup["id"]}
    trail = [e.model_dump_json() for e in await store.list_audit(limit=100_000)]
    history = await client.get_workflow_handle(body["id"]).fetch_history()
    for secret in secrets:
        assert not any(secret in event for event in trail)
        assert secret not in json.dumps(body) and secret not in json.dumps(events)
        assert secret not in history_text(history)
    assert blob not in b"".join(history_payloads(history))
    uploaded = [e for e in await store.list_audit(limit=100_000) if e.action == "keyvault.key_backup.uploaded"]
    assert [e.detail for e in uploaded if e.detail["id"] == backup["id"]] == [
        {"id": backup["id"], "sha256": backup["sha256"], "size": backup["size"]}
    ]


async def test_restore_over_an_existing_key_is_the_services_conflict(
    api: httpx.AsyncClient,
    product_worker: Worker,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    keyvault: KeyVaultGateway,
) -> None:
    uri = await _fresh_key(kv_control)
    before = await keyvault.key(uri)
    backup = await upload_backup(
        api, auth(Role.OPERATOR), await keyvault.key_client(uri.vault_url).backup_key(uri.name)
    )
    body, events = await run_operation(
        api, auth(Role.OPERATOR), "keyvault.key.restore", {"key_uri": str(uri), "backup": backup["id"]}
    )
    assert body["state"] == "failed"
    # The service's 409: code Conflict, inner code ObjectAlreadyExists, and its own message.
    assert body["error"].startswith("ObjectAlreadyExists: There was a conflict restoring the key"), body["error"]
    refused = [e for e in events if e["action"] == "keyvault.key.restore"]
    assert [e["outcome"] for e in refused] == ["refused"]
    assert await keyvault.key(uri) == before

    nothing, _ = await run_operation(api, auth(Role.OPERATOR), "keyvault.key.restore", {"key_uri": str(uri)})
    assert nothing["error"].startswith("restore-needs-lost-key")


async def upload_backup(api: httpx.AsyncClient, headers: dict[str, str], blob: bytes) -> dict[str, Any]:
    """Upload a key backup as ``ckey`` users do; its description."""
    answer = await api.post(
        "/api/uploads/key-backups", content=blob, headers={**headers, "Content-Type": "application/octet-stream"}
    )
    assert answer.status_code == 201, answer.text
    described: dict[str, Any] = answer.json()
    return described


def history_payloads(history: WorkflowHistory) -> list[bytes]:
    """Every payload's bytes in a history (inputs, results, memos, failures' details), decoded."""
    found: list[bytes] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("data"), str) and "metadata" in node:
                found.append(base64.b64decode(node["data"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history.to_json()))
    return found


def history_text(history: WorkflowHistory) -> str:
    """A history's JSON with its payloads decoded, to search."""
    return history.to_json() + "\n".join(p.decode("utf-8", "replace") for p in history_payloads(history))


async def test_a_key_backup_upload_is_bounded_and_needs_an_operator(
    api: httpx.AsyncClient, auth: Auth, op_settings: Settings, store: Store
) -> None:
    limit = op_settings.key_backup_max_bytes
    assert limit == 1024 * 1024
    url, octets = "/api/uploads/key-backups", {"Content-Type": "application/octet-stream"}
    declared = await api.post(url, content=b"\x01" * (limit + 1), headers={**auth(Role.OPERATOR), **octets})

    async def stream() -> AsyncIterator[bytes]:  # no Content-Length: the limit is counted as the body streams
        for _ in range(limit // 65536 + 1):
            yield b"\x02" * 65536

    streamed = await api.post(url, content=stream(), headers={**auth(Role.OPERATOR), **octets})
    for answer in (declared, streamed):
        assert answer.status_code == 413
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["rule"] == "body-size"
    assert (await api.post(url, content=b"", headers={**auth(Role.OPERATOR), **octets})).status_code == 422
    viewer = await api.post(url, content=b"\x03" * 10, headers={**auth(Role.VIEWER), **octets})
    assert viewer.status_code == 403
    assert [e for e in await store.list_audit() if e.action == "keyvault.key_backup.uploaded"] == []

    fits = await upload_backup(api, auth(Role.OPERATOR), b"\x04" * limit)
    shown = await api.get(f"{url}/{fits['id']}", headers=auth(Role.VIEWER))
    assert shown.json() == fits
    assert (await api.get(f"{url}/kb-{uuid.uuid4()}", headers=auth(Role.VIEWER))).status_code == 404


async def test_a_restore_names_an_uploaded_backup_never_a_blob(
    api: httpx.AsyncClient, auth: Auth, store: Store
) -> None:
    key_uri = "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01"

    async def start(params: dict[str, Any]) -> httpx.Response:
        return await api.post(
            "/api/operations", json={"kind": "keyvault.key.restore", "params": params}, headers=auth(Role.OPERATOR)
        )

    unknown = await start({"key_uri": key_uri, "backup": f"kb-{uuid.uuid4()}"})
    assert (unknown.status_code, unknown.json()["rule"]) == (422, "key-backup-exists")
    malformed = await start({"key_uri": key_uri, "backup": "../../etc/passwd"})
    assert (malformed.status_code, malformed.json()["rule"]) == (422, "key-backup-id")
    inline = await start({"key_uri": key_uri, "backup_b64": base64.b64encode(b"blob").decode()})
    assert (inline.status_code, inline.json()["rule"]) == (422, "extra-forbidden")
    assert await store.list_operations() == []


# keyvault.access.revoke ---------------------------------------------------------------------------------------------


async def test_revoke_removes_a_users_access_policy(
    api: httpx.AsyncClient,
    product_worker: Worker,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    keyvault: KeyVaultGateway,
    record_history: Recorder,
) -> None:
    vault = unique("ar")
    await kv_control.create_vault(vault)
    await kv_control.grant(vault, "ckey-automation@contoso.com", ["all"])
    await kv_control.grant(vault, "bob@contoso.com", ["get", "list", "backup"])
    await kv_control.grant(vault, EXO, ["get", "wrapKey", "unwrapKey"])

    shown = (await api.get(f"/api/vaults/{vault}/access", headers=auth(Role.VIEWER))).json()
    assert shown["permission_model"] == "access_policy" and len(shown["access_policies"]) == 3

    body, events = await run_operation(
        api, auth(Role.ADMIN), "keyvault.access.revoke", {"vault": vault, "user_principal_name": "bob@contoso.com"}
    )
    assert body["state"] == "succeeded", body["error"]
    assert body["result"]["removed_permissions"] == ["backup", "get", "list"]
    await record_history(body["id"], "keyvault_access_revoke")
    assert f"Get-AzKeyVault -VaultName {vault}" in targets(events)
    assert f"Remove-AzKeyVaultAccessPolicy -VaultName {vault} -UserPrincipalName bob@contoso.com" in targets(events)
    after = await keyvault.vault(vault)
    assert len(after.access_policies) == 2
    assert any(p.principal == "Office 365 Exchange Online" for p in after.access_policies)


async def test_revoke_refuses_the_service_principals_and_needs_admin(
    api: httpx.AsyncClient, auth: Auth, store: Any
) -> None:
    for principal in (EXO, ServicePrincipal.MICROSOFT_365.value, ServicePrincipal.SHAREPOINT_ONLINE.value):
        response = await api.post(
            "/api/operations",
            json={
                "kind": "keyvault.access.revoke",
                "params": {"vault": "contoso-eastus-kv1", "user_principal_name": principal},
            },
            headers=auth(Role.ADMIN),
        )
        assert (response.status_code, response.json()["rule"]) == (422, "m365-principal-protected")
    operator = await api.post(
        "/api/operations",
        json={
            "kind": "keyvault.access.revoke",
            "params": {"vault": "contoso-eastus-kv1", "user_principal_name": "alice@contoso.com"},
        },
        headers=auth(Role.OPERATOR),
    )
    assert operator.status_code == 403
    assert await store.list_operations() == []


async def test_revoke_of_a_user_without_a_policy_is_refused_by_name(
    api: httpx.AsyncClient, product_worker: Worker, auth: Auth, kv_control: SandboxKeyVaultControl
) -> None:
    vault = unique("ar")
    await kv_control.create_vault(vault)
    await kv_control.grant(vault, "ckey-automation@contoso.com", ["all"])
    body, events = await run_operation(
        api, auth(Role.ADMIN), "keyvault.access.revoke", {"vault": vault, "user_principal_name": "carol@contoso.com"}
    )
    assert body["state"] == "failed", body
    assert body["error"] == (
        f"access-policy-exists: no access policy for carol@contoso.com on vault {vault}: nothing to revoke"
    )
    refused = [e for e in events if e["action"] == "keyvault.access.remove"]
    assert [e["outcome"] for e in refused] == ["refused"]


async def test_revoke_of_ckeys_own_principal_is_refused_and_ckey_keeps_its_access(
    api: httpx.AsyncClient,
    product_worker: Worker,
    auth: Auth,
    kv_control: SandboxKeyVaultControl,
    keyvault: KeyVaultGateway,
    stack_settings: Settings,
) -> None:
    vault = unique("ar")
    await kv_control.create_vault(vault)
    await kv_control.grant(vault, stack_settings.azure_principal, ["all"])
    before = await keyvault.vault(vault)
    body, _ = await run_operation(
        api,
        auth(Role.ADMIN),
        "keyvault.access.revoke",
        {"vault": vault, "user_principal_name": stack_settings.azure_principal},
    )
    assert body["state"] == "failed", body
    assert body["error"].startswith(f"ckey-principal-protected: {stack_settings.azure_principal} is ckey's own")
    assert await keyvault.vault(vault) == before
    vaults = await api.get("/api/vaults", headers=auth(Role.VIEWER))
    assert vaults.status_code == 200, vaults.text


async def test_the_access_view_names_who_has_access(
    api: httpx.AsyncClient, auth: Auth, kv_control: SandboxKeyVaultControl, stack_settings: Settings
) -> None:
    vault = unique("av")
    await kv_control.create_vault(vault)
    await kv_control.grant(vault, stack_settings.azure_principal, ["all"])
    await kv_control.grant(vault, "alice@contoso.com", ["get", "list"])
    for sp in ServicePrincipal:
        await kv_control.grant(vault, sp.value, ["get", "wrapKey", "unwrapKey"])
    shown = await api.get(f"/api/vaults/{vault}/access", headers=auth(Role.VIEWER))
    assert shown.status_code == 200, shown.text
    policies = {p["principal"]: p for p in shown.json()["access_policies"]}
    assert set(policies) == {
        stack_settings.azure_principal,
        "alice@contoso.com",
        "Office 365 Exchange Online",
        "Microsoft 365 Data At Rest Encryption",
        "Office 365 SharePoint Online",
    }, policies
    alice = policies["alice@contoso.com"]
    assert (alice["principal_type"], alice["user_principal_name"], alice["microsoft_365"], alice["ckey"]) == (
        "user",
        "alice@contoso.com",
        False,
        False,
    )
    assert alice["object_id"]
    for name, sp in (
        ("Office 365 Exchange Online", ServicePrincipal.EXCHANGE_ONLINE),
        ("Microsoft 365 Data At Rest Encryption", ServicePrincipal.MICROSOFT_365),
        ("Office 365 SharePoint Online", ServicePrincipal.SHAREPOINT_ONLINE),
    ):
        entry = policies[name]
        assert (entry["principal_type"], entry["application_id"], entry["microsoft_365"]) == (
            "servicePrincipal",
            sp.value,
            True,
        ), entry
    assert policies[stack_settings.azure_principal]["ckey"] is True


async def test_revoke_on_an_rbac_vault_is_refused_with_nothing_changed(
    api: httpx.AsyncClient, product_worker: Worker, auth: Auth, keyvault: KeyVaultGateway
) -> None:
    before = await keyvault.vault("contoso-rbac-kv1")
    body, _ = await run_operation(
        api,
        auth(Role.ADMIN),
        "keyvault.access.revoke",
        {"vault": "contoso-rbac-kv1", "user_principal_name": "alice@contoso.com"},
    )
    assert body["state"] == "failed" and body["error"].startswith("vault-uses-rbac")
    assert await keyvault.vault("contoso-rbac-kv1") == before


# Read models --------------------------------------------------------------------------------------------------------


async def test_vaults_read_model(api: httpx.AsyncClient, auth: Auth) -> None:
    vaults = {v["name"]: v for v in (await api.get("/api/vaults", headers=auth(Role.VIEWER))).json()}
    east = vaults["contoso-eastus-kv1"]
    assert (east["region"], east["permission_model"], east["soft_delete"], east["purge_protection"]) == (
        "eastus",
        "access_policy",
        True,
        True,
    )
    assert vaults["contoso-rbac-kv1"]["permission_model"] == "rbac"
    uris = {k["name"]: k["uri"] for k in east["keys"]}
    assert KeyUri.parse(uris["exo-key-01"]).version is not None
    missing = await api.get("/api/vaults/no-such-vault/access", headers=auth(Role.VIEWER))
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
