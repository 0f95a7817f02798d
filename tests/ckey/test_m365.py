"""The Microsoft 365 gateway: cmdlet lines rendered as the seed writes them; the pwsh transport's contract."""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ckey.config import M365Transport, Settings, load_settings
from ckey.m365 import (
    ALLOWED_CMDLETS,
    NULL,
    PWSH_SCRIPTS,
    SWITCH,
    Cmdlet,
    CmdletError,
    CmdletNotAllowed,
    Endpoint,
    M365Gateway,
    PwshTransport,
)

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


async def test_pwsh_transport_sends_fixed_scripts_and_data_and_parses_recorded_output(
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

    sent = [json.loads(entry) for entry in log.read_text().splitlines()]
    assert [e["cmdlet"] for e in sent] == [
        "New-DataEncryptionPolicy",
        "Get-MailboxStatistics",
        "Get-DataEncryptionPolicy",
        "Get-DataEncryptionPolicy",
        "Set-Mailbox",
        "Set-Mailbox",
    ]
    assert all(e["script"] == PWSH_SCRIPTS[e["cmdlet"]] for e in sent)
    first = json.loads(sent[0]["stdin"])
    assert first["connect"] == {
        "AppId": "5f1c0a3e-app",
        "CertificateFilePath": str(log.parent / "ckey.pfx"),
        "Organization": "contoso.onmicrosoft.com",
    }
    assert json.loads(sent[-1]["stdin"])["parameters"] == {
        "Identity": "alice@contoso.com",
        "DataEncryptionPolicy": None,
    }
    assert [c[0] for c in calls][-1] == "Set-Mailbox -Identity alice@contoso.com -DataEncryptionPolicy $null"
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


# The pwsh transport: fixed script text, parameters as data (issue 8) ------------------------------------------------

INJECTION = "alice@contoso.com\u201d; Remove-Mailbox bob@contoso.com -Confirm:0 #"
HOSTILE_PIECES = [
    *"\u201c\u201d\u201e\u201f\u2018\u2019\u201a\u201b\u00ab\u00bb\uff02\uff07",  # quotes of every script
    *"\u2013\u2014\u2015\u2212\u2010",  # dashes of every kind
    "`",
    "$(",
    "${",
    "$",
    "@",
    "@(",
    "-",
    "--%",
    '"',
    "'",
    ";",
    "#",
    "|",
    "&",
    "\n",
    "\r\n",
    "\0",
    "\t",
    "2026-12-01T00:00:00Z",
    "Remove-Mailbox bob@contoso.com -Confirm:0",
]
LONG = os.environ.get("CKEY_HYPOTHESIS_LONG") == "1"
hostile_text = st.lists(st.one_of(st.sampled_from(HOSTILE_PIECES), st.text()), max_size=8).map("".join)
plain_values = st.one_of(hostile_text, st.none(), st.booleans(), st.integers(-(2**53), 2**53))
values = st.one_of(plain_values, st.lists(hostile_text, max_size=4), st.just(NULL), st.just(SWITCH))
parameter_names = st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,30}", fullmatch=True)
parameter_maps = st.dictionaries(parameter_names, values, max_size=6).filter(
    lambda d: len({k.lower() for k in d}) == len(d)
)


@functools.cache
def _base_settings() -> Settings:
    return load_settings(_env_file=None).model_copy(update={"m365_transport": M365Transport.PWSH})


def _as_data(value: Any) -> Any:
    """What a parameter value must arrive as: independent of ckey's own conversion."""
    return True if value is SWITCH else None if value is NULL else value


def _hostile_cmdlet(name: str, params: dict[str, Any], positional: str | None) -> tuple[Cmdlet, dict[str, Any]]:
    if positional is not None:
        params = {k: v for k, v in params.items() if k.lower() != "identity"}
    expected = {"Identity": positional} if positional is not None else {}
    expected |= {k: _as_data(v) for k, v in params.items()}
    return Cmdlet(name, params, positional=positional, endpoint=ALLOWED_CMDLETS[name]), expected


