"""Exchange Online's cmdlets over InvokeCommand: DEPs, their rules (a refusal changes nothing), mailbox encryption."""

from __future__ import annotations

from typing import Any

import pytest

from ckey.models import ServicePrincipal
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.db import DepRow
from sandbox.m365.server import SandboxM365Server
from tests.sandbox.m365.conftest import M365, DepKeys, new_keys, unique

EXCHANGE = ServicePrincipal.EXCHANGE_ONLINE


async def snapshot(m365: M365) -> list[dict[str, Any]]:
    """Everything a refusal must leave alone: the DEPs and the recipients."""
    deps = await m365.ok("Get-DataEncryptionPolicy")
    mailboxes = await m365.ok("Get-Mailbox", ResultSize="Unlimited")
    users = await m365.ok("Get-MailUser", ResultSize="Unlimited")
    return [*deps, *mailboxes, *users]


@pytest.fixture(scope="module")
async def keys(kv: SandboxKeyVaultControl) -> DepKeys:
    return await new_keys(kv, [EXCHANGE])


@pytest.fixture(scope="module")
async def dep(m365: M365, keys: DepKeys) -> dict[str, Any]:
    [created] = await m365.ok(
        "New-DataEncryptionPolicy", Name=unique("USA_mailboxes"), AzureKeyIDs=keys.uris, Description="Root key for USA"
    )
    return created


async def user_mailboxes(m365: M365) -> list[dict[str, Any]]:
    return await m365.ok("Get-Mailbox", RecipientTypeDetails=["UserMailbox"], ResultSize="Unlimited")


async def test_new_and_get_data_encryption_policy(m365: M365, dep: dict[str, Any], keys: DepKeys) -> None:
    assert dep["AzureKeyIDs"] == keys.uris
    assert dep["Description"] == "Root key for USA"
    assert dep["Enabled"] is True and dep["PermanentDataPurgeRequested"] is False
    names = [d["Name"] for d in await m365.ok("Get-DataEncryptionPolicy")]
    assert dep["Name"] in names
    [by_name] = await m365.ok("Get-DataEncryptionPolicy", Identity=dep["Name"].upper())
    [by_guid] = await m365.ok("Get-DataEncryptionPolicy", Identity=dep["Guid"])
    assert by_name["Guid"] == by_guid["Guid"] == dep["Guid"]
    missing = await m365.exo("Get-DataEncryptionPolicy", Identity="NoSuchPolicy")
    assert missing.status == 404 and "couldn't be found" in missing.message
    assert missing.exception.endswith("ManagementObjectNotFoundException")
    # The real envelope's details carry the same text, behind an error id.
    assert missing.body["error"]["details"][0]["message"].endswith(missing.message)


async def test_the_seed_example_line_with_one_comma_separated_string(m365: M365, kv: SandboxKeyVaultControl) -> None:
    keys = await new_keys(kv, [EXCHANGE])
    [created] = await m365.ok("New-DataEncryptionPolicy", Name=unique("Seed_example"), AzureKeyIDs=", ".join(keys.uris))
    assert created["AzureKeyIDs"] == keys.uris


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("spaces", "can't contain spaces"),
        ("one key", "exactly two"),
        ("same vault", "two different Azure Key Vaults"),
        ("no such key", "doesn't exist"),
        ("bad uri", "isn't a valid Azure Key Vault key URI"),
        ("duplicate", "already exists"),
    ],
)
async def test_new_policy_refusals_change_nothing(
    m365: M365, dep: dict[str, Any], keys: DepKeys, case: str, expected: str
) -> None:
    before = await snapshot(m365)
    name, uris = unique("Policy"), keys.uris
    if case == "spaces":
        name = "USA mailboxes"
    elif case == "one key":
        uris = uris[:1]
    elif case == "same vault":
        uris = [uris[0], uris[0].replace(keys.names[0], "other-key")]
    elif case == "no such key":
        uris = [uris[0], uris[1] + "-missing"]
    elif case == "bad uri":
        uris = [uris[0], "https://example.com/keys/x"]
    else:
        name = dep["Name"]
    answer = await m365.exo("New-DataEncryptionPolicy", Name=name, AzureKeyIDs=uris)
    assert answer.status == 400, answer.body
    assert expected in answer.message
    assert await snapshot(m365) == before


