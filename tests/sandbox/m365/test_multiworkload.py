"""The multi-workload DEP, Windows 365 over Graph, and the rollback request at the support desk."""

from __future__ import annotations

from typing import Any

import pytest

from ckey.models import ServicePrincipal
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from tests.sandbox.m365.conftest import M365, DepKeys, new_keys, unique

MICROSOFT_365 = ServicePrincipal.MICROSOFT_365


@pytest.fixture(scope="module")
async def keys(kv: SandboxKeyVaultControl) -> DepKeys:
    return await new_keys(kv, [MICROSOFT_365])


@pytest.fixture(scope="module")
async def dep(m365: M365, keys: DepKeys) -> dict[str, Any]:
    [created] = await m365.ok(
        "New-M365DataAtRestEncryptionPolicy",
        Name=unique("Contoso_Global"),
        AzureKeyIDs=keys.uris,
        Description="Policy for multiple workloads for all users in the tenant.",
    )
    return created


async def state(m365: M365) -> list[dict[str, Any]]:
    return [
        *await m365.ok("Get-M365DataAtRestEncryptionPolicy"),
        *await m365.ok("Get-M365DataAtRestEncryptionPolicyAssignment"),
    ]


async def test_create_get_and_the_rules(m365: M365, kv: SandboxKeyVaultControl, dep: dict[str, Any]) -> None:
    [by_name] = await m365.ok("Get-M365DataAtRestEncryptionPolicy", Identity=dep["Name"])
    assert by_name["Guid"] == dep["Guid"] and by_name["Enabled"] is True
    assert "PermanentDataPurgeRequested" not in by_name
    before = await state(m365)
    exchange_only = await new_keys(kv, [ServicePrincipal.EXCHANGE_ONLINE])
    answer = await m365.exo(
        "New-M365DataAtRestEncryptionPolicy", Name=unique("NoGrant"), AzureKeyIDs=exchange_only.uris
    )
    assert answer.status == 400 and "Microsoft 365 Data At Rest Encryption" in answer.message
    spaces = await m365.exo("New-M365DataAtRestEncryptionPolicy", Name="Contoso Global", AzureKeyIDs=exchange_only.uris)
    assert spaces.status == 400 and "can't contain spaces" in spaces.message
    purge = await m365.exo(
        "Set-M365DataAtRestEncryptionPolicy",
        Identity=dep["Name"],
        PermanentDataPurgeRequested=True,
        PermanentDataPurgeReason="exit",
        PermanentDataPurgeContact="ciso@contoso.com",
    )
    assert purge.status == 400 and "Purging of multi-workload DEP isn't supported" in purge.message
    unassign = await m365.exo("Set-M365DataAtRestEncryptionPolicyAssignment", DataEncryptionPolicy=None)
    assert unassign.status == 400 and "support request" in unassign.message
    assert await state(m365) == before