@settings(max_examples=2000 if LONG else 200, deadline=None)
@given(
    name=st.sampled_from(sorted(ALLOWED_CMDLETS)),
    params=parameter_maps,
    positional=st.none() | hostile_text,
    app_id=hostile_text,
    certificate=hostile_text,
    organization=hostile_text,
    spo_url=hostile_text,
)
def test_pwsh_script_never_depends_on_values_and_stdin_carries_them_exactly(
    name: str,
    params: dict[str, Any],
    positional: str | None,
    app_id: str,
    certificate: str,
    organization: str,
    spo_url: str,
) -> None:
    hostile = _base_settings().model_copy(
        update={
            "m365_app_id": app_id or "x",
            "m365_certificate_path": Path(certificate or "x"),
            "m365_organization": organization,
            "m365_spo_admin_url": spo_url,
        }
    )
    transport = PwshTransport(hostile)
    cmdlet, expected = _hostile_cmdlet(name, params, positional)
    bare = Cmdlet(name, endpoint=ALLOWED_CMDLETS[name])

    script = transport.script(cmdlet)
    # The same bytes for any parameters and any settings: the script of a bare call with default settings.
    assert script.encode() == PwshTransport(_base_settings()).script(bare).encode() == PWSH_SCRIPTS[name].encode()
    payload = transport.stdin(cmdlet)
    assert payload.isascii() and b"\0" not in payload and b"\n" not in payload
    request = json.loads(payload)
    assert request["parameters"] == expected
    assert list(request["parameters"]) == list(expected)
    if ALLOWED_CMDLETS[name] is Endpoint.SHAREPOINT:
        assert request["connect"] == {
            "Url": spo_url,
            "ClientId": app_id or "x",
            "CertificatePath": str(Path(certificate or "x")),
        }
    else:
        assert request["connect"] == {
            "AppId": app_id or "x",
            "CertificateFilePath": str(Path(certificate or "x")),
            "Organization": organization,
        }


@settings(max_examples=200 if LONG else 25, deadline=None)
@given(name=st.sampled_from(sorted(ALLOWED_CMDLETS)), params=parameter_maps, positional=st.none() | hostile_text)
async def test_pwsh_parameters_cross_the_pipe_to_the_stand_in_intact(
    name: str, params: dict[str, Any], positional: str | None
) -> None:
    cmdlet, expected = _hostile_cmdlet(name, params, positional)
    transport = PwshTransport(_base_settings().model_copy(update={"pwsh_path": str(PWSH)}))
    with mock.patch.dict(os.environ, {"PWSH_ECHO": "1"}):
        (echoed,) = await transport.invoke(cmdlet)
    # The stand-in checked the script against its own copy of the fixed script, then echoed what it decoded.
    base = _base_settings()
    connect = {"Url": base.m365_spo_admin_url} if ALLOWED_CMDLETS[name] is Endpoint.SHAREPOINT else {}
    assert echoed == {"Cmdlet": name, "Connect": connect, "Parameters": expected}


async def test_an_injected_identity_reaches_pwsh_only_as_data(
    pwsh_gateway: tuple[M365Gateway, Path, list[Any]],
) -> None:
    gateway, log, calls = pwsh_gateway
    with pytest.raises(CmdletError) as refused:
        await gateway.get_mailbox_statistics(INJECTION)
    assert refused.value.code == "ManagementObjectNotFoundException"
    (sent,) = [json.loads(entry) for entry in log.read_text().splitlines()]
    assert sent["script"] == PWSH_SCRIPTS["Get-MailboxStatistics"]
    assert "Remove-Mailbox" not in sent["script"] and "alice" not in sent["script"]
    assert json.loads(sent["stdin"])["parameters"] == {"Identity": INJECTION}
    # The audit line shows the value quoted, the typographic quote escaped; it is never run.
    assert (
        calls[-1][0]
        == 'Get-MailboxStatistics -Identity "alice@contoso.com`\u201d; Remove-Mailbox bob@contoso.com -Confirm:0 #"'
    )