async def test_keys_must_grant_exchange_online_and_be_protected(m365: M365, kv: SandboxKeyVaultControl) -> None:
    before = await snapshot(m365)
    # Granted to SharePoint only: Exchange Online cannot read the key.
    sharepoint_only = await new_keys(kv, [ServicePrincipal.SHAREPOINT_ONLINE])
    answer = await m365.exo("New-DataEncryptionPolicy", Name=unique("NoGrant"), AzureKeyIDs=sharepoint_only.uris)
    assert answer.status == 400 and "Office 365 Exchange Online" in answer.message and "get, wrapKey" in answer.message
    # get and wrapKey, but not unwrapKey: caught by the round trip through the vault.
    no_unwrap = await new_keys(kv, [EXCHANGE], permissions=["get", "wrapKey"])
    answer = await m365.exo("New-DataEncryptionPolicy", Name=unique("NoUnwrap"), AzureKeyIDs=no_unwrap.uris)
    assert answer.status == 400 and "can't unwrapKey" in answer.message
    # get and unwrapKey, but not wrapKey: the wrap happens in the vault, so the missing permission shows.
    no_wrap = await new_keys(kv, [EXCHANGE], permissions=["get", "unwrapKey"])
    answer = await m365.exo("New-DataEncryptionPolicy", Name=unique("NoWrap"), AzureKeyIDs=no_wrap.uris)
    assert answer.status == 400 and "can't wrapKey" in answer.message
    # Soft delete only (purgeable): Customer Key wants purge protection.
    purgeable = await new_keys(kv, [EXCHANGE], purge_protection=False)
    answer = await m365.exo("New-DataEncryptionPolicy", Name=unique("Purgeable"), AzureKeyIDs=purgeable.uris)
    assert answer.status == 400 and "purge protection" in answer.message
    # A disabled key.
    disabled = await new_keys(kv, [EXCHANGE])
    await kv.create_key(disabled.vaults[1], disabled.names[1], enabled=False)
    answer = await m365.exo("New-DataEncryptionPolicy", Name=unique("Disabled"), AzureKeyIDs=disabled.uris)
    assert answer.status == 400 and "is disabled" in answer.message
    assert await snapshot(m365) == before


async def test_at_most_fifty_policies(m365: M365, dep: dict[str, Any], keys: DepKeys, monkeypatch: Any) -> None:
    count = len(await m365.ok("Get-DataEncryptionPolicy"))
    # Fifty real DEPs would cost three hundred Key Vault calls; the limit is a constant, lowered to the count here.
    monkeypatch.setattr("sandbox.m365.deps.MAX_DEPS", count)
    before = await snapshot(m365)
    answer = await m365.exo("New-DataEncryptionPolicy", Name=unique("OneTooMany"), AzureKeyIDs=keys.uris)
    assert answer.status == 400 and f"maximum of {count}" in answer.message
    assert await snapshot(m365) == before


async def test_assigned_mailbox_is_encrypted_only_after_its_move(
    m365: M365, control: SandboxM365Control, dep: dict[str, Any]
) -> None:
    mailbox = (await user_mailboxes(m365))[0]
    assert mailbox["DataEncryptionPolicy"] is None
    [stats] = await m365.ok("Get-MailboxStatistics", Identity=mailbox["UserPrincipalName"])
    assert stats["IsEncrypted"] is False and stats["DataEncryptionPolicyID"] is None

    assert await m365.ok("Set-Mailbox", Identity=mailbox["UserPrincipalName"], DataEncryptionPolicy=dep["Name"]) == []
    [stats] = await m365.ok("Get-MailboxStatistics", Identity=mailbox["Name"])
    assert stats["DataEncryptionPolicyID"] == dep["Guid"]
    assert stats["IsEncrypted"] is False  # the first-time move between databases has just started
    [by_guid] = await m365.ok("Get-DataEncryptionPolicy", Identity=stats["DataEncryptionPolicyID"])
    assert by_guid["Name"] == dep["Name"]
    [shown] = await m365.ok("Get-Mailbox", Identity=mailbox["Guid"])
    assert shown["DataEncryptionPolicy"] == dep["Name"]

    await control.advance_clock(hours=1)
    assert (await m365.ok("Get-MailboxStatistics", Identity=mailbox["Name"]))[0]["IsEncrypted"] is False
    await control.advance_clock(days=3)  # the largest test mailbox moves in well under three days
    assert (await m365.ok("Get-MailboxStatistics", Identity=mailbox["Name"]))[0]["IsEncrypted"] is True
    items = await control.mailbox_items(mailbox["UserPrincipalName"])
    assert items["readable"] and items["dep_guid"] == dep["Guid"] and items["path"] == "customer-key-1"

    # Assigning the same DEP again changes nothing (and says so).
    again = await m365.exo("Set-Mailbox", Identity=mailbox["Name"], DataEncryptionPolicy=dep["Name"])
    assert again.status == 200 and "no settings" in again.body["@adminapi.warnings"][0]


