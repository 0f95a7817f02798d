"""Tables of ckey's own database (SQLAlchemy 2 typed ORM). Alembic migrations in ``ckey/migrations`` create them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of ckey's tables."""

    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class OperationRow(Base):
    """One operation: its request and its last known state. Outlives Temporal's retention."""

    __tablename__ = "operations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(32), index=True)
    phase: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    started_by: Mapped[str] = mapped_column(String(256))
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    idempotency_key: Mapped[str | None] = mapped_column(String(256), default=None)
    fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    """Hash of the start request, to tell a retry from a different request under the same Idempotency-Key."""
    dep: Mapped[str | None] = mapped_column(String(128), default=None, index=True)
    progress: Mapped[dict[str, Any]] = mapped_column(default=dict)
    escalations: Mapped[list[Any]] = mapped_column(default=list)
    gates: Mapped[list[Any]] = mapped_column(default=list)
    result: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)


class AuditEventRow(Base):
    """One entry of the append-only, hash-chained audit trail."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_operation_seq", "operation_id", "seq"),)

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    key: Mapped[str] = mapped_column(String(300), unique=True)
    """Idempotency key (operation id plus step), so a retried write lands once."""
    operation_id: Mapped[str | None] = mapped_column(String(64), default=None)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(128))
    target: Mapped[str | None] = mapped_column(Text, default=None)
    """The cmdlet line or API call, when the event is one."""
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHeadRow(Base):
    """The head of the hash chain: one row, locked by each append so that appends are serialized."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpointRow(Base):
    """A signed checkpoint of the audit chain (append-only, like the entries): see :mod:`ckey.audit`."""

    __tablename__ = "audit_checkpoints"

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False
    )
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


class TargetSetRow(Base):
    """A set of targets (mailboxes) stored once and passed to workflows by reference (a claim check)."""

    __tablename__ = "target_sets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(256))
    """``inline`` or the uploaded file's name."""
    count: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime]


class TargetItemRow(Base):
    """One target of a set, in upload order."""

    __tablename__ = "target_items"

    set_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    identity: Mapped[str] = mapped_column(String(320))


