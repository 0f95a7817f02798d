"""Register-, Update- and Restore-SPODataEncryptionPolicy: both of Microsoft's parameter sets, and recovery mode."""

from __future__ import annotations

from typing import Any

import pytest

from ckey.models import ServicePrincipal
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from tests.sandbox.m365.conftest import M365, SPO_ADMIN, SPO_EUR_ADMIN, DepKeys, new_keys
from tests.sandbox.m365.test_sharepoint import register_params

SHAREPOINT = ServicePrincipal.SHAREPOINT_ONLINE


async def policy(m365: M365, host: str = SPO_ADMIN) -> dict[str, Any]:
    [out] = (await m365.spo("Get-SPODataEncryptionPolicy", host=host)).value
    return out


def uri_params(keys: DepKeys) -> dict[str, str]:
    return {"PrimaryKeyVaultUri": keys.kids[0], "SecondaryKeyVaultUri": keys.kids[1]}


async def registered(m365: M365, control: SandboxM365Control, tenant: SandboxM365Server, host: str) -> None:
    await control.advance_clock(seconds=tenant.sandbox.core.durations.spo_site_register * 10)
    assert (await policy(m365, host))["State"] == "Registered"


async def test_register_by_key_uris_and_update_by_key_uri(
    m365: M365, control: SandboxM365Control, kv: SandboxKeyVaultControl, tenant: SandboxM365Server
) -> None:
    keys = await new_keys(kv, [SHAREPOINT])
    answer = await m365.spo("Register-SPODataEncryptionPolicy", host=SPO_EUR_ADMIN, **uri_params(keys))
    assert answer.status == 200, answer.body
    got = await policy(m365, SPO_EUR_ADMIN)
    assert (got["State"], got["PrimaryKeyUri"], got["SecondaryKeyUri"]) == ("Registering", *keys.kids)
    await registered(m365, control, tenant, SPO_EUR_ADMIN)
    new = await kv.create_key(keys.vaults[0], keys.names[0])
    answer = await m365.spo(
        "Update-SPODataEncryptionPolicy", host=SPO_EUR_ADMIN, KeyType="Primary", KeyVaultUri=new["kid"]
    )
    assert answer.status == 200, answer.body
    got = await policy(m365, SPO_EUR_ADMIN)
    assert (got["State"], got["RollingKeyType"], got["PrimaryKeyUri"]) == ("Rolling", "Primary", new["kid"])


@pytest.mark.parametrize(
    ("cmdlet", "params", "expected"),
    [
        (
            "Register-SPODataEncryptionPolicy",
            {"PrimaryKeyVaultUri": "x", "PrimaryKeyVaultName": "v"},
            "cannot be resolved",
        ),
        (
            "Register-SPODataEncryptionPolicy",
            {"PrimaryKeyVaultUri": "x"},
            "missing mandatory parameters: SecondaryKeyVaultUri",
        ),
        ("Register-SPODataEncryptionPolicy", {}, "missing mandatory parameters: PrimaryKeyVaultName"),
        ("Update-SPODataEncryptionPolicy", {"KeyVaultUri": "x"}, "missing mandatory parameters: KeyType"),
        (
            "Update-SPODataEncryptionPolicy",
            {"KeyType": "Primary", "KeyVaultUri": "x", "KeyName": "k"},
            "cannot be resolved",
        ),
        (
            "Restore-SPODataEncryptionPolicy",
            {"SecondaryKeyVaultUri": "x"},
            "missing mandatory parameters: PrimaryKeyVaultUri",
        ),
        ("Restore-SPODataEncryptionPolicy", {"KeyVaultUri": "x"}, "cannot be found that matches"),
    ],
)
async def test_parameter_sets_are_bound_as_powershell_binds_them(
    m365: M365, cmdlet: str, params: dict[str, str], expected: str
) -> None:
    before = await policy(m365)
    answer = await m365.spo(cmdlet, **params)
    assert answer.status == 400 and expected in answer.message, answer.body
    assert "ParameterBindingException" in answer.body["error"]["message"] or expected in answer.message
    assert await policy(m365) == before


async def test_a_key_uri_without_its_version_is_refused(m365: M365, kv: SandboxKeyVaultControl) -> None:
    keys = await new_keys(kv, [SHAREPOINT])
    answer = await m365.spo(
        "Register-SPODataEncryptionPolicy", host=SPO_ADMIN, **{**uri_params(keys), "PrimaryKeyVaultUri": keys.uris[0]}
    )
    assert answer.status == 400 and "names no key version" in answer.message


async def test_restore_only_in_recovery_mode_then_registers_under_the_new_keys(
    m365: M365, control: SandboxM365Control, kv: SandboxKeyVaultControl, tenant: SandboxM365Server
) -> None:
    lost = await new_keys(kv, [SHAREPOINT])
    assert (await m365.spo("Register-SPODataEncryptionPolicy", **register_params(lost))).status == 200
    await registered(m365, control, tenant, SPO_ADMIN)
    fresh = await new_keys(kv, [SHAREPOINT])
    # Registered, not in recovery: refused, nothing changes.
    before = await policy(m365)
    refused = await m365.spo("Restore-SPODataEncryptionPolicy", **register_params(fresh))
    assert refused.status == 400 and "isn't in recovery mode" in refused.message
    assert await policy(m365) == before
    # Microsoft recovers only a geo whose keys were lost.
    with pytest.raises(Exception, match="still open its DEP key"):
        await control.recover_geo("NAM")
    assert (await policy(m365))["State"] == "Registered"
    # The customer loses access to its keys; Microsoft recovers the geo with the availability key.
    for vault in lost.vaults:
        await kv.revoke(vault, SHAREPOINT.value)
    await control.recover_geo("NAM")
    recovery = await policy(m365)
    assert (recovery["State"], recovery["PrimaryKeyUri"]) == ("Recovery", lost.kids[0])
    # Both keys in one vault: refused in recovery too.
    one_vault = {**uri_params(fresh), "SecondaryKeyVaultUri": fresh.kids[0]}
    assert (await m365.spo("Restore-SPODataEncryptionPolicy", **one_vault)).status == 400
    assert (await policy(m365))["State"] == "Recovery"
    answer = await m365.spo("Restore-SPODataEncryptionPolicy", **uri_params(fresh))
    assert answer.status == 200, answer.body
    restored = await policy(m365)
    assert (restored["State"], restored["PrimaryKeyUri"], restored["SecondaryKeyUri"]) == ("Registering", *fresh.kids)
    await registered(m365, control, tenant, SPO_ADMIN)
    site = await control.site_items("https://contoso.sharepoint.com/sites/site-001")
    assert site["readable"] and site["path"] == "customer-key-1"
