"""``ckey ops start KIND --param name=value``: any registered kind, its parameters typed by the kind's schema."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from ckey import cli
from workflows import product_registry

KEYS = [
    "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01",
    "https://contoso-westus-kv1.vault.azure.net/keys/exo-key-02",
]


@pytest.fixture
def posted(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The start requests the CLI sends; the kinds it reads are the registry's, as ``GET /api/operations/kinds``."""
    sent: list[dict[str, Any]] = []

    def fake_call(method: str, path: str, **kwargs: Any) -> Any:
        if (method, path) == ("GET", "/api/operations/kinds"):
            return [
                {
                    "kind": k.name,
                    "role": k.role.value,
                    "description": k.description,
                    "params_schema": k.public_params.model_json_schema(),
                }
                for k in product_registry()
            ]
        assert (method, path) == ("POST", "/api/operations")
        sent.append(kwargs["json"])
        return {"id": "op-1"}

    monkeypatch.setattr(cli, "_call", fake_call)
    return sent


@pytest.mark.parametrize(
    ("kind", "args", "params"),
    [
        (
            "exchange.dep.create",
            ["-p", "name=USA_mailboxes", "-p", f"azure_key_ids={KEYS[0]}", "--param", f"azure_key_ids={KEYS[1]}"],
            {"name": "USA_mailboxes", "azure_key_ids": KEYS},
        ),
        (
            "exchange.dep.assign",
            ["-p", "dep=USA_mailboxes", "-p", "mailboxes=alice@contoso.com", "-p", "mail_user=yes"],
            {"dep": "USA_mailboxes", "mailboxes": ["alice@contoso.com"], "mail_user": True},
        ),
        ("exchange.encryption.verify", ["-p", "dep=USA_mailboxes"], {"dep": "USA_mailboxes"}),
        (
            "keyvault.health",
            ["-p", "workload=exchange", "-p", f"keys={KEYS[0]}"],
            {"workload": "exchange", "keys": KEYS[:1]},
        ),
    ],
)
def test_start_types_each_param_by_the_kinds_schema(
    posted: list[dict[str, Any]], kind: str, args: list[str], params: dict[str, Any]
) -> None:
    result = CliRunner().invoke(cli.app, ["ops", "start", kind, *args, "--no-watch"])
    assert result.exit_code == 0, result.output
    assert posted == [{"kind": kind, "params": params}]
    registered = product_registry().get(kind)
    assert registered is not None
    registered.public_params.model_validate(params)  # what the CLI sends is what the API validates


def test_start_refuses_an_unknown_kind_and_a_malformed_param(posted: list[dict[str, Any]]) -> None:
    unknown = CliRunner().invoke(cli.app, ["ops", "start", "exchange.dep.destroy", "--no-watch"])
    assert unknown.exit_code == 2 and "exchange.dep.create" in unknown.output
    malformed = CliRunner().invoke(cli.app, ["ops", "start", "exchange.dep.create", "-p", "name", "--no-watch"])
    assert malformed.exit_code == 2 and "name=value" in malformed.output
    twice = CliRunner().invoke(cli.app, ["ops", "start", "exchange.dep.create", "-p", "name=a", "-p", "name=b"])
    assert twice.exit_code == 2 and "given twice" in twice.output
    assert posted == []


def test_kinds_lists_every_registered_kind(posted: list[dict[str, Any]]) -> None:
    result = CliRunner().invoke(cli.app, ["ops", "kinds"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for kind in product_registry():
        assert kind.name in result.output
