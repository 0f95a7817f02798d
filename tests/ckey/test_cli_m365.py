"""``ckey m365 dep new|assign|disable|show``: each starts its kind or reads through the API."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from ckey import cli

KEYS = [
    "https://contoso-westus-kv1.vault.azure.net/keys/m365-key-01",
    "https://contoso-centralus-kv1.vault.azure.net/keys/m365-key-02",
]


class FakeApi:
    """Stands in for ``cli._call``: records each call and answers from ``answers`` by path."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, kwargs))
        return self.answers.get(path.split("?")[0], {"id": "op-1"})

    def started(self) -> list[dict[str, Any]]:
        return [c[2]["json"] for c in self.calls if c[1] == "/api/operations"]


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    dep = {"name": "Contoso_Global", "guid": "g-1", "enabled": True, "assigned": True, "azure_key_ids": KEYS}
    fake = FakeApi(
        {
            "/api/m365/deps": [dep],
            "/api/m365/deps/Contoso_Global": dep,
            "/api/m365/assignment": {"dep": "Contoso_Global", "seen_at": "2026-12-01T00:00:00Z"},
        }
    )
    monkeypatch.setattr(cli, "_call", fake)
    return fake


def test_new_assign_disable_start_their_kinds(fake_api: FakeApi) -> None:
    runner = CliRunner()
    new = runner.invoke(
        cli.app,
        ["m365", "dep", "new", "Contoso_Global", "--key", ", ".join(KEYS), "--description", "All users", "--no-watch"],
    )
    assert new.exit_code == 0, new.output
    assign = runner.invoke(cli.app, ["m365", "dep", "assign", "Contoso_Global", "--no-watch"])
    disable = runner.invoke(
        cli.app, ["m365", "dep", "disable", "Contoso_Global", "--idempotency-key", "k-1", "--no-watch"]
    )
    assert assign.exit_code == disable.exit_code == 0, assign.output + disable.output
    assert fake_api.started() == [
        {
            "kind": "m365.dep.create",
            "params": {"name": "Contoso_Global", "azure_key_ids": KEYS, "description": "All users"},
        },
        {"kind": "m365.dep.assign", "params": {"dep": "Contoso_Global"}},
        {"kind": "m365.dep.disable", "params": {"dep": "Contoso_Global"}},
    ]
    assert fake_api.calls[-1][2]["headers"] == {"Idempotency-Key": "k-1"}
    assert "m365.dep.assign started: op-1" in assign.output


def test_show_lists_the_deps_and_the_assignment(fake_api: FakeApi) -> None:
    shown = CliRunner().invoke(cli.app, ["m365", "dep", "show", "--refresh"])
    assert shown.exit_code == 0, shown.output
    assert "Contoso_Global" in shown.output and "assigned to the tenant: Contoso_Global" in shown.output
    assert ("GET", "/api/m365/deps?refresh=true") in [(m, p) for m, p, _ in fake_api.calls]
    one = CliRunner().invoke(cli.app, ["m365", "dep", "show", "Contoso_Global"])
    assert one.exit_code == 0 and '"guid": "g-1"' in one.output
