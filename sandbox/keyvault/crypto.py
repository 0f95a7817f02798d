"""Key material of the sandbox vaults: real RSA keys, sealed at rest, and the RSA operations Key Vault offers.

Private keys never leave the service. In the database each one is sealed with AES-256-GCM under a key-encryption key
kept in the data dir (``keys/sandbox-keyvault-kek.bin``, mode 0600); the associated data binds the ciphertext to its
vault, key and version, so a row copied elsewhere does not open. Backups are sealed the same way under a key derived
from the KEK (HKDF), which makes them opaque and tamper-evident, and restorable only by this sandbox, much as a real
backup restores only within its own geography and subscription.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

RSA_KEY_SIZES = (2048, 3072, 4096)
RSA_KEY_TYPES = ("RSA", "RSA-HSM")
DEFAULT_RSA_KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
KEY_OPS = (*DEFAULT_RSA_KEY_OPS, "import", "export")

_BACKUP_MAGIC = b"CKEYKVB1"
_BACKUP_AAD = b"ckey sandbox keyvault backup v1"
_NONCE = 12


class CryptoError(Exception):
    """A cryptographic operation failed (bad ciphertext, unknown algorithm, data too long)."""


class InvalidBackup(Exception):
    """A backup blob that was not produced by this sandbox, or was altered."""


def b64url_encode(data: bytes) -> str:
    """Base64url without padding, as JWK and Key Vault use it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Base64url with or without padding.

    Raises:
        ValueError: ``text`` is not base64url.
    """
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not base64url: {exc}") from None


def _int_to_b64url(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def _b64url_to_int(text: str) -> int:
    return int.from_bytes(b64url_decode(text), "big")


def generate_rsa(size: int, public_exponent: int = 65537) -> rsa.RSAPrivateKey:
    """A new RSA private key."""
    return rsa.generate_private_key(public_exponent=public_exponent, key_size=size)


def public_parts(key: rsa.RSAPrivateKey) -> tuple[str, str]:
    """The JWK ``n`` and ``e`` of ``key``, base64url."""
    numbers = key.public_key().public_numbers()
    return _int_to_b64url(numbers.n), _int_to_b64url(numbers.e)


def private_key_from_jwk(jwk: dict[str, Any]) -> rsa.RSAPrivateKey:
    """An RSA private key from a JWK with its private parts (``import``).

    Raises:
        CryptoError: the JWK is not a complete RSA private key.
    """
    try:
        n, e, d, p, q = (_b64url_to_int(str(jwk[part])) for part in ("n", "e", "d", "p", "q"))
        dp = _b64url_to_int(str(jwk["dp"])) if jwk.get("dp") else rsa.rsa_crt_dmp1(d, p)
        dq = _b64url_to_int(str(jwk["dq"])) if jwk.get("dq") else rsa.rsa_crt_dmq1(d, q)
        qi = _b64url_to_int(str(jwk["qi"])) if jwk.get("qi") else rsa.rsa_crt_iqmp(p, q)
        return rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, rsa.RSAPublicNumbers(e, n)).private_key()
    except (KeyError, ValueError) as exc:
        raise CryptoError(f"the JWK is not a complete RSA private key: {exc}") from None


def public_key_from_parts(n: str, e: str) -> rsa.RSAPublicKey:
    """The public key for JWK ``n`` and ``e``."""
    return rsa.RSAPublicNumbers(_b64url_to_int(e), _b64url_to_int(n)).public_key()


# Encryption and signatures --------------------------------------------------------------------------------------

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


def _encryption_padding(alg: str) -> padding.AsymmetricPadding:
    try:
        return _ENCRYPTION[alg]()
    except KeyError:
        raise CryptoError(f"the algorithm {alg!r} is not supported for RSA keys") from None


def encrypt(key: rsa.RSAPublicKey, alg: str, plaintext: bytes) -> bytes:
    """RSA encryption (``encrypt``, ``wrapKey``).

    Raises:
        CryptoError: unknown algorithm, or the plaintext is too long for the key.
    """
    try:
        return key.encrypt(plaintext, _encryption_padding(alg))
    except ValueError as exc:
        raise CryptoError(f"encryption failed: {exc}") from None


def decrypt(key: rsa.RSAPrivateKey, alg: str, ciphertext: bytes) -> bytes:
    """RSA decryption (``decrypt``, ``unwrapKey``).

    Raises:
        CryptoError: unknown algorithm, or the ciphertext does not decrypt under this key.
    """
    try:
        return key.decrypt(ciphertext, _encryption_padding(alg))
    except ValueError:
        raise CryptoError("the ciphertext could not be decrypted with this key and algorithm") from None


def _signature_scheme(alg: str) -> tuple[padding.AsymmetricPadding, hashes.HashAlgorithm]:
    if alg not in SIGNATURE_ALGORITHMS:
        raise CryptoError(f"the algorithm {alg!r} is not supported for RSA keys")
    algorithm = _HASHES[alg[2:]]()
    if alg.startswith("PS"):
        # Key Vault's PSS uses a salt as long as the digest.
        return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.DIGEST_LENGTH), algorithm
    return padding.PKCS1v15(), algorithm


def sign_digest(key: rsa.RSAPrivateKey, alg: str, digest: bytes) -> bytes:
    """Sign a digest (Key Vault's ``sign`` takes the hash, not the message).

    Raises:
        CryptoError: unknown algorithm, or a digest of the wrong length.
    """
    pad, algorithm = _signature_scheme(alg)
    if len(digest) != algorithm.digest_size:
        raise CryptoError(f"a {alg} digest has {algorithm.digest_size} bytes, not {len(digest)}")
    return key.sign(digest, pad, utils.Prehashed(algorithm))


def verify_digest(key: rsa.RSAPublicKey, alg: str, digest: bytes, signature: bytes) -> bool:
    """Whether ``signature`` signs ``digest``.

    Raises:
        CryptoError: unknown algorithm.
    """
    pad, algorithm = _signature_scheme(alg)
    try:
        key.verify(signature, digest, pad, utils.Prehashed(algorithm))
    except (InvalidSignature, ValueError):
        return False
    return True


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

    def seal_private(self, key: rsa.RSAPrivateKey, vault: str, name: str, version: str) -> bytes:
        """``key`` as PKCS#8 DER sealed for (vault, name, version)."""
        der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        nonce = os.urandom(_NONCE)
        return nonce + self._keys.encrypt(nonce, der, self._aad(vault, name, version))

    def open_private(self, sealed: bytes, vault: str, name: str, version: str) -> rsa.RSAPrivateKey:
        """The private key sealed for (vault, name, version).

        Raises:
            CryptoError: the row was altered or belongs to another key.
        """
        try:
            der = self._keys.decrypt(sealed[:_NONCE], sealed[_NONCE:], self._aad(vault, name, version))
        except InvalidTag:
            raise CryptoError("sealed key material does not open: altered, or moved between keys") from None
        key = serialization.load_der_private_key(der, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise CryptoError("sealed key material is not an RSA key")
        return key

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


def private_der(key: rsa.RSAPrivateKey) -> bytes:
    """PKCS#8 DER of ``key`` (inside sealed backups only)."""
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_from_der(der: bytes) -> rsa.RSAPrivateKey:
    """The RSA key in PKCS#8 DER.

    Raises:
        CryptoError: not an RSA private key.
    """
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CryptoError("not an RSA private key")
    return key
