"""Where each cmdlet goes: SharePoint through the geo's admin site, and through its own transport."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ckey.azure import AzureConnection
from ckey.config import M365Transport, SettingsError, load_settings
from ckey.m365 import (
    Cmdlet,
    Endpoint,
    InvokeCommandTransport,
    M365Gateway,
    PwshTransport,
    RoutedTransport,
    build_transport,
)
from ckey.models import SpoKeyRef

EUR = "https://contosoeur-admin.sharepoint.com"


def test_sharepoint_goes_through_pwsh_in_production_and_the_stand_in_in_the_sandbox() -> None:
    production = load_settings(_env_file=None, sandbox=False)
    assert production.resolved_spo_transport is M365Transport.PWSH
    sandbox = load_settings(_env_file=None, sandbox=True)
    assert sandbox.resolved_spo_transport is M365Transport.INVOKE_COMMAND
    chosen = load_settings(_env_file=None, sandbox=True, m365_spo_transport="pwsh")
    assert chosen.resolved_spo_transport is M365Transport.PWSH

    connection = AzureConnection(production)
    routed = build_transport(production, connection)
    assert isinstance(routed, RoutedTransport)
    assert isinstance(routed.routes[Endpoint.EXCHANGE], InvokeCommandTransport)
    assert isinstance(routed.routes[Endpoint.SHAREPOINT], PwshTransport)
    assert isinstance(build_transport(sandbox, AzureConnection(sandbox)), InvokeCommandTransport)


@pytest.mark.parametrize(
    ("geos", "rule"),
    [
        ({"nam": "https://contoso-admin.sharepoint.com"}, "three capital letters"),
        ({"NAM": "http://contoso-admin.sharepoint.com"}, "admin site"),
        ({"NAM": "https://contoso-admin.sharepoint.com/sites/x"}, "admin site"),
        ({"NAM": "https://evil.example/contoso-admin.sharepoint.com"}, "admin site"),
        ({"NAM": "https://contoso.sharepoint.com"}, "admin site"),
    ],
)
def test_a_geo_map_names_admin_sites_only(geos: dict[str, str], rule: str) -> None:
    with pytest.raises(SettingsError, match=rule):
        load_settings(_env_file=None, spo_geo_admin_urls=geos)


def test_pwsh_connects_to_the_geos_admin_site() -> None:
    settings = load_settings(_env_file=None)
    transport = PwshTransport(settings)
    cmdlet = Cmdlet("Get-SPODataEncryptionPolicy", {"Identity": EUR}, endpoint=Endpoint.SHAREPOINT, admin_url=EUR)
    assert b'"Url": "https://contosoeur-admin.sharepoint.com"' in transport.stdin(cmdlet)
    default = Cmdlet("Get-SPODataEncryptionPolicy", endpoint=Endpoint.SHAREPOINT)
    assert settings.m365_spo_admin_url.encode() in transport.stdin(default)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Cmdlet] = []

    async def invoke(self, cmdlet: Cmdlet) -> list[dict[str, Any]]:
        self.calls.append(cmdlet)
        return [{"State": "Registered", "Geo": "EUR"}]


async def test_spo_cmdlets_name_the_geo_and_keep_the_key_parts_apart() -> None:
    exchange, sharepoint = Recorder(), Recorder()
    gateway = M365Gateway(RoutedTransport({Endpoint.EXCHANGE: exchange, Endpoint.SHAREPOINT: sharepoint}))
    key = SpoKeyRef(vault="contoso-eu-kv1", key="spo-key-01", version="0" * 32)
    other = SpoKeyRef(vault="contoso-eu-kv2", key="spo-key-02", version="1" * 32)
    await gateway.register_spo_data_encryption_policy(EUR, key, other)
    await gateway.update_spo_data_encryption_policy(EUR, "Primary", key)
    policy = await gateway.get_spo_data_encryption_policy(EUR)
    assert policy.state == "Registered"
    assert exchange.calls == []
    assert [c.admin_url for c in sharepoint.calls] == [EUR] * 3
    assert sharepoint.calls[0].render() == (
        "Register-SPODataEncryptionPolicy -Identity https://contosoeur-admin.sharepoint.com "
        f"-PrimaryKeyVaultName contoso-eu-kv1 -PrimaryKeyName spo-key-01 -PrimaryKeyVersion {'0' * 32} "
        f"-SecondaryKeyVaultName contoso-eu-kv2 -SecondaryKeyName spo-key-02 -SecondaryKeyVersion {'1' * 32}"
    )
    await gateway.set_m365_data_at_rest_encryption_policy("Contoso_Global", refresh=True)
    assert exchange.calls[-1].render() == "Set-M365DataAtRestEncryptionPolicy -Identity Contoso_Global -Refresh"


def test_a_spo_key_reference_is_bounded() -> None:
    for bad in ({"vault": "a", "key": "k", "version": "0" * 32}, {"vault": "kv-one", "key": "k/..", "version": "0"}):
        with pytest.raises(ValidationError):
            SpoKeyRef.model_validate(bad)
    with pytest.raises(ValidationError):
        SpoKeyRef.model_validate({"vault": "kv-one", "key": "k", "version": "0" * 32, "extra": 1})
