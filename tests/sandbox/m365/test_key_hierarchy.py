"""The key hierarchy for real: customer keys in Key Vault, the availability key, and the data purge path's end."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ckey.models import ServicePrincipal
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from tests.sandbox.m365.conftest import M365, DepKeys, new_keys, unique

EXCHANGE = ServicePrincipal.EXCHANGE_ONLINE


async def encrypted_mailbox(
    m365: M365, control: SandboxM365Control, kv: SandboxKeyVaultControl, index: int
) -> tuple[DepKeys, dict[str, Any], str]:
    """A DEP on two fresh keys and a user mailbox whose move under it has completed."""
    keys = await new_keys(kv, [EXCHANGE])
    [dep] = await m365.ok("New-DataEncryptionPolicy", Name=unique("Hierarchy"), AzureKeyIDs=keys.uris)
    users = await m365.ok("Get-Mailbox", RecipientTypeDetails="UserMailbox", ResultSize="Unlimited")
    mailbox = users[index]["UserPrincipalName"]
    await m365.ok("Set-Mailbox", Identity=mailbox, DataEncryptionPolicy=dep["Name"])
    await control.advance_clock(days=4)
    assert (await m365.ok("Get-MailboxStatistics", Identity=mailbox))[0]["IsEncrypted"] is True
    readable = await control.mailbox_items(mailbox)
    assert readable["readable"] and readable["path"] == "customer-key-1" and readable["items"]
    return keys, dep, mailbox


async def test_revoking_unwrap_on_both_keys_makes_the_data_unreadable_without_fallback(
    m365: M365, control: SandboxM365Control, kv: SandboxKeyVaultControl
) -> None:
    keys, _, mailbox = await encrypted_mailbox(m365, control, kv, 0)
    alerts_before = len(await control.alerts())
    await kv.revoke(keys.vaults[0], EXCHANGE.value, ["unwrapKey"])
    second = await control.mailbox_items(mailbox)
    assert second["readable"] and second["path"] == "customer-key-2"  # the second customer key still serves
    await kv.revoke(keys.vaults[1], EXCHANGE.value, ["unwrapKey"])
    denied = await control.mailbox_items(mailbox)
    assert denied["readable"] is False and denied["items"] == []
    assert "availability key isn't used when access is denied" in denied["error"]
    assert len(await control.alerts()) == alerts_before  # no fallback, so no alert
    # Permissions back: readable again through the first key.
    for vault in keys.vaults:
        await kv.grant(vault, EXCHANGE.value, ["unwrapKey"])
    assert (await control.mailbox_items(mailbox))["path"] == "customer-key-1"


async def test_with_both_vaults_down_the_availability_key_serves_and_an_alert_is_recorded(
    m365: M365, control: SandboxM365Control, kv: SandboxKeyVaultControl
) -> None:
    keys, dep, mailbox = await encrypted_mailbox(m365, control, kv, 1)
    await kv.set_faults(keys.vaults[0], down=True)
    try:
        assert (await control.mailbox_items(mailbox))["path"] == "customer-key-2"
        await kv.set_faults(keys.vaults[1], down=True)
        served = await control.mailbox_items(mailbox)
        assert served["readable"] and served["path"] == "availability-key"
        assert [i["subject"] for i in served["items"]]
        alert = (await control.alerts())[-1]
        assert alert["kind"] == "availability-key-used" and alert["dep_guid"] == dep["Guid"]
        assert alert["subject"] == mailbox and "503" in alert["detail"]
    finally:
        for vault in keys.vaults:
            await kv.set_faults(vault, down=False)
    # One vault down and the other denying: not both system errors, so no fallback.
    await kv.set_faults(keys.vaults[0], down=True)
    await kv.revoke(keys.vaults[1], EXCHANGE.value, ["unwrapKey"])
    try:
        assert (await control.mailbox_items(mailbox))["readable"] is False
    finally:
        await kv.set_faults(keys.vaults[0], down=False)
        await kv.grant(keys.vaults[1], EXCHANGE.value, ["unwrapKey"])


def sign(private: Ed25519PrivateKey, signer: str, sha256: str) -> dict[str, str]:
    public = private.public_key().public_bytes_raw()
    return {
        "signer": signer,
        "publicKey": base64.b64encode(public).decode(),
        "signature": base64.b64encode(private.sign(bytes.fromhex(sha256))).decode(),
    }


async def test_after_the_purge_path_the_data_cannot_be_decrypted_at_all(
    m365: M365, control: SandboxM365Control, kv: SandboxKeyVaultControl, tenant: SandboxM365Server
) -> None:
    keys, dep, mailbox = await encrypted_mailbox(m365, control, kv, 2)
    d = tenant.sandbox.core.durations
    for vault in keys.vaults:
        await kv.revoke(vault, EXCHANGE.value, ["wrapKey", "unwrapKey"])
    await m365.ok(
        "Set-DataEncryptionPolicy",
        Identity=dep["Guid"],
        PermanentDataPurgeRequested=True,
        PermanentDataPurgeReason="Exiting Microsoft 365",
        PermanentDataPurgeContact="ciso@contoso.com",
    )
    # Exchange Online lost access; with both vaults merely down the availability key would still serve:
    assert (await control.mailbox_items(mailbox))["readable"] is False

    case = unique("purge")
    created = await m365.support("PUT", f"/{case}", {"properties": {"customerKey": {
        "requestType": "dataPurgeEDocument", "dataEncryptionPolicy": dep["Name"]}}})  # fmt: skip
    assert created.status == 201, created.body
    assert created.body["properties"]["customerKey"]["stage"] == "edocument-requested"
    early = await m365.support("GET", f"/{case}/eDocument")
    assert early.status == 409
    await control.advance_clock(seconds=d.edocument_issue)
    document = (await m365.support("GET", f"/{case}/eDocument")).body
    assert hashlib.sha256(document["content"].encode()).hexdigest() == document["sha256"]
    assert mailbox in document["content"] and "Exiting Microsoft 365" in document["content"]

    approver = Ed25519PrivateKey.generate()
    forged = sign(Ed25519PrivateKey.generate(), "cfo@contoso.com", document["sha256"])
    forged["publicKey"] = sign(approver, "x", document["sha256"])["publicKey"]
    refused = await m365.support(
        "POST", f"/{case}/eDocument/signatures", {"sha256": document["sha256"], "signatures": [forged]}
    )
    assert refused.status == 400 and "doesn't verify" in refused.body["error"]["message"]
    wrong_hash = await m365.support(
        "POST",
        f"/{case}/eDocument/signatures",
        {"sha256": "00" * 32, "signatures": [sign(approver, "cfo@contoso.com", document["sha256"])]},
    )
    assert wrong_hash.status == 400
    signed = await m365.support(
        "POST",
        f"/{case}/eDocument/signatures",
        {"sha256": document["sha256"], "signatures": [sign(approver, "cfo@contoso.com", document["sha256"])]},
    )
    assert signed.status == 200 and signed.body["properties"]["customerKey"]["stage"] == "signed"

    stages = []
    for delay in (d.purge_delete_policy, d.purge_mark_mailboxes, d.purge_delete_availability_key):
        await control.advance_clock(seconds=delay)
        stages.append((await m365.support("GET", f"/{case}")).body["properties"]["customerKey"]["stage"])
    assert stages == ["policy-deleted", "mailboxes-marked", "purged"]
    ticket = (await m365.support("GET", f"/{case}")).body
    assert ticket["properties"]["status"] == "Closed"
    assert (await m365.exo("Get-DataEncryptionPolicy", Identity=dep["Name"])).status == 404
    assert (await m365.exo("Get-Mailbox", Identity=mailbox)).status == 404
    [gone] = await m365.ok("Get-Mailbox", Identity=mailbox, SoftDeletedMailbox=True)
    assert gone["IsSoftDeletedByRemove"] is True

    # Even with every permission back and the vaults healthy, nothing opens: the DEP key is gone.
    for vault in keys.vaults:
        await kv.grant(vault, EXCHANGE.value, ["get", "wrapKey", "unwrapKey"])
    final = await control.mailbox_items(mailbox)
    assert final["readable"] is False and "destroyed by the data purge" in final["error"]
    for vault in keys.vaults:
        await kv.set_faults(vault, down=True)
    try:
        assert (await control.mailbox_items(mailbox))["readable"] is False
    finally:
        for vault in keys.vaults:
            await kv.set_faults(vault, down=False)


@pytest.mark.parametrize("workload", ["multi_workload", "sharepoint"])
async def test_purge_is_refused_for_multi_workload_and_sharepoint(m365: M365, workload: str) -> None:
    answer = await m365.support(
        "PUT",
        f"/{unique('purge')}",
        {"properties": {"customerKey": {"requestType": "dataPurgeEDocument", "workload": workload}}},
    )
    assert answer.status == 400 and answer.body["error"]["code"] == "NotSupported"
    assert "isn't supported" in answer.body["error"]["message"]
