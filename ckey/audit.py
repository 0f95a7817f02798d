"""The audit trail's hash chain, its signed checkpoints, and the one verification of both.

Each audit entry's hash covers the previous entry's hash and the entry itself, so a changed or removed entry breaks
the chain. That alone does not catch an attacker who deletes the tail and rewinds the chain head, or who changes an
entry and recomputes every hash after it: the chain is then consistent again. Checkpoints anchor it: every
``audit_checkpoint_every`` entries, and at the end of every operation, ckey signs ``(seq, hash at seq, time)`` with an
Ed25519 key that lives in a file outside the database. Whoever holds the public key can then tell that the chain no
longer has the entry a checkpoint names (truncation) or has another hash there (recomputation); forging a
checkpoint needs the private key.

:class:`ChainChecker` is the verification, shared by the store (``GET /api/audit/verify``), the CLI's check of a
trail it downloaded, and the offline check of an export (``ckey audit verify --file``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ValidationError

from ckey.config import ensure_private_dir
from ckey.operations import AuditEvent

GENESIS_HASH = "0" * 64
CHECKPOINT_FORMAT = "ckey-audit-checkpoint/1"
EXPORT_FORMAT = "ckey-audit-export/1"
END_ACTIONS = frozenset({"operation.succeeded", "operation.failed", "operation.cancelled"})
"""Audit actions that end an operation: each gets a checkpoint, so an operation's whole record is anchored."""


