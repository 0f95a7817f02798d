"""The sandbox's Microsoft Entra ID, reached by azure-identity's own credential as ckey reaches Azure."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx
import jwt
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity.aio import CertificateCredential, ClientSecretCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ckey.azure import AzureConnection
from ckey.config import Settings
from sandbox.entra import automation_app, certificate_path, create_app_certificate
from sandbox.identity import SandboxIdentity
from sandbox.keyvault import SandboxKeyVaultServer
from sandbox.tls import client_ssl_context


def credential(settings: Settings, conn: AzureConnection, secret: str | None = None) -> ClientSecretCredential:
    app = automation_app(settings.data_dir, settings.azure_principal)
    return ClientSecretCredential(
        settings.azure_tenant_id,
        app.client_id,
        secret or app.client_secret,
        authority="login.microsoftonline.com",
        **conn.client_kwargs(),
    )


async def test_client_secret_credential_gets_a_token_the_sandbox_accepts(
    kv_settings: Settings, kv_server: SandboxKeyVaultServer, conn: AzureConnection
) -> None:
    async with credential(kv_settings, conn) as cred:
        token = await cred.get_token("https://vault.azure.net/.default")
    caller = SandboxIdentity(kv_settings.sandbox_identity_key_path, kv_settings.azure_tenant_id).verify(
        token.token, "https://vault.azure.net"
    )
    assert caller.principal == kv_settings.azure_principal
    assert jwt.get_unverified_header(token.token)["kid"]


async def test_a_wrong_secret_is_refused_as_entra_refuses_it(
    kv_settings: Settings, kv_server: SandboxKeyVaultServer, conn: AzureConnection
) -> None:
    async with credential(kv_settings, conn, secret="not-the-secret") as cred:
        with pytest.raises(ClientAuthenticationError, match="AADSTS7000215"):
            await cred.get_token("https://vault.azure.net/.default")


async def test_discovery_documents(kv_settings: Settings, kv_server: SandboxKeyVaultServer) -> None:
    base = f"https://localhost:{kv_settings.sandbox_keyvault_port}"
    tenant = kv_settings.azure_tenant_id
    async with httpx.AsyncClient(verify=client_ssl_context(kv_settings.resolved_ca_file)) as http:
        host = {"Host": "login.microsoftonline.com"}
        config = (await http.get(f"{base}/{tenant}/v2.0/.well-known/openid-configuration", headers=host)).json()
        instance = await http.get(
            f"{base}/common/discovery/instance",
            params={
                "api-version": "1.1",
                "authorization_endpoint": "https://login.microsoftonline.com/common/oauth2/authorize",
            },
            headers=host,
        )
        keys = (await http.get(f"{base}/{tenant}/discovery/v2.0/keys", headers=host)).json()
        unknown = await http.get(f"{base}/other-tenant/v2.0/.well-known/openid-configuration", headers=host)
    assert config["token_endpoint"] == f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
    assert "login.microsoftonline.com" in instance.json()["metadata"][0]["aliases"]
    assert keys["keys"][0]["kty"] == "RSA"
    assert unknown.status_code == 400 and unknown.json()["error_codes"] == [90002]


async def test_the_token_endpoint_refuses_an_unknown_client_and_a_scope_without_default(
    kv_settings: Settings, kv_server: SandboxKeyVaultServer
) -> None:
    app = automation_app(kv_settings.data_dir, kv_settings.azure_principal)
    url = f"https://localhost:{kv_settings.sandbox_keyvault_port}/{kv_settings.azure_tenant_id}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": app.client_id, "client_secret": app.client_secret}
    async with httpx.AsyncClient(verify=client_ssl_context(kv_settings.resolved_ca_file)) as http:
        host = {"Host": "login.microsoftonline.com"}
        unknown = await http.post(
            url,
            data=form
            | {"client_id": "0" * 8 + "-0000-4000-8000-" + "0" * 12, "scope": "https://vault.azure.net/.default"},
            headers=host,
        )
        bad_scope = await http.post(url, data=form | {"scope": "https://vault.azure.net/keys.read"}, headers=host)
        ok = await http.post(url, data=form | {"scope": "https://management.azure.com/.default"}, headers=host)
    assert unknown.json()["error_codes"] == [700016]
    assert bad_scope.json()["error"] == "invalid_scope"
    assert ok.status_code == 200 and ok.json()["token_type"] == "Bearer"


async def test_certificate_credential_signs_in_with_a_client_assertion(
    kv_settings: Settings, kv_server: SandboxKeyVaultServer, conn: AzureConnection
) -> None:
    app = automation_app(kv_settings.data_dir, kv_settings.azure_principal)
    path = certificate_path(kv_settings.data_dir, app.client_id)
    assert path.stat().st_mode & 0o777 == 0o600
    async with CertificateCredential(
        kv_settings.azure_tenant_id,
        app.client_id,
        certificate_path=str(path),
        authority="login.microsoftonline.com",
        **conn.client_kwargs(),
    ) as cred:
        token = await cred.get_token("https://management.azure.com/.default")
    caller = SandboxIdentity(kv_settings.sandbox_identity_key_path, kv_settings.azure_tenant_id).verify(
        token.token, "https://management.azure.com"
    )
    assert caller.principal == kv_settings.azure_principal


async def test_a_certificate_the_app_does_not_hold_is_refused(
    kv_settings: Settings, kv_server: SandboxKeyVaultServer, conn: AzureConnection, tmp_path: Path
) -> None:
    app = automation_app(kv_settings.data_dir, kv_settings.azure_principal)
    # Another certificate, under the same subject: only the registered one's key signs the app in.
    other = certificate_path(tmp_path, app.client_id)
    create_app_certificate(other, app.client_id)
    async with CertificateCredential(
        kv_settings.azure_tenant_id,
        app.client_id,
        certificate_path=str(other),
        authority="login.microsoftonline.com",
        **conn.client_kwargs(),
    ) as cred:
        with pytest.raises(ClientAuthenticationError, match="AADSTS700027"):
            await cred.get_token("https://vault.azure.net/.default")


async def test_an_assertion_for_another_audience_is_refused(
    kv_settings: Settings, kv_server: SandboxKeyVaultServer
) -> None:
    app = automation_app(kv_settings.data_dir, kv_settings.azure_principal)
    pem = certificate_path(kv_settings.data_dir, app.client_id).read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    cert = x509.load_pem_x509_certificate(pem)
    thumbprint = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).decode()
    now = int(time.time())
    claims = {"iss": app.client_id, "sub": app.client_id, "jti": "x", "nbf": now, "exp": now + 600}
    url = f"https://localhost:{kv_settings.sandbox_keyvault_port}/{kv_settings.azure_tenant_id}/oauth2/v2.0/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": app.client_id,
        "scope": "https://vault.azure.net/.default",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
    }
    answers = []
    async with httpx.AsyncClient(verify=client_ssl_context(kv_settings.resolved_ca_file)) as http:
        for audience in (
            "https://login.microsoftonline.com/other/oauth2/v2.0/token",
            url.replace(f"localhost:{kv_settings.sandbox_keyvault_port}", "login.microsoftonline.com"),
        ):
            assertion = jwt.encode(
                claims | {"aud": audience},
                key,
                algorithm="PS256",
                headers={"x5t#S256": thumbprint},
            )
            answers.append(
                await http.post(
                    url, data=form | {"client_assertion": assertion}, headers={"Host": "login.microsoftonline.com"}
                )
            )
    assert answers[0].status_code == 401 and answers[0].json()["error_codes"] == [700027]
    assert answers[1].status_code == 200


def test_the_directory_names_object_ids_as_graph_get_by_ids_does() -> None:
    from sandbox.entra import AppRegistration, SandboxDirectory
    from sandbox.identity import object_id
    from sandbox.vocabulary import ServicePrincipal

    tenant = "72f988bf-0000-4000-8000-00000000c0de"
    app = AppRegistration("11111111-2222-4333-8444-555555555555", "s", "ckey-automation@contoso.com", "ckey automation")
    directory = SandboxDirectory(tenant, [app])
    directory.user("bob@contoso.com")  # looked up once: known by object id from then on
    exo = ServicePrincipal.EXCHANGE_ONLINE.value
    ids = [object_id(tenant, p) for p in ("alice@contoso.com", "bob@contoso.com", exo, "nobody@contoso.com")]
    found = directory.by_ids(ids, ["user", "servicePrincipal"])
    assert [(o["@odata.type"], o.get("userPrincipalName"), o.get("appId")) for o in found] == [
        ("#microsoft.graph.user", "alice@contoso.com", None),
        ("#microsoft.graph.user", "bob@contoso.com", None),
        ("#microsoft.graph.servicePrincipal", None, exo),
    ]
    assert all("@odata.context" not in o for o in found)
    assert found[2]["displayName"] == "Office 365 Exchange Online"
    assert directory.by_ids(ids, ["servicePrincipal"])[0]["appId"] == exo
    # ckey's app signs in as its automation principal: its object id is named.
    assert directory.by_ids([object_id(tenant, app.principal)])[0]["userPrincipalName"] == app.principal
