"""The data purge of a mailbox DEP, Microsoft's side: the Data Purge eDocument, its signatures, the purge steps.

Microsoft issues the eDocument (the DEP, its mailboxes, the reason and contact, a SHA-256 of its content); once it
comes back signed (Ed25519 signatures over the SHA-256, with the signers' public keys), the purge runs in simulated
time: the policy is deleted, its mailboxes are marked for permanent deletion, the availability key is deleted.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import select

from sandbox.m365.clock import iso
from sandbox.m365.core import Core
from sandbox.m365.db import CaseRow, DepRow, MailboxRow
from sandbox.m365.errors import DeskError
from sandbox.m365.support_cases import PURGE

EDOCUMENT_TYPE = "Microsoft 365 Customer Key Data Purge Authorization"
PURGE_STEPS = ("delete-policy", "mark-mailboxes", "delete-availability-key")
PURGE_NOTES = {
    "delete-policy": "We deleted the data encryption policy.",
    "mark-mailboxes": "We marked the policy's mailboxes for permanent deletion.",
    "delete-availability-key": "We deleted the availability key. The data purge is complete.",
}
"""What Microsoft writes on the case after each purge step."""


def canonical(document: dict[str, Any]) -> str:
    """The eDocument's canonical JSON text (sorted keys, no spaces): what its SHA-256 covers."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _public_key(text: str) -> Ed25519PublicKey:
    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = serialization.load_pem_public_key(text.encode())
    else:
        raw = base64.b64decode(text, validate=True)
        key = Ed25519PublicKey.from_public_bytes(raw)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


