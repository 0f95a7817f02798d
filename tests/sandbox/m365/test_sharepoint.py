"""SharePoint and OneDrive over the SPO endpoint: registration per geo, key rolls, their rules, stalled geos."""

from __future__ import annotations

from typing import Any

import pytest

from ckey.models import ServicePrincipal
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from tests.sandbox.m365.conftest import M365, SPO_ADMIN, SPO_EUR_ADMIN, DepKeys, new_keys

SHAREPOINT = ServicePrincipal.SHAREPOINT_ONLINE


def register_params(keys: DepKeys) -> dict[str, str]:
    return {
        "PrimaryKeyVaultName": keys.vaults[0],
        "PrimaryKeyName": keys.names[0],
        "PrimaryKeyVersion": keys.versions[0],
        "SecondaryKeyVaultName": keys.vaults[1],
        "SecondaryKeyName": keys.names[1],
        "SecondaryKeyVersion": keys.versions[1],
    }


async def policy(m365: M365, host: str = SPO_ADMIN) -> dict[str, Any]:
    [out] = (await m365.spo("Get-SPODataEncryptionPolicy", host=host)).value
    return out


async def geos(m365: M365) -> list[dict[str, Any]]:
    return [await policy(m365, SPO_ADMIN), await policy(m365, SPO_EUR_ADMIN)]


@pytest.fixture(scope="module")
async def nam_keys(kv: SandboxKeyVaultControl) -> DepKeys:
    return await new_keys(kv, [SHAREPOINT])


async def test_registration_advances_site_by_site_to_registered(
    m365: M365, control: SandboxM365Control, nam_keys: DepKeys, tenant: SandboxM365Server
) -> None:
    before = await policy(m365)
    assert before["State"] == "Unregistered" and before["PercentComplete"] == 0 and before["PrimaryKeyUri"] is None
    answer = await m365.spo("Register-SPODataEncryptionPolicy", **register_params(nam_keys))
    assert answer.status == 200 and answer.value == []
    per_site = tenant.sandbox.core.durations.spo_site_register
    seen = []
    for _ in range(6):
        now = await policy(m365)
        seen.append((now["State"], now["PercentComplete"]))
        await control.advance_clock(seconds=per_site)
    assert seen == [
        ("Registering", 0),
        ("Registering", 25),
        ("Registering", 50),
        ("Registering", 75),
        ("Registered", 100),
        ("Registered", 100),
    ]
    registered = await policy(m365)
    assert registered["PrimaryKeyUri"] == nam_keys.kids[0] and registered["SecondaryKeyUri"] == nam_keys.kids[1]
    assert registered["PrimaryKeyVaultName"] == nam_keys.vaults[0]
    # The sites' keys are wrapped by the geo's DEP key now, which opens through the customer keys.
    site = await control.site_items("https://contoso.sharepoint.com/sites/site-001")
    assert site["readable"] and site["path"] == "customer-key-1"


