"""The table of hostile inputs in docs/threat-model.md, replayed against the served API (real HTTP, no worker).

Each row: who asks, what they send, and the status and rule the table promises. A row that starts nothing and
changes nothing is also checked for that.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.hostile.conftest import HostileStack

EAST = "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01"
WEST = "https://contoso-westus-kv1.vault.azure.net/keys/exo-key-02"


def start(kind: str, **params: Any) -> dict[str, Any]:
    return {"kind": kind, "params": params}


ROWS: list[tuple[str, str, str, str, dict[str, Any], int, str]] = [
    # (row id, role, method, path, request kwargs, status, rule)
    ("no-token", "none", "POST", "/api/operations", {"json": start("keyvault.health")}, 401, "bearer-token-required"),
    ("bad-token", "forged", "GET", "/api/operations", {}, 401, "bearer-token-invalid"),
    ("viewer-starts", "viewer", "POST", "/api/operations", {"json": start("keyvault.health")}, 403, "role-required"),
    (
        "operator-admin-kind",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("keyvault.access.revoke", vault="contoso-eastus-kv1", user_principal_name="a@contoso.com")},
        403,
        "role-required",
    ),
    (
        "declared-too-large",
        "operator",
        "POST",
        "/api/operations",
        {"content": b"{" + b" " * (2 * 1024 * 1024) + b"}", "headers": {"Content-Type": "application/json"}},
        413,
        "body-size",
    ),
    (
        "unknown-kind",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.nuke")},
        422,
        "operation-kind-known",
    ),
    (
        "internal-field",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.dep.assign", dep="USA", mailboxes=["a@contoso.com"], follow_state={"total": 0})},
        422,
        "extra-forbidden",
    ),
    (
        "poll-interval",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.dep.assign", dep="USA", mailboxes=["a@contoso.com"], poll_interval="PT0.000001S")},
        422,
        "extra-forbidden",
    ),
    (
        "dep-name-nul",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.dep.create", name="USA\x00x", azure_key_ids=[EAST, WEST])},
        422,
        "no-control-characters",
    ),
    (
        "dep-name-space",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.dep.create", name="USA mailboxes", azure_key_ids=[EAST, WEST])},
        422,
        "dep-name-no-spaces",
    ),
    (
        "description-newline",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.dep.create", name="USA", description="a\nb", azure_key_ids=[EAST, WEST])},
        422,
        "no-control-characters",
    ),
    (
        "sandbox-host-form",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("keyvault.health", keys=["https://kv1.vault.ckey.test:8443/keys/k1"])},
        422,
        "key-uri-format",
    ),
    (
        "100000-keys",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.dep.create", name="USA", azure_key_ids=[EAST] * 100_000)},
        413,
        "body-size",
    ),
    (
        "three-keys",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.dep.create", name="USA", azure_key_ids=[EAST, WEST, EAST])},
        422,
        "two-keys",
    ),
    (
        "one-vault",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.dep.create", name="USA", azure_key_ids=[EAST, EAST.replace("01", "03")])},
        422,
        "two-keys-two-vaults",
    ),
    (
        "vault-newline",
        "admin",
        "POST",
        "/api/operations",
        {"json": start("keyvault.access.revoke", vault="contosokv1\n", user_principal_name="a@contoso.com")},
        422,
        "key-vault-name",
    ),
    (
        "upn-path",
        "admin",
        "POST",
        "/api/operations",
        {"json": start("keyvault.access.revoke", vault="contosokv1", user_principal_name="x/../bob@contoso.com")},
        422,
        "user-principal-name",
    ),
    (
        "service-principal",
        "admin",
        "POST",
        "/api/operations",
        {
            "json": start(
                "keyvault.access.revoke",
                vault="contosokv1",
                user_principal_name="00000002-0000-0ff1-ce00-000000000000",
            )
        },
        422,
        "m365-principal-protected",
    ),
    (
        "mailbox-nul",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.dep.assign", dep="USA", mailboxes=["a\x00@contoso.com"])},
        422,
        "no-control-characters",
    ),
    (
        "mailbox-321",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.dep.assign", dep="USA", mailboxes=["a" * 309 + "@contoso.com"])},
        422,
        "mailbox-identity-length",
    ),
    (
        "inline-and-file",
        "operator",
        "POST",
        "/api/operations",
        {
            "json": start(
                "exchange.dep.assign", dep="USA", mailboxes=["a@contoso.com"], mailbox_file=f"ts-{uuid.uuid4()}"
            )
        },
        422,
        "mailboxes-or-file",
    ),
    (
        "unknown-file",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.dep.assign", dep="USA", mailbox_file=f"ts-{uuid.uuid4()}")},
        422,
        "mailbox-file-exists",
    ),
    (
        "too-many-inline",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("exchange.dep.assign", dep="USA", mailboxes=[f"u{n}@contoso.com" for n in range(1001)])},
        422,
        "too-long",
    ),
    (
        "backup-blob",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("keyvault.key.restore", key_uri=EAST, backup_b64="AAAA")},
        422,
        "extra-forbidden",
    ),
    (
        "idempotency-key-newline",
        "operator",
        "POST",
        "/api/operations",
        {"json": start("keyvault.health"), "headers": {"Idempotency-Key": "a\tb"}},
        422,
        "string-pattern-mismatch",
    ),
    ("cancel-unknown", "operator", "POST", "/api/operations/op-nothing/cancel", {}, 404, "operation-exists"),
    (
        "close-empty-reason",
        "operator",
        "POST",
        "/api/operations/op-nothing/close",
        {"json": {"reason": ""}},
        422,
        "string-too-short",
    ),
    (
        "csv-nul-row",
        "operator",
        "POST",
        "/api/uploads/mailboxes",
        {"content": b"Identity\na@contoso.com\nb\x00@contoso.com\n", "headers": {"Content-Type": "text/csv"}},
        422,
        "no-control-characters",
    ),
    (
        "csv-not-utf8",
        "operator",
        "POST",
        "/api/uploads/mailboxes",
        {"content": b"\xff\xfe\x00a", "headers": {"Content-Type": "text/csv"}},
        422,
        "mailbox-file-format",
    ),
    (
        "upload-name",
        "operator",
        "POST",
        "/api/uploads/mailboxes?name=..%2F..%2Fetc%2Fpasswd",
        {"content": b"a@contoso.com\n"},
        422,
        "string-pattern-mismatch",
    ),
    ("list-huge-limit", "viewer", "GET", "/api/operations?limit=100000", {}, 422, "less-than-equal"),
    ("list-huge-offset", "viewer", "GET", "/api/operations?offset=1000000000000", {}, 422, "less-than-equal"),
    ("audit-negative-limit", "viewer", "GET", "/api/audit?limit=-1", {}, 422, "greater-than-equal"),
    (
        "events-huge-after",
        "viewer",
        "GET",
        "/api/operations/op-x/events?after=9223372036854775808",
        {},
        422,
        "less-than-equal",
    ),
    ("mailbox-path-nul", "viewer", "GET", "/api/mailboxes/a%00b@contoso.com", {}, 422, "no-control-characters"),
    ("mailbox-path-321", "viewer", "GET", "/api/mailboxes/" + "a" * 321, {}, 422, "mailbox-identity-length"),
    ("vault-path-newline", "viewer", "GET", "/api/vaults/kv1%0A/access", {}, 422, "key-vault-name"),
    ("mailboxes-page", "viewer", "GET", "/api/mailboxes?limit=501", {}, 422, "less-than-equal"),
]


@pytest.mark.parametrize(
    ("row", "role", "method", "path", "request_", "status", "rule"), ROWS, ids=[r[0] for r in ROWS]
)
def test_the_threat_models_hostile_inputs_get_their_answer(
    hostile_stack: HostileStack,
    row: str,
    role: str,
    method: str,
    path: str,
    request_: dict[str, Any],
    status: int,
    rule: str,
) -> None:
    headers = dict(request_.get("headers", {}))
    token = "Bearer forged" if role == "forged" else hostile_stack.tokens[role]
    if token:
        headers["Authorization"] = token
    before = hostile_stack.store_snapshot()
    response = httpx.request(method, hostile_stack.url + path, **{**request_, "headers": headers}, timeout=60)
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    rules = {problem["rule"], *(e["rule"] for e in problem.get("errors", []))}
    assert rule in rules, problem
    assert hostile_stack.store_snapshot() == before, f"{row} changed the store"
