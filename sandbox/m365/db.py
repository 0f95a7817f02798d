"""The sandbox tenant's tables (SQLAlchemy 2), in their own SQLite file so that the tenant survives a restart.

``Base.metadata.create_all`` creates them: the sandbox has no migrations, and a schema change means a new data dir.
Instants are seconds of the sandbox clock (:class:`sandbox.m365.clock.SimClock`). Progress is never stored: it is
computed from these instants when somebody asks, so a tenant of 10,000 idle mailboxes costs nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import JSON, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sandbox.common import SandboxDatabase


class Base(DeclarativeBase):
    """Declarative base of the sandbox tenant's tables."""

    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON, list[dict[str, Any]]: JSON, bytes: LargeBinary}


class StateRow(Base):
    """Tenant-wide state: the clock, the tenant's description, faults, the multi-workload assignment, move lanes."""

    __tablename__ = "state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)


class DepRow(Base):
    """A data encryption policy: a mailbox DEP, a multi-workload DEP, or a SharePoint geo's DEP.

    The DEP key (AES-256) is kept three times, wrapped: by each customer key (through Key Vault, as the workload's
    service principal) and by the DEP's availability key, which the service holds sealed under its own key.
    """

    __tablename__ = "deps"

    guid: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    """``exchange``, ``multi_workload`` or ``sharepoint`` (:class:`sandbox.vocabulary.Workload`)."""
    name: Mapped[str]
    name_lower: Mapped[str] = mapped_column(index=True)
    description: Mapped[str | None] = mapped_column(default=None)
    azure_key_ids: Mapped[list[str]] = mapped_column(default=list)
    """The key URIs as the administrator gave them."""
    key_versions: Mapped[list[str]] = mapped_column(default=list)
    """The versioned key identifiers that wrap the DEP key now (the latest versions after a refresh)."""
    wrapped_1: Mapped[bytes | None] = mapped_column(default=None)
    wrapped_2: Mapped[bytes | None] = mapped_column(default=None)
    wrapped_availability: Mapped[bytes | None] = mapped_column(default=None)
    availability_key: Mapped[bytes | None] = mapped_column(default=None)
    """Sealed under the service's key; destroyed by the data purge."""
    is_default: Mapped[bool] = mapped_column(default=False)
    """The Microsoft-managed DEP (its key wrapped only by the service's key)."""
    enabled: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[float]
    changed_at: Mapped[float]
    refreshed_at: Mapped[float | None] = mapped_column(default=None)
    purge_requested: Mapped[bool] = mapped_column(default=False)
    purge_reason: Mapped[str | None] = mapped_column(default=None)
    purge_contact: Mapped[str | None] = mapped_column(default=None)
    purge_requested_at: Mapped[float | None] = mapped_column(default=None)
    deleted_at: Mapped[float | None] = mapped_column(default=None)


class MailboxRow(Base):
    """A recipient with mailbox data: a mailbox, or a mail user (hybrid, not migrated yet).

    Its mailbox key (AES-256) is wrapped by the DEP key of the DEP that encrypts its data (``key_current``); while a
    move or re-encryption to another DEP runs, the same key is also wrapped by the target DEP's key
    (``key_target``), which counts from ``move_due_at`` on.
    """

    __tablename__ = "mailboxes"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    guid: Mapped[str] = mapped_column(String(36), unique=True)
    exchange_guid: Mapped[str] = mapped_column(String(36))
    name: Mapped[str]
    name_lower: Mapped[str] = mapped_column(unique=True)
    display_name: Mapped[str]
    upn: Mapped[str]
    upn_lower: Mapped[str] = mapped_column(unique=True)
    recipient_type_details: Mapped[str] = mapped_column(index=True)
    """``UserMailbox``, ``SharedMailbox`` or ``MailUser``."""
    size_bytes: Mapped[int]
    item_count: Mapped[int]
    database: Mapped[str]
    created_at: Mapped[float]
    dep_guid: Mapped[str | None] = mapped_column(default=None, index=True)
    """The assigned Customer Key DEP; None: the Microsoft-managed DEP."""
    assigned_at: Mapped[float | None] = mapped_column(default=None)
    move_due_at: Mapped[float | None] = mapped_column(default=None)
    """When the data is encrypted under the assigned DEP; None: not scheduled (a mail user before its migration)."""
    moved_once: Mapped[bool] = mapped_column(default=False)
    """A first-time move under a Customer Key DEP has completed (later changes only re-encrypt)."""
    assignments: Mapped[int] = mapped_column(default=0)
    """DEP changes applied to it (a repeated Set-Mailbox to the same DEP changes nothing and does not count)."""
    stuck: Mapped[bool] = mapped_column(default=False)
    """Its moves never finish (sandbox fault, to exercise the one-week escalation)."""
    key_current: Mapped[bytes]
    key_current_dep: Mapped[str] = mapped_column(String(36))
    key_target: Mapped[bytes | None] = mapped_column(default=None)
    key_target_dep: Mapped[str | None] = mapped_column(String(36), default=None)
    items: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    """Sample items, AES-GCM under the mailbox key: ``{"subject", "nonce", "ciphertext"}`` (base64)."""
    migrated_at: Mapped[float | None] = mapped_column(default=None)
    soft_deleted_at: Mapped[float | None] = mapped_column(default=None)
    """Marked for permanent deletion by the data purge."""