class DataPurge:
    """The eDocument and the purge steps of ``dataPurgeEDocument`` cases.

    Args:
        core: the tenant's shared state and key hierarchy.
    """

    def __init__(self, core: Core) -> None:
        self.core = core

    def edocument(self, row: CaseRow) -> dict[str, Any]:
        """The Data Purge eDocument of a case: its canonical text and SHA-256.

        Raises:
            DeskError: not a purge case, or not issued yet.
        """
        if row.kind != PURGE:
            raise DeskError(400, "BadRequest", "Only a dataPurgeEDocument case has an eDocument.")
        if row.edocument is None:
            raise DeskError(409, "Conflict", "The eDocument hasn't been issued yet; Microsoft sends it shortly.")
        return {
            "name": f"{row.name}-edocument",
            "contentType": "application/json",
            "content": row.edocument,
            "sha256": row.edocument_sha256,
            "signatureAlgorithm": "Ed25519 over the 32-byte SHA-256 digest of content (UTF-8)",
        }

    def signatures(self, row: CaseRow, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The signatures of a signed eDocument, each verified against the issued one's SHA-256.

        Raises:
            DeskError: wrong stage, wrong hash, or a signature that does not verify.
        """
        if row.kind != PURGE:
            raise DeskError(400, "BadRequest", "Only a dataPurgeEDocument case takes a signed eDocument.")
        if row.stage != "awaiting-signature" or row.edocument_sha256 is None:
            raise DeskError(
                409, "Conflict", f"The case is at the stage '{row.stage}'; it isn't waiting for a signature."
            )
        if str(body.get("sha256", "")).lower() != row.edocument_sha256:
            raise DeskError(400, "BadRequest", "The SHA-256 of the signed document doesn't match the issued eDocument.")
        signatures = body.get("signatures")
        if not isinstance(signatures, list) or not signatures:
            raise DeskError(400, "BadRequest", "Return the eDocument with at least one signature.")
        digest = bytes.fromhex(row.edocument_sha256)
        accepted: list[dict[str, Any]] = []
        for entry in signatures:
            if not isinstance(entry, dict) or not entry.get("signer"):
                raise DeskError(400, "BadRequest", "Each signature names its signer.")
            signer = str(entry["signer"])
            try:
                key = _public_key(str(entry.get("publicKey", "")))
                signature = base64.b64decode(str(entry.get("signature", "")), validate=True)
            except (ValueError, binascii.Error, TypeError):
                raise DeskError(400, "BadRequest", f"The public key or signature of {signer} isn't readable.") from None
            if not _verifies(key, signature, digest, row.edocument_sha256):
                raise DeskError(400, "BadRequest", f"The signature of {signer} doesn't verify against the eDocument.")
            accepted.append(
                {"signer": signer, "publicKey": str(entry["publicKey"]), "signature": str(entry["signature"])}
            )
        if len({a["signer"] for a in accepted}) != len(accepted):
            raise DeskError(400, "BadRequest", "A signer signed twice.")
        return accepted

    def schedule(self, now: float) -> dict[str, float]:
        """When each purge step runs, once the signed eDocument came back at ``now``."""
        d = self.core.durations
        policy_at = now + d.purge_delete_policy
        mark_at = policy_at + d.purge_mark_mailboxes
        return {
            "delete-policy": policy_at,
            "mark-mailboxes": mark_at,
            "delete-availability-key": mark_at + d.purge_delete_availability_key,
        }

    async def issue(self, row: CaseRow, now: float) -> dict[str, Any]:
        """The eDocument of a purge case, issued at ``now`` (its canonical text is what the signers sign)."""
        guid = str(row.details["dataEncryptionPolicyId"])
        async with self.core.db.session() as s:
            dep = await s.get(DepRow, guid)
            assert dep is not None
            mailboxes = (
                await s.scalars(select(MailboxRow.upn).where(MailboxRow.dep_guid == guid).order_by(MailboxRow.upn))
            ).all()
        return {
            "documentType": EDOCUMENT_TYPE,
            "case": {"name": row.name, "supportTicketId": row.ticket_id},
            "tenant": {"fqdn": self.core.tenant.get("fqdn"), "tenantId": self.core.settings.azure_tenant_id},
            "dataEncryptionPolicy": {"name": dep.name, "guid": dep.guid, "azureKeyIds": list(dep.azure_key_ids)},
            "mailboxes": list(mailboxes),
            "reason": dep.purge_reason,
            "contact": dep.purge_contact,
            "purgeRequestedDateTime": iso(dep.purge_requested_at),
            "issuedDateTime": iso(now),
            "statement": (
                "The signatories, authorized to act for the organization, acknowledge and authorize the permanent "
                "deletion of the data encrypted with this data encryption policy. Once the purge completes the data is "
                "inaccessible to Exchange Online and isn't recoverable."
            ),
        }

    async def step(self, row: CaseRow, step: str, now: float) -> str:
        """Carry out one of :data:`PURGE_STEPS`; the case's new stage."""
        guid = str(row.details["dataEncryptionPolicyId"])
        async with self.core.db.session() as s, s.begin():
            dep = await s.get(DepRow, guid)
            assert dep is not None
            if step == "delete-policy":
                # The policy goes, and with it the DEP key's copies wrapped by the customer keys.
                dep.deleted_at = now
                dep.wrapped_1 = dep.wrapped_2 = None
                stage = "policy-deleted"
            elif step == "mark-mailboxes":
                marked = (
                    await s.scalars(
                        select(MailboxRow).where(
                            (MailboxRow.dep_guid == guid)
                            | (MailboxRow.key_current_dep == guid)
                            | (MailboxRow.key_target_dep == guid)
                        )
                    )
                ).all()
                for mailbox in marked:
                    mailbox.soft_deleted_at = now
                stage = "mailboxes-marked"
            else:
                dep.availability_key = None
                dep.wrapped_availability = None
                stage = "purged"
            dep.changed_at = now
        self.core.forget(guid)
        return stage


def _verifies(key: Ed25519PublicKey, signature: bytes, digest: bytes, hex_digest: str) -> bool:
    # Over the 32-byte digest; a signer that signed the hexadecimal text of the digest is accepted too.
    for message in (digest, hex_digest.encode()):
        try:
            key.verify(signature, message)
        except InvalidSignature:
            continue
        return True
    return False
