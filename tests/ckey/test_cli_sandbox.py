"""``ckey sandbox``: the rehearsal commands against real sandbox servers, over their control endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from azure.keyvault.keys.aio import KeyClient
from typer.testing import CliRunner

from ckey import cli, cli_sandbox
from ckey.azure import AzureConnection
from ckey.config import Settings, load_settings
from sandbox.keyvault import SandboxKeyVaultControl, SandboxKeyVaultServer
from sandbox.m365 import SandboxM365Control, SandboxM365Server, TenantSpec
from tests.conftest import free_port, signed_in_to_sandbox

TENANT = TenantSpec(mailboxes=3, mail_users=0, sites_per_geo=0, cloud_pcs=0, stuck_mailboxes=0)
MAILBOX = "pradeep.lamb@contoso.com"
"""The first mailbox the generator makes (seed 365)."""


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    data_dir = tmp_path_factory.mktemp("cli-sandbox") / "data"
    settings = signed_in_to_sandbox(
        load_settings(
            data_dir=data_dir, sandbox_keyvault_port=free_port(), sandbox_m365_port=free_port(), _env_file=None
        )
    )
    with SandboxKeyVaultServer(settings), SandboxM365Server(settings, seed=TENANT, speed=1.0):
        yield settings


@pytest.fixture
def run(sandboxes: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    monkeypatch.setattr(cli_sandbox, "get_settings", lambda: sandboxes)
    yield CliRunner()


def test_outside_sandbox_mode_it_refuses_before_any_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    live = load_settings(data_dir=tmp_path, sandbox=False, sandbox_m365_port=free_port(), _env_file=None)
    monkeypatch.setattr(cli_sandbox, "get_settings", lambda: live)
    for args in (["fault", "--throttle", "0.3"], ["clock"], ["lose-key", "v", "k"], ["stuck-mailbox", MAILBOX]):
        result = CliRunner().invoke(cli.app, ["sandbox", *args])
        assert result.exit_code == 2, result.output
        assert "not in sandbox mode" in result.output and "CKEY_SANDBOX=true" in result.output
        assert "Traceback" not in result.output


def test_an_unreachable_sandbox_is_one_clear_line(sandboxes: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = sandboxes.model_copy(update={"sandbox_m365_port": free_port()})
    monkeypatch.setattr(cli_sandbox, "get_settings", lambda: elsewhere)
    result = CliRunner().invoke(cli.app, ["sandbox", "stuck-mailbox", MAILBOX])
    assert result.exit_code == 1, result.output
    assert f"the sandbox tenant is not reachable at https://localhost:{elsewhere.sandbox_m365_port}" in result.output
    no_stack = sandboxes.model_copy(update={"data_dir": Path("/nonexistent/ckey")})
    monkeypatch.setattr(cli_sandbox, "get_settings", lambda: no_stack)
    result = CliRunner().invoke(cli.app, ["sandbox", "clock"])
    assert result.exit_code == 2 and "ckey up" in result.output, result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--throttle", "1.5"], "--throttle"),
        (["--errors", "-0.1"], "--errors"),
        (["--latency", "2 parsecs"], "is not a duration"),
        (["--latency", "90s"], "more than 60 s"),
        (["--retry-after", "2h"], "more than 3600 s"),
    ],
)
def test_fault_arguments_are_bounded(run: CliRunner, args: list[str], message: str) -> None:
    result = run.invoke(cli.app, ["sandbox", "fault", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_durations_read_short_and_iso_forms() -> None:
    parse = cli_sandbox.parse_duration
    assert parse("2s") == parse("PT2S") == parse("2") == timedelta(seconds=2)
    assert parse("500ms") == timedelta(milliseconds=500)
    assert parse("7d") == parse("P7D") == timedelta(days=7)
    assert parse("1.5m") == timedelta(seconds=90)
    with pytest.raises(typer.BadParameter):
        parse("soon")


async def test_fault_sets_a_throttling_storm_and_clear_ends_it(run: CliRunner, sandboxes: Settings) -> None:
    async with SandboxKeyVaultControl.from_settings(sandboxes) as kv:
        await kv.create_vault("storm-kv")
    result = run.invoke(
        cli.app,
        ["sandbox", "fault", "--throttle", "0.3", "--errors", "0.1", "--latency", "2s", "--vault", "storm-kv"],
    )
    assert result.exit_code == 0, result.output
    async with (
        SandboxM365Control.from_settings(sandboxes) as m365,
        SandboxKeyVaultControl.from_settings(sandboxes) as kv,
    ):
        faults = await m365.faults()
        assert (faults["throttle_rate"], faults["error_rate"], faults["latency_ms"]) == (0.3, 0.1, 2000)
        assert (await kv.vault("storm-kv"))["faults"] == {"error_rate": 0.1, "latency_ms": 2000, "down": False}
        # An option left out keeps its value.
        assert run.invoke(cli.app, ["sandbox", "fault", "--retry-after", "PT1S"]).exit_code == 0
        faults = await m365.faults()
        assert (faults["throttle_rate"], faults["retry_after_seconds"]) == (0.3, 1)
        cleared = run.invoke(cli.app, ["sandbox", "fault", "--clear", "--vault", "storm-kv"])
        assert cleared.exit_code == 0, cleared.output
        faults = await m365.faults()
        assert (faults["throttle_rate"], faults["error_rate"], faults["latency_ms"]) == (0.0, 0.0, 0)
        assert (await kv.vault("storm-kv"))["faults"]["error_rate"] == 0.0


async def test_clock_runs_the_tenant_faster_and_moves_both_forward(run: CliRunner, sandboxes: Settings) -> None:
    async with (
        SandboxM365Control.from_settings(sandboxes) as m365,
        SandboxKeyVaultControl.from_settings(sandboxes) as kv,
    ):
        kv_before = (await kv.clock())["offset_seconds"]
        tenant_before = (await m365.clock())["shifted_seconds"]
        result = run.invoke(cli.app, ["sandbox", "clock", "--speed", "3600", "--advance", "1d"])
        assert result.exit_code == 0, result.output
        assert "3600x" in result.output
        assert (await m365.clock())["speed"] == 3600
        assert (await m365.clock())["shifted_seconds"] == tenant_before + 86400
        assert (await kv.clock())["offset_seconds"] == kv_before + 86400
        assert run.invoke(cli.app, ["sandbox", "clock", "--speed", "1"]).exit_code == 0
        assert (await m365.clock())["speed"] == 1
    assert run.invoke(cli.app, ["sandbox", "clock", "--speed", "0"]).exit_code == 2


async def test_stuck_mailbox_and_release(run: CliRunner, sandboxes: Settings) -> None:
    async with SandboxM365Control.from_settings(sandboxes) as m365:
        result = run.invoke(cli.app, ["sandbox", "stuck-mailbox", MAILBOX])
        assert result.exit_code == 0, result.output
        assert "will not encrypt" in result.output
        assert (await m365.mailbox(MAILBOX))["stuck"] is True
        released = run.invoke(cli.app, ["sandbox", "stuck-mailbox", MAILBOX, "--release"])
        assert released.exit_code == 0, released.output
        assert (await m365.mailbox(MAILBOX))["stuck"] is False
    unknown = run.invoke(cli.app, ["sandbox", "stuck-mailbox", "nobody@contoso.com"])
    assert unknown.exit_code == 1 and "the sandbox tenant refused (404)" in unknown.output, unknown.output


async def test_lose_key_then_its_backup_restores_it(run: CliRunner, sandboxes: Settings, tmp_path: Path) -> None:
    async with SandboxKeyVaultControl.from_settings(sandboxes) as kv:
        await kv.create_vault("lose-kv", purge_protection=True)
        await kv.grant("lose-kv", sandboxes.azure_principal, ["all"])
        await kv.create_key("lose-kv", "soft-key")
        await kv.create_key("lose-kv", "gone-key")
        soft = run.invoke(cli.app, ["sandbox", "lose-key", "lose-kv", "soft-key"])
        assert soft.exit_code == 0, soft.output
        assert "recoverable from soft delete" in soft.output
        assert "ckey key restore https://lose-kv.vault.azure.net/keys/soft-key" in soft.output
        blob = tmp_path / "gone-key.blob"
        gone = run.invoke(
            cli.app, ["sandbox", "lose-key", "lose-kv", "gone-key", "--purge", "--backup-file", str(blob)]
        )
        assert gone.exit_code == 0, gone.output
        assert f"--input-file {blob}" in gone.output
        vault = await kv.vault("lose-kv")
        assert vault["keys"] == [] and [k["name"] for k in vault["deleted_keys"]] == ["soft-key"]
    # The file is what Backup-AzKeyVaultKey writes: the service restores the purged key from it.
    async with (
        AzureConnection(sandboxes) as conn,
        KeyClient("https://lose-kv.vault.azure.net", conn.credential(), **conn.client_kwargs()) as keys,
    ):
        restored = await keys.restore_key_backup(blob.read_bytes())
        assert restored.name == "gone-key"
    missing = run.invoke(cli.app, ["sandbox", "lose-key", "lose-kv", "no-such-key"])
    assert missing.exit_code == 1 and "the sandbox Key Vault refused (404)" in missing.output, missing.output
