"""``ckey key roll``: starts ``key.roll`` with the DEPs and geos named, or none (ckey finds them)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ckey import cli, stack
from ckey.config import load_settings
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


def test_up_gives_a_sandbox_stack_a_short_rotation_watch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CKEY_KEY_ROTATION_WATCH_INTERVAL", raising=False)
    settings = stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None))
    env = stack.child_environment(settings, tmp_path)
    assert env["CKEY_KEY_ROTATION_WATCH_INTERVAL"] == "PT30S"
    monkeypatch.setenv("CKEY_KEY_ROTATION_WATCH_INTERVAL", env["CKEY_KEY_ROTATION_WATCH_INTERVAL"])
    assert load_settings(_env_file=None).key_rotation_watch_interval == timedelta(seconds=30)
    # An operator's own interval is kept; production keeps its hour, and asks before adopting a version.
    monkeypatch.setenv("CKEY_KEY_ROTATION_WATCH_INTERVAL", "10m")
    chosen = stack.child_environment(stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None)), tmp_path)
    assert chosen["CKEY_KEY_ROTATION_WATCH_INTERVAL"] == "10m"
    monkeypatch.delenv("CKEY_KEY_ROTATION_WATCH_INTERVAL")
    production = load_settings(data_dir=tmp_path, sandbox=False, _env_file=None)
    assert stack.schedule_timings(production) == {}
    assert (production.key_rotation_watch_interval, production.key_rotation_adopt) == (timedelta(hours=1), False)
