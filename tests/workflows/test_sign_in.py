"""ckey's production sign-in and directory code against the sandbox: only name resolution and the CA differ."""

from __future__ import annotations

import httpx
import pytest
from azure.identity.aio import CertificateCredential, ClientSecretCredential, DefaultAzureCredential

from ckey.azure import AzureConnection, SandboxSignInError
from ckey.config import Settings
from ckey.keyvault import OWN_NAME, SERVICE_PRINCIPAL_NAMES, Directory, KeyVaultError
from ckey.models import ServicePrincipal
from sandbox.entra import certificate_path
from sandbox.identity import object_id
from sandbox.m365.server import SandboxM365Server


async def test_the_directory_asks_the_sandboxs_graph_with_a_client_secret_credential(
    stack_settings: Settings, azure: AzureConnection, tenant_server: SandboxM365Server
) -> None:
    directory = Directory(azure)
    tenant = stack_settings.azure_tenant_id
    assert isinstance(azure.credential(), ClientSecretCredential)
    assert await directory.object_id("carol@contoso.com") == object_id(tenant, "carol@contoso.com")
    exo = ServicePrincipal.EXCHANGE_ONLINE.value
    assert await directory.object_id(exo) == object_id(tenant, exo)
    with pytest.raises(KeyVaultError) as unknown:
        await directory.object_id("11111111-2222-4333-8444-555555555555")
    assert unknown.value.status == 404
    names = await directory.known_names()
    # ckey's own principal is found by its app registration's client id, as in production.
    assert names[object_id(tenant, stack_settings.azure_principal)] == OWN_NAME
    assert names[object_id(tenant, exo)] == SERVICE_PRINCIPAL_NAMES[exo]


async def test_a_host_the_sandbox_does_not_serve_is_not_reached(azure: AzureConnection) -> None:
    async with httpx.AsyncClient(transport=azure.httpx_transport()) as http:
        with pytest.raises(httpx.ConnectError, match="not served by the local stack"):
            await http.get("https://example.com/")


async def test_a_certificate_signs_ckey_in_as_well(stack_settings: Settings, tenant_server: SandboxM365Server) -> None:
    client_id = stack_settings.azure_client_id
    assert client_id is not None
    settings = stack_settings.model_copy(
        update={
            "azure_client_secret": None,
            "azure_client_certificate_path": certificate_path(stack_settings.data_dir, client_id),
        }
    )
    async with AzureConnection(settings) as azure:
        assert isinstance(azure.credential(), CertificateCredential)
        oid = await Directory(azure).object_id("carol@contoso.com")
    assert oid == object_id(settings.azure_tenant_id, "carol@contoso.com")


async def test_without_an_app_registration_ckey_uses_default_azure_credential(stack_settings: Settings) -> None:
    settings = stack_settings.model_copy(
        update={"azure_client_id": None, "azure_client_secret": None, "sandbox": False}
    )
    async with AzureConnection(settings) as azure:
        assert isinstance(azure.credential(), DefaultAzureCredential)
        assert azure.client_kwargs() == {} and azure.httpx_transport() is None


async def test_sandbox_mode_without_an_app_registration_refuses_to_sign_in(stack_settings: Settings) -> None:
    # DefaultAzureCredential would go to the instance metadata service, outside the sandbox.
    settings = stack_settings.model_copy(update={"azure_client_id": None, "azure_client_secret": None})
    async with AzureConnection(settings) as azure:
        with pytest.raises(SandboxSignInError, match="CKEY_AZURE_CLIENT_ID"):
            azure.credential()
