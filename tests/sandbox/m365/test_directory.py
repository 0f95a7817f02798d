"""The sandbox's Microsoft Graph directory: the user and service principal lookups ckey makes."""

from __future__ import annotations

from typing import Any

from ckey.config import Settings
from sandbox.entra import automation_app
from sandbox.identity import object_id
from sandbox.m365.control import SandboxM365Control
from tests.sandbox.m365.conftest import GRAPH, M365


async def lookup(m365: M365, path: str, principal: str | None = None) -> Any:
    return await m365.request("GET", f"{GRAPH}/v1.0/{path}", resource=GRAPH, principal=principal)


async def test_users_and_service_principals_resolve_to_the_object_ids_of_their_tokens(
    m365: M365, settings_m365: Settings
) -> None:
    tenant = settings_m365.azure_tenant_id
    user = await lookup(m365, "users/alice%40contoso.com?$select=id")
    quoted = await lookup(m365, "users('$bob@contoso.com')")
    exo = await lookup(m365, "servicePrincipals(appId='00000002-0000-0ff1-ce00-000000000000')")
    app = automation_app(settings_m365.data_dir, settings_m365.azure_principal)
    own = await lookup(m365, f"servicePrincipals(appId='{app.client_id}')")
    assert user.status == 200 and user.body["id"] == object_id(tenant, "alice@contoso.com")
    assert "userPrincipalName" not in user.body  # $select=id
    assert quoted.body["id"] == object_id(tenant, "$bob@contoso.com")
    assert exo.body["displayName"] == "Office 365 Exchange Online"
    assert own.body["id"] == object_id(tenant, settings_m365.azure_principal)


async def test_unknown_objects_are_404_and_other_callers_403(m365: M365) -> None:
    unknown_app = await lookup(m365, "servicePrincipals(appId='11111111-2222-4333-8444-555555555555')")
    not_a_upn = await lookup(m365, "users/nobody")
    other = await lookup(m365, "users/alice%40contoso.com", principal="mallory@contoso.com")
    assert (unknown_app.status, unknown_app.body["error"]["code"]) == (404, "Request_ResourceNotFound")
    assert not_a_upn.status == 404
    assert other.status == 403


async def test_directory_lookups_do_not_spend_injected_faults(m365: M365, control: SandboxM365Control) -> None:
    await control.set_faults(fail_next=1)
    user = await lookup(m365, "users/alice%40contoso.com")
    cloud_pcs = await m365.graph("GET", "cloudPCs")
    assert user.status == 200
    assert cloud_pcs.status >= 500


async def test_get_by_ids_names_users_and_service_principals_and_leaves_unknown_ids_out(
    m365: M365, settings_m365: Settings
) -> None:
    tenant = settings_m365.azure_tenant_id
    exo = "00000002-0000-0ff1-ce00-000000000000"
    ids = [object_id(tenant, p) for p in ("alice@contoso.com", exo, "never-seen@contoso.com")]
    url = f"{GRAPH}/v1.0/directoryObjects/getByIds"
    found = await m365.request("POST", url, resource=GRAPH, json={"ids": ids, "types": ["user", "servicePrincipal"]})
    assert found.status == 200, found.body
    assert found.body["@odata.context"].endswith("$metadata#directoryObjects")
    named = {o["id"]: o for o in found.body["value"]}
    assert set(named) == set(ids[:2])
    assert named[ids[0]]["@odata.type"] == "#microsoft.graph.user"
    assert named[ids[0]]["userPrincipalName"] == "alice@contoso.com"
    assert (named[ids[1]]["@odata.type"], named[ids[1]]["appId"]) == ("#microsoft.graph.servicePrincipal", exo)
    bad = await m365.request("POST", url, resource=GRAPH, json={"ids": "not-a-list"})
    other = await m365.request("POST", url, resource=GRAPH, json={"ids": ids}, principal="mallory@contoso.com")
    assert bad.status == 400 and other.status == 403
