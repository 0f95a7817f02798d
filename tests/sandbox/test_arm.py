"""The sandbox's Resource Manager subset, driven through azure-mgmt-keyvault and azure-mgmt-authorization (aio)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys.aio import KeyClient
from azure.keyvault.keys.crypto import EncryptionAlgorithm, KeyWrapAlgorithm
from azure.keyvault.keys.crypto.aio import CryptographyClient
from azure.mgmt.authorization.aio import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters
from azure.mgmt.keyvault.aio import KeyVaultManagementClient
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    Sku,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
    VaultCreateOrUpdateParameters,
    VaultPatchParameters,
    VaultPatchProperties,
    VaultProperties,
)

from ckey.azure import AzureConnection
from ckey.config import Settings
from sandbox.identity import object_id
from sandbox.keyvault import SandboxKeyVaultControl
from tests.sandbox.conftest import MakeVault, as_principal, inner_code, message, unique

Keys = Callable[..., KeyClient]
Crypto = Callable[..., CryptographyClient]
SERVICE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"


@pytest.fixture
async def mgmt(conn: AzureConnection, kv_settings: Settings) -> AsyncIterator[KeyVaultManagementClient]:
    async with KeyVaultManagementClient(
        conn.credential(), kv_settings.azure_subscription_id, **conn.client_kwargs()
    ) as client:
        yield client


@pytest.fixture
def authorization(conn: AzureConnection, kv_settings: Settings) -> Callable[..., AuthorizationManagementClient]:
    def make(principal: str | None = None) -> AuthorizationManagementClient:
        return AuthorizationManagementClient(
            as_principal(conn, principal), kv_settings.azure_subscription_id, **conn.client_kwargs()
        )

    return make


def entry(settings: Settings, principal: str, keys: list[str]) -> AccessPolicyEntry:
    return AccessPolicyEntry(
        tenant_id=settings.azure_tenant_id,
        object_id=object_id(settings.azure_tenant_id, principal),
        permissions=Permissions(keys_property=keys),
    )


def policies(parameters: Any) -> VaultAccessPolicyParameters:
    return VaultAccessPolicyParameters(properties=VaultAccessPolicyProperties(access_policies=parameters))


async def test_get_and_list_vaults(mgmt: KeyVaultManagementClient, kv_settings: Settings) -> None:
    vault = await mgmt.vaults.get(kv_settings.azure_resource_group, "contoso-eastus-kv1")
    assert vault.id == (
        f"/subscriptions/{kv_settings.azure_subscription_id}/resourceGroups/{kv_settings.azure_resource_group}"
        "/providers/Microsoft.KeyVault/vaults/contoso-eastus-kv1"
    )
    assert vault.location == "eastus" and vault.type == "Microsoft.KeyVault/vaults"
    props = vault.properties
    assert props.vault_uri == "https://contoso-eastus-kv1.vault.azure.net/"
    assert props.tenant_id == kv_settings.azure_tenant_id
    assert props.enable_soft_delete and props.soft_delete_retention_in_days == 90
    assert props.enable_purge_protection is True and props.enable_rbac_authorization is False
    assert props.provisioning_state == "Succeeded"
    exo = object_id(kv_settings.azure_tenant_id, "00000002-0000-0ff1-ce00-000000000000")
    granted = {p.object_id: p.permissions.keys_property for p in props.access_policies or []}
    assert granted[exo] == ["get", "wrapKey", "unwrapKey"]

    in_group = [v.name async for v in mgmt.vaults.list_by_resource_group(kv_settings.azure_resource_group)]
    assert {"contoso-eastus-kv1", "contoso-westus-kv1", "contoso-rbac-kv1"} <= set(in_group)
    everywhere = [v.name async for v in mgmt.vaults.list_by_subscription()]
    assert set(in_group) <= set(everywhere)

    with pytest.raises(ResourceNotFoundError) as missing:
        await mgmt.vaults.get(kv_settings.azure_resource_group, "no-such-vault")
    assert missing.value.error is not None and missing.value.error.code == "ResourceNotFound"


async def test_access_policies_add_and_remove(
    mgmt: KeyVaultManagementClient, kv_settings: Settings, keys: Keys, crypto: Crypto, vault: str
) -> None:
    async with keys(vault) as client:
        key = await client.create_rsa_key("shared")
    rg, app = kv_settings.azure_resource_group, str(uuid.uuid4())
    async with crypto(key, principal=app) as cc:
        wrapped = await cc.wrap_key(KeyWrapAlgorithm.rsa_oaep, b"k" * 32)
        with pytest.raises(HttpResponseError) as before:
            await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)
        assert before.value.status_code == 403

        added = await mgmt.vaults.update_access_policy(
            rg, vault, "add", policies([entry(kv_settings, app, ["get", "wrapKey", "unwrapKey"])])
        )
        assert added.name == "add" and added.properties.access_policies
        assert (await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)).key == b"k" * 32

        await mgmt.vaults.update_access_policy(rg, vault, "remove", policies([entry(kv_settings, app, ["unwrapKey"])]))
        with pytest.raises(HttpResponseError) as after:
            await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)
        assert after.value.status_code == 403
    remaining = (await mgmt.vaults.get(rg, vault)).properties.access_policies or []
    oid = object_id(kv_settings.azure_tenant_id, app)
    assert [p.permissions.keys_property for p in remaining if p.object_id == oid] == [["get", "wrapKey"]]


async def test_purge_protection_is_irreversible_and_retention_changes(
    mgmt: KeyVaultManagementClient, kv_settings: Settings, vault: str
) -> None:
    rg = kv_settings.azure_resource_group
    patch = VaultPatchParameters(properties=VaultPatchProperties(enable_purge_protection=True))
    assert (await mgmt.vaults.update(rg, vault, patch)).properties.enable_purge_protection is True
    with pytest.raises(HttpResponseError) as refused:
        await mgmt.vaults.update(
            rg, vault, VaultPatchParameters(properties=VaultPatchProperties(enable_purge_protection=False))
        )
    assert refused.value.status_code == 400 and refused.value.error is not None
    assert "Enabling the purge protection for a vault is an irreversible action." in message(refused.value)
    changed = await mgmt.vaults.update(
        rg, vault, VaultPatchParameters(properties=VaultPatchProperties(soft_delete_retention_in_days=30))
    )
    assert changed.properties.soft_delete_retention_in_days == 30
    with pytest.raises(HttpResponseError):
        await mgmt.vaults.update(
            rg, vault, VaultPatchParameters(properties=VaultPatchProperties(soft_delete_retention_in_days=3))
        )


async def test_switching_the_permission_model(
    mgmt: KeyVaultManagementClient,
    authorization: Callable[..., AuthorizationManagementClient],
    kv_settings: Settings,
    keys: Keys,
    crypto: Crypto,
    vault: str,
    control: SandboxKeyVaultControl,
) -> None:
    """keyvault.rbac.migrate in miniature: assign the role first, then switch; access never lapses."""
    async with keys(vault) as client:
        key = await client.create_rsa_key("migrating")
    app = str(uuid.uuid4())
    await control.grant(vault, app, ["get", "wrapKey", "unwrapKey"])
    rg, sub = kv_settings.azure_resource_group, kv_settings.azure_subscription_id
    vault_id = (await mgmt.vaults.get(rg, vault)).id
    async with authorization() as auth:
        await auth.role_assignments.create(
            vault_id,
            str(uuid.uuid4()),
            RoleAssignmentCreateParameters(
                role_definition_id=f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/"
                f"{SERVICE_ENCRYPTION_USER}",
                principal_id=object_id(kv_settings.azure_tenant_id, app),
                principal_type="ServicePrincipal",
            ),
        )
    switched = await mgmt.vaults.update(
        rg, vault, VaultPatchParameters(properties=VaultPatchProperties(enable_rbac_authorization=True))
    )
    assert switched.properties.enable_rbac_authorization is True
    async with crypto(key.id, principal=app) as cc:
        wrapped = await cc.wrap_key(KeyWrapAlgorithm.rsa_oaep, b"k" * 32)
        assert (await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)).key == b"k" * 32
    # Access policies no longer count: ckey's own principal has no data role on this vault.
    async with keys(vault) as client:
        with pytest.raises(HttpResponseError) as rbac_only:
            await client.get_key("migrating")
        assert inner_code(rbac_only.value) == "ForbiddenByRbac"


async def test_rbac_vault_needs_a_role_assignment(
    authorization: Callable[..., AuthorizationManagementClient],
    kv_settings: Settings,
    make_vault: MakeVault,
    crypto: Crypto,
    control: SandboxKeyVaultControl,
) -> None:
    vault = await make_vault(rbac=True)
    key = await control.create_key(vault, "rbac-key")
    app = str(uuid.uuid4())
    async with crypto(key["kid"], principal=app) as cc:
        with pytest.raises(HttpResponseError) as denied:
            await cc.encrypt(EncryptionAlgorithm.rsa_oaep, b"x")
        assert denied.value.status_code == 403 and denied.value.error is not None
        assert denied.value.error.code == "Forbidden" and inner_code(denied.value) == "ForbiddenByRbac"
        assert "Action: 'Microsoft.KeyVault/vaults/keys/encrypt/action'" in message(denied.value)

        sub = kv_settings.azure_subscription_id
        scope = (await control.vault(vault))["id"]
        name = str(uuid.uuid4())
        role_id = f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{SERVICE_ENCRYPTION_USER}"
        parameters = RoleAssignmentCreateParameters(
            role_definition_id=role_id,
            principal_id=object_id(kv_settings.azure_tenant_id, app),
            principal_type="ServicePrincipal",
        )
        async with authorization() as auth:
            created = await auth.role_assignments.create(scope, name, parameters)
            assert created.name == name and created.scope == scope and created.role_definition_id == role_id
            assert (await auth.role_assignments.get(scope, name)).principal_id == parameters.principal_id
            listed = [ra.name async for ra in auth.role_assignments.list_for_scope(scope, filter="atScope()")]
            assert name in listed
            definition = await auth.role_definitions.get(scope, SERVICE_ENCRYPTION_USER)
            assert definition.role_name == "Key Vault Crypto Service Encryption User"

            wrapped = await cc.wrap_key(KeyWrapAlgorithm.rsa_oaep, b"k" * 32)
            assert (await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)).key == b"k" * 32
            # The role grants wrap/unwrap and read, not encrypt.
            with pytest.raises(HttpResponseError) as still:
                await cc.decrypt(EncryptionAlgorithm.rsa_oaep, b"\x00" * 256)
            assert inner_code(still.value) == "ForbiddenByRbac"

            await auth.role_assignments.delete(scope, name)
            with pytest.raises(HttpResponseError) as revoked:
                await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)
            assert inner_code(revoked.value) == "ForbiddenByRbac"


async def test_arm_authorizes_with_role_assignments(
    authorization: Callable[..., AuthorizationManagementClient],
    conn: AzureConnection,
    kv_settings: Settings,
    control: SandboxKeyVaultControl,
) -> None:
    outsider = f"{unique('eve')}@contoso.com"
    sub = kv_settings.azure_subscription_id
    async with KeyVaultManagementClient(as_principal(conn, outsider), sub, **conn.client_kwargs()) as mgmt:
        with pytest.raises(HttpResponseError) as refused:
            await mgmt.vaults.get(kv_settings.azure_resource_group, "contoso-eastus-kv1")
        assert refused.value.status_code == 403 and refused.value.error is not None
        assert refused.value.error.code == "AuthorizationFailed"
        assert "'Microsoft.KeyVault/vaults/read'" in message(refused.value)

        await control.assign_role(outsider, "Contributor", scope=f"/subscriptions/{sub}")
        assert (await mgmt.vaults.get(kv_settings.azure_resource_group, "contoso-eastus-kv1")).name
    # A Contributor manages resources but not role assignments.
    async with authorization(outsider) as auth:
        with pytest.raises(HttpResponseError) as not_owner:
            await auth.role_assignments.create(
                f"/subscriptions/{sub}",
                str(uuid.uuid4()),
                RoleAssignmentCreateParameters(
                    role_definition_id=f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/"
                    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
                    principal_id=object_id(kv_settings.azure_tenant_id, outsider),
                ),
            )
        assert not_owner.value.status_code == 403


async def test_create_a_vault_through_arm(
    mgmt: KeyVaultManagementClient, kv_settings: Settings, keys: Keys, control: SandboxKeyVaultControl
) -> None:
    name = unique("arm")
    parameters = VaultCreateOrUpdateParameters(
        location="westeurope",
        properties=VaultProperties(
            tenant_id=kv_settings.azure_tenant_id,
            sku=Sku(family="A", name="premium"),
            enable_purge_protection=True,
            soft_delete_retention_in_days=90,
            access_policies=[entry(kv_settings, kv_settings.azure_principal, ["all"])],
        ),
    )
    poller = await mgmt.vaults.begin_create_or_update(kv_settings.azure_resource_group, name, parameters)
    vault = await poller.result()
    assert vault.name == name and vault.location == "westeurope"
    # api-version 2026-05-15: a vault created without enableRbacAuthorization uses Azure RBAC.
    assert vault.properties.enable_rbac_authorization is True
    await control.assign_role(kv_settings.azure_principal, "Key Vault Crypto Officer", vault=name)
    async with keys(name) as client:
        key = await client.create_rsa_key("from-arm")
    assert key.properties.recovery_level == "Recoverable"
