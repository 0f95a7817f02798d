"""``ckey schedules`` (through the API) and the short schedule intervals ``ckey up`` gives a sandbox stack."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckey import cli, stack
from ckey.config import load_settings

VIEW = {
    "id": "ckey-inventory-sync",
    "kind": "inventory.sync",
    "description": "",
    "interval_seconds": 5.0,
    "exists": True,
    "paused": True,
    "note": "paused by olga",
    "next_runs": [],
    "recent_runs": [
        {
            "operation_id": "ckey-inventory-sync-2026-12-01T05:00:00Z",
            "scheduled_at": "2026-12-01T05:00:00Z",
            "started_at": "2026-12-01T05:00:01.250Z",
        }
    ],
    "running": [],
    "skipped_overlap": 0,
}


def test_schedules_commands_call_the_api(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def fake_call(method: str, path: str, **kwargs: Any) -> Any:
        calls.append((method, path))
        return {"items": [VIEW]} if path == "/api/schedules" else VIEW

    monkeypatch.setattr(cli, "_call", fake_call)
    runner = CliRunner()
    listed = runner.invoke(cli.app, ["schedules", "list"], env={"COLUMNS": "80"})
    assert listed.exit_code == 0, listed.output
    # At 80 columns the id is whole (the other commands take it) and the last run shows its time.
    assert "ckey-inventory-sync " in listed.output and "paused" in listed.output
    assert "05:00:01" in listed.output and "ops list --scheduled" in listed.output
    for verb in ("pause", "unpause", "trigger"):
        result = runner.invoke(cli.app, ["schedules", verb, "ckey-inventory-sync"])
        assert result.exit_code == 0, result.output
        # A paused schedule shows who paused it, never a next run it will not make.
        assert "paused (paused by olga)" in result.output
    # A name with a slash stays one path segment: it never reaches another route.
    assert runner.invoke(cli.app, ["schedules", "pause", "../operations"]).exit_code == 0
    assert calls == [
        ("GET", "/api/schedules"),
        ("POST", "/api/schedules/ckey-inventory-sync/pause"),
        ("POST", "/api/schedules/ckey-inventory-sync/unpause"),
        ("POST", "/api/schedules/ckey-inventory-sync/trigger"),
        ("POST", "/api/schedules/..%2Foperations/pause"),
    ]


def test_up_gives_a_sandbox_stack_short_schedule_intervals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CKEY_INVENTORY_SYNC_INTERVAL", "CKEY_HEALTH_CHECK_INTERVAL"):
        monkeypatch.delenv(name, raising=False)
    settings = stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None))
    env = stack.child_environment(settings, tmp_path)
    assert (env["CKEY_INVENTORY_SYNC_INTERVAL"], env["CKEY_HEALTH_CHECK_INTERVAL"]) == ("PT5S", "PT30S")
    for name in ("CKEY_INVENTORY_SYNC_INTERVAL", "CKEY_HEALTH_CHECK_INTERVAL"):
        monkeypatch.setenv(name, env[name])
    child = load_settings(_env_file=None)
    assert (child.inventory_sync_interval, child.health_check_interval) == (timedelta(seconds=5), timedelta(seconds=30))

    # An operator's own interval is kept; outside the sandbox the production defaults stay.
    monkeypatch.setenv("CKEY_HEALTH_CHECK_INTERVAL", "PT2M")
    monkeypatch.delenv("CKEY_INVENTORY_SYNC_INTERVAL")
    chosen = stack.child_environment(stack.stack_settings(load_settings(data_dir=tmp_path, _env_file=None)), tmp_path)
    assert (chosen["CKEY_INVENTORY_SYNC_INTERVAL"], chosen["CKEY_HEALTH_CHECK_INTERVAL"]) == ("PT5S", "PT2M")
    assert stack.schedule_timings(load_settings(data_dir=tmp_path, sandbox=False, _env_file=None)) == {}
