"""EC and oct keys in the sandbox Key Vault, driven through azure-keyvault-keys (aio) as against Azure."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.keyvault.keys import JsonWebKey, KeyCurveName
from azure.keyvault.keys.aio import KeyClient
from azure.keyvault.keys.crypto import EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm
from azure.keyvault.keys.crypto.aio import CryptographyClient
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from ckey.models import ServicePrincipal
from sandbox.keyvault import SandboxKeyVaultControl
from sandbox.keyvault.db import Database
from tests.sandbox.conftest import MakeVault, code, inner_code, message

Keys = Callable[..., KeyClient]
Crypto = Callable[..., CryptographyClient]
CURVES = {
    "P-256": (ec.SECP256R1(), SignatureAlgorithm.es256, hashes.SHA256(), 32),
    "P-384": (ec.SECP384R1(), SignatureAlgorithm.es384, hashes.SHA384(), 48),
    "P-521": (ec.SECP521R1(), SignatureAlgorithm.es512, hashes.SHA512(), 66),
    "P-256K": (ec.SECP256K1(), SignatureAlgorithm.es256_k, hashes.SHA256(), 32),
}


def jwk(key: Any) -> dict[str, Any]:
    """The JsonWebKey's members as the service sent them (the SDK sets them dynamically)."""
    return {k: v for k, v in vars(key.key).items() if v is not None and not k.startswith("_")}


@pytest.mark.parametrize("crv", list(CURVES))
async def test_ec_key_shape_and_signatures_on_each_curve(
    keys: Keys, crypto: Crypto, vault: str, control: SandboxKeyVaultControl, crv: str
) -> None:
    curve, alg, hash_algorithm, length = CURVES[crv]
    async with keys(vault) as client:
        hsm = crv == "P-384"
        key = await client.create_ec_key(f"ec-{crv.lower()}", curve=KeyCurveName(crv), hardware_protected=hsm)
    members = jwk(key)
    assert key.key_type == ("EC-HSM" if crv == "P-384" else "EC")
    assert members["crv"] == crv and len(members["x"]) == length and len(members["y"]) == length
    assert not {"n", "e", "d", "k"} & set(members)
    assert key.key_operations == ["sign", "verify"]

    # Key Vault signs the digest the client computed, and answers R || S (JWS form).
    digest = hashlib.new(hash_algorithm.name, b"customer key").digest()
    async with crypto(key.id) as cc:
        signed = await cc.sign(alg, digest)
        assert len(signed.signature) == 2 * length
        assert (await cc.verify(alg, digest, signed.signature)).is_valid
    public = ec.EllipticCurvePublicNumbers(
        int.from_bytes(members["x"], "big"), int.from_bytes(members["y"], "big"), curve
    ).public_key()
    r, s = int.from_bytes(signed.signature[:length], "big"), int.from_bytes(signed.signature[length:], "big")
    public.verify(utils.encode_dss_signature(r, s), digest, ec.ECDSA(utils.Prehashed(hash_algorithm)))

    # A principal without `get` sends verify to the service too.
    app = str(ServicePrincipal.EXCHANGE_ONLINE)
    await control.grant(vault, app, ["sign", "verify"])
    async with crypto(key.id, principal=app) as remote:
        assert (await remote.verify(alg, digest, signed.signature)).is_valid
        assert not (await remote.verify(alg, digest, bytes(2 * length))).is_valid


async def test_ec_refuses_rsa_algorithms_and_other_curves_algorithms(keys: Keys, crypto: Crypto, vault: str) -> None:
    async with keys(vault) as client:
        key = await client.create_ec_key("ec-strict")
        assert jwk(key)["crv"] == "P-256"  # the service's default curve
    async with crypto(key.id) as cc:
        with pytest.raises(HttpResponseError) as wrong_curve:
            await cc.sign(SignatureAlgorithm.es384, hashlib.sha384(b"x").digest())
        assert wrong_curve.value.status_code == 400 and code(wrong_curve.value) == "BadParameter"
        with pytest.raises(HttpResponseError) as rsa_alg:
            await cc.sign(SignatureAlgorithm.rs256, hashlib.sha256(b"x").digest())
        assert rsa_alg.value.status_code == 400


async def test_ec_key_create_options_and_import(keys: Keys, crypto: Crypto, vault: str) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    numbers = private.private_numbers()
    imported_jwk = JsonWebKey(
        kty="EC",
        crv="P-256",
        x=numbers.public_numbers.x.to_bytes(32, "big"),
        y=numbers.public_numbers.y.to_bytes(32, "big"),
        d=numbers.private_value.to_bytes(32, "big"),
    )
    async with keys(vault) as client:
        imported = await client.import_key("ec-byok", imported_jwk)
        assert imported.key_type == "EC" and jwk(imported)["x"] == numbers.public_numbers.x.to_bytes(32, "big")
        with pytest.raises(HttpResponseError) as bad_curve:
            await client.create_key("ec-bad", "EC", curve="P-192")
        assert bad_curve.value.status_code == 400 and code(bad_curve.value) == "BadParameter"
        rotated = await client.rotate_key("ec-byok")
        assert rotated.key_type == "EC" and jwk(rotated)["crv"] == "P-256"
        assert jwk(rotated)["x"] != jwk(imported)["x"]
    digest = hashlib.sha256(b"imported").digest()
    async with crypto(imported.id) as cc:
        signature = (await cc.sign(SignatureAlgorithm.es256, digest)).signature
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    private.public_key().verify(utils.encode_dss_signature(r, s), digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))