class GeoRow(Base):
    """A SharePoint/OneDrive geo: its admin host, its sites, and its DEP's registration and key rolls."""

    __tablename__ = "geos"

    geo: Mapped[str] = mapped_column(String(8), primary_key=True)
    admin_host: Mapped[str] = mapped_column(unique=True)
    root_host: Mapped[str]
    is_default: Mapped[bool] = mapped_column(default=False)
    site_count: Mapped[int]
    dep_guid: Mapped[str | None] = mapped_column(String(36), default=None)
    registered_at: Mapped[float | None] = mapped_column(default=None)
    roll_started_at: Mapped[float | None] = mapped_column(default=None)
    roll_key_type: Mapped[str | None] = mapped_column(default=None)
    rolls: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    """Past key rolls: ``{"key_type", "from", "to", "started_at"}``."""
    paused_at: Mapped[float | None] = mapped_column(default=None)
    """A stalled geo (sandbox fault): progress stops at this instant ..."""
    paused_total: Mapped[float] = mapped_column(default=0.0)
    """... and the time spent stalled no longer counts once it resumes."""
    recovery_at: Mapped[float | None] = mapped_column(default=None)
    """In recovery mode since (Microsoft recovered the geo with its availability key after the customer lost access
    to its keys), until Restore-SPODataEncryptionPolicy gives it new keys."""


class SiteRow(Base):
    """A site: its key wrapped by its geo's DEP key (or the Microsoft-managed one), and one sample item."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    geo: Mapped[str] = mapped_column(String(8), index=True)
    idx: Mapped[int]
    url: Mapped[str]
    key_current: Mapped[bytes]
    key_current_dep: Mapped[str] = mapped_column(String(36))
    key_target: Mapped[bytes | None] = mapped_column(default=None)
    key_target_dep: Mapped[str | None] = mapped_column(String(36), default=None)
    items: Mapped[list[dict[str, Any]]] = mapped_column(default=list)


class CloudPcRow(Base):
    """A Windows 365 Cloud PC and the customer-managed-key re-encryption of its disk."""

    __tablename__ = "cloud_pcs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    display_name: Mapped[str]
    upn: Mapped[str]
    managed_device_name: Mapped[str]
    provisioned_at: Mapped[float]
    cmk_requested_at: Mapped[float | None] = mapped_column(default=None)
    cmk_due_at: Mapped[float | None] = mapped_column(default=None)
    bulk_action_id: Mapped[str | None] = mapped_column(default=None)


class BulkActionRow(Base):
    """A Cloud PC bulk action (``cloudPcBulkModifyDiskEncryptionType``)."""

    __tablename__ = "bulk_actions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    display_name: Mapped[str]
    created_at: Mapped[float]
    disk_encryption_type: Mapped[str]
    cloud_pc_ids: Mapped[list[str]] = mapped_column(default=list)


class AlertRow(Base):
    """Something the service noticed that an administrator should hear of (the availability key was used ...)."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    at: Mapped[float]
    kind: Mapped[str]
    dep_guid: Mapped[str | None] = mapped_column(default=None)
    subject: Mapped[str | None] = mapped_column(default=None)
    detail: Mapped[str]


class CaseRow(Base):
    """A support case at Microsoft's support desk, and what Microsoft does about it, step by step."""

    __tablename__ = "cases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    """The client-supplied ticket name: the idempotency key."""
    ticket_id: Mapped[str] = mapped_column(unique=True)
    kind: Mapped[str]
    title: Mapped[str]
    description: Mapped[str]
    severity: Mapped[str]
    contact: Mapped[dict[str, Any]] = mapped_column(default=dict)
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(default="Open")
    stage: Mapped[str]
    created_by: Mapped[str]
    created_at: Mapped[float]
    modified_at: Mapped[float]
    communications: Mapped[list[dict[str, Any]]] = mapped_column(default=list)
    schedule: Mapped[dict[str, Any]] = mapped_column(default=dict)
    """Step name → simulated instant at which Microsoft carries it out."""
    edocument: Mapped[str | None] = mapped_column(default=None)
    """The Data Purge eDocument (canonical JSON text)."""
    edocument_sha256: Mapped[str | None] = mapped_column(default=None)
    signatures: Mapped[list[dict[str, Any]]] = mapped_column(default=list)


class CallRow(Base):
    """One state-changing cmdlet call as the tenant received it: the tenant's own call log.

    Written when the call arrives, before the cmdlet runs, and completed with its answer; a row without an outcome
    is a call the tenant received but never answered (it was stopped meanwhile). Tests count calls here, apart from
    anything the client recorded.
    """

    __tablename__ = "calls"

    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    received_at: Mapped[float]
    """Real time (Unix seconds), not the sandbox clock."""
    cmdlet: Mapped[str] = mapped_column(String(64), index=True)
    identity: Mapped[str | None] = mapped_column(default=None)
    """``-Identity`` (or ``-Name`` of a New- cmdlet) as sent."""
    parameters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[int | None] = mapped_column(default=None)
    """The HTTP status of the answer (200, 400 refused, 404 not found ...); ``None``: never answered."""


def default_database_url(data_dir: Path) -> str:
    """The sandbox tenant's own SQLite file in the data dir."""
    return f"sqlite+aiosqlite:///{(data_dir / 'sandbox-m365.db').resolve()}"


class Database(SandboxDatabase):
    """The engine and session factory of the sandbox tenant's database.

    Args:
        url: SQLAlchemy async URL.
    """

    metadata = Base.metadata