async def test_first_moves_queue_and_later_changes_only_re_encrypt(
    m365: M365, control: SandboxM365Control, tenant: SandboxM365Server, kv: SandboxKeyVaultControl
) -> None:
    durations = tenant.sandbox.core.durations
    keys = await new_keys(kv, [EXCHANGE])
    [first] = await m365.ok("New-DataEncryptionPolicy", Name=unique("First"), AzureKeyIDs=keys.uris)
    [second] = await m365.ok("New-DataEncryptionPolicy", Name=unique("Second"), AzureKeyIDs=keys.uris)
    mailbox = (await user_mailboxes(m365))[1]["Name"]
    await m365.ok("Set-Mailbox", Identity=mailbox, DataEncryptionPolicy=first["Name"])
    state = await control.mailbox(mailbox)
    now = (await control.clock())["now_unix"]
    assert state["moved_once"] is False
    await control.advance_clock(days=4)
    assert (await control.mailbox(mailbox))["is_encrypted"] is True

    await m365.ok("Set-Mailbox", Identity=mailbox, DataEncryptionPolicy=second["Name"])
    state = await control.mailbox(mailbox)
    assert state["moved_once"] is True and state["is_encrypted"] is False
    size = state["size_bytes"]
    await control.advance_clock(seconds=durations.reencrypt(size) + 1)
    assert (await control.mailbox(mailbox))["is_encrypted"] is True
    assert now  # the clock moved on only by the shifts above


async def test_rollback_to_microsoft_managed_keys(m365: M365, control: SandboxM365Control, dep: dict[str, Any]) -> None:
    mailbox = (await user_mailboxes(m365))[2]["Name"]
    refused = await m365.exo("Set-Mailbox", Identity=mailbox, DataEncryptionPolicy=None)
    assert refused.status == 400 and "Microsoft-managed keys, which can't be unassigned" in refused.message
    await m365.ok("Set-Mailbox", Identity=mailbox, DataEncryptionPolicy=dep["Guid"])
    await control.advance_clock(days=4)
    await m365.ok("Set-Mailbox", Identity=mailbox, DataEncryptionPolicy=None)
    [stats] = await m365.ok("Get-MailboxStatistics", Identity=mailbox)
    assert stats["DataEncryptionPolicyID"] is None and stats["IsEncrypted"] is False
    await control.advance_clock(days=1)
    items = await control.mailbox_items(mailbox)
    assert items["readable"] and items["path"] == "microsoft-managed"


async def test_mail_user_assigned_before_migration_is_encrypted_when_it_migrates(
    m365: M365, control: SandboxM365Control, dep: dict[str, Any]
) -> None:
    user = (await m365.ok("Get-MailUser"))[0]
    assert user["RecipientTypeDetails"] == "MailUser"
    # Set-Mailbox does not find a mail user; Set-MailUser does.
    refused = await m365.exo("Set-Mailbox", Identity=user["Name"], DataEncryptionPolicy=dep["Name"])
    assert refused.status == 404
    await m365.ok("Set-MailUser", Identity=user["UserPrincipalName"], DataEncryptionPolicy=dep["Name"])
    [shown] = await m365.ok("Get-MailUser", Identity=user["Name"])
    assert shown["DataEncryptionPolicy"] == dep["Name"]
    await control.advance_clock(days=30)
    assert (await m365.exo("Get-MailboxStatistics", Identity=user["Name"])).status == 404  # not a mailbox yet
    assert await control.complete_migrations([user["Name"]]) == [user["Name"]]
    [stats] = await m365.ok("Get-MailboxStatistics", Identity=user["Name"])
    assert stats["IsEncrypted"] is True and stats["DataEncryptionPolicyID"] == dep["Guid"]


async def tenant_dep(tenant: SandboxM365Server, guid: str) -> DepRow:
    dep = await tenant.sandbox.core.dep(guid)
    assert dep is not None
    return dep


