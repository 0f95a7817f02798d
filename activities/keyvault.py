"""Key Vault activities: health checks, key restore, access revocation — through :class:`KeyVaultGateway`.

Every call is recorded in the audit trail with the Azure PowerShell line an administrator would have typed.
Refusals of the service (403, 404, 409) and broken rules are non-retryable ``ApplicationError``s named after the
service's error code or the rule; throttling and 5xx are raised as they are, so Temporal retries them.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from azure.core.exceptions import HttpResponseError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.operation import audit_call
from ckey.keyvault import (
    KEY_PERMISSIONS_FOR_SERVICE,
    KeyInfo,
    KeyVaultError,
    KeyVaultGateway,
    VaultInfo,
    holds,
    is_business_refusal,
    service_error,
)
from ckey.models import KeyUri, ServicePrincipal, Workload
from ckey.operations import Outcome
from ckey.store import Store
from ckey.store.backups import KeyBackupStore
from ckey.store.inventory import InventoryStore, KeyHealthView
from contracts.keyvault import (
    IN_USE_MAX_KEYS,
    CheckKeyHealthInput,
    CheckKeyHealthResult,
    ConfiguredKeysInput,
    ConfiguredKeysResult,
    HealthLine,
    KeyGroup,
    KeyRef,
    KeysInUseInput,
    KeysInUseResult,
    KeyState,
    KeyVaultActivityStub,
    RecordKeyHealthInput,
    RemoveAccessPolicyInput,
    RemoveAccessPolicyResult,
    RestoreKeyBackupInput,
    VaultRef,
)

if TYPE_CHECKING:
    from activities import Gateways


def render(cmdlet: str, **params: str) -> str:
    """An Azure PowerShell line for the audit trail: ``Get-AzKeyVault -VaultName v``."""
    return " ".join([cmdlet, *(f"-{name} {_quote(value)}" for name, value in params.items())])


def _quote(value: str) -> str:
    return f"'{value}'" if any(c in value for c in " ,;'\"") else value


@asynccontextmanager
async def _refusals() -> AsyncIterator[None]:
    """Turn the service's refusals into non-retryable errors named after its error code."""
    try:
        yield
    except KeyVaultError as exc:
        if exc.status in (400, 401, 403, 404, 409):
            raise ApplicationError(exc.message, exc.status, type=exc.code, non_retryable=True) from None
        raise
    except HttpResponseError as exc:
        if is_business_refusal(exc):
            err = service_error(exc)
            raise ApplicationError(err.message, err.status, type=err.code, non_retryable=True) from None
        raise