async def test_assignment_takes_effect_within_a_day_and_windows_365_follows(
    m365: M365, control: SandboxM365Control, dep: dict[str, Any], tenant: SandboxM365Server
) -> None:
    [none] = await m365.ok("Get-M365DataAtRestEncryptionPolicyAssignment")
    assert none["Status"] == "NotAssigned"
    settings = await m365.graph("GET", "retrieveTenantEncryptionSetting")
    assert settings.body["tenantDiskEncryptionType"] == "platformManagedKey"
    # Graph's cloudPcOrganizationSettings has no tenantEncryptionSetting property: the setting is a function's answer.
    assert "tenantEncryptionSetting" not in (await m365.graph("GET", "organizationSettings")).body
    pcs = (await m365.graph("GET", "cloudPCs")).body["value"]
    assert pcs and {pc["diskEncryptionState"] for pc in pcs} == {"encryptedUsingPlatformManagedKey"}
    bulk = {
        "@odata.type": "#microsoft.graph.cloudPcBulkModifyDiskEncryptionType",
        "displayName": "Encrypt with the customer-managed key",
        "cloudPcIds": [pc["id"] for pc in pcs],
        "diskEncryptionType": "customerManagedKey",
    }
    early = await m365.graph("POST", "bulkActions", bulk)
    assert early.status == 400 and "3 to 4 hours" in early.body["error"]["message"]

    assert await m365.ok("Set-M365DataAtRestEncryptionPolicyAssignment", DataEncryptionPolicy=dep["Name"]) == []
    [pending] = await m365.ok("Get-M365DataAtRestEncryptionPolicyAssignment")
    # Name is the property the real cmdlet's clients read (Microsoft365DSC); Status is the sandbox's own.
    assert pending["Name"] == dep["Name"] and pending["Status"] == "Pending"
    assert "DataEncryptionPolicy" not in pending
    d = tenant.sandbox.core.durations
    await control.advance_clock(seconds=d.intune_ready_min - 60)
    not_yet = await m365.graph("GET", "retrieveTenantEncryptionSetting")
    assert not_yet.body["tenantDiskEncryptionType"] == "platformManagedKey"
    await control.advance_clock(seconds=d.intune_ready_max - d.intune_ready_min + 60)
    ready = await m365.graph("GET", "retrieveTenantEncryptionSetting")
    assert ready.body["tenantDiskEncryptionType"] == "customerManagedKey"
    read_only = await m365.graph("PATCH", "organizationSettings", {"tenantEncryptionSetting": {}})
    assert read_only.status == 400

    created = await m365.graph("POST", "bulkActions", bulk)
    assert created.status == 201 and created.body["status"] == "pending"
    action = created.body["id"]
    await control.advance_clock(seconds=d.cloud_pc_encrypt_min / 2)
    # Graph's cloudPcBulkActionStatus knows pending, succeeded and failed; a bulk action under way is pending.
    under_way = await m365.graph("GET", f"bulkActions/{action}")
    assert under_way.body["status"] == "pending"
    listed = (await m365.graph("GET", "bulkActions")).body["value"]
    assert [a["id"] for a in listed] == [action]
    await control.advance_clock(seconds=d.cloud_pc_encrypt_max)
    done = await m365.graph("GET", f"bulkActions/{action}")
    assert done.body["status"] == "succeeded" and done.body["actionSummary"]["successfulCount"] == len(pcs)
    pcs = (await m365.graph("GET", "cloudPCs")).body["value"]
    assert {pc["diskEncryptionState"] for pc in pcs} == {"encryptedUsingCustomerManagedKey"}
    one = await m365.graph("GET", f"cloudPCs/{pcs[0]['id']}")
    assert one.body["id"] == pcs[0]["id"]

    await control.advance_clock(seconds=d.multi_workload_effect_max)
    [applied] = await m365.ok("Get-M365DataAtRestEncryptionPolicyAssignment")
    assert applied["Status"] == "Applied" and applied["EffectiveDateTime"]


async def test_refresh_rewraps_with_the_latest_key_versions(
    m365: M365, kv: SandboxKeyVaultControl, keys: DepKeys, dep: dict[str, Any], tenant: SandboxM365Server
) -> None:
    rolled = await kv.create_key(keys.vaults[1], keys.names[1])
    assert await m365.ok("Set-M365DataAtRestEncryptionPolicy", Identity=dep["Name"], Refresh=True) == []
    [after] = await m365.ok("Get-M365DataAtRestEncryptionPolicy", Identity=dep["Name"])
    assert after["LastRefreshedDateTime"] is not None
    stored = await tenant.sandbox.core.dep(dep["Guid"])
    assert stored is not None and stored.key_versions == [keys.kids[0], rolled["kid"]]


async def test_an_assigned_policy_cannot_be_disabled(m365: M365, dep: dict[str, Any]) -> None:
    before = await state(m365)
    answer = await m365.exo("Set-M365DataAtRestEncryptionPolicy", Identity=dep["Name"], Enabled=False)
    assert answer.status == 400 and "unassign it from workloads" in answer.message
    assert await state(m365) == before


