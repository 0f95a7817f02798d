"""The service's own key material: AES-256-GCM wrapping for the lower levels of Customer Key's hierarchy.

Customer Key's hierarchy, as the sandbox keeps it: each DEP has a DEP key (AES-256), wrapped by both customer keys in
Azure Key Vault (RSA-OAEP-256, through the Key Vault SDK as the workload's service principal) and by an availability
key (AES-256) that only the service holds. Each mailbox and site has its own key, wrapped by its DEP's key, and its
sample items are AES-GCM under that key. The service's root key (``<data_dir>/keys/sandbox-m365-kek.bin``, 0600)
seals the availability keys and wraps the Microsoft-managed DEP's key.

Associated data binds every wrapped blob to what it belongs to (a DEP's GUID, a mailbox's GUID and DEP), so a blob
copied to another row does not open.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
_NONCE = 12


class UnwrapError(Exception):
    """A wrapped key or item does not open: altered, moved, or under another key."""


def new_key() -> bytes:
    """A new AES-256 key."""
    return os.urandom(KEY_BYTES)


def seal(key: bytes, plaintext: bytes, aad: str) -> bytes:
    """``nonce || AES-256-GCM(key, plaintext, aad)``."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad.encode())


def unseal(key: bytes, blob: bytes, aad: str) -> bytes:
    """The plaintext of :func:`seal`.

    Raises:
        UnwrapError: the blob does not open under ``key`` with ``aad``.
    """
    try:
        return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad.encode())
    except (InvalidTag, ValueError):
        raise UnwrapError(f"the blob does not open under this key ({aad})") from None


def load_or_create_root_key(path: Path) -> bytes:
    """The service's root key, created (mode 0600) on first use."""
    if path.exists():
        data = path.read_bytes()
        if len(data) != KEY_BYTES:
            raise UnwrapError(f"{path} is not a {KEY_BYTES}-byte key")
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


def dep_aad(dep_guid: str, layer: str) -> str:
    """Associated data of a DEP key wrapped by ``layer`` (``availability``, ``microsoft-managed``)."""
    return f"dep/{dep_guid}/{layer}"


def unit_aad(unit: str, dep_guid: str) -> str:
    """Associated data of a mailbox's or site's key wrapped by the key of DEP ``dep_guid``."""
    return f"unit/{unit}/dep/{dep_guid}"


def item_aad(unit: str, index: int) -> str:
    """Associated data of a sample item."""
    return f"item/{unit}/{index}"


def encrypt_items(unit_key: bytes, unit: str, subjects: list[str]) -> list[dict[str, Any]]:
    """Sample items: each subject and a body, AES-GCM under the unit's key."""
    out = []
    for index, subject in enumerate(subjects):
        body = f"{subject}\n\nSample content of {unit}, item {index + 1}.".encode()
        blob = seal(unit_key, body, item_aad(unit, index))
        out.append({"subject": subject, "ciphertext": base64.b64encode(blob).decode()})
    return out


def decrypt_items(unit_key: bytes, unit: str, items: list[dict[str, Any]]) -> list[dict[str, str]]:
    """The sample items in the clear.

    Raises:
        UnwrapError: an item does not open under ``unit_key``.
    """
    out = []
    for index, item in enumerate(items):
        body = unseal(unit_key, base64.b64decode(item["ciphertext"]), item_aad(unit, index))
        out.append({"subject": str(item["subject"]), "body": body.decode()})
    return out