class KeyVaultActivities(KeyVaultActivityStub):
    """Activities over Azure Key Vault.

    Args:
        gateway: the Key Vault gateway (real vaults or the sandbox).
        store: where calls are audited.
        configured_keys: the DEP keys per workload from the settings.
    """

    @classmethod
    def from_gateways(cls, gateways: Gateways) -> KeyVaultActivities | None:
        """The family built from the worker's gateways; ``None`` without a Key Vault gateway."""
        if gateways.keyvault is None:
            return None
        return cls(gateways.keyvault, gateways.store, gateways.dep_keys)

    def __init__(self, gateway: KeyVaultGateway, store: Store, configured_keys: dict[Workload, list[str]]) -> None:
        self.gateway = gateway
        self.store = store
        self.configured_keys = configured_keys

    @activity.defn
    async def configured_dep_keys(self, input: ConfiguredKeysInput) -> ConfiguredKeysResult:
        """The Customer Keys configured for a workload."""
        return ConfiguredKeysResult(key_uris=list(self.configured_keys.get(input.workload, [])))

    @activity.defn
    async def keys_in_use(self, input: KeysInUseInput) -> KeysInUseResult:
        """The keys of the inventory's DEPs (not those whose purge was requested) and every configured key."""
        groups: list[KeyGroup] = []
        for dep in await InventoryStore(self.store).deps():
            try:
                workload = Workload(dep.workload)
            except ValueError:
                continue
            # A DEP whose data purge was requested is being retired on purpose: its keys going away is the plan.
            if dep.purge_requested or not dep.azure_key_ids:
                continue
            groups.append(
                KeyGroup(label=f"dep:{workload.value}/{dep.name}", workload=workload, key_uris=dep.azure_key_ids)
            )
        for workload, uris in sorted(self.configured_keys.items()):
            if uris:
                groups.append(KeyGroup(label=f"configured:{workload.value}", workload=workload, key_uris=list(uris)))
        count = len({(u, g.workload) for g in groups for u in g.key_uris})
        if count > IN_USE_MAX_KEYS:
            raise ApplicationError(
                f"{count} keys in use, more than one check covers ({IN_USE_MAX_KEYS}): check them by workload",
                type="keys-in-use-bounded",
                non_retryable=True,
            )
        return KeysInUseResult(groups=groups)

    @activity.defn
    async def record_key_health(self, input: RecordKeyHealthInput) -> None:
        """Each key's health into the inventory: healthy when every line about it (its pair's too) holds."""
        inventory = InventoryStore(self.store)
        for uri in dict.fromkeys(input.key_uris):
            mine = [line for line in input.lines if uri in line.key.split(" + ")]
            key = KeyUri.parse(uri)
            await inventory.record_key_health(
                KeyHealthView(
                    key_id=key.versionless,
                    vault=key.vault,
                    healthy=all(line.ok for line in mine),
                    problems=sorted({line.rule for line in mine if not line.ok}),
                    checked_at=input.checked_at,
                    source=input.operation_id,
                )
            )

    @activity.defn
    async def check_key_health(self, input: CheckKeyHealthInput) -> CheckKeyHealthResult:
        """Check one key: exists, enabled, RSA, no expiry (its rotation policy too); its vault: soft delete, purge.

        Purge protection and the workload's access are checked too.
        """
        uri = KeyUri.parse(input.key_uri)
        principal = ServicePrincipal.for_workload(input.workload)
        lines: list[HealthLine] = []

        def line(check: str, rule: str, ok: bool, detail: str = "") -> None:
            lines.append(HealthLine(key=str(uri), check=check, rule=rule, ok=ok, detail=detail))

        async with _refusals():
            vault = await self.gateway.vault(uri.vault)
        await audit_call(self.store, "keyvault.vault.get", render("Get-AzKeyVault", VaultName=uri.vault), Outcome.OK)
        line("soft delete on", "keys-soft-delete", vault.soft_delete, f"retention {vault.retention_days} days")
        line("purge protection on", "keys-purge-protection", vault.purge_protection)

        async with _refusals():
            key = await self.gateway.key(uri)
        await audit_call(
            self.store,
            "keyvault.key.get",
            render("Get-AzKeyVaultKey", VaultName=uri.vault, Name=uri.name),
            Outcome.OK if key else Outcome.FAILED,
        )
        line("key exists", "key-exists", key is not None, key.uri if key else "no such key")
        if key is not None:
            line("key enabled", "key-enabled", key.enabled)
            line("key has no expiry", "key-no-expiry", key.expires_on is None, str(key.expires_on or ""))
            line("key is RSA", "key-is-rsa", key.kty in ("RSA", "RSA-HSM"), f"{key.kty} {key.key_size or ''}".strip())
            # A rotation policy with an expiry gives every version it makes an expiry: the rule is broken before the
            # first such version exists, so the check names the policy itself.
            async with _refusals():
                policy = await self.gateway.rotation_policy(uri)
            line(
                "rotation policy sets no expiry",
                "key-rotation-policy-no-expiry",
                policy is None or not policy.expires_in,
                f"expiryTime {policy.expires_in}" if policy is not None and policy.expires_in else "",
            )

        async with _refusals():
            object_id = await self.gateway.directory.object_id(principal.value)
            granted = await self.gateway.key_permissions(vault, object_id)
        missing = holds(granted, KEY_PERMISSIONS_FOR_SERVICE)
        model = "Azure RBAC" if vault.rbac else "access policy"
        line(
            f"{input.workload.value} service principal can get/wrapKey/unwrapKey",
            "service-principal-get-wrap-unwrap",
            not missing,
            f"{principal.value} via {model}" + (f"; missing {', '.join(missing)}" if missing else ""),
        )
        return CheckKeyHealthResult(lines=lines, vault=vault.name, region=vault.region)

    @activity.defn
    async def inspect_key(self, input: KeyRef) -> KeyState:
        """Whether the key is active or soft-deleted."""
        uri = KeyUri.parse(input.key_uri)
        async with _refusals():
            active = await self.gateway.key(KeyUri(uri.vault, uri.host, uri.name, None, uri.port))
            deleted = None if active else await self.gateway.deleted_key(uri)
        await audit_call(
            self.store,
            "keyvault.key.inspect",
            render("Get-AzKeyVaultKey", VaultName=uri.vault, Name=uri.name) + " [-InRemovedState]",
            Outcome.INFO,
            {"active": active is not None, "deleted": deleted is not None},
        )
        return KeyState(active=active, deleted=deleted)

    @activity.defn
    async def recover_deleted_key(self, input: KeyRef) -> KeyInfo:
        """Recover a soft-deleted key (idempotent: an already active key is returned as it is)."""
        uri = KeyUri.parse(input.key_uri)
        target = render("Undo-AzKeyVaultKeyRemoval", VaultName=uri.vault, Name=uri.name)
        existing = await self.gateway.key(KeyUri(uri.vault, uri.host, uri.name, None, uri.port))
        if existing is not None:  # a retry after the recovery went through
            return existing
        try:
            async with _refusals():
                key = await self.gateway.recover(uri)
        except ApplicationError as exc:
            await audit_call(self.store, "keyvault.key.recover", target, Outcome.REFUSED, {"error": exc.message})
            raise
        await audit_call(self.store, "keyvault.key.recover", target, Outcome.OK, {"key": key.uri})
        return key

    @activity.defn
    async def restore_key_backup(self, input: RestoreKeyBackupInput) -> KeyInfo:
        """Restore a key from an uploaded backup; the service's 409 when a key of that name exists."""
        blob = await KeyBackupStore(self.store).read(input.backup)
        if blob is None:
            raise ApplicationError(
                f"no uploaded key backup {input.backup}", type="key-backup-exists", non_retryable=True
            )
        target = render("Restore-AzKeyVaultKey", VaultName=input.vault, InputFile=f"<{input.backup}>")
        # The blob is named by its upload and its digest, never shown.
        backup = {"backup": input.backup, "sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
        try:
            async with _refusals():
                key = await self.gateway.restore(input.vault, blob)
        except ApplicationError as exc:
            restored = await self._restored_by_an_earlier_attempt(input, exc)
            if restored is not None:
                return restored
            await audit_call(
                self.store,
                "keyvault.key.restore",
                target,
                Outcome.REFUSED,
                {"error": exc.message, "code": exc.type, **backup},
            )
            raise
        await audit_call(self.store, "keyvault.key.restore", target, Outcome.OK, {"key": key.uri, **backup})
        return key

    async def _restored_by_an_earlier_attempt(
        self, input: RestoreKeyBackupInput, exc: ApplicationError
    ) -> KeyInfo | None:
        # A retry after a restore that went through (its answer lost with a worker) meets the service's conflict;
        # the key is then there, so the restore is done. On a first attempt the conflict stands.
        if activity.info().attempt == 1 or input.name is None or exc.details[:1] != (409,):
            return None
        return await self.gateway.key(KeyUri.parse(f"{self.gateway.vault_url(input.vault)}/keys/{input.name}"))

    @activity.defn
    async def verify_key_crypto(self, input: KeyRef) -> KeyInfo:
        """Prove the key answers get, wrapKey and unwrapKey."""
        uri = KeyUri.parse(input.key_uri)
        target = f"get/wrapKey/unwrapKey {uri}"
        try:
            async with _refusals():
                await self.gateway.crypto_round_trip(uri)
                key = await self.gateway.key(uri)
        except ApplicationError as exc:
            await audit_call(self.store, "keyvault.key.verify", target, Outcome.FAILED, {"error": exc.message})
            raise
        if key is None:  # deleted between the round trip and the read
            await audit_call(self.store, "keyvault.key.verify", target, Outcome.FAILED, {"error": "key not found"})
            raise ApplicationError(
                f"{uri} is gone: it answered, then was deleted", type="key-exists", non_retryable=True
            )
        await audit_call(self.store, "keyvault.key.verify", target, Outcome.OK, {"key": key.uri})
        return key

    @activity.defn
    async def show_vault_access(self, input: VaultRef) -> VaultInfo:
        """A vault's permission model and access policies (Get-AzKeyVault)."""
        async with _refusals():
            vault = await self.gateway.vault(input.vault)
        await audit_call(
            self.store,
            "keyvault.vault.get",
            render("Get-AzKeyVault", VaultName=input.vault),
            Outcome.INFO,
            {
                "rbac": vault.rbac,
                "access_policies": [
                    p.model_dump(include={"object_id", "principal", "keys"}) for p in vault.access_policies
                ],
            },
        )
        return vault

    @activity.defn
    async def remove_access_policy(self, input: RemoveAccessPolicyInput) -> RemoveAccessPolicyResult:
        """Remove a user's access policy by UPN.

        Refused (non-retryable, audited as refused): a Microsoft 365 service principal (``m365-principal-protected``),
        ckey's own principal (``ckey-principal-protected``: it would lock ckey out of the vault), a user who holds no
        policy on the vault (``access-policy-exists``). Principals are compared by object id, so any name of them is
        caught.
        """
        upn = input.user_principal_name
        target = render("Remove-AzKeyVaultAccessPolicy", VaultName=input.vault, UserPrincipalName=upn)
        async with _refusals():
            object_id = await self.gateway.directory.object_id(upn)
            protected = {await self.gateway.directory.object_id(sp.value): sp for sp in ServicePrincipal}
            own = await self.gateway.directory.own_object_ids()
        refusal: ApplicationError | None = None
        if object_id in protected:
            refusal = ApplicationError(
                f"{upn} is the {protected[object_id].name} service principal; its access is "
                "removed only by the data purge path",
                type="m365-principal-protected",
                non_retryable=True,
            )
        elif object_id in own:
            # ckey without its policy can no longer read, check or restore the keys: the health check fails and
            # only a person in the Azure portal can give the access back.
            refusal = ApplicationError(
                f"{upn} is ckey's own principal (object id {object_id}); revoking it would lock ckey out of vault "
                f"{input.vault}",
                type="ckey-principal-protected",
                non_retryable=True,
            )
        else:
            async with _refusals():
                vault = await self.gateway.vault(input.vault)
            held = any(p.object_id == object_id for p in vault.access_policies)
            if not held and activity.info().attempt > 1:
                # A retry after a removal that went through (its answer lost with a worker): the revoke is done.
                return RemoveAccessPolicyResult(object_id=object_id, removed_permissions=[])
            if not held:
                refusal = ApplicationError(
                    f"no access policy for {upn} on vault {vault.name}: nothing to revoke",
                    type="access-policy-exists",
                    non_retryable=True,
                )
        if refusal is not None:
            detail = {"error": refusal.message, "code": refusal.type, "object_id": object_id}
            await audit_call(self.store, "keyvault.access.remove", target, Outcome.REFUSED, detail)
            raise refusal
        async with _refusals():
            removed = await self.gateway.remove_access_policy(vault, object_id)
        await audit_call(
            self.store,
            "keyvault.access.remove",
            target,
            Outcome.OK if removed else Outcome.INFO,
            {"object_id": object_id, "removed_permissions": removed},
        )
        return RemoveAccessPolicyResult(object_id=object_id, removed_permissions=removed)
