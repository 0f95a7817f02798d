"""The sandbox Key Vault's tables (SQLAlchemy 2), in their own SQLite file so that keys survive a restart.

``Base.metadata.create_all`` creates them: the sandbox has no migrations, and a schema change means a new data dir.
Times are stored as Unix seconds of the sandbox clock (Key Vault itself reports Unix seconds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import JSON, ForeignKey, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sandbox.common import SandboxDatabase


class Base(DeclarativeBase):
    """Declarative base of the sandbox tables."""

    type_annotation_map = {dict[str, Any]: JSON, dict[str, str]: JSON, list[str]: JSON}


class VaultRow(Base):
    """A vault: its ARM properties and the sandbox's knobs for it (limits, faults)."""

    __tablename__ = "vaults"

    name: Mapped[str] = mapped_column(String(24), primary_key=True)
    """Lower case: vault names are case-insensitive and globally unique."""
    location: Mapped[str]
    tenant_id: Mapped[str]
    subscription_id: Mapped[str]
    resource_group: Mapped[str]
    sku: Mapped[str] = mapped_column(default="standard")
    soft_delete_retention_days: Mapped[int] = mapped_column(default=90)
    purge_protection: Mapped[bool] = mapped_column(default=False)
    rbac_authorization: Mapped[bool] = mapped_column(default=False)
    protected_subscription: Mapped[bool] = mapped_column(default=False)
    soft_delete: Mapped[bool] = mapped_column(default=True)
    """Off only in legacy vaults created before soft delete became mandatory (the control endpoint can make one)."""
    """The subscription is registered for the mandatory retention period (``+ProtectedSubscription``)."""
    tags: Mapped[dict[str, str]] = mapped_column(default=dict)
    created_at: Mapped[int]
    updated_at: Mapped[int]

    # Sandbox knobs (not part of Azure's model)
    create_limit: Mapped[int | None] = mapped_column(default=None)
    """CREATE transactions per window, in RSA 2,048-bit software-key units; None: the documented limit."""
    other_limit: Mapped[int | None] = mapped_column(default=None)
    """All other transactions per window, in RSA 2,048-bit software-key units; None: the documented limit."""
    limit_window_seconds: Mapped[float | None] = mapped_column(default=None)
    retry_after_seconds: Mapped[int | None] = mapped_column(default=None)
    error_rate: Mapped[float] = mapped_column(default=0.0)
    latency_ms: Mapped[int] = mapped_column(default=0)
    down: Mapped[bool] = mapped_column(default=False)

    @property
    def scope(self) -> str:
        """The vault's ARM resource id."""
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{self.name}"
        )

    @property
    def recovery_level(self) -> str:
        """The ``recoveryLevel`` its keys report."""
        if not self.soft_delete:
            return "Purgeable"
        level = "Recoverable" if self.soft_delete_retention_days >= 90 else "CustomizedRecoverable"
        if not self.purge_protection:
            return level + "+Purgeable"
        return level + "+ProtectedSubscription" if self.protected_subscription else level


class AccessPolicyRow(Base):
    """One access policy entry of a vault."""

    __tablename__ = "access_policies"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    vault_name: Mapped[str] = mapped_column(ForeignKey("vaults.name", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str]
    object_id: Mapped[str]
    application_id: Mapped[str | None] = mapped_column(default=None)
    keys: Mapped[list[str]] = mapped_column(default=list)
    secrets: Mapped[list[str]] = mapped_column(default=list)
    certificates: Mapped[list[str]] = mapped_column(default=list)
    storage: Mapped[list[str]] = mapped_column(default=list)


class KeyRow(Base):
    """A key (all its versions share the name, the deleted state and the rotation policy)."""

    __tablename__ = "keys"
    __table_args__ = (UniqueConstraint("vault_name", "name_lower"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    vault_name: Mapped[str] = mapped_column(ForeignKey("vaults.name", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(127))
    name_lower: Mapped[str] = mapped_column(String(127))
    deleted_at: Mapped[int | None] = mapped_column(default=None)
    scheduled_purge_at: Mapped[int | None] = mapped_column(default=None)
    rotation_policy: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class KeyVersionRow(Base):
    """One version of a key: public material, sealed private material, attributes, tags."""

    __tablename__ = "key_versions"
    __table_args__ = (UniqueConstraint("key_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    """Insertion order; the highest id is the current version."""
    key_id: Mapped[int] = mapped_column(ForeignKey("keys.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(32))
    kty: Mapped[str]
    key_size: Mapped[int]
    key_ops: Mapped[list[str]]
    n: Mapped[str] = mapped_column(default="")
    """RSA modulus, base64url (empty for EC and oct)."""
    e: Mapped[str] = mapped_column(default="")
    crv: Mapped[str | None] = mapped_column(default=None)
    """EC curve and point (None for RSA and oct, whose public JWK has none)."""
    x: Mapped[str | None] = mapped_column(default=None)
    y: Mapped[str | None] = mapped_column(default=None)
    sealed_private: Mapped[bytes] = mapped_column(LargeBinary)
    enabled: Mapped[bool] = mapped_column(default=True)
    not_before: Mapped[int | None] = mapped_column(default=None)
    expires: Mapped[int | None] = mapped_column(default=None)
    exportable: Mapped[bool] = mapped_column(default=False)
    created: Mapped[int]
    updated: Mapped[int]
    tags: Mapped[dict[str, str] | None] = mapped_column(JSON, default=None)

    @property
    def hsm(self) -> bool:
        """Whether the version is HSM-protected."""
        return self.kty.endswith("-HSM")


class RoleAssignmentRow(Base):
    """An Azure RBAC role assignment (ARM control plane and Key Vault data plane alike)."""

    __tablename__ = "role_assignments"

    name: Mapped[str] = mapped_column(String(36), primary_key=True)
    """The assignment's GUID, lower case."""
    scope: Mapped[str] = mapped_column(String(400), index=True)
    role_definition_id: Mapped[str] = mapped_column(String(36))
    """The role definition's GUID, lower case."""
    principal_id: Mapped[str] = mapped_column(String(36), index=True)
    principal_type: Mapped[str] = mapped_column(default="ServicePrincipal")
    description: Mapped[str | None] = mapped_column(default=None)
    created_on: Mapped[int]
    updated_on: Mapped[int]
    created_by: Mapped[str | None] = mapped_column(default=None)


class StateRow(Base):
    """Service-wide state: the clock offset, whether the demo was seeded."""

    __tablename__ = "state"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)


def default_database_url(data_dir: Path) -> str:
    """The sandbox's own SQLite file in the data dir."""
    return f"sqlite+aiosqlite:///{(data_dir / 'sandbox-keyvault.db').resolve()}"


class Database(SandboxDatabase):
    """The engine and session factory of the sandbox's database.

    Args:
        url: SQLAlchemy async URL.
    """

    metadata = Base.metadata

    async def create_all(self) -> None:
        """Create the tables, and add the columns a data dir from before EC keys lacks (SQLite ``ADD COLUMN``)."""
        await super().create_all()
        if self.engine.dialect.name != "sqlite":
            return
        async with self.engine.begin() as conn:
            present = {row[1] for row in (await conn.execute(text("PRAGMA table_info(key_versions)"))).all()}
            for column in ("crv", "x", "y"):
                if column not in present:
                    await conn.execute(text(f"ALTER TABLE key_versions ADD COLUMN {column} VARCHAR"))