async def test_refresh_after_a_key_roll(
    m365: M365, control: SandboxM365Control, kv: SandboxKeyVaultControl, tenant: SandboxM365Server
) -> None:
    keys = await new_keys(kv, [EXCHANGE])
    [dep] = await m365.ok("New-DataEncryptionPolicy", Name=unique("Rolled"), AzureKeyIDs=keys.uris)
    mailbox = (await user_mailboxes(m365))[3]["Name"]
    await m365.ok("Set-Mailbox", Identity=mailbox, DataEncryptionPolicy=dep["Name"])
    await control.advance_clock(days=4)
    assert (await control.mailbox(mailbox))["is_encrypted"]
    rolled = await kv.create_key(keys.vaults[0], keys.names[0])  # a new version of the first key
    assert await m365.ok("Set-DataEncryptionPolicy", Identity=dep["Name"], Refresh=True) == []
    [after] = await m365.ok("Get-DataEncryptionPolicy", Identity=dep["Guid"])
    assert after["LastRefreshedDateTime"] is not None
    assert (await control.mailbox(mailbox))["is_encrypted"] is False  # re-encrypting under the new version
    await control.advance_clock(hours=12)
    assert (await control.mailbox(mailbox))["is_encrypted"] is True
    # The DEP key is now wrapped by the new version of the first key, and the data opens through it.
    assert tenant.sandbox.core.vault  # the same Key Vault clients serve the check below
    versions = (await tenant_dep(tenant, dep["Guid"])).key_versions
    assert versions[0] == rolled["kid"] and versions[1] == keys.kids[1]
    items = await control.mailbox_items(mailbox)
    assert items["readable"] and items["path"] == "customer-key-1"


async def test_set_policy_parameter_rules(m365: M365, dep: dict[str, Any]) -> None:
    before = await snapshot(m365)
    both = await m365.exo(
        "Set-DataEncryptionPolicy",
        Identity=dep["Name"],
        Refresh=True,
        PermanentDataPurgeRequested=True,
        PermanentDataPurgeReason="exit",
        PermanentDataPurgeContact="ciso@contoso.com",
    )
    assert both.status == 400 and "Parameter set cannot be resolved" in both.message
    no_reason = await m365.exo("Set-DataEncryptionPolicy", Identity=dep["Name"], PermanentDataPurgeRequested=True)
    assert no_reason.status == 400 and "missing mandatory parameters" in no_reason.message
    unknown = await m365.exo("Set-DataEncryptionPolicy", Identity=dep["Name"], Colour="blue")
    assert unknown.status == 400 and "cannot be found that matches parameter name 'Colour'" in unknown.message
    wrong_type = await m365.exo("Set-DataEncryptionPolicy", Identity=dep["Name"], Enabled="maybe")
    assert wrong_type.status == 400 and "System.Boolean" in wrong_type.message
    no_cmdlet = await m365.exo("Remove-DataEncryptionPolicy", Identity=dep["Name"])
    assert no_cmdlet.status == 400 and "is not recognized as a name of a cmdlet" in no_cmdlet.message
    assert await snapshot(m365) == before


async def test_purge_request_needs_exchange_online_access_gone_and_blocks_assignment(
    m365: M365, kv: SandboxKeyVaultControl
) -> None:
    keys = await new_keys(kv, [EXCHANGE])
    [dep] = await m365.ok("New-DataEncryptionPolicy", Name=unique("Exit"), AzureKeyIDs=keys.uris)
    purge = {
        "Identity": dep["Name"],
        "PermanentDataPurgeRequested": True,
        "PermanentDataPurgeReason": "Leaving Microsoft 365",
        "PermanentDataPurgeContact": "ciso@contoso.com",
    }
    before = await snapshot(m365)
    refused = await m365.exo("Set-DataEncryptionPolicy", **purge)
    assert refused.status == 400 and "still has the unwrapKey permission" in refused.message
    # Only unwrap removed, from one vault: still refused (wrap on the other key, unwrap on the other vault).
    await kv.revoke(keys.vaults[0], EXCHANGE.value, ["unwrapKey"])
    refused = await m365.exo("Set-DataEncryptionPolicy", **purge)
    assert refused.status == 400 and "still has the" in refused.message
    assert await snapshot(m365) == before
    for vault in keys.vaults:
        await kv.revoke(vault, EXCHANGE.value, ["wrapKey", "unwrapKey"])
    assert await m365.ok("Set-DataEncryptionPolicy", **purge) == []
    [after] = await m365.ok("Get-DataEncryptionPolicy", Identity=dep["Name"])
    assert after["PermanentDataPurgeRequested"] is True
    assert after["PermanentDataPurgeReason"] == "Leaving Microsoft 365"
    assert after["PermanentDataPurgeContact"] == "ciso@contoso.com"
    mailbox = (await user_mailboxes(m365))[4]["Name"]
    before = await snapshot(m365)
    refused = await m365.exo("Set-Mailbox", Identity=mailbox, DataEncryptionPolicy=dep["Name"])
    assert refused.status == 400 and "can no longer be assigned" in refused.message
    assert await snapshot(m365) == before


