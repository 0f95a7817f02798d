"""The Microsoft 365 gateway: cmdlet lines rendered as the seed writes them; the pwsh transport's contract."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest

from ckey.config import M365Transport, Settings
from ckey.m365 import NULL, SWITCH, Cmdlet, CmdletError, Endpoint, M365Gateway, PwshTransport

PWSH = Path(__file__).parents[1] / "support" / "pwsh" / "pwsh"

# The seed's example lines ("Manage Customer Key"), verbatim.
SEED_EXAMPLES = [
    (
        'New-DataEncryptionPolicy -Name USA_mailboxes -Description "Root key for mailboxes in USA and its territories" '
        "-AzureKeyIDs https://contoso_EastUSvault02.vault.azure.net/keys/USA_key_01, "
        "https://contoso_CentralUSvault02.vault.azure.net/keys/USA_Key_02",
        Cmdlet(
            "New-DataEncryptionPolicy",
            {
                "Name": "USA_mailboxes",
                "Description": "Root key for mailboxes in USA and its territories",
                "AzureKeyIDs": [
                    "https://contoso_EastUSvault02.vault.azure.net/keys/USA_key_01",
                    "https://contoso_CentralUSvault02.vault.azure.net/keys/USA_Key_02",
                ],
            },
        ),
    ),
    (
        'New-M365DataAtRestEncryptionPolicy -Name "Contoso_Global" -AzureKeyIDs '
        '"https://contosoWestUSvault1.vault.azure.net/keys/Key_01",'
        '"https://contosoCentralUSvault1.vault.azure.net/keys/Key_02" '
        '-Description "Policy for multiple workloads for all users in the tenant."',
        Cmdlet(
            "New-M365DataAtRestEncryptionPolicy",
            {
                "Name": "Contoso_Global",
                "AzureKeyIDs": [
                    "https://contosoWestUSvault1.vault.azure.net/keys/Key_01",
                    "https://contosoCentralUSvault1.vault.azure.net/keys/Key_02",
                ],
                "Description": "Policy for multiple workloads for all users in the tenant.",
            },
        ),
    ),
    (
        'Set-M365DataAtRestEncryptionPolicyAssignment -DataEncryptionPolicy "Contoso_Global"',
        Cmdlet("Set-M365DataAtRestEncryptionPolicyAssignment", {"DataEncryptionPolicy": "Contoso_Global"}),
    ),
    (
        'Set-M365DataAtRestEncryptionPolicy -Identity "Contoso_Global" -Enabled $false',
        Cmdlet("Set-M365DataAtRestEncryptionPolicy", {"Identity": "Contoso_Global", "Enabled": False}),
    ),
    (
        'Get-M365DataAtRestEncryptionPolicy -Identity "Contoso_Global"',
        Cmdlet("Get-M365DataAtRestEncryptionPolicy", {"Identity": "Contoso_Global"}),
    ),
    (
        "Register-SPODataEncryptionPolicy -PrimaryKeyVaultName 'stageRG3vault' -PrimaryKeyName 'SPKey3' "
        "-PrimaryKeyVersion 'f635a23bd4a44b9996ff6aadd88d42ba' -SecondaryKeyVaultName 'stageRG5vault' "
        "-SecondaryKeyName 'SPKey5' -SecondaryKeyVersion '2b3e8f1d754f438dacdec1f0945f251a'",
        Cmdlet(
            "Register-SPODataEncryptionPolicy",
            {
                "PrimaryKeyVaultName": "stageRG3vault",
                "PrimaryKeyName": "SPKey3",
                "PrimaryKeyVersion": "f635a23bd4a44b9996ff6aadd88d42ba",
                "SecondaryKeyVaultName": "stageRG5vault",
                "SecondaryKeyName": "SPKey5",
                "SecondaryKeyVersion": "2b3e8f1d754f438dacdec1f0945f251a",
            },
            endpoint=Endpoint.SHAREPOINT,
        ),
    ),
    ("Get-DataEncryptionPolicy", Cmdlet("Get-DataEncryptionPolicy")),
    (
        "Set-Mailbox -Identity alice@contoso.com -DataEncryptionPolicy $null",
        Cmdlet("Set-Mailbox", {"Identity": "alice@contoso.com", "DataEncryptionPolicy": NULL}),
    ),
    (
        "Set-DataEncryptionPolicy USA_mailboxes -PermanentDataPurgeRequested -PermanentDataPurgeReason Exit "
        "-PermanentDataPurgeContact alice@contoso.com",
        Cmdlet(
            "Set-DataEncryptionPolicy",
            {
                "PermanentDataPurgeRequested": SWITCH,
                "PermanentDataPurgeReason": "Exit",
                "PermanentDataPurgeContact": "alice@contoso.com",
            },
            positional="USA_mailboxes",
        ),
    ),
    (
        "Get-MailboxStatistics -Identity alice@contoso.com | fl IsEncrypted",
        Cmdlet("Get-MailboxStatistics", {"Identity": "alice@contoso.com"}),
    ),
    (
        "Restore-AzKeyVaultKey -VaultName Contoso-O365EX-NA-VaultA1 "
        "-InputFile Contoso-O365EX-NA-VaultA1-Key001-Backup-20170802.backup",
        Cmdlet(
            "Restore-AzKeyVaultKey",
            {
                "VaultName": "Contoso-O365EX-NA-VaultA1",
                "InputFile": "Contoso-O365EX-NA-VaultA1-Key001-Backup-20170802.backup",
            },
        ),
    ),
]


def parse_powershell(line: str) -> tuple[str, str | None, dict[str, Any]]:
    """(cmdlet, positional, {param: value}) of a one-pipeline-stage PowerShell line; arrays as lists."""
    line = line.split(" | ")[0]
    # A comma (with or without a space) joins array elements into one argument.
    line = re.sub(r'(["\']?)\s*,\s*(["\']?)(?=https?:|[A-Za-z0-9"\'])', r"\1,\2", line)
    tokens = shlex.split(line.replace("$", "\\$"), posix=True)
    name, rest = tokens[0], tokens[1:]
    positional = None
    params: dict[str, Any] = {}
    i = 0
    while i < len(rest):
        token = rest[i]
        if token.startswith("-") and len(token) > 1 and token[1].isalpha():
            key = token[1:]
            if i + 1 < len(rest) and not rest[i + 1].startswith("-"):
                value = rest[i + 1]
                params[key] = value.split(",") if "," in value else value
                i += 2
            else:
                params[key] = "<switch>"
                i += 1
        else:
            positional = token
            i += 1
    return name, positional, params


@pytest.mark.parametrize(("seed_line", "cmdlet"), SEED_EXAMPLES, ids=[c.name for _, c in SEED_EXAMPLES])
def test_rendered_lines_are_the_seeds(seed_line: str, cmdlet: Cmdlet) -> None:
    rendered = cmdlet.render()
    assert parse_powershell(rendered) == parse_powershell(seed_line), rendered


def test_canonical_rendering() -> None:
    assert (
        Cmdlet("Set-Mailbox", {"Identity": "alice@contoso.com", "DataEncryptionPolicy": "USA_mailboxes"}).render()
        == "Set-Mailbox -Identity alice@contoso.com -DataEncryptionPolicy USA_mailboxes"
    )
    assert (
        Cmdlet("Get-DataEncryptionPolicy", positional="4e5f2c1a-9b7d").render()
        == "Get-DataEncryptionPolicy 4e5f2c1a-9b7d"
    )
    assert Cmdlet("Set-DataEncryptionPolicy", {"Refresh": SWITCH}, positional="USA").render() == (
        "Set-DataEncryptionPolicy USA -Refresh"
    )
    tricky = Cmdlet("New-DataEncryptionPolicy", {"Description": 'say "hi" for $5'}).render()
    assert tricky == 'New-DataEncryptionPolicy -Description "say `"hi`" for `$5"'
    body = Cmdlet("Set-Mailbox", {"Identity": "a@b.c", "DataEncryptionPolicy": NULL}).body()
    assert body == {
        "CmdletInput": {"CmdletName": "Set-Mailbox", "Parameters": {"Identity": "a@b.c", "DataEncryptionPolicy": None}}
    }


@pytest.fixture
def pwsh_gateway(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[M365Gateway, Path, list[Any]]:
    log = tmp_path / "pwsh.log"
    monkeypatch.setenv("PWSH_LOG", str(log))
    pwsh_settings = settings.model_copy(
        update={
            "m365_transport": M365Transport.PWSH,
            "pwsh_path": str(PWSH),
            "m365_app_id": "5f1c0a3e-app",
            "m365_certificate_path": tmp_path / "ckey.pfx",
        }
    )
    calls: list[Any] = []

    async def on_call(cmdlet: Cmdlet, outcome: str, error: str | None) -> None:
        calls.append((cmdlet.render(), outcome, error))

    return M365Gateway(PwshTransport(pwsh_settings), on_call), log, calls


async def test_pwsh_transport_sends_the_line_and_parses_recorded_output(
    pwsh_gateway: tuple[M365Gateway, Path, list[Any]],
) -> None:
    gateway, log, calls = pwsh_gateway
    dep = await gateway.new_data_encryption_policy(
        "USA_mailboxes",
        [
            "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01",
            "https://contoso-westus-kv1.vault.azure.net/keys/exo-key-02",
        ],
        description="Root key for mailboxes in USA and its territories",
    )
    assert (dep.name, dep.guid, dep.enabled) == ("USA_mailboxes", "4e5f2c1a-9b7d-4c3e-8f6a-1b2c3d4e5f60", True)
    stats = await gateway.get_mailbox_statistics("alice@contoso.com")
    assert stats.is_encrypted and stats.data_encryption_policy_id == dep.guid
    (named,) = await gateway.get_data_encryption_policy(stats.data_encryption_policy_id)
    assert named.name == "USA_mailboxes"
    assert [d.name for d in await gateway.get_data_encryption_policy()] == ["USA_mailboxes", "EU_mailboxes"]
    await gateway.set_mailbox("alice@contoso.com", "USA_mailboxes")
    await gateway.set_mailbox("alice@contoso.com", None)

    scripts = log.read_text().splitlines()
    assert scripts[0].startswith(
        "$ErrorActionPreference = 'Stop'; Connect-ExchangeOnline -ShowBanner:$false -AppId 5f1c0a3e-app "
    )
    assert scripts[-1].endswith(
        "Set-Mailbox -Identity alice@contoso.com -DataEncryptionPolicy $null | ConvertTo-Json -Depth 6 -Compress"
    )
    # Each state-changing call is announced before it is sent (New-DataEncryptionPolicy, Set-Mailbox twice).
    assert [c[1] for c in calls] == ["intent", "ok", "ok", "ok", "ok", "intent", "ok", "intent", "ok"]


async def test_pwsh_refusal_is_a_cmdlet_error_with_its_text(pwsh_gateway: tuple[M365Gateway, Path, list[Any]]) -> None:
    gateway, _, calls = pwsh_gateway
    with pytest.raises(CmdletError) as refused:
        await gateway.set_mailbox("bob@contoso.com", "Purged_DEP")
    assert refused.value.code == "DataEncryptionPolicyPurgeRequestedException"
    assert refused.value.message.startswith(
        "The data encryption policy 'Purged_DEP' has a permanent data purge request"
    )
    assert calls[-1][1] == "refused"


def test_invoke_command_errors_are_read_as_exchange_writes_them() -> None:
    from ckey.m365 import _error_text

    real = {
        "error": {
            "code": "BadRequest",
            "message": "Error executing cmdlet",
            "details": [
                {
                    "code": "Context",
                    "target": "",
                    "message": "Ex6F9304|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|"
                    "The operation couldn't be performed because object 'Nope' couldn't be found.",
                }
            ],
        }
    }
    assert _error_text(real, "") == (
        "The operation couldn't be performed because object 'Nope' couldn't be found.",
        "ManagementObjectNotFoundException",
    )
    assert _error_text({"error": {"code": "Throttled", "message": "slow down"}}, "") == ("slow down", "Throttled")
    assert _error_text("not json", "fallback") == ("fallback", None)
