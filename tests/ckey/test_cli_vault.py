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


class FakeApi:
    """Stands in for ``cli._call``: records each call and answers from ``answers`` by path."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        self.calls.append((method, path, kwargs))
        return self.answers.get(path, {"id": "op-1"})

    def started(self) -> list[dict[str, Any]]:
        return [c[2]["json"] for c in self.calls if c[1] == "/api/operations"]


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = FakeApi(
        {
            "/api/uploads/key-backups": {
                "id": "kb-00000000-0000-4000-8000-000000000002",
                "sha256": "cd" * 32,
                "size": 3,
            },
            "/api/vaults/contoso-eastus-kv1/access": {
                "vault": "contoso-eastus-kv1",
                "permission_model": "access_policy",
                "access_policies": [
                    {
                        "object_id": "11111111-1111-4111-8111-111111111111",
                        "principal": "alice@contoso.com",
                        "principal_type": "user",
                        "keys": ["get", "list"],
                    },
                    {
                        "object_id": "22222222-2222-4222-8222-222222222222",
                        "principal": "Office 365 Exchange Online",
                        "principal_type": "servicePrincipal",
                        "microsoft_365": True,
                        "keys": ["get", "wrapKey", "unwrapKey"],
                    },
                    {"object_id": "33333333-3333-4333-8333-333333333333", "keys": []},
                ],
            },
        }
    )
    monkeypatch.setattr(cli, "_call", fake)
    return fake


URI_1 = "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01"
URI_2 = "https://contoso-westus-kv1.vault.azure.net/keys/exo-key-02"


def test_vault_health_starts_the_kind_with_its_workload_and_keys(fake_api: FakeApi) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli.app,
        ["vault", "health", "--workload", "sharepoint", "--key", URI_1, "--key", URI_2, "--no-watch"],
    )
    assert result.exit_code == 0, result.output
    assert runner.invoke(cli.app, ["vault", "health", "--no-watch"]).exit_code == 0
    assert fake_api.started() == [
        {"kind": "keyvault.health", "params": {"workload": "sharepoint", "keys": [URI_1, URI_2]}},
        {"kind": "keyvault.health", "params": {"workload": "exchange"}},
    ]
    refused = runner.invoke(cli.app, ["vault", "health", "--workload", "teams", "--no-watch"])
    assert refused.exit_code == 2 and len(fake_api.started()) == 2, refused.output


def test_vault_access_names_who_has_access(fake_api: FakeApi) -> None:
    result = CliRunner().invoke(cli.app, ["vault", "access", "contoso-eastus-kv1"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert fake_api.calls[0][:2] == ("GET", "/api/vaults/contoso-eastus-kv1/access")
    assert "alice@contoso.com" in result.output and "Office 365 Exchange Online" in result.output
    assert "Microsoft 365" in result.output  # protected: ckey never revokes it
    assert "33333333-3333-4333-8333-333333333333" in result.output and "(unknown)" in result.output


def test_vault_revoke_starts_the_revocation_by_upn(fake_api: FakeApi) -> None:
    result = CliRunner().invoke(
        cli.app, ["vault", "revoke", "contoso-eastus-kv1", "--upn", "alice@contoso.com", "--no-watch"]
    )
    assert result.exit_code == 0, result.output
    assert fake_api.started() == [
        {
            "kind": "keyvault.access.revoke",
            "params": {"vault": "contoso-eastus-kv1", "user_principal_name": "alice@contoso.com"},
        }
    ]
    refused = CliRunner().invoke(cli.app, ["vault", "revoke", "contoso-eastus-kv1", "--no-watch"])
    assert refused.exit_code == 2 and "--upn" in refused.output


def test_key_restore_takes_the_seeds_input_file(fake_api: FakeApi, tmp_path: Path) -> None:
    """Restore-AzKeyVaultKey -InputFile: the backup is uploaded, then the restore names the upload."""
    blob = tmp_path / "exo-key-01.blob"
    blob.write_bytes(b"abc")
    result = CliRunner().invoke(cli.app, ["key", "restore", URI_1, "--input-file", str(blob), "--no-watch"])
    assert result.exit_code == 0, result.output
    upload = fake_api.calls[0]
    assert upload[:2] == ("POST", "/api/uploads/key-backups") and upload[2]["content"] == b"abc"
    assert fake_api.started() == [
        {
            "kind": "keyvault.key.restore",
            "params": {"key_uri": URI_1, "backup": "kb-00000000-0000-4000-8000-000000000002"},
        }
    ]
    missing = CliRunner().invoke(cli.app, ["key", "restore", URI_1, "--input-file", str(tmp_path / "nope.blob")])
    assert missing.exit_code == 2 and len(fake_api.calls) == 2