async def test_get_mailbox_result_size_paging_and_warnings(m365: M365, control: SandboxM365Control) -> None:
    everyone = await m365.ok("Get-Mailbox", ResultSize="Unlimited")
    assert {m["RecipientTypeDetails"] for m in everyone} == {"UserMailbox", "SharedMailbox"}
    two = await m365.exo("Get-Mailbox", ResultSize=2)
    assert len(two.value) == 2 and "@adminapi.warnings" not in two.body
    shared = await m365.ok("Get-Mailbox", RecipientTypeDetails="SharedMailbox")
    assert shared and all(m["RecipientTypeDetails"] == "SharedMailbox" for m in shared)
    assert (await m365.exo("Get-Mailbox", Identity="nobody@contoso.com")).status == 404
    # Exchange's default of 1,000 objects, and the warning when there are more.
    await control.seed(mailboxes=1001, mail_users=0, sites_per_geo=0, cloud_pcs=0, stuck_mailboxes=0)
    try:
        capped = await m365.exo("Get-Mailbox")
        assert len(capped.value) == 1000 and "ResultSize" in capped.body["@adminapi.warnings"][0]
        assert len(await m365.ok("Get-Mailbox", ResultSize="Unlimited")) == 1001
    finally:
        await control.seed(mailboxes=12, mail_users=3, sites_per_geo=4, cloud_pcs=3, stuck_mailboxes=0)


async def test_a_disabled_policy_cannot_be_assigned(m365: M365, kv: SandboxKeyVaultControl) -> None:
    keys = await new_keys(kv, [EXCHANGE])
    [dep] = await m365.ok("New-DataEncryptionPolicy", Name=unique("Paused"), AzureKeyIDs=keys.uris)
    await m365.ok("Set-DataEncryptionPolicy", Identity=dep["Name"], Enabled=False, Description="on hold")
    [after] = await m365.ok("Get-DataEncryptionPolicy", Identity=dep["Name"])
    assert after["Enabled"] is False and after["Description"] == "on hold"
    unchanged = await m365.exo("Set-DataEncryptionPolicy", Identity=dep["Name"], Enabled=False)
    assert unchanged.status == 200 and "no settings" in unchanged.body["@adminapi.warnings"][0]
    mailbox = (await user_mailboxes(m365))[5]["Name"]
    before = await snapshot(m365)
    refused = await m365.exo("Set-Mailbox", Identity=mailbox, DataEncryptionPolicy=dep["Guid"])
    assert refused.status == 400 and "is disabled" in refused.message
    assert await snapshot(m365) == before


async def test_set_policy_name_renames_the_dep_and_its_mailboxes_follow(
    m365: M365, control: SandboxM365Control, keys: DepKeys
) -> None:
    # Microsoft Learn: Set-DataEncryptionPolicy -Name "specifies the unique name for the data encryption policy".
    [dep] = await m365.ok("New-DataEncryptionPolicy", Name=unique("Old_name"), AzureKeyIDs=keys.uris)
    [other] = await m365.ok("New-DataEncryptionPolicy", Name=unique("Taken_name"), AzureKeyIDs=keys.uris)
    mailbox = (await user_mailboxes(m365))[9]["Name"]
    await m365.ok("Set-Mailbox", Identity=mailbox, DataEncryptionPolicy=dep["Name"])
    new_name = unique("New_name")
    assert await m365.ok("Set-DataEncryptionPolicy", Identity=dep["Name"], Name=new_name) == []
    [renamed] = await m365.ok("Get-DataEncryptionPolicy", Identity=dep["Guid"])
    assert (renamed["Name"], renamed["Guid"]) == (new_name, dep["Guid"])
    assert (await control.mailbox(mailbox))["dep"] == new_name
    gone = await m365.exo("Get-DataEncryptionPolicy", Identity=dep["Name"])
    assert gone.status == 404
    before = await snapshot(m365)
    taken = await m365.exo("Set-DataEncryptionPolicy", Identity=new_name, Name=other["Name"])
    assert taken.status == 400 and "already exists" in taken.message
    spaced = await m365.exo("Set-DataEncryptionPolicy", Identity=new_name, Name="has spaces")
    assert spaced.status == 400 and "can't contain spaces" in spaced.message
    assert await snapshot(m365) == before