async def test_ec_backup_restore_keeps_the_key(keys: Keys, crypto: Crypto, vault: str) -> None:
    async with keys(vault) as client:
        key = await client.create_ec_key("ec-saved", curve=KeyCurveName.p_521)
        blob = await client.backup_key("ec-saved")
        await client.delete_key("ec-saved")
        await client.purge_deleted_key("ec-saved")
        restored = await client.restore_key_backup(blob)
    assert restored.id == key.id and jwk(restored)["x"] == jwk(key)["x"]
    async with crypto(restored.id) as cc:
        signature = (await cc.sign(SignatureAlgorithm.es512, hashlib.sha512(b"backup").digest())).signature
        assert (await cc.verify(SignatureAlgorithm.es512, hashlib.sha512(b"backup").digest(), signature)).is_valid


@pytest.mark.parametrize("kty", ["oct", "oct-HSM"])
async def test_oct_keys_are_refused_by_a_standard_vault_as_azure_refuses_them(keys: Keys, vault: str, kty: str) -> None:
    async with keys(vault) as client:
        with pytest.raises(HttpResponseError) as refused:
            await client.create_oct_key("aes", size=256, hardware_protected=kty == "oct-HSM")
    assert refused.value.status_code == 400 and code(refused.value) == "BadParameter"
    assert message(refused.value) == f"Invalid kty value: {kty}"
    assert inner_code(refused.value) == "KeyTypeNotSupported"


@pytest.mark.parametrize("size", [128, 192, 256])
async def test_oct_hsm_keys_in_a_premium_vault_wrap_and_encrypt(
    keys: Keys, crypto: Crypto, make_vault: MakeVault, control: SandboxKeyVaultControl, size: int
) -> None:
    premium = await make_vault(sku="premium")
    async with keys(premium) as client:
        key = await client.create_oct_key(f"aes-{size}", size=size, hardware_protected=True)
        with pytest.raises(HttpResponseError) as software:
            await client.create_oct_key("aes-soft", size=size)
        assert message(software.value) == "Invalid kty value: oct"
    assert key.key_type == "oct-HSM"
    assert set(jwk(key)) == {"kid", "kty", "key_ops"}  # no key material in the answer
    cek = os.urandom(32)
    wrap_alg = KeyWrapAlgorithm(f"A{size}KW")
    # Without `get` every operation goes to the service. (With it, azure-keyvault-keys 4.11 builds a local AES
    # provider from a JWK that has no `k`, inventing a random key: the service must never be asked for that.)
    app = str(ServicePrincipal.EXCHANGE_ONLINE)
    await control.grant(premium, app, ["wrapKey", "unwrapKey", "encrypt", "decrypt"])
    async with crypto(key.id, principal=app) as cc:
        wrapped = await cc.wrap_key(wrap_alg, cek)
        assert len(wrapped.encrypted_key) == 40
        assert (await cc.unwrap_key(wrap_alg, wrapped.encrypted_key)).key == cek

        gcm = EncryptionAlgorithm(f"A{size}GCM")
        sealed = await cc.encrypt(gcm, b"tenant data", additional_authenticated_data=b"dep-1")
        assert len(sealed.iv) == 12 and len(sealed.tag) == 16
        opened = await cc.decrypt(
            gcm,
            sealed.ciphertext,
            iv=sealed.iv,
            authentication_tag=sealed.tag,
            additional_authenticated_data=b"dep-1",
        )
        assert opened.plaintext == b"tenant data"
        with pytest.raises(HttpResponseError):
            await cc.decrypt(
                gcm,
                sealed.ciphertext,
                iv=sealed.iv,
                authentication_tag=sealed.tag,
                additional_authenticated_data=b"dep-2",
            )

        cbc = EncryptionAlgorithm(f"A{size}CBCPAD")
        iv = os.urandom(16)
        padded = await cc.encrypt(cbc, b"not a block multiple", iv=iv)
        assert (await cc.decrypt(cbc, padded.ciphertext, iv=padded.iv)).plaintext == b"not a block multiple"

        other = 256 if size != 256 else 128
        with pytest.raises(HttpResponseError) as mismatch:
            await cc.wrap_key(KeyWrapAlgorithm(f"A{other}KW"), cek)
        assert mismatch.value.status_code == 400


async def test_a_data_dir_from_before_ec_keys_gets_the_new_columns(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    db = Database(url)
    await db.create_all()
    await db.close()
    with sqlite3.connect(tmp_path / "old.db") as old:  # the key_versions table as it was: no crv, x, y
        for column in ("crv", "x", "y"):
            old.execute(f"ALTER TABLE key_versions DROP COLUMN {column}")
    db = Database(url)
    await db.create_all()
    await db.close()
    with sqlite3.connect(tmp_path / "old.db") as upgraded:
        columns = {row[1] for row in upgraded.execute("PRAGMA table_info(key_versions)")}
    assert {"crv", "x", "y", "n", "e"} <= columns
