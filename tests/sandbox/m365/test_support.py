"""The support desk: the one-week escalation of mailboxes that never finish encrypting, and the desk's rules."""

from __future__ import annotations

from ckey.models import ServicePrincipal
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from tests.sandbox.m365.conftest import M365, new_keys, unique


async def test_a_stuck_mailbox_is_escalated_after_a_week_and_microsoft_restarts_its_move(
    m365: M365, control: SandboxM365Control, kv: SandboxKeyVaultControl, tenant: SandboxM365Server
) -> None:
    d = tenant.sandbox.core.durations
    keys = await new_keys(kv, [ServicePrincipal.EXCHANGE_ONLINE])
    [dep] = await m365.ok("New-DataEncryptionPolicy", Name=unique("Stuck"), AzureKeyIDs=keys.uris)
    users = await m365.ok("Get-Mailbox", RecipientTypeDetails="UserMailbox", ResultSize="Unlimited")
    stuck, fine = users[0]["Name"], users[1]["Name"]
    await control.set_stuck([stuck])
    for mailbox in (stuck, fine):
        await m365.ok("Set-Mailbox", Identity=mailbox, DataEncryptionPolicy=dep["Name"])
    await control.advance_clock(seconds=d.escalation_after)
    assert (await m365.ok("Get-MailboxStatistics", Identity=stuck))[0]["IsEncrypted"] is False
    assert (await m365.ok("Get-MailboxStatistics", Identity=fine))[0]["IsEncrypted"] is True

    case = unique("escalation")
    evidence = {"assigned": dep["Name"], "checked": "Get-MailboxStatistics | fl IsEncrypted", "days": 7}
    body = {"properties": {"customerKey": {"requestType": "mailboxEncryptionEscalation", "mailboxes": [stuck],
                                           "evidence": evidence, "dataEncryptionPolicy": dep["Name"]}}}  # fmt: skip
    created = await m365.support("PUT", f"/{case}", body)
    assert created.status == 201
    props = created.body["properties"]
    assert props["status"] == "Open" and props["customerKey"]["stage"] == "investigating"
    assert props["customerKey"]["mailboxes"] == [stuck] and props["customerKey"]["evidence"] == evidence
    assert (await m365.support("PUT", f"/{case}", body)).status == 200

    await control.advance_clock(seconds=d.escalation_resolve)
    resolved = (await m365.support("GET", f"/{case}")).body["properties"]
    assert resolved["status"] == "Closed" and resolved["customerKey"]["stage"] == "resolved"
    assert (await control.mailbox(stuck))["stuck"] is False
    await control.advance_clock(days=4)
    [stats] = await m365.ok("Get-MailboxStatistics", Identity=stuck)
    assert stats["IsEncrypted"] is True and stats["DataEncryptionPolicyID"] == dep["Guid"]
    listed = (await m365.support("GET", "")).body["value"]
    assert case in [t["name"] for t in listed]


async def test_desk_rules(m365: M365) -> None:
    unknown = await m365.support("PUT", f"/{unique('x')}", {"properties": {"customerKey": {
        "requestType": "mailboxEncryptionEscalation", "mailboxes": ["nobody@contoso.com"]}}})  # fmt: skip
    assert unknown.status == 400 and "nobody@contoso.com" in unknown.body["error"]["message"]
    kind = await m365.support("PUT", f"/{unique('x')}", {"properties": {"customerKey": {"requestType": "refund"}}})
    assert kind.status == 400
    not_requested = await m365.support("PUT", f"/{unique('x')}", {"properties": {"customerKey": {
        "requestType": "dataPurgeEDocument", "dataEncryptionPolicy": "NoSuchPolicy"}}})  # fmt: skip
    assert not_requested.status == 400
    assert (await m365.support("GET", f"/{unique('missing')}")).status == 404
    denied = await m365.support("GET", "", principal="bob@contoso.com")
    assert denied.status == 403 and denied.body["error"]["code"] == "AuthorizationFailed"
    no_version = await m365.request(
        "GET",
        "https://support.ckey.test/providers/Microsoft.Support/supportTickets",
        resource="https://support.ckey.test",
    )
    assert no_version.status == 400 and no_version.body["error"]["code"] == "MissingApiVersionParameter"