async def test_rollback_request_waits_for_the_keys_then_unassigns(
    m365: M365, control: SandboxM365Control, kv: SandboxKeyVaultControl, keys: DepKeys, dep: dict[str, Any],
    tenant: SandboxM365Server,
) -> None:  # fmt: skip
    d = tenant.sandbox.core.durations
    request = {
        "requestType": "multiWorkloadRollback",
        "tenantFqdn": "contoso.onmicrosoft.com",
        "contact": "it-admin@contoso.com",
        "reason": "Moving back to Microsoft-managed keys",
        "incidentNumber": "INC0012345",
    }
    incomplete = await m365.support("PUT", f"/{unique('rb')}", {"properties": {"customerKey": {
        **request, "incidentNumber": ""}}})  # fmt: skip
    assert incomplete.status == 400 and "incidentNumber" in incomplete.body["error"]["message"]
    sharepoint = await m365.support("PUT", f"/{unique('rb')}", {"properties": {"customerKey": {
        **request, "workload": "sharepoint"}}})  # fmt: skip
    assert sharepoint.status == 400 and "isn't supported for SharePoint" in sharepoint.body["error"]["message"]

    name = unique("rollback")
    body = {"properties": {"title": "Roll back", "severity": "moderate", "customerKey": request}}
    created = await m365.support("PUT", f"/{name}", body)
    assert created.status == 201
    again = await m365.support("PUT", f"/{name}", {"properties": {"customerKey": {"requestType": "nonsense"}}})
    assert again.status == 200 and again.body == created.body  # the ticket name is the idempotency key

    # The customer removed Microsoft 365's access too early: Microsoft cannot re-wrap, and waits.
    for vault in keys.vaults:
        await kv.revoke(vault, MICROSOFT_365.value, ["unwrapKey"])
    await control.advance_clock(seconds=d.rollback_complete)
    waiting = (await m365.support("GET", f"/{name}")).body["properties"]
    assert waiting["status"] == "Open" and waiting["customerKey"]["stage"] == "waiting-for-customer-keys"
    for vault in keys.vaults:
        await kv.grant(vault, MICROSOFT_365.value, ["unwrapKey"])
    await control.advance_clock(seconds=d.rollback_retry)
    done = (await m365.support("GET", f"/{name}")).body["properties"]
    assert done["status"] == "Closed" and done["customerKey"]["stage"] == "rolled-back"
    [none] = await m365.ok("Get-M365DataAtRestEncryptionPolicyAssignment")
    assert none["Status"] == "NotAssigned"
    pcs = (await m365.graph("GET", "cloudPCs")).body["value"]
    assert {pc["diskEncryptionState"] for pc in pcs} == {"encryptedUsingPlatformManagedKey"}
    messages = (await m365.support("GET", f"/{name}/communications")).body["value"]
    assert [m["properties"]["subject"] for m in messages][-2:] == ["We can't reach your keys", "Rollback complete"]
    # Unassigned now, the policy may be disabled.
    assert await m365.ok("Set-M365DataAtRestEncryptionPolicy", Identity=dep["Name"], Enabled=False) == []
    assert (await m365.ok("Get-M365DataAtRestEncryptionPolicy", Identity=dep["Guid"]))[0]["Enabled"] is False
    disabled = await m365.exo("Set-M365DataAtRestEncryptionPolicyAssignment", DataEncryptionPolicy=dep["Name"])
    assert disabled.status == 400 and "is disabled" in disabled.message


async def test_graph_answers_other_principals_403(m365: M365) -> None:
    answer = await m365.graph("GET", "cloudPCs", principal="bob@contoso.com")
    assert answer.status == 403 and "Intune Administrator" in answer.body["error"]["message"]
