"""``ckey vault restore-key``: the backup file is uploaded once, and the restore names the upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckey import cli


def test_restore_key_uploads_the_backup_and_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str, dict[str, Any]]] = []
    backup_id = "kb-00000000-0000-4000-8000-000000000001"

    def fake_call(method: str, path: str, **kwargs: Any) -> Any:
        calls.append((method, path, kwargs))
        if path == "/api/uploads/key-backups":
            return {"id": backup_id, "sha256": "ab" * 32, "size": 5}
        return {"id": "op-1"}

    monkeypatch.setattr(cli, "_call", fake_call)
    blob = tmp_path / "exo-key.blob"
    blob.write_bytes(b"\x00blob")
    uri = "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01"
    result = CliRunner().invoke(cli.app, ["vault", "restore-key", uri, "--backup-file", str(blob), "--no-watch"])
    assert result.exit_code == 0, result.output
    upload, start = calls
    assert upload[:2] == ("POST", "/api/uploads/key-backups")
    assert upload[2]["content"] == b"\x00blob"
    assert upload[2]["headers"] == {"Content-Type": "application/octet-stream"}
    assert start[2]["json"] == {"kind": "keyvault.key.restore", "params": {"key_uri": uri, "backup": backup_id}}
    assert backup_id in result.output

    calls.clear()
    assert CliRunner().invoke(cli.app, ["vault", "restore-key", uri, "--no-watch"]).exit_code == 0
    assert [c[1] for c in calls] == ["/api/operations"]
    assert calls[0][2]["json"]["params"] == {"key_uri": uri}
