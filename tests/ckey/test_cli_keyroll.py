"""``ckey key roll``: starts ``key.roll`` with the DEPs and geos named, or none (ckey finds them)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ckey import cli
from tests.ckey.test_cli_vault import FakeApi


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi({})
    monkeypatch.setattr(cli, "_call", fake)
    return fake


VERSION = "0123456789abcdef0123456789abcdef"


def test_key_roll_starts_the_roll_with_what_it_names(fake_api: FakeApi) -> None:
    runner = CliRunner()
    named = runner.invoke(
        cli.app,
        [
            "key",
            "roll",
            "contoso-eastus-kv1",
            "exo-key-01",
            "--dep",
            "USA_mailboxes",
            "--dep",
            "EUR_mailboxes",
            "--m365-dep",
            "Tenant_DEP",
            "--geo",
            "nam",
            "--no-watch",
        ],
    )
    assert named.exit_code == 0, named.output
    found = runner.invoke(cli.app, ["key", "roll", "contoso-eastus-kv1", "exo-key-01", "--no-watch"])
    assert found.exit_code == 0, found.output
    adopted = runner.invoke(
        cli.app, ["key", "roll", "contoso-eastus-kv1", "exo-key-01", "--adopt", VERSION, "--no-watch"]
    )
    assert adopted.exit_code == 0, adopted.output
    assert fake_api.started() == [
        {
            "kind": "key.roll",
            "params": {
                "vault": "contoso-eastus-kv1",
                "key": "exo-key-01",
                "deps": ["USA_mailboxes", "EUR_mailboxes"],
                "m365_deps": ["Tenant_DEP"],
                "geos": ["NAM"],
            },
        },
        {"kind": "key.roll", "params": {"vault": "contoso-eastus-kv1", "key": "exo-key-01"}},
        {
            "kind": "key.roll",
            "params": {"vault": "contoso-eastus-kv1", "key": "exo-key-01", "adopt_version": VERSION},
        },
    ]
    missing = runner.invoke(cli.app, ["key", "roll", "contoso-eastus-kv1", "--no-watch"])
    assert missing.exit_code == 2 and len(fake_api.started()) == 3, missing.output
