"""The operations Key Vault offers on its keys (RSA, EC, AES), and key material sealed at rest.

Private keys never leave the service. In the database each one is sealed with AES-256-GCM under a key-encryption key
kept in the data dir (``keys/sandbox-keyvault-kek.bin``, mode 0600); the associated data binds the ciphertext to its
vault, key and version, so a row copied elsewhere does not open. Backups are sealed the same way under a key derived
from the KEK (HKDF), which makes them opaque and tamper-evident, and restorable only by this sandbox, much as a real
backup restores only within its own geography and subscription.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import padding as block_padding
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from sandbox.keyvault.material import (
    KEY_OPS,
    Material,
    MaterialError,
    SymmetricKey,
    b64url_decode,
    b64url_encode,
    coordinate_length,
    curve_name,
    from_bytes,
    to_bytes,
)

__all__ = ["KEY_OPS", "CryptoError", "InvalidBackup", "Result", "Sealer", "b64url_decode", "b64url_encode"]

_BACKUP_MAGIC = b"CKEYKVB1"
_BACKUP_AAD = b"ckey sandbox keyvault backup v1"
_NONCE = 12


class CryptoError(Exception):
    """A cryptographic operation failed (bad ciphertext, unknown algorithm, data too long)."""


class InvalidBackup(Exception):
    """A backup blob that was not produced by this sandbox, or was altered."""


# RSA ------------------------------------------------------------------------------------------------------------

_ENCRYPTION: dict[str, Callable[[], padding.AsymmetricPadding]] = {
    "RSA-OAEP": lambda: padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    "RSA-OAEP-256": lambda: padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    "RSA1_5": padding.PKCS1v15,
}
ENCRYPTION_ALGORITHMS = tuple(_ENCRYPTION)

_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
SIGNATURE_ALGORITHMS = tuple(f"{family}{bits}" for family in ("RS", "PS") for bits in _HASHES)
EC_SIGNATURE_ALGORITHMS = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521", "ES256K": "P-256K"}
"""Each ECDSA algorithm and the one curve it signs with (as Key Vault pairs them)."""
_EC_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "ES256": hashes.SHA256,
    "ES384": hashes.SHA384,
    "ES512": hashes.SHA512,
    "ES256K": hashes.SHA256,
}
AES_WRAP_ALGORITHMS = {"A128KW": 128, "A192KW": 192, "A256KW": 256}
AES_ENCRYPTION_ALGORITHMS = {f"A{bits}{mode}": bits for bits in (128, 192, 256) for mode in ("GCM", "CBC", "CBCPAD")}


@dataclass(frozen=True)
class Result:
    """What an operation answers besides ``kid``: the value, and for AES the IV and tag it used."""

    value: bytes
    iv: bytes | None = None
    tag: bytes | None = None


def _unsupported(alg: str, kty: str) -> CryptoError:
    return CryptoError(f"The algorithm {alg} is not supported for key type {kty}.")


def _encryption_padding(alg: str) -> padding.AsymmetricPadding:
    try:
        return _ENCRYPTION[alg]()
    except KeyError:
        raise _unsupported(alg, "RSA") from None


def _signature_scheme(alg: str) -> tuple[padding.AsymmetricPadding, hashes.HashAlgorithm]:
    if alg not in SIGNATURE_ALGORITHMS:
        raise _unsupported(alg, "RSA")
    algorithm = _HASHES[alg[2:]]()
    if alg.startswith("PS"):
        # Key Vault's PSS uses a salt as long as the digest.
        return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.DIGEST_LENGTH), algorithm
    return padding.PKCS1v15(), algorithm


def _check_digest(alg: str, algorithm: hashes.HashAlgorithm, digest: bytes) -> None:
    if len(digest) != algorithm.digest_size:
        raise CryptoError(f"a {alg} digest has {algorithm.digest_size} bytes, not {len(digest)}")


# EC -------------------------------------------------------------------------------------------------------------


def _ec_hash(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey, alg: str) -> hashes.HashAlgorithm:
    crv = EC_SIGNATURE_ALGORITHMS.get(alg)
    if crv is None:
        raise _unsupported(alg, "EC")
    if crv != curve_name(key):
        raise CryptoError(f"The algorithm {alg} is not valid for a key with curve {curve_name(key)}.")
    return _EC_HASHES[alg]()


def _ec_sign(key: ec.EllipticCurvePrivateKey, alg: str, digest: bytes) -> bytes:
    algorithm = _ec_hash(key, alg)
    _check_digest(alg, algorithm, digest)
    r, s = utils.decode_dss_signature(key.sign(digest, ec.ECDSA(utils.Prehashed(algorithm))))
    # JWS form (RFC 7518 3.4): R and S big-endian, each the curve's length, as Key Vault answers.
    length = coordinate_length(curve_name(key))
    return r.to_bytes(length, "big") + s.to_bytes(length, "big")


def _ec_verify(key: ec.EllipticCurvePublicKey, alg: str, digest: bytes, signature: bytes) -> bool:
    algorithm = _ec_hash(key, alg)
    length = coordinate_length(curve_name(key))
    if len(signature) != 2 * length:
        return False
    r, s = int.from_bytes(signature[:length], "big"), int.from_bytes(signature[length:], "big")
    try:
        key.verify(utils.encode_dss_signature(r, s), digest, ec.ECDSA(utils.Prehashed(algorithm)))
    except (InvalidSignature, ValueError):
        return False
    return True


# AES ------------------------------------------------------------------------------------------------------------


def _aes_bits(key: SymmetricKey, alg: str, table: dict[str, int]) -> None:
    bits = table.get(alg)
    if bits is None:
        raise _unsupported(alg, "oct")
    if bits != key.key_size:
        raise CryptoError(f"The algorithm {alg} needs a {bits}-bit key; this key has {key.key_size} bits.")


def _aes_encrypt(key: SymmetricKey, alg: str, plaintext: bytes, iv: bytes | None, aad: bytes | None) -> Result:
    _aes_bits(key, alg, AES_ENCRYPTION_ALGORITHMS)
    if alg.endswith("GCM"):
        # The service chooses the nonce for GCM (a caller's IV is not taken), and answers it with the tag.
        nonce = os.urandom(12)
        sealed = AESGCM(key.secret).encrypt(nonce, plaintext, aad)
        return Result(sealed[:-16], iv=nonce, tag=sealed[-16:])
    if iv is None or len(iv) != 16:
        raise CryptoError(f"{alg} needs a 16-byte iv.")
    if alg.endswith("CBCPAD"):
        padder = block_padding.PKCS7(128).padder()
        plaintext = padder.update(plaintext) + padder.finalize()
    elif len(plaintext) % 16:
        raise CryptoError(f"{alg} encrypts whole 16-byte blocks; use {alg}PAD for other lengths.")
    encryptor = Cipher(algorithms.AES(key.secret), modes.CBC(iv)).encryptor()
    return Result(encryptor.update(plaintext) + encryptor.finalize(), iv=iv)


def _aes_decrypt(
    key: SymmetricKey, alg: str, ciphertext: bytes, iv: bytes | None, aad: bytes | None, tag: bytes | None
) -> Result:
    _aes_bits(key, alg, AES_ENCRYPTION_ALGORITHMS)
    if iv is None:
        raise CryptoError(f"{alg} needs the iv of the encryption.")
    try:
        if alg.endswith("GCM"):
            if tag is None:
                raise CryptoError(f"{alg} needs the tag of the encryption.")
            return Result(AESGCM(key.secret).decrypt(iv, ciphertext + tag, aad))
        decryptor = Cipher(algorithms.AES(key.secret), modes.CBC(iv)).decryptor()
        plain = decryptor.update(ciphertext) + decryptor.finalize()
        if alg.endswith("CBCPAD"):
            unpadder = block_padding.PKCS7(128).unpadder()
            plain = unpadder.update(plain) + unpadder.finalize()
        return Result(plain)
    except (InvalidTag, ValueError):
        raise CryptoError("the ciphertext could not be decrypted with this key and algorithm") from None


# What the data plane calls --------------------------------------------------------------------------------------


def encrypt(
    key: Material, alg: str, plaintext: bytes, *, wrap: bool = False, iv: bytes | None = None, aad: bytes | None = None
) -> Result:
    """``encrypt`` (``wrap``: ``wrapKey``) with any key type.

    Raises:
        CryptoError: an algorithm the key type does not offer, or input it refuses.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        try:
            return Result(key.public_key().encrypt(plaintext, _encryption_padding(alg)))
        except ValueError as exc:
            raise CryptoError(f"encryption failed: {exc}") from None
    if isinstance(key, SymmetricKey):
        if wrap:
            _aes_bits(key, alg, AES_WRAP_ALGORITHMS)
            try:
                return Result(aes_key_wrap(key.secret, plaintext))
            except ValueError as exc:
                raise CryptoError(f"key wrap failed: {exc}") from None
        return _aes_encrypt(key, alg, plaintext, iv, aad)
    raise _unsupported(alg, "EC")


