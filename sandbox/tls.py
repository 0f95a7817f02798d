"""The local stack's certificate authority: one CA in the data dir, server certificates under Azure's names.

Clients trust the CA through configuration (``ca.pem``), never by turning verification off. The server
certificate carries the real host names (``*.vault.azure.net``, ``management.azure.com`` ...) so that, with ckey's
resolver pointing those names at the sandbox, key URIs and challenge checks are the production ones.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SANDBOX_HOSTS: tuple[str, ...] = (
    "*.vault.azure.net",
    "vault.azure.net",
    "*.vault.ckey.test",
    "management.azure.com",
    "login.microsoftonline.com",
    "outlook.office365.com",
    "graph.microsoft.com",
    "*.sharepoint.com",
    "support.ckey.test",
    "localhost",
)


@dataclass(frozen=True)
class ServerCert:
    """Paths of a server certificate (chain) and its private key."""

    cert: Path
    key: Path


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def ensure_ca(directory: Path) -> Path:
    """The CA certificate in ``directory`` (``ca.pem``, key ``ca-key.pem``), created on first use."""
    ca_pem, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    if ca_pem.exists() and ca_key.exists():
        return ca_pem
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ckey local stack CA")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(ca_key, _pem_key(key))
    ca_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca_pem


def ensure_server_cert(directory: Path, name: str = "sandbox", hosts: tuple[str, ...] = SANDBOX_HOSTS) -> ServerCert:
    """A server certificate signed by the CA in ``directory`` for ``hosts`` (and 127.0.0.1), created on first use."""
    ca_pem = ensure_ca(directory)
    out = ServerCert(cert=directory / f"{name}.pem", key=directory / f"{name}-key.pem")
    if out.cert.exists() and out.key.exists():
        return out
    ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca-key.pem").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    san: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    san += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(ipaddress.ip_address("::1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ckey {name}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(out.key, _pem_key(key))
    out.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem.read_bytes())
    return out


def client_ssl_context(ca_pem: Path) -> ssl.SSLContext:
    """A client TLS context that trusts the local CA (and nothing is switched off)."""
    return ssl.create_default_context(cafile=str(ca_pem))


def server_ssl_context(cert: ServerCert) -> ssl.SSLContext:
    """A server TLS context for ``cert``."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx
