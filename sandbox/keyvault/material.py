"""Key material of every key type the sandbox serves: RSA, EC (P-256, P-384, P-521, P-256K) and oct (AES).

What a version holds (a private key, or a secret for oct), how it is generated, imported from a JWK, written for
sealing, and the public JWK members the service answers (``n``/``e`` for RSA, ``crv``/``x``/``y`` for EC, nothing for
oct: a symmetric key never leaves the service).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

RSA_KEY_TYPES = ("RSA", "RSA-HSM")
EC_KEY_TYPES = ("EC", "EC-HSM")
OCT_KEY_TYPES = ("oct", "oct-HSM")
RSA_KEY_SIZES = (2048, 3072, 4096)
OCT_KEY_SIZES = (128, 192, 256)
CURVES: dict[str, type[ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1,
    "P-384": ec.SECP384R1,
    "P-521": ec.SECP521R1,
    "P-256K": ec.SECP256K1,
}
CURVE_BITS = {"P-256": 256, "P-384": 384, "P-521": 521, "P-256K": 256}
DEFAULT_RSA_KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey")
DEFAULT_EC_KEY_OPS = ("sign", "verify")
DEFAULT_OCT_KEY_OPS = ("encrypt", "decrypt", "wrapKey", "unwrapKey")
KEY_OPS = (*DEFAULT_RSA_KEY_OPS, "import", "export")
_OCT_PREFIX = b"ckey-oct:"
"""Marks sealed symmetric material (asymmetric keys are sealed as PKCS#8 DER, which starts with a SEQUENCE)."""


@dataclass(frozen=True)
class SymmetricKey:
    """An AES key (``oct`` / ``oct-HSM``)."""

    secret: bytes

    @property
    def key_size(self) -> int:
        """Bits."""
        return len(self.secret) * 8


Material = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | SymmetricKey
"""What one key version holds."""


class MaterialError(Exception):
    """A JWK that is not a complete private key of its type, or sealed bytes that are not key material."""


def family(kty: str) -> str:
    """``RSA``, ``EC`` or ``oct`` for a key type (HSM or not)."""
    return kty.removesuffix("-HSM")


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


def int_to_b64url(value: int, length: int = 0) -> str:
    """An integer big-endian, at least ``length`` bytes (EC coordinates have the curve's fixed length)."""
    return b64url_encode(value.to_bytes(max(length, (value.bit_length() + 7) // 8 or 1), "big"))


def b64url_to_int(text: str) -> int:
    """The integer of a base64url big-endian value."""
    return int.from_bytes(b64url_decode(text), "big")


def curve_name(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """The JWK ``crv`` of a key."""
    for name, curve in CURVES.items():
        if isinstance(key.curve, curve):
            return name
    raise MaterialError(f"unsupported curve {key.curve.name}")


def coordinate_length(crv: str) -> int:
    """Bytes of one coordinate (and of each half of an ECDSA signature) on ``crv``."""
    return (CURVE_BITS[crv] + 7) // 8


def generate(kty: str, *, size: int = 2048, crv: str = "P-256", public_exponent: int = 65537) -> Material:
    """New key material of type ``kty`` (its size or curve checked by the caller)."""
    kind = family(kty)
    if kind == "RSA":
        return rsa.generate_private_key(public_exponent=public_exponent, key_size=size)
    if kind == "EC":
        return ec.generate_private_key(CURVES[crv]())
    return SymmetricKey(os.urandom(size // 8))


def key_size(material: Material) -> int:
    """Bits of the key (the curve's for EC)."""
    if isinstance(material, ec.EllipticCurvePrivateKey):
        return CURVE_BITS[curve_name(material)]
    return material.key_size


def public_jwk(material: Material) -> dict[str, str]:
    """The public JWK members the service answers for this material."""
    if isinstance(material, rsa.RSAPrivateKey):
        numbers = material.public_key().public_numbers()
        return {"n": int_to_b64url(numbers.n), "e": int_to_b64url(numbers.e)}
    if isinstance(material, ec.EllipticCurvePrivateKey):
        crv = curve_name(material)
        point = material.public_key().public_numbers()
        length = coordinate_length(crv)
        return {"crv": crv, "x": int_to_b64url(point.x, length), "y": int_to_b64url(point.y, length)}
    return {}


def to_bytes(material: Material) -> bytes:
    """The material for sealing: PKCS#8 DER, or the marked AES secret."""
    if isinstance(material, SymmetricKey):
        return _OCT_PREFIX + material.secret
    return material.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def from_bytes(data: bytes) -> Material:
    """The material :func:`to_bytes` wrote.

    Raises:
        MaterialError: not key material of a served type.
    """
    if data.startswith(_OCT_PREFIX):
        return SymmetricKey(data[len(_OCT_PREFIX) :])
    try:
        key = serialization.load_der_private_key(data, password=None)
    except ValueError:
        raise MaterialError("not a private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise MaterialError("not an RSA or EC private key")
    return key


def from_jwk(jwk: dict[str, Any]) -> Material:
    """The private material of a JWK (``import``): RSA (n, e, d, p, q ...), EC (crv, x, y, d) or oct (k).

    Raises:
        MaterialError: the JWK is not a complete private key of its ``kty``.
    """
    kind = family(str(jwk.get("kty", "")))
    try:
        if kind == "RSA":
            n, e, d, p, q = (b64url_to_int(str(jwk[part])) for part in ("n", "e", "d", "p", "q"))
            dp = b64url_to_int(str(jwk["dp"])) if jwk.get("dp") else rsa.rsa_crt_dmp1(d, p)
            dq = b64url_to_int(str(jwk["dq"])) if jwk.get("dq") else rsa.rsa_crt_dmq1(d, q)
            qi = b64url_to_int(str(jwk["qi"])) if jwk.get("qi") else rsa.rsa_crt_iqmp(p, q)
            return rsa.RSAPrivateNumbers(p, q, d, dp, dq, qi, rsa.RSAPublicNumbers(e, n)).private_key()
        if kind == "EC":
            crv = str(jwk["crv"])
            if crv not in CURVES:
                raise MaterialError(f"the curve {crv} is not supported")
            point = ec.EllipticCurvePublicNumbers(
                b64url_to_int(str(jwk["x"])), b64url_to_int(str(jwk["y"])), CURVES[crv]()
            )
            return ec.EllipticCurvePrivateNumbers(b64url_to_int(str(jwk["d"])), point).private_key()
        if kind == "oct":
            secret = b64url_decode(str(jwk["k"]))
            if len(secret) * 8 not in OCT_KEY_SIZES:
                raise MaterialError(f"an AES key has 128, 192 or 256 bits, not {len(secret) * 8}")
            return SymmetricKey(secret)
    except (KeyError, ValueError) as exc:
        raise MaterialError(f"the JWK is not a complete {kind} private key: {exc}") from None
    raise MaterialError(f"the key type {jwk.get('kty')!r} is not supported")
