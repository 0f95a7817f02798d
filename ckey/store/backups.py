"""Key backups: a key's ``Backup-AzKeyVaultKey`` blob, uploaded once and referred to by id (a claim check).

The blob never travels in an operation's parameters, its workflow's history or the audit trail: the API stores it
here, the restore workflow carries its id, and the restore activity reads the bytes from here. Everyone else sees
its SHA-256 and size only.

The bytes are kept as uploaded, not encrypted again by ckey: a Key Vault backup is itself encrypted by the service
and restorable only into a vault of the same Azure geography and subscription, and this database is the trust zone
that already holds the target sets and the audit trail (its backups and grants protect it).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from ckey.audit import as_utc
from ckey.models import KEY_BACKUP_ID, rule_error
from ckey.models import KEY_BACKUP_ID_PATTERN as KEY_BACKUP_ID_PATTERN
from ckey.models import KeyBackupId as KeyBackupId
from ckey.store import Store
from ckey.store.schema import KeyBackupRow
from ckey.store.targets import TargetStore


class KeyBackup(BaseModel):
    """An uploaded key backup as anyone may see it: never its bytes."""

    id: str
    sha256: str = Field(description="SHA-256 of the blob, hexadecimal.")
    size: int = Field(description="The blob's size in bytes.")
    created_by: str
    created_at: datetime


class KeyBackupStore:
    """Key backups on top of :class:`~ckey.store.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, data: bytes, created_by: str, at: datetime | None = None) -> KeyBackup:
        """Store ``data`` under a new id."""
        backup = KeyBackup(
            id=f"kb-{uuid.uuid4()}",
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            created_by=created_by,
            created_at=at or datetime.now(UTC),
        )
        async with self.store.transaction() as session:
            session.add(KeyBackupRow(**backup.model_dump(), data=data))
        return backup

    async def get(self, backup_id: str) -> KeyBackup | None:
        """A backup's description, or ``None``."""
        if not KEY_BACKUP_ID.match(backup_id):
            return None
        async with self.store.session() as session:
            row = await session.get(KeyBackupRow, backup_id)
            if row is None:
                return None
            return KeyBackup(
                id=row.id,
                sha256=row.sha256,
                size=row.size,
                created_by=row.created_by,
                created_at=as_utc(row.created_at),
            )

    async def read(self, backup_id: str) -> bytes | None:
        """A backup's bytes (for the restore activity only), or ``None``."""
        if not KEY_BACKUP_ID.match(backup_id):
            return None
        async with self.store.session() as session:
            row = await session.get(KeyBackupRow, backup_id)
            return None if row is None else bytes(row.data)


async def claim_check_key_backup(params: BaseModel, targets: TargetStore, user: str) -> BaseModel:
    """Check that the named key backup (``backup``) was uploaded, before the operation starts.

    ``targets`` is the API's target store; its store holds the backups too.

    Raises:
        PydanticCustomError: ``key-backup-exists`` when there is no such upload.
    """
    backup: str | None = getattr(params, "backup", None)
    if backup is not None and await KeyBackupStore(targets.store).get(backup) is None:
        raise rule_error(
            "key-backup-exists",
            "no uploaded key backup {backup} (upload it: POST /api/uploads/key-backups)",
            backup=repr(backup),
        )
    return params