def decrypt(
    key: Material,
    alg: str,
    ciphertext: bytes,
    *,
    wrap: bool = False,
    iv: bytes | None = None,
    aad: bytes | None = None,
    tag: bytes | None = None,
) -> Result:
    """``decrypt`` (``wrap``: ``unwrapKey``) with any key type.

    Raises:
        CryptoError: an algorithm the key type does not offer, or a ciphertext that does not open.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        try:
            return Result(key.decrypt(ciphertext, _encryption_padding(alg)))
        except ValueError:
            raise CryptoError("the ciphertext could not be decrypted with this key and algorithm") from None
    if isinstance(key, SymmetricKey):
        if wrap:
            _aes_bits(key, alg, AES_WRAP_ALGORITHMS)
            try:
                return Result(aes_key_unwrap(key.secret, ciphertext))
            except (InvalidUnwrap, ValueError):
                raise CryptoError("the wrapped key could not be unwrapped with this key") from None
        return _aes_decrypt(key, alg, ciphertext, iv, aad, tag)
    raise _unsupported(alg, "EC")


def sign_digest(key: Material, alg: str, digest: bytes) -> bytes:
    """Sign a digest (Key Vault's ``sign`` takes the hash the client computed, not the message).

    Raises:
        CryptoError: an algorithm the key does not offer, or a digest of the wrong length.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        pad, algorithm = _signature_scheme(alg)
        _check_digest(alg, algorithm, digest)
        return key.sign(digest, pad, utils.Prehashed(algorithm))
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _ec_sign(key, alg, digest)
    raise _unsupported(alg, "oct")


def verify_digest(key: Material, alg: str, digest: bytes, signature: bytes) -> bool:
    """Whether ``signature`` signs ``digest``.

    Raises:
        CryptoError: an algorithm the key does not offer.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        pad, algorithm = _signature_scheme(alg)
        try:
            key.public_key().verify(signature, digest, pad, utils.Prehashed(algorithm))
        except (InvalidSignature, ValueError):
            return False
        return True
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _ec_verify(key.public_key(), alg, digest, signature)
    raise _unsupported(alg, "oct")


# Sealing at rest ------------------------------------------------------------------------------------------------


def load_or_create_kek(path: Path) -> bytes:
    """The 256-bit key-encryption key in the data dir, created (mode 0600) on first use."""
    if path.exists():
        kek = path.read_bytes()
        if len(kek) != 32:
            raise ValueError(f"{path} does not hold a 256-bit key")
        return kek
    path.parent.mkdir(parents=True, exist_ok=True)
    kek = AESGCM.generate_key(bit_length=256)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(kek)
    return kek


class Sealer:
    """Seals private keys and backups with the data dir's key-encryption key.

    Args:
        kek_path: the KEK file, created on first use.
    """

    def __init__(self, kek_path: Path) -> None:
        kek = load_or_create_kek(kek_path)
        self._keys = AESGCM(kek)
        backup_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"ckey sandbox backups").derive(kek)
        self._backups = AESGCM(backup_key)

    @staticmethod
    def _aad(vault: str, name: str, version: str) -> bytes:
        return f"{vault.lower()}/{name.lower()}/{version}".encode()

    def seal_private(self, key: Material, vault: str, name: str, version: str) -> bytes:
        """``key`` (PKCS#8 DER, or an AES secret) sealed for (vault, name, version)."""
        der = to_bytes(key)
        nonce = os.urandom(_NONCE)
        return nonce + self._keys.encrypt(nonce, der, self._aad(vault, name, version))

    def open_private(self, sealed: bytes, vault: str, name: str, version: str) -> Material:
        """The private key sealed for (vault, name, version).

        Raises:
            CryptoError: the row was altered or belongs to another key.
        """
        try:
            der = self._keys.decrypt(sealed[:_NONCE], sealed[_NONCE:], self._aad(vault, name, version))
        except InvalidTag:
            raise CryptoError("sealed key material does not open: altered, or moved between keys") from None
        try:
            return from_bytes(der)
        except MaterialError:
            raise CryptoError("sealed key material is not a key") from None

    def seal_backup(self, payload: dict[str, Any]) -> bytes:
        """An opaque, integrity-protected backup blob of ``payload``."""
        nonce = os.urandom(_NONCE)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        return _BACKUP_MAGIC + nonce + self._backups.encrypt(nonce, body, _BACKUP_AAD)

    def open_backup(self, blob: bytes) -> dict[str, Any]:
        """The payload of a backup blob.

        Raises:
            InvalidBackup: the blob is not one of this sandbox's backups, or was altered.
        """
        if not blob.startswith(_BACKUP_MAGIC) or len(blob) < len(_BACKUP_MAGIC) + _NONCE + 16:
            raise InvalidBackup("not a backup blob")
        rest = blob[len(_BACKUP_MAGIC) :]
        try:
            body = self._backups.decrypt(rest[:_NONCE], rest[_NONCE:], _BACKUP_AAD)
        except InvalidTag:
            raise InvalidBackup("the backup blob was altered or comes from another service") from None
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise InvalidBackup("the backup blob holds no key")
        return payload


def private_der(key: Material) -> bytes:
    """The material as bytes (inside sealed backups only)."""
    return to_bytes(key)


def private_from_der(der: bytes) -> Material:
    """The material :func:`private_der` wrote.

    Raises:
        CryptoError: not key material.
    """
    try:
        return from_bytes(der)
    except MaterialError:
        raise CryptoError("not a private key") from None