async def test_key_roll_reports_rolling_then_registered(
    m365: M365, control: SandboxM365Control, kv: SandboxKeyVaultControl, nam_keys: DepKeys, tenant: SandboxM365Server
) -> None:
    assert (await policy(m365))["State"] == "Registered"
    new_version = await kv.create_key(nam_keys.vaults[1], nam_keys.names[1])
    roll = {"KeyVaultName": nam_keys.vaults[1], "KeyName": nam_keys.names[1], "KeyVersion": new_version["version"]}
    answer = await m365.spo("Update-SPODataEncryptionPolicy", KeyType="Secondary", **roll)
    assert answer.status == 200, answer.body
    before = await geos(m365)
    # One roll at a time: another is refused while this one runs, and nothing changes.
    again = await m365.spo("Update-SPODataEncryptionPolicy", KeyType="Primary", **roll)
    assert again.status == 400 and "Rolling" in again.message
    assert await geos(m365) == before
    per_site = tenant.sandbox.core.durations.spo_site_roll
    seen = []
    for _ in range(5):
        now = await policy(m365)
        seen.append((now["State"], now["PercentComplete"]))
        await control.advance_clock(seconds=per_site)
    assert seen == [("Rolling", 0), ("Rolling", 25), ("Rolling", 50), ("Rolling", 75), ("Registered", 100)]
    rolled = await policy(m365)
    assert rolled["SecondaryKeyUri"] == new_version["kid"] and rolled["PrimaryKeyUri"] == nam_keys.kids[0]
    # The DEP key is wrapped by the new version: with the first vault down, the second key (new version) serves.
    await kv.set_faults(nam_keys.vaults[0], down=True)
    try:
        site = await control.site_items("https://contoso.sharepoint.com/sites/site-002")
        assert site["readable"] and site["path"] == "customer-key-2"
    finally:
        await kv.set_faults(nam_keys.vaults[0], down=False)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("registered twice", "already registered"),
        ("same vault", "two different Azure Key Vaults"),
        ("not granted", "Office 365 SharePoint Online"),
        ("unknown geo", "isn't the SharePoint admin site"),
        ("bad key type", "Possible values: Primary, Secondary"),
        ("roll unregistered", "No data encryption policy is registered"),
        ("roll into the other vault", "another Azure Key Vault"),
    ],
)
async def test_refusals_change_nothing(
    m365: M365, kv: SandboxKeyVaultControl, nam_keys: DepKeys, case: str, expected: str
) -> None:
    before = await geos(m365)
    params = register_params(nam_keys)
    if case == "registered twice":
        answer = await m365.spo("Register-SPODataEncryptionPolicy", **params)
    elif case == "same vault":
        params["SecondaryKeyVaultName"] = params["PrimaryKeyVaultName"]
        answer = await m365.spo("Register-SPODataEncryptionPolicy", host=SPO_EUR_ADMIN, **params)
    elif case == "not granted":
        exchange_only = await new_keys(kv, [ServicePrincipal.EXCHANGE_ONLINE])
        answer = await m365.spo(
            "Register-SPODataEncryptionPolicy", host=SPO_EUR_ADMIN, **register_params(exchange_only)
        )
    elif case == "unknown geo":
        answer = await m365.spo("Get-SPODataEncryptionPolicy", Identity="https://fabrikam-admin.sharepoint.com")
    else:
        roll = {"KeyVaultName": nam_keys.vaults[0], "KeyName": nam_keys.names[0], "KeyVersion": nam_keys.versions[0]}
        host, key_type = SPO_ADMIN, "Primary"
        if case == "bad key type":
            key_type = "Tertiary"
        elif case == "roll unregistered":
            host = SPO_EUR_ADMIN
        else:
            key_type = "Secondary"  # the secondary key may not move into the primary key's vault
        answer = await m365.spo("Update-SPODataEncryptionPolicy", host=host, KeyType=key_type, **roll)
    assert answer.status == 400, answer.body
    assert expected in answer.message
    assert await geos(m365) == before


async def test_a_stalled_geo_makes_no_progress_until_released(
    m365: M365, control: SandboxM365Control, kv: SandboxKeyVaultControl, tenant: SandboxM365Server
) -> None:
    per_site = tenant.sandbox.core.durations.spo_site_register
    keys = await new_keys(kv, [SHAREPOINT])
    # The EUR geo, addressed through its own admin host, as a multi-geo tenant does.
    answer = await m365.spo("Register-SPODataEncryptionPolicy", host=SPO_EUR_ADMIN, **register_params(keys))
    assert answer.status == 200, answer.body
    await control.advance_clock(seconds=per_site)
    assert (await policy(m365, SPO_EUR_ADMIN))["PercentComplete"] == 25
    await control.set_faults(stalled_geos=["EUR"])
    await control.advance_clock(days=2)
    stalled = await policy(m365, SPO_EUR_ADMIN)
    assert (stalled["State"], stalled["PercentComplete"]) == ("Registering", 25)
    await control.set_faults()
    await control.advance_clock(seconds=per_site)
    assert (await policy(m365, SPO_EUR_ADMIN))["PercentComplete"] == 50
    await control.advance_clock(seconds=2 * per_site)
    assert (await policy(m365, SPO_EUR_ADMIN))["State"] == "Registered"


async def test_only_the_admin_may_run_spo_cmdlets(m365: M365) -> None:
    answer = await m365.spo("Get-SPODataEncryptionPolicy", principal="bob@contoso.com")
    assert answer.status == 403 and answer.body["error"]["code"] == "AccessDenied"
    assert "SharePoint Administrator" in answer.message
    unknown = await m365.spo("Unregister-SPODataEncryptionPolicy")
    assert unknown.status == 400 and "is not recognized" in unknown.message