async def test_a_cmdlet_off_the_allow_list_is_refused_before_any_process(
    pwsh_gateway: tuple[M365Gateway, Path, list[Any]],
) -> None:
    gateway, log, calls = pwsh_gateway
    with mock.patch("asyncio.create_subprocess_exec", side_effect=AssertionError("a process was started")):
        for cmdlet in (
            Cmdlet("Remove-Mailbox", {"Identity": "bob@contoso.com"}),
            Cmdlet("Invoke-Expression", {"Command": "whoami"}),
            Cmdlet("Set-Mailbox; Remove-Mailbox", {}),
            Cmdlet("Register-SPODataEncryptionPolicy", {}),  # an SPO cmdlet sent to Exchange
            Cmdlet("Set-Mailbox", {"Identity; x": "a"}),  # not a parameter name
        ):
            with pytest.raises(CmdletNotAllowed) as refused:
                await gateway.invoke(cmdlet)
            assert isinstance(refused.value, CmdletError) and refused.value.code == "cmdlet-not-allowed"
    assert not log.exists()
    assert [c[1] for c in calls] == ["refused"] * 5


def test_the_stand_in_fails_loudly_on_anything_but_the_fixed_script_and_data() -> None:
    def run(script: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
        argv = [sys.executable, str(PWSH), "-NoLogo", "-NoProfile", "-NonInteractive", "-Command", script]
        return subprocess.run(argv, input=stdin, capture_output=True, check=False, timeout=30)

    good = json.dumps({"connect": {}, "parameters": {"Identity": "alice@contoso.com"}}).encode()
    assert run(PWSH_SCRIPTS["Get-MailboxStatistics"], good).returncode == 0
    old_style = (
        "$ErrorActionPreference = 'Stop'; Connect-ExchangeOnline -ShowBanner:$false; "
        "Get-MailboxStatistics -Identity alice@contoso.com | ConvertTo-Json -Depth 6 -Compress"
    )
    for script, stdin in (
        (old_style, good),
        (PWSH_SCRIPTS["Get-MailboxStatistics"].replace("@parameters", "-Identity alice@contoso.com"), good),
        (PWSH_SCRIPTS["Get-MailboxStatistics"], b"-Identity alice@contoso.com"),
        (
            PWSH_SCRIPTS["Get-MailboxStatistics"],
            json.dumps({"parameters": {"Identity; x": "a"}, "connect": {}}).encode(),
        ),
        (
            PWSH_SCRIPTS["Get-MailboxStatistics"],
            json.dumps({"parameters": {"Identity": {"a": 1}}, "connect": {}}).encode(),
        ),
    ):
        done = run(script, stdin)
        assert done.returncode == 90 and b"PWSH STAND-IN CONTRACT VIOLATION" in done.stderr, (script, stdin)


def test_rendered_line_is_displayed_faithfully() -> None:
    line = Cmdlet("Set-Mailbox", {"Identity": "-Confirm", "DataEncryptionPolicy": "@evil"}).render()
    assert line == 'Set-Mailbox -Identity "-Confirm" -DataEncryptionPolicy "@evil"'
    assert Cmdlet("Get-Mailbox", {"Identity": "a\nb\0c\u201ed\u201c"}).render() == (
        'Get-Mailbox -Identity "a`nb`0c`\u201ed`\u201c"'
    )


def test_the_pwsh_script_branches_on_the_powershell_version_for_string_dates() -> None:
    script = PWSH_SCRIPTS["Set-Mailbox"]
    assert "-AsHashtable -DateKind String" in script and "$PSVersionTable.PSVersion" in script
    assert script.rstrip().endswith("Set-Mailbox @parameters | ConvertTo-Json -Depth 6 -Compress")