class AuditKeyError(Exception):
    """The checkpoint key file is not an Ed25519 key."""


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; naive values (SQLite hands them back) are taken as UTC.

    The one helper for it: the audit chain and every store module (``ckey.store``, its targets and backups) use it.
    """
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def audit_hash(prev_hash: str, seq: int, event: AuditEvent) -> str:
    """The chain hash of one audit entry: SHA-256 over the previous hash and the entry's canonical JSON."""
    body = event.model_dump(mode="json")
    body["at"] = as_utc(event.at).isoformat()
    canonical = json.dumps({"seq": seq, "prev": prev_hash, **body}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


# Checkpoints ---------------------------------------------------------------------------------------------------


class Checkpoint(BaseModel):
    """A signed statement that the audit chain had ``hash`` at entry ``seq`` at time ``at``."""

    seq: int
    hash: str
    at: datetime
    key_id: str
    """SHA-256 (hex) of the raw public key that verifies ``signature``."""
    signature: str
    """Ed25519 signature (base64) of :func:`checkpoint_message`."""


def checkpoint_message(seq: int, chain_hash: str, at: datetime) -> bytes:
    """The canonical bytes a checkpoint signs: sorted-key compact JSON, the time in UTC ISO 8601."""
    body = {"format": CHECKPOINT_FORMAT, "seq": seq, "hash": chain_hash, "at": as_utc(at).isoformat()}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """The id of a checkpoint key: SHA-256 of its raw 32 bytes, hex."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """The public key as PEM (SubjectPublicKeyInfo), what ``--public-key`` reads."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM; a private key's PEM gives its public half.

    Raises:
        AuditKeyError: the PEM holds no Ed25519 key.
    """
    try:
        key: Any = serialization.load_pem_public_key(pem)
    except ValueError:
        try:
            key = serialization.load_pem_private_key(pem, password=None).public_key()
        except (ValueError, TypeError) as exc:
            raise AuditKeyError(f"not a PEM Ed25519 key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError("not an Ed25519 key")
    return key


class CheckpointSigner:
    """Signs checkpoints with an Ed25519 private key held outside the database."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(self.public_key)

    @classmethod
    def from_file(cls, path: Path) -> CheckpointSigner:
        """The signer whose key is at ``path``, created there (mode 0600, folder 0700) on first use.

        The API and the worker may both start first: the key is written to a temporary file and linked into place,
        so each process ends up with the same, complete key.

        Raises:
            AuditKeyError: the file holds something other than an Ed25519 private key.
        """
        if not path.exists():
            _create_key(path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise AuditKeyError(f"audit checkpoint key {path}: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditKeyError(f"audit checkpoint key {path}: not an Ed25519 private key")
        return cls(key)

    def sign(self, seq: int, chain_hash: str, at: datetime) -> Checkpoint:
        """A checkpoint for the chain's ``chain_hash`` at entry ``seq``."""
        at = as_utc(at)
        signature = self._key.sign(checkpoint_message(seq, chain_hash, at))
        return Checkpoint(
            seq=seq, hash=chain_hash, at=at, key_id=self.key_id, signature=base64.b64encode(signature).decode()
        )


def _create_key(path: Path) -> None:
    ensure_private_dir(path.parent)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    staging = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
            out.flush()
            os.fsync(out.fileno())
        # Atomic, and refused if another process linked its key first: that one is then used.
        with contextlib.suppress(FileExistsError):
            os.link(staging, path)
    finally:
        os.unlink(staging)


def checkpoint_problem(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> str | None:
    """Why ``checkpoint`` is not a valid signature by ``public_key``, or ``None`` when it is."""
    if checkpoint.key_id != key_id(public_key):
        return f"the checkpoint at row {checkpoint.seq} was signed by another key ({checkpoint.key_id[:16]}…)"
    try:
        public_key.verify(
            base64.b64decode(checkpoint.signature, validate=True),
            checkpoint_message(checkpoint.seq, checkpoint.hash, checkpoint.at),
        )
    except (InvalidSignature, ValueError):
        return f"the checkpoint at row {checkpoint.seq} has an invalid signature (forged or altered)"
    return None


# Verification --------------------------------------------------------------------------------------------------


class ChainVerification(BaseModel):
    """Result of checking the audit trail's hash chain and its checkpoints."""

    ok: bool
    events: int
    """Entries verified (up to the break, when there is one)."""
    broken_at: int | None = None
    """The first sequence number whose hash or link does not match, that is malformed or missing, or the first one
    that a signed checkpoint no longer vouches for (truncation, recomputation)."""
    reason: str | None = None
    """Why the chain is broken there."""
    checkpoints: int = 0
    """Checkpoints whose entry and hash the chain still has."""
    last_checkpoint: int | None = None
    """The last entry a matching checkpoint anchors."""
    signatures_checked: bool = False
    """Whether the checkpoints' signatures were verified (a public key was at hand)."""


_EVENT_FIELDS = tuple(AuditEvent.model_fields)


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}" for e in exc.errors())


class ChainChecker:
    """Walks audit entries in chain order and reports the first break.

    Feed every entry (as a mapping of :class:`~ckey.operations.AuditRecord`'s fields) with :meth:`feed` until it
    returns ``False``, then call :meth:`finish` with the chain head.

    Args:
        checkpoints: every checkpoint up to the head; each must match the entry it names.
        public_key: the checkpoint key; without it the checkpoints are compared but their signatures are not
            checked (``signatures_checked`` is false).
    """

    def __init__(self, checkpoints: Iterable[Checkpoint], public_key: Ed25519PublicKey | None) -> None:
        self.count = 0
        self.prev = GENESIS_HASH
        self._failure: tuple[int, str] | None = None
        self._stopped = False
        self._anchored = 0
        self._matched = 0
        self._public_key = public_key
        self._pending: dict[int, list[Checkpoint]] = {}
        for checkpoint in checkpoints:
            if public_key is not None and (problem := checkpoint_problem(checkpoint, public_key)):
                self.fail(max(checkpoint.seq, 1), problem)
                continue
            self._pending.setdefault(checkpoint.seq, []).append(checkpoint)

    def fail(self, seq: int, reason: str) -> None:
        """Record a break at ``seq``; the earliest break is the one reported."""
        if self._failure is None or seq < self._failure[0]:
            self._failure = (seq, reason)

    def feed(self, record: Mapping[str, Any]) -> bool:
        """Check the next entry; ``False`` once the chain is broken (feed no more)."""
        if self._stopped:
            return False
        expected = self.count + 1
        seq = record.get("seq")
        if record.get("malformed"):
            return self._stop(
                seq if isinstance(seq, int) and seq > 0 else expected, f"row {seq} is malformed: {record['malformed']}"
            )
        if not isinstance(seq, int) or seq != expected:
            if isinstance(seq, int) and seq > expected:
                return self._stop(expected, f"row {expected} is missing (the next row is {seq}): it was removed")
            return self._stop(expected, f"row {seq!r} is out of order where row {expected} should be")
        try:
            event = AuditEvent.model_validate({name: record[name] for name in _EVENT_FIELDS if name in record})
        except ValidationError as exc:
            return self._stop(seq, f"row {seq} is malformed: {_errors(exc)}")
        if record.get("prev_hash") != self.prev:
            return self._stop(seq, f"row {seq} does not link to row {seq - 1}: a row before it was removed or changed")
        digest = audit_hash(self.prev, seq, event)
        if record.get("hash") != digest:
            return self._stop(seq, f"row {seq} was changed: its hash does not match its content")
        self.prev, self.count = digest, seq
        for checkpoint in self._pending.pop(seq, []):
            if checkpoint.hash != digest:
                # Rows up to the last matching checkpoint are as signed; the change lies after it.
                return self._stop(
                    self._anchored + 1,
                    f"the checkpoint signed at {as_utc(checkpoint.at).isoformat()} for row {seq} names another hash: "
                    f"a row from {self._anchored + 1} to {seq} was changed and the chain recomputed",
                )
            self._anchored = seq
            self._matched += 1
        return True

    def _stop(self, seq: int, reason: str) -> Literal[False]:
        self.fail(seq, reason)
        self._stopped = True
        return False

    def finish(self, head: tuple[int, str] | None) -> ChainVerification:
        """The verdict, given the chain head (``seq``, ``hash``) or ``None`` when the head row is missing."""
        if not self._stopped:
            for seq in sorted(self._pending):
                at = as_utc(self._pending[seq][0].at).isoformat()
                self.fail(
                    self.count + 1,
                    f"the checkpoint signed at {at} names row {seq} but the chain ends at row {self.count}: "
                    f"rows from {self.count + 1} were removed",
                )
                break
            if head is None:
                self.fail(self.count + 1, "the chain head is missing")
            elif head[0] > self.count:
                self.fail(
                    self.count + 1,
                    f"the chain head is at row {head[0]} but the chain ends at row {self.count}: rows were removed",
                )
            elif head[0] < self.count:
                self.fail(head[0] + 1, f"rows after the chain head (row {head[0]}) exist: the head was rewound")
            elif head[1] != self.prev:
                self.fail(max(self.count, 1), f"the chain head's hash differs from row {self.count}'s")
        verdict = ChainVerification(
            ok=self._failure is None,
            events=self.count,
            checkpoints=self._matched,
            last_checkpoint=self._anchored or None,
            signatures_checked=self._public_key is not None,
        )
        if self._failure is not None:
            verdict.broken_at, verdict.reason = self._failure
        return verdict


# Exports -------------------------------------------------------------------------------------------------------


class ExportError(Exception):
    """An export file is not in ckey's audit export format."""


def export_lines(
    head: tuple[int, str], events: Iterable[Mapping[str, Any]], checkpoints: Iterable[Checkpoint], exported_at: datetime
) -> Iterator[str]:
    """The JSON Lines of an export: a header naming the head, every entry, then every checkpoint."""
    yield json.dumps(
        {
            "type": "header",
            "format": EXPORT_FORMAT,
            "exported_at": as_utc(exported_at).isoformat(),
            "head": {"seq": head[0], "hash": head[1]},
        }
    )
    for event in events:
        yield json.dumps({"type": "event", **event})
    for checkpoint in checkpoints:
        yield json.dumps({"type": "checkpoint", **checkpoint.model_dump(mode="json")})


def _read_export(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise ExportError(f"{path}:{number}: not JSON") from None
            if not isinstance(item, dict) or item.get("type") not in ("header", "event", "checkpoint"):
                raise ExportError(f"{path}:{number}: not a header, event or checkpoint line")
            yield number, item


def verify_export(path: Path, public_key: Ed25519PublicKey) -> ChainVerification:
    """Verify an export (``ckey audit export``) with the checkpoint public key alone.

    Raises:
        ExportError: the file is not an export.
    """
    head: tuple[int, str] | None = None
    checkpoints: list[Checkpoint] = []
    for number, item in _read_export(path):
        if item["type"] == "header":
            if item.get("format") != EXPORT_FORMAT:
                raise ExportError(f"{path}:{number}: format {item.get('format')!r}, expected {EXPORT_FORMAT}")
            try:
                head = (int(item["head"]["seq"]), str(item["head"]["hash"]))
            except (KeyError, TypeError, ValueError):
                raise ExportError(f"{path}:{number}: the header names no chain head") from None
        elif item["type"] == "checkpoint":
            try:
                checkpoints.append(Checkpoint.model_validate(item))
            except ValidationError as exc:
                raise ExportError(f"{path}:{number}: invalid checkpoint: {_errors(exc)}") from None
    if head is None:
        raise ExportError(f"{path}: no header line")
    checker = ChainChecker(checkpoints, public_key)
    for _, item in _read_export(path):
        if item["type"] == "event" and not checker.feed(item):
            break
    return checker.finish(head)
