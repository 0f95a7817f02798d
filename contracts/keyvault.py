"""The Key Vault family's contract: the workflows' params and results, the activities' models and their stub.

Workflows ``keyvault.health``, ``keyvault.key.restore`` and ``keyvault.access.revoke`` (:mod:`workflows.keyvault`)
call the activities of :class:`KeyVaultActivityStub`, which :class:`activities.keyvault.KeyVaultActivities`
implements.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field, model_validator
from temporalio import activity

from ckey.models import (
    DeletedKeyInfo,
    KeyBackupId,
    KeyInfo,
    KeyUriField,
    UserPrincipalName,
    VaultInfo,
    VaultName,
    Workload,
    rule_error,
)
from ckey.operations import Params

# Activities ------------------------------------------------------------------------------------------------------


class HealthLine(BaseModel):
    """One check of the health report, with the rule it serves."""

    key: str
    check: str
    rule: str
    ok: bool
    detail: str = ""


class CheckKeyHealthInput(BaseModel):
    """Which key to check, for which workload's service principal."""

    key_uri: str
    workload: Workload = Workload.EXCHANGE


class CheckKeyHealthResult(BaseModel):
    """The checks of one key, and its vault's region for the two-regions rule."""

    lines: list[HealthLine] = Field(default_factory=list)
    vault: str = ""
    region: str | None = None


class ConfiguredKeysInput(BaseModel):
    """The workload whose configured DEP keys are wanted."""

    workload: Workload


class ConfiguredKeysResult(BaseModel):
    """The configured DEP keys of a workload."""

    key_uris: list[str] = Field(default_factory=list)


IN_USE_MAX_KEYS = 500
"""Keys one check of every key in use covers at most (a DEP has two; a large tenant has a few dozen DEPs)."""


class KeysInUseInput(BaseModel):
    """Which operation asks for the keys in use (for the audit trail)."""

    operation_id: str


class KeyGroup(BaseModel):
    """Keys that belong together (a DEP's pair, or a workload's configured set), checked for its workload."""

    label: str
    """``dep:<workload>/<name>`` or ``configured:<workload>``."""
    workload: Workload
    key_uris: list[str] = Field(default_factory=list)


class KeysInUseResult(BaseModel):
    """Every key in use: the keys of the DEPs in the inventory and the configured DEP keys, by group."""

    groups: list[KeyGroup] = Field(default_factory=list)


class RecordKeyHealthInput(BaseModel):
    """A health check's lines, to be recorded per key in the inventory."""

    operation_id: str
    key_uris: list[str]
    lines: list[HealthLine]
    checked_at: datetime


class KeyRef(BaseModel):
    """A key by URI (versionless or versioned)."""

    key_uri: str


class KeyState(BaseModel):
    """Whether a key is active, soft-deleted, or neither (purged, never existed)."""

    active: KeyInfo | None = None
    deleted: DeletedKeyInfo | None = None


class RestoreKeyBackupInput(BaseModel):
    """An uploaded backup to restore into a vault, by its id (the bytes are read from the store, never carried)."""

    vault: str
    backup: KeyBackupId
    name: str | None = None
    """The key the backup holds, so that a retried restore can see it went through."""


class VaultRef(BaseModel):
    """A vault by name."""

    vault: str


class RemoveAccessPolicyInput(BaseModel):
    """Whose access policy to remove from which vault."""

    vault: str
    user_principal_name: str


class RemoveAccessPolicyResult(BaseModel):
    """What was removed; nothing only on a retry after the removal went through (no policy is refused)."""

    object_id: str
    removed_permissions: list[str] = Field(default_factory=list)


