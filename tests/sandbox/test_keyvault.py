"""The sandbox Key Vault's data plane, driven only through azure-keyvault-keys (aio) as ckey drives it."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.core.rest import HttpRequest
from azure.keyvault.keys import JsonWebKey, KeyRotationLifetimeAction, KeyRotationPolicy, KeyRotationPolicyAction
from azure.keyvault.keys.aio import KeyClient
from azure.keyvault.keys.crypto import EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm
from azure.keyvault.keys.crypto.aio import CryptographyClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ckey.azure import AzureConnection
from ckey.models import ServicePrincipal
from sandbox.keyvault import SandboxKeyVaultControl
from tests.sandbox.conftest import MakeVault, header, inner_code, message, modulus, unique, vault_url

Keys = Callable[..., KeyClient]
Crypto = Callable[..., CryptographyClient]
CEK = os.urandom(32)
"""A content-encryption key to wrap, as Microsoft 365 wraps its data encryption keys."""


async def test_create_get_and_list_like_the_real_service(keys: Keys, vault: str) -> None:
    async with keys(vault) as client:
        created = await client.create_rsa_key("key-a", size=2048, tags={"workload": "exchange"})
        assert created.id.startswith(f"https://{vault}.vault.azure.net/keys/key-a/")
        assert len(created.properties.version or "") == 32
        assert created.key_type == "RSA"
        assert len(modulus(created)) == 256
        assert created.key_operations == ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
        assert created.properties.recovery_level == "Recoverable+Purgeable"
        assert created.properties.recoverable_days == 90
        assert created.properties.tags == {"workload": "exchange"}

        latest = await client.get_key("key-a")
        assert latest.id == created.id
        exact = await client.get_key("key-a", created.properties.version)
        assert modulus(exact) == modulus(created)
        hsm = await client.create_rsa_key("key-b", size=3072, hardware_protected=True)
        assert hsm.key_type == "RSA-HSM" and len(modulus(hsm)) == 384

        names = [k.name async for k in client.list_properties_of_keys()]
        assert names == ["key-a", "key-b"]

        with pytest.raises(ResourceNotFoundError) as missing:
            await client.get_key("nope")
        assert missing.value.error is not None and missing.value.error.code == "KeyNotFound"
        assert "A key with (name/id) nope was not found in this key vault" in str(missing.value)


async def test_import_an_rsa_key(keys: Keys, crypto: Crypto, vault: str) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = private.private_numbers()

    def raw(value: int) -> bytes:
        return value.to_bytes((value.bit_length() + 7) // 8, "big")

    jwk = JsonWebKey(
        kty="RSA",
        n=raw(numbers.public_numbers.n),
        e=raw(numbers.public_numbers.e),
        d=raw(numbers.d),
        p=raw(numbers.p),
        q=raw(numbers.q),
        dp=raw(numbers.dmp1),
        dq=raw(numbers.dmq1),
        qi=raw(numbers.iqmp),
    )
    async with keys(vault) as client:
        imported = await client.import_key("byok", jwk, hardware_protected=True)
    assert imported.key_type == "RSA-HSM" and modulus(imported) == raw(numbers.public_numbers.n)
    wrapped = private.public_key().encrypt(
        CEK, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    async with crypto(imported.id) as cc:
        assert (await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)).key == CEK


async def test_list_pages_with_next_link(keys: Keys, vault: str) -> None:
    async with keys(vault) as client:
        await asyncio.gather(*(client.create_rsa_key(f"paged-{i}") for i in range(5)))
        pages = client.list_properties_of_keys(max_page_size=2).by_page()
        sizes = [len([k async for k in page]) async for page in pages]
        assert sizes == [2, 2, 1]


async def test_rotate_makes_a_new_version_and_old_ones_stay_usable(keys: Keys, crypto: Crypto, vault: str) -> None:
    async with keys(vault) as client:
        first = await client.create_rsa_key("rolled")
        async with crypto(first) as old:
            wrapped_by_first = (await old.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, CEK)).encrypted_key
        second = await client.rotate_key("rolled")
        assert second.properties.version != first.properties.version
        assert modulus(second) != modulus(first)
        assert (await client.get_key("rolled")).id == second.id
        versions = [v.version async for v in client.list_properties_of_key_versions("rolled")]
        assert versions == [first.properties.version, second.properties.version]
        async with crypto(first.id) as old:
            assert (await old.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped_by_first)).key == CEK


async def test_rotation_policy_round_trip_and_expiry_on_rotate(keys: Keys, vault: str) -> None:
    async with keys(vault) as client:
        await client.create_rsa_key("policy")
        default = await client.get_key_rotation_policy("policy")
        assert [a.action for a in default.lifetime_actions] == [KeyRotationPolicyAction.notify]
        policy = KeyRotationPolicy(
            expires_in="P90D",
            lifetime_actions=[KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P60D")],
        )
        stored = await client.update_key_rotation_policy("policy", policy)
        assert stored.expires_in == "P90D"
        assert stored.id == f"https://{vault}.vault.azure.net/keys/policy/rotationpolicy"
        rotated = await client.rotate_key("policy")
        assert rotated.properties.expires_on is not None and rotated.properties.created_on is not None
        assert rotated.properties.expires_on - rotated.properties.created_on == timedelta(days=90)


@pytest.mark.parametrize("alg", [KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa1_5])
async def test_wrap_unwrap_round_trip(
    keys: Keys, crypto: Crypto, vault: str, control: SandboxKeyVaultControl, alg: KeyWrapAlgorithm
) -> None:
    async with keys(vault) as client:
        key = await client.create_rsa_key(f"wrap-{alg.value.lower().replace('_', '-')}")
    before = (await control.counters(vault))["operations"]
    async with crypto(key.id) as cc:
        wrapped = await cc.wrap_key(alg, CEK)
        assert wrapped.key_id == key.id
        assert (await cc.unwrap_key(alg, wrapped.encrypted_key)).key == CEK
    after = (await control.counters(vault))["operations"]
    # The SDK wraps locally once it could `get` the public key; unwrap always reaches the service.
    assert after.get("unwrapkey", 0) == before.get("unwrapkey", 0) + 1
    assert after.get("wrapkey", 0) == before.get("wrapkey", 0)


async def test_encrypt_decrypt_sign_verify(keys: Keys, crypto: Crypto, vault: str) -> None:
    async with keys(vault) as client:
        key = await client.create_rsa_key("multi")
    async with crypto(key.id) as cc:
        encrypted = await cc.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"tenant secret")
        assert (await cc.decrypt(EncryptionAlgorithm.rsa_oaep_256, encrypted.ciphertext)).plaintext == b"tenant secret"
        digest = os.urandom(32)
        for alg in (SignatureAlgorithm.rs256, SignatureAlgorithm.ps256):
            signed = await cc.sign(alg, digest)
            assert (await cc.verify(alg, digest, signed.signature)).is_valid
            assert not (await cc.verify(alg, os.urandom(32), signed.signature)).is_valid


async def test_bad_ciphertext_and_disabled_key(keys: Keys, crypto: Crypto, vault: str) -> None:
    async with keys(vault) as client:
        key = await client.create_rsa_key("fragile")
        async with crypto(key.id) as cc:
            with pytest.raises(HttpResponseError) as bad:
                await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, b"\x00" * 256)
            assert bad.value.status_code == 400 and bad.value.error is not None
            assert bad.value.error.code == "BadParameter"
            await client.update_key_properties("fragile", enabled=False, tags={"state": "off"})
            with pytest.raises(HttpResponseError) as disabled:
                await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, b"\x00" * 256)
            assert disabled.value.status_code == 403 and inner_code(disabled.value) == "KeyDisabled"
        props = (await client.get_key("fragile")).properties
        assert props.enabled is False and props.tags == {"state": "off"}


async def test_soft_delete_then_recover(keys: Keys, vault: str) -> None:
    async with keys(vault) as client:
        key = await client.create_rsa_key("comeback")
        deleted = await client.delete_key("comeback")
        assert deleted.recovery_id == f"https://{vault}.vault.azure.net/deletedkeys/comeback"
        assert deleted.deleted_date is not None and deleted.scheduled_purge_date is not None
        assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=90)
        with pytest.raises(ResourceNotFoundError):
            await client.get_key("comeback")
        assert [k.name async for k in client.list_deleted_keys()] == ["comeback"]

        with pytest.raises(ResourceExistsError) as reuse:
            await client.create_rsa_key("comeback")
        assert reuse.value.status_code == 409 and inner_code(reuse.value) == "ObjectIsDeletedButRecoverable"

        recovered = await client.recover_deleted_key("comeback")
        assert recovered.id == key.id
        assert modulus(await client.get_key("comeback")) == modulus(key)
        with pytest.raises(ResourceNotFoundError) as gone:
            await client.get_deleted_key("comeback")
        assert gone.value.error is not None and gone.value.error.code == "KeyNotFound"


async def test_purge_refused_under_purge_protection_until_retention_ends(
    keys: Keys, make_vault: MakeVault, control: SandboxKeyVaultControl
) -> None:
    protected = await make_vault(purge_protection=True, retention_days=7)
    async with keys(protected) as client:
        key = await client.create_rsa_key("kept")
        assert key.properties.recovery_level == "CustomizedRecoverable"
        assert key.properties.recoverable_days == 7
        await client.delete_key("kept")
        with pytest.raises(HttpResponseError) as refused:
            await client.purge_deleted_key("kept")
        assert refused.value.status_code == 403 and refused.value.error is not None
        assert refused.value.error.code == "Forbidden"
        assert 'Operation "purge" is not allowed because purge protection is enabled' in message(refused.value)
        assert f"Vault: {protected};location=eastus" in message(refused.value)

        await control.advance_clock(days=6)
        assert (await client.get_deleted_key("kept")).name == "kept"
        shifted = await control.advance_clock(days=1, seconds=1)
        assert shifted["purged"] >= 1
        with pytest.raises(ResourceNotFoundError):
            await client.get_deleted_key("kept")
        # The name is free again once the service has purged the key.
        await client.create_rsa_key("kept")


async def test_purge_allowed_without_purge_protection(keys: Keys, vault: str) -> None:
    async with keys(vault) as client:
        await client.create_rsa_key("doomed")
        await client.delete_key("doomed")
        await client.purge_deleted_key("doomed")
        with pytest.raises(ResourceNotFoundError):
            await client.get_deleted_key("doomed")
        assert [k async for k in client.list_deleted_keys()] == []


async def test_backup_delete_purge_restore(keys: Keys, crypto: Crypto, vault: str) -> None:
    async with keys(vault) as client:
        first = await client.create_rsa_key("precious", tags={"dep": "exo-dep-01"})
        second = await client.rotate_key("precious")
        async with crypto(first) as local:
            wrapped = (await local.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, CEK)).encrypted_key
        backup = await client.backup_key("precious")
        assert b"precious" not in backup  # opaque

        await client.delete_key("precious")
        await client.purge_deleted_key("precious")
        restored = await client.restore_key_backup(backup)

        assert restored.id == second.id and modulus(restored) == modulus(second)
        versions = [v.version async for v in client.list_properties_of_key_versions("precious")]
        assert versions == [first.properties.version, second.properties.version]
        assert (await client.get_key("precious", first.properties.version)).properties.tags == {"dep": "exo-dep-01"}
        async with crypto(first.id) as cc:
            assert (await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)).key == CEK

        # Restoring over a name in use fails, whether the key is active or soft-deleted.
        with pytest.raises(ResourceExistsError) as active:
            await client.restore_key_backup(backup)
        assert active.value.status_code == 409 and active.value.error is not None
        assert active.value.error.code == "Conflict"
        await client.delete_key("precious")
        with pytest.raises(ResourceExistsError) as deleted:
            await client.restore_key_backup(backup)
        assert deleted.value.error is not None and deleted.value.error.code == "Conflict"
        assert inner_code(deleted.value) == "ObjectIsDeletedButRecoverable"

        tampered = backup[:-1] + bytes([backup[-1] ^ 1])
        with pytest.raises(HttpResponseError) as corrupt:
            await client.restore_key_backup(tampered)
        assert corrupt.value.status_code == 400 and corrupt.value.error is not None
        assert corrupt.value.error.code == "BadParameter"


async def test_restore_into_another_vault(keys: Keys, make_vault: MakeVault) -> None:
    source, target = await make_vault(), await make_vault()
    async with keys(source) as a, keys(target) as b:
        key = await a.create_rsa_key("moving")
        restored = await b.restore_key_backup(await a.backup_key("moving"))
    assert restored.id == f"https://{target}.vault.azure.net/keys/moving/{key.properties.version}"
    assert modulus(restored) == modulus(key)


async def test_principal_without_unwrap_is_forbidden(
    keys: Keys, crypto: Crypto, vault: str, control: SandboxKeyVaultControl
) -> None:
    async with keys(vault) as client:
        key = await client.create_rsa_key("exo")
    app = str(ServicePrincipal.EXCHANGE_ONLINE)
    await control.grant(vault, app, ["get", "wrapKey"])
    async with crypto(key.id, principal=app) as cc:
        wrapped = await cc.wrap_key(KeyWrapAlgorithm.rsa_oaep, CEK)
        with pytest.raises(HttpResponseError) as denied:
            await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)
        assert denied.value.status_code == 403 and denied.value.error is not None
        assert denied.value.error.code == "Forbidden" and inner_code(denied.value) == "ForbiddenByPolicy"
        assert f"'appid={app};oid=" in message(denied.value)
        assert f"does not have keys unwrapKey permission on key vault '{vault};location=eastus'" in str(denied.value)

        await control.grant(vault, app, ["unwrapKey"])
        assert (await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped.encrypted_key)).key == CEK

    # A user without any policy is refused even `get`.
    async with keys(vault, principal="mallory@contoso.com") as outsider:
        with pytest.raises(HttpResponseError) as nothing:
            await outsider.get_key("exo")
        assert nothing.value.status_code == 403 and "upn=mallory@contoso.com" in str(nothing.value)


async def test_throttled_past_the_lowered_limit_then_served_after_retry_after(
    keys: Keys, vault: str, control: SandboxKeyVaultControl
) -> None:
    async with keys(vault) as client:
        await client.create_rsa_key("busy")
    await control.set_limits(vault, other=3, window_seconds=1, retry_after_seconds=1)
    async with keys(vault, retry_total=0) as strict:
        results = await asyncio.gather(*(strict.get_key("busy") for _ in range(6)), return_exceptions=True)
        throttled = [r for r in results if isinstance(r, HttpResponseError)]
        assert len(throttled) == 3
        assert all(e.status_code == 429 for e in throttled)
        assert throttled[0].error is not None and throttled[0].error.code == "Throttled"
        assert throttled[0].response is not None and header(throttled[0], "Retry-After") == "1"
        assert "too many requests were received" in message(throttled[0])
        await asyncio.sleep(1.05)
        assert (await strict.get_key("busy")).name == "busy"

    # With its default retry policy the SDK honours Retry-After and gets through the same burst.
    before = (await control.counters(vault))["throttled"]
    started = time.monotonic()
    async with keys(vault) as patient:
        got = await asyncio.gather(*(patient.get_key("busy") for _ in range(4)))
    assert len(got) == 4 and time.monotonic() - started >= 1
    assert (await control.counters(vault))["throttled"] > before
    await control.set_limits(vault)


async def test_create_limit_weighs_hsm_keys_double(keys: Keys, vault: str, control: SandboxKeyVaultControl) -> None:
    await control.set_limits(vault, create=2, window_seconds=30, retry_after_seconds=1)
    async with keys(vault, retry_total=0) as client:
        await client.create_rsa_key("hsm", hardware_protected=True)
        with pytest.raises(HttpResponseError) as limited:
            await client.create_rsa_key("soft")
        assert limited.value.status_code == 429
    await control.set_limits(vault)


async def test_faults_down_error_rate_latency(keys: Keys, vault: str, control: SandboxKeyVaultControl) -> None:
    async with keys(vault, retry_total=0) as client:
        await client.create_rsa_key("flaky")
        await control.set_faults(vault, down=True)
        with pytest.raises(HttpResponseError) as down:
            await client.get_key("flaky")
        assert down.value.status_code == 503 and down.value.error is not None
        assert down.value.error.code == "ServiceUnavailable"
        await control.set_faults(vault, error_rate=1.0)
        with pytest.raises(HttpResponseError) as failing:
            await client.get_key("flaky")
        assert failing.value.status_code == 503
        await control.set_faults(vault, latency_ms=150)
        started = time.monotonic()
        await client.get_key("flaky")
        assert time.monotonic() - started >= 0.15
        await control.set_faults(vault)
    assert (await control.counters(vault))["faults"] == 2


async def test_challenge_api_version_and_bad_tokens(keys: Keys, conn: AzureConnection, vault: str) -> None:
    async with keys(vault) as client:
        missing = await client.send_request(HttpRequest("GET", "/keys?api-version="))
        assert missing.status_code == 400 and missing.json()["error"]["code"] == "BadParameter"
        unknown = await client.send_request(HttpRequest("GET", "/keys?api-version=1.0"))
        assert unknown.status_code == 400 and "is not recognized" in unknown.json()["error"]["message"]
        older = await client.send_request(HttpRequest("GET", "/keys?api-version=7.4"))
        assert older.status_code == 200

    class Forged:
        """A credential whose tokens the service cannot verify."""

        async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
            return AccessToken("not-a-token", int(time.time()) + 3600)

        async def close(self) -> None:
            return None

        async def __aenter__(self) -> Forged:
            return self

        async def __aexit__(self, *_: Any) -> None:
            return None

    async with KeyClient(vault_url(vault), Forged(), **conn.client_kwargs()) as forged:
        with pytest.raises(ClientAuthenticationError) as rejected:
            await forged.get_key("anything")
        assert rejected.value.status_code == 401 and rejected.value.error is not None
        assert rejected.value.error.code == "Unauthorized"
        assert rejected.value.response is not None
        challenge = header(rejected.value, "WWW-Authenticate")
        assert challenge == (
            'Bearer authorization="https://login.microsoftonline.com/72f988bf-0000-4000-8000-00000000c0de", '
            'resource="https://vault.azure.net"'
        )


async def test_vault_ckey_test_host_form(conn: AzureConnection, vault: str) -> None:
    url = f"https://{vault}.vault.ckey.test"
    async with KeyClient(url, conn.credential(), verify_challenge_resource=False, **conn.client_kwargs()) as client:
        key = await client.create_rsa_key("alias")
    assert key.id.startswith(f"{url}/keys/alias/")


async def test_seeded_demo_tenant(keys: Keys, crypto: Crypto, control: SandboxKeyVaultControl) -> None:
    async with keys("contoso-eastus-kv1") as east, keys("contoso-westus-kv1") as west:
        assert {k.name async for k in east.list_properties_of_keys()} >= {"exo-key-01", "m365-key-01", "spo-key-01"}
        assert {k.name async for k in west.list_properties_of_keys()} >= {"exo-key-02", "m365-key-02", "spo-key-02"}
        exo = await east.get_key("exo-key-01")
    assert exo.properties.recovery_level == "Recoverable+ProtectedSubscription"
    for principal in ServicePrincipal:
        async with crypto(exo.id, principal=str(principal)) as cc:
            wrapped = await cc.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, CEK)
            assert (await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)).key == CEK
    async with crypto(exo.id, principal="alice@contoso.com") as alice:
        with pytest.raises(HttpResponseError) as denied:
            await alice.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
        assert denied.value.status_code == 403
    rbac = await control.vault("contoso-rbac-kv1")
    assert rbac["rbac"] and rbac["purge_protection"] and rbac["location"] == "centralus"


async def test_unknown_vault_is_not_found(keys: Keys) -> None:
    async with keys(unique("nowhere"), retry_total=0) as client:
        with pytest.raises(ResourceNotFoundError):
            await client.get_key("x")
