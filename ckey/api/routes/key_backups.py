"""``/api/uploads/key-backups``: a key's backup blob uploaded once, then named by id in ``keyvault.key.restore``.

The blob is kept in SQL (:mod:`ckey.store.backups`) and shown to nobody: the answer, the audit trail and the
operation's parameters carry its id, SHA-256 and size only.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request

from ckey.api.deps import Operator, SettingsDep, StoreDep, Viewer
from ckey.api.limits import read_body
from ckey.api.problems import Problem
from ckey.operations import AuditEvent, Outcome
from ckey.store.backups import KeyBackup, KeyBackupStore

router = APIRouter(prefix="/api/uploads/key-backups", tags=["uploads"])

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The blob as `Backup-AzKeyVaultKey` (or the SDK's `backup_key`) wrote it.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post("", status_code=201, response_model=KeyBackup, openapi_extra=_UPLOAD_BODY)
async def upload_key_backup(request: Request, principal: Operator, store: StoreDep, settings: SettingsDep) -> KeyBackup:
    """Store a key backup; pass the returned id as ``backup`` to ``keyvault.key.restore``.

    The body is the blob (``application/octet-stream``), at most ``CKEY_KEY_BACKUP_MAX_BYTES`` (413 beyond).
    """
    limit = settings.key_backup_max_bytes
    data = await read_body(request, limit, "a key backup")
    if not data:
        raise Problem(422, "key-backup-empty", "the body is empty: send the backup file's bytes")
    backup = await KeyBackupStore(store).create(data, principal.user, datetime.now(UTC))
    await store.append_audit(
        AuditEvent(
            key=f"key-backup/{backup.id}/uploaded",
            at=backup.created_at,
            actor=principal.user,
            action="keyvault.key_backup.uploaded",
            outcome=Outcome.OK,
            target="POST /api/uploads/key-backups",
            detail={"id": backup.id, "sha256": backup.sha256, "size": backup.size},
        )
    )
    return backup


@router.get("/{backup_id}", response_model=KeyBackup)
async def get_key_backup(backup_id: str, _: Viewer, store: StoreDep) -> KeyBackup:
    """An uploaded backup's id, SHA-256, size, uploader and time (never its bytes)."""
    backup = await KeyBackupStore(store).get(backup_id)
    if backup is None:
        raise Problem(404, "key-backup-exists", f"no uploaded key backup {backup_id}")
    return backup