class KeyVaultActivityStub:
    """The Key Vault activities as the workflows call them; :class:`activities.keyvault.KeyVaultActivities` runs them.

    Each method only names the activity and its types: the worker registers the implementation's methods, which
    carry the same names.
    """

    @activity.defn(name="configured_dep_keys")
    async def configured_dep_keys(self, input: ConfiguredKeysInput) -> ConfiguredKeysResult:
        """The DEP keys configured for a workload (``CKEY_DEP_KEYS``)."""
        raise NotImplementedError

    @activity.defn(name="keys_in_use")
    async def keys_in_use(self, input: KeysInUseInput) -> KeysInUseResult:
        """The keys of the DEPs in the inventory plus the configured DEP keys, grouped by DEP."""
        raise NotImplementedError

    @activity.defn(name="record_key_health")
    async def record_key_health(self, input: RecordKeyHealthInput) -> None:
        """Each checked key's health (healthy, the rules it breaks) into the inventory."""
        raise NotImplementedError

    @activity.defn(name="check_key_health")
    async def check_key_health(self, input: CheckKeyHealthInput) -> CheckKeyHealthResult:
        """Check one key against every rule of the seed."""
        raise NotImplementedError

    @activity.defn(name="inspect_key")
    async def inspect_key(self, input: KeyRef) -> KeyState:
        """Whether a key is active, soft-deleted, or neither."""
        raise NotImplementedError

    @activity.defn(name="recover_deleted_key")
    async def recover_deleted_key(self, input: KeyRef) -> KeyInfo:
        """Recover a soft-deleted key."""
        raise NotImplementedError

    @activity.defn(name="restore_key_backup")
    async def restore_key_backup(self, input: RestoreKeyBackupInput) -> KeyInfo:
        """Restore an uploaded key backup into a vault."""
        raise NotImplementedError

    @activity.defn(name="verify_key_crypto")
    async def verify_key_crypto(self, input: KeyRef) -> KeyInfo:
        """Wrap and unwrap with the key, to show it works."""
        raise NotImplementedError

    @activity.defn(name="show_vault_access")
    async def show_vault_access(self, input: VaultRef) -> VaultInfo:
        """A vault's properties and access policies."""
        raise NotImplementedError

    @activity.defn(name="remove_access_policy")
    async def remove_access_policy(self, input: RemoveAccessPolicyInput) -> RemoveAccessPolicyResult:
        """Remove a user's access policy from a vault."""
        raise NotImplementedError


# Workflows -------------------------------------------------------------------------------------------------------


HEALTH_MAX_KEYS = 20
"""Keys one health check names at most (a DEP has two; a check of every workload's keys, six)."""


class HealthScope(StrEnum):
    """Which keys a health check covers when none are named."""

    CONFIGURED = "configured"
    """The workload's configured DEP keys (``CKEY_DEP_KEYS``)."""
    IN_USE = "in_use"
    """Every key in use: the keys of every DEP in the inventory plus every workload's configured keys, each checked
    for its own workload's service principal (the ``ckey-keyvault-health`` schedule)."""


class KeyVaultHealthInput(Params):
    """Which keys to check (default: the workload's configured DEP keys) and for which workload's principal."""

    workload: Workload = Workload.EXCHANGE
    keys: list[KeyUriField] = Field(default_factory=list, max_length=HEALTH_MAX_KEYS)
    scope: HealthScope = Field(
        default=HealthScope.CONFIGURED,
        description="Without `keys`: `configured` checks the workload's CKEY_DEP_KEYS; `in_use` checks every key in "
        "use (the inventory's DEPs and every configured key, each for its workload).",
    )

    @model_validator(mode="after")
    def _keys_or_scope(self) -> KeyVaultHealthInput:
        if self.keys and self.scope is HealthScope.IN_USE:
            raise rule_error("health-keys-or-in-use", "name keys or ask for every key in use (scope in_use), not both")
        return self


class KeyVaultHealthResult(BaseModel):
    """A report with one line per check and the rule it serves."""

    ok: bool
    lines: list[HealthLine]


class KeyVaultKeyRestoreInput(Params):
    """The key to bring back and, for when soft-delete recovery is impossible, its uploaded backup.

    The backup is named by the id ``POST /api/uploads/key-backups`` answered: its bytes never travel in the
    parameters, the workflow's history or the audit trail.
    """

    key_uri: KeyUriField
    backup: KeyBackupId | None = Field(
        default=None, description="An uploaded key backup's id (`kb-<uuid>`), for a key that was purged."
    )


class KeyVaultKeyRestoreResult(BaseModel):
    """How the key came back and its current version."""

    method: str
    """``recovered`` (from soft delete) or ``restored`` (from the backup)."""
    key_uri: str


class KeyVaultAccessRevokeInput(Params):
    """Whose access to remove from which vault."""

    vault: VaultName
    user_principal_name: UserPrincipalName


class KeyVaultAccessRevokeResult(BaseModel):
    """What was removed, and who still has access."""

    removed_permissions: list[str]
    remaining: list[str]
    """Who still holds an access policy: UPN or display name where the directory knows it, and object id."""