class MailboxFollowRow(Base):
    """Where one mailbox of one operation stands: assigned, encrypted, escalated."""

    __tablename__ = "mailbox_follow"
    __table_args__ = (Index("ix_mailbox_follow_pending", "operation_id", "encrypted_at"),)

    operation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    identity: Mapped[str] = mapped_column(String(320), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    sent_at: Mapped[datetime | None] = mapped_column(default=None)
    """When the assignment's call was last about to be sent (its intent); with no outcome, it was in flight."""
    assigned_at: Mapped[datetime | None] = mapped_column(default=None)
    encrypted_at: Mapped[datetime | None] = mapped_column(default=None)
    checked_at: Mapped[datetime | None] = mapped_column(default=None)
    is_encrypted: Mapped[bool] = mapped_column(default=False)
    dep_guid: Mapped[str | None] = mapped_column(String(64), default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    escalated_at: Mapped[datetime | None] = mapped_column(default=None)
    recipient_type: Mapped[str | None] = mapped_column(String(16), default=None)
    """``mailbox`` or ``mail_user`` as the bulk lookup resolved it; ``None`` for rows registered without one."""
    migrates_at: Mapped[datetime | None] = mapped_column(default=None)
    """When Get-MailUser first showed the DEP on this mail user: assigned, it encrypts on migration (done)."""


class KeyBackupRow(Base):
    """A key's backup blob (``Backup-AzKeyVaultKey``), uploaded once and passed to workflows by its id.

    The blob is stored as uploaded: it is encrypted by Key Vault (usable only in a vault of the same geography and
    subscription), and this database is the trust zone of the target sets. Only its SHA-256 and size are shown.
    """

    __tablename__ = "key_backups"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime]


class LeaseRow(Base):
    """A target an operation holds until its end (``ckey.operations.Lease``)."""

    __tablename__ = "leases"
    __table_args__ = (Index("ix_leases_operation", "operation_id"),)

    target: Mapped[str] = mapped_column(String(400), primary_key=True)
    operation_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    mode: Mapped[str] = mapped_column(String(8))
    acquired_at: Mapped[datetime]


class LeaseLockRow(Base):
    """One row that every lease acquisition updates first, so acquisitions never interleave on any database."""

    __tablename__ = "lease_lock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    generation: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), default=0)


class RecipientRow(Base):
    """The inventory's view of one recipient (mailbox or mail user).

    ``inventory.sync`` keeps it fresh, and so does every operation that assigns a DEP or reads an encryption status.
    """

    __tablename__ = "inventory_recipients"
    __table_args__ = (
        Index("ix_inventory_recipients_dep", "dep_key", "key"),
        Index("ix_inventory_recipients_dep_encrypted", "dep_key", "is_encrypted", "key"),
        Index("ix_inventory_recipients_encrypted", "is_encrypted", "key"),
        Index("ix_inventory_recipients_upn", "upn_key"),
    )

    key: Mapped[str] = mapped_column(String(320), primary_key=True)
    """The identity in lower case (Exchange compares identities without case): the sort order of every page."""
    identity: Mapped[str] = mapped_column(String(320))
    recipient_type: Mapped[str | None] = mapped_column(String(64), default=None)
    user_principal_name: Mapped[str | None] = mapped_column(String(320), default=None)
    upn_key: Mapped[str | None] = mapped_column(String(320), default=None)
    """The UPN in lower case: operations name recipients by identity or by UPN."""
    dep: Mapped[str | None] = mapped_column(String(128), default=None)
    """The DEP assigned (Get-Mailbox / Get-MailUser's DataEncryptionPolicy)."""
    dep_key: Mapped[str | None] = mapped_column(String(128), default=None)
    dep_guid: Mapped[str | None] = mapped_column(String(64), default=None)
    is_encrypted: Mapped[bool | None] = mapped_column(default=None)
    """Get-MailboxStatistics' IsEncrypted under the assigned DEP; null for a mail user or not read yet."""
    encrypted_with: Mapped[str | None] = mapped_column(String(64), default=None)
    """The DEP GUID Get-MailboxStatistics last reported (the one its data is encrypted with)."""
    status_at: Mapped[datetime | None] = mapped_column(default=None)
    """When the encryption status was last read."""
    seen_at: Mapped[datetime]
    """When the tenant last listed this recipient."""
    updated_at: Mapped[datetime]
    source: Mapped[str | None] = mapped_column(String(64), default=None)
    """The operation that last changed this row (an assignment, a status round, a sync)."""


class InventoryDepRow(Base):
    """A DEP of a workload as the tenant last reported it."""

    __tablename__ = "inventory_deps"

    workload: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    guid: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    azure_key_ids: Mapped[list[Any]] = mapped_column(default=list)
    enabled: Mapped[bool] = mapped_column(default=True)
    purge_requested: Mapped[bool] = mapped_column(default=False)
    seen_at: Mapped[datetime]
    source: Mapped[str | None] = mapped_column(String(64), default=None)


class InventoryKeyRow(Base):
    """A key in use by a DEP and its health as last checked."""

    __tablename__ = "inventory_keys"

    key_id: Mapped[str] = mapped_column(String(400), primary_key=True)
    vault: Mapped[str] = mapped_column(String(64), index=True)
    healthy: Mapped[bool | None] = mapped_column(default=None)
    problems: Mapped[list[Any]] = mapped_column(default=list)
    checked_at: Mapped[datetime | None] = mapped_column(default=None)
    source: Mapped[str | None] = mapped_column(String(64), default=None)


class InventorySyncRow(Base):
    """When each part of the inventory was last completely read from the tenant (the pages' ``as_of``)."""

    __tablename__ = "inventory_sync"

    scope: Mapped[str] = mapped_column(String(32), primary_key=True)
    as_of: Mapped[datetime]
    operation_id: Mapped[str | None] = mapped_column(String(64), default=None)
    count: Mapped[int] = mapped_column(Integer, default=0)


class InventoryVaultRow(Base):
    """A vault and its keys as ckey last read them (``ckey.models.VaultSummary``)."""

    __tablename__ = "inventory_vaults"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The vault's name in lower case."""
    summary: Mapped[dict[str, Any]] = mapped_column()
    seen_at: Mapped[datetime]
    source: Mapped[str | None] = mapped_column(String(64), default=None)
