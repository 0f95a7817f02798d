"""Key Vault operations: ``keyvault.health``, ``keyvault.key.restore``, ``keyvault.access.revoke``.

Seed sections: "Restore Azure Key Vault keys", "Manage key vault permissions", and the key requirements of
"Create a DEP" (two keys in two vaults in two regions; soft delete; get/wrapKey/unwrapKey for the service).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from ckey.models import KeyUri, Role, Workload
    from ckey.operations import Lease, LeaseMode, LeaseRequest, OperationKind, lazy
    from contracts.alerts import ALERT_MAX_FINDINGS, Alert, AlertActivityStub, AlertFinding
    from contracts.keyvault import (
        CheckKeyHealthInput,
        CheckKeyHealthResult,
        ConfiguredKeysInput,
        HealthLine,
        HealthScope,
        KeyGroup,
        KeyRef,
        KeysInUseInput,
        KeyVaultAccessRevokeInput,
        KeyVaultAccessRevokeResult,
        KeyVaultActivityStub,
        KeyVaultHealthInput,
        KeyVaultHealthResult,
        KeyVaultKeyRestoreInput,
        KeyVaultKeyRestoreResult,
        RecordKeyHealthInput,
        RemoveAccessPolicyInput,
        RestoreKeyBackupInput,
        VaultRef,
    )
    from workflows.operation import FailedWithResult, OperationWorkflow, call, failure_message


# keyvault.health ---------------------------------------------------------------------------------------------------


class HealthPhase(StrEnum):
    """Phases of ``keyvault.health``."""

    RESOLVING_KEYS = "resolving_keys"
    CHECKING = "checking"
    REPORTED = "reported"


@workflow.defn
class KeyVaultHealthWorkflow(OperationWorkflow):
    """Check that a workload's Customer Keys meet every rule of the seed."""

    kind = "keyvault.health"

    @workflow.run
    async def run(self, input: KeyVaultHealthInput) -> KeyVaultHealthResult:
        """Check each key, then the pair."""
        return await self.operate(input, lambda: self._check(input))

    async def _check(self, input: KeyVaultHealthInput) -> KeyVaultHealthResult:
        await self.set_phase(HealthPhase.RESOLVING_KEYS)
        groups = await self._groups(input)
        # Each (key, workload) once, in the order the groups name them: the same commands as before for one group.
        targets = list(dict.fromkeys((uri, group.workload) for group in groups for uri in group.key_uris))
        uris = list(dict.fromkeys(uri for uri, _ in targets))
        self.set_progress(0, len(targets), "keys")
        await self.set_phase(HealthPhase.CHECKING, {"keys": uris})

        unchecked: dict[str, ActivityError] = {}

        async def check(uri: str, workload: Workload) -> CheckKeyHealthResult:
            try:
                result = await call(
                    KeyVaultActivityStub.check_key_health, CheckKeyHealthInput(key_uri=uri, workload=workload)
                )
            except ActivityError as exc:
                unchecked.setdefault(uri, exc)
                raise
            self.set_progress(self._status.progress.done + 1)
            return result

        try:
            results = await asyncio.gather(*(check(u, w) for u, w in targets))
        except ActivityError:
            # A key that could not be checked at all (its vault gone, ckey's own access removed) is worse than a
            # broken rule: the operation fails with the service's answer, and the operators are told.
            if unchecked and workflow.patched(HEALTH_RECORDS_AND_ALERTS):
                await self._raise_alert(incomplete_alert(self.operation_id, self.kind, unchecked, workflow.now()))
            raise
        lines = [line for result in results for line in result.lines]
        region_of = {target: (result.vault, result.region) for target, result in zip(targets, results, strict=True)}
        for group in groups:
            if len(group.key_uris) == 2:
                lines += pair_lines(group.key_uris, [region_of[(u, group.workload)] for u in group.key_uris])
        ok = all(line.ok for line in lines)
        failed = [line.rule for line in lines if not line.ok]
        await self.set_phase(HealthPhase.REPORTED, {"ok": ok, "failed": failed})
        report = KeyVaultHealthResult(ok=ok, lines=lines)
        # Runs started before these changes replay without the inventory write and the alert they never made.
        if workflow.patched(HEALTH_RECORDS_AND_ALERTS):
            await call(
                KeyVaultActivityStub.record_key_health,
                RecordKeyHealthInput(
                    operation_id=self.operation_id, key_uris=uris, lines=lines, checked_at=workflow.now()
                ),
            )
            if not ok:
                await self._alert(lines)
        # Runs started before this change end as they began: succeeded, the broken rules only in their report.
        if not ok and workflow.patched(HEALTH_FAILS_ON_BROKEN_RULE):
            raise FailedWithResult(broken_rules_message(lines), report, type=HEALTH_FAILED)
        return report

    async def _groups(self, input: KeyVaultHealthInput) -> list[KeyGroup]:
        """The keys to check, grouped as they belong together (a DEP's pair is also checked as a pair)."""
        if input.keys:
            return [KeyGroup(label="named", workload=input.workload, key_uris=[str(k) for k in input.keys])]
        if input.scope is HealthScope.IN_USE:
            found = await call(KeyVaultActivityStub.keys_in_use, KeysInUseInput(operation_id=self.operation_id))
            if not any(group.key_uris for group in found.groups):
                raise ApplicationError(
                    "no keys in use: the inventory holds no DEP with keys (run inventory.sync) and CKEY_DEP_KEYS "
                    "names none",
                    type="keys-required",
                    non_retryable=True,
                )
            return found.groups
        configured = await call(KeyVaultActivityStub.configured_dep_keys, ConfiguredKeysInput(workload=input.workload))
        if not configured.key_uris:
            raise ApplicationError(
                f"no keys named and none configured for {input.workload.value} (CKEY_DEP_KEYS)",
                type="keys-required",
                non_retryable=True,
            )
        return [
            KeyGroup(label=f"configured:{input.workload.value}", workload=input.workload, key_uris=configured.key_uris)
        ]

    async def _alert(self, lines: list[HealthLine]) -> None:
        """Raise the alert of a check that found broken rules."""
        await self._raise_alert(
            Alert(
                rule=HEALTH_FAILED,
                operation_id=self.operation_id,
                kind=self.kind,
                summary=broken_rules_message(lines),
                findings=[
                    AlertFinding(rule=line.rule, target=line.key, detail=line.detail) for line in lines if not line.ok
                ][:ALERT_MAX_FINDINGS],
                at=workflow.now(),
            )
        )

    async def _raise_alert(self, alert: Alert) -> None:
        """Log and audit trail, then the webhook, whose outage never changes the check's outcome."""
        await call(AlertActivityStub.record_alert, alert)
        await self.post_alert(alert)


HEALTH_INCOMPLETE = "keyvault-health-incomplete"
"""The alert of a health check that could not check a key at all (the operation fails with the service's answer)."""


def incomplete_alert(operation_id: str, kind: str, unchecked: dict[str, ActivityError], at: datetime) -> Alert:
    """The alert naming each key that could not be checked, with the service's answer."""
    findings = [
        AlertFinding(rule=getattr(exc.cause, "type", None) or "check-failed", target=uri, detail=failure_message(exc))
        for uri, exc in unchecked.items()
    ]
    summary = "could not check " + "; ".join(f"{f.target}: {f.detail}" for f in findings)
    return Alert(
        rule=HEALTH_INCOMPLETE,
        operation_id=operation_id,
        kind=kind,
        summary=summary,
        findings=findings[:ALERT_MAX_FINDINGS],
        at=at,
    )


HEALTH_RECORDS_AND_ALERTS = "keyvault-health-records-and-alerts"
"""The patch under which a health check records each key's health in the inventory and alerts on a broken rule."""

HEALTH_FAILS_ON_BROKEN_RULE = "keyvault-health-fails-on-broken-rule"
"""The patch under which a health check that finds a broken rule ends ``failed`` (it used to succeed)."""

HEALTH_FAILED = "keyvault-health-failed"
"""The failure type of a health check that found broken rules (non-retryable: the report is the answer)."""


def broken_rules_message(lines: list[HealthLine]) -> str:
    """``N rule(s) broken: rule (key: detail); ...`` -- the operation record's error, naming every broken rule."""
    broken = [line for line in lines if not line.ok]
    rules = sorted({line.rule for line in broken})
    parts = [f"{line.rule} ({line.key}{': ' + line.detail if line.detail else ''})" for line in broken]
    return f"{len(rules)} rule(s) broken: {', '.join(rules)} -- " + "; ".join(parts)


def pair_lines(uris: list[str], regions: list[tuple[str, str | None]]) -> list[HealthLine]:
    """The two-keys rule's checks for a pair of keys: two vaults, two regions (``regions``: vault, region)."""
    vaults = {v.lower() for v, _ in regions}
    known = [r.lower() for _, r in regions if r]
    pair = " + ".join(uris)
    lines = [
        HealthLine(
            key=pair,
            check="two keys in two different vaults",
            rule="two-keys-two-vaults",
            ok=len(vaults) == 2,
            detail=", ".join(sorted(vaults)),
        )
    ]
    lines.append(
        HealthLine(
            key=pair,
            check="two keys in two different regions",
            rule="two-keys-two-regions",
            ok=len(known) == 2 and known[0] != known[1],
            detail=", ".join(r or "?" for _, r in regions),
        )
    )
    return lines


async def check_dep_keys(keys: list[str], workload: Workload, rules: str = "DEP") -> None:
    """The DEP rules for a pair of keys: each healthy for ``workload``'s principal, two vaults, two regions.

    Args:
        keys: the two key URIs.
        workload: whose service principal must reach them.
        rules: how the refusal names the rules (``DEP``, ``SharePoint DEP``).

    Raises:
        ApplicationError: non-retryable, typed by the first broken rule, every broken line in its details.
    """
    results = await asyncio.gather(
        *(call(KeyVaultActivityStub.check_key_health, CheckKeyHealthInput(key_uri=k, workload=workload)) for k in keys)
    )
    lines: list[HealthLine] = [line for r in results for line in r.lines]
    lines += pair_lines(keys, [(r.vault, r.region) for r in results])
    broken = [line for line in lines if not line.ok]
    if broken:
        raise ApplicationError(
            f"the keys break the {rules} rules: "
            + "; ".join(f"{line.check} ({line.rule}) for {line.key}: {line.detail}".rstrip(": ") for line in broken),
            [line.model_dump() for line in broken],
            type=broken[0].rule,
            non_retryable=True,
        )


# keyvault.key.restore ----------------------------------------------------------------------------------------------


class RestorePhase(StrEnum):
    """Phases of ``keyvault.key.restore``."""

    INSPECTING = "inspecting"
    RECOVERING = "recovering"
    RESTORING = "restoring"
    VERIFYING = "verifying"
    DONE = "done"


@workflow.defn
class KeyVaultKeyRestoreWorkflow(OperationWorkflow):
    """Bring back a lost key: recover from soft delete first, restore a backup only when that is impossible."""

    kind = "keyvault.key.restore"

    @workflow.run
    async def run(self, input: KeyVaultKeyRestoreInput) -> KeyVaultKeyRestoreResult:
        """Inspect, recover or restore, verify."""
        return await self.operate(input, lambda: self._restore(input))

    async def _restore(self, input: KeyVaultKeyRestoreInput) -> KeyVaultKeyRestoreResult:
        ref = KeyRef(key_uri=input.key_uri.versionless)
        await self.set_phase(RestorePhase.INSPECTING)
        state = await call(KeyVaultActivityStub.inspect_key, ref)
        if state.deleted is not None:
            await self.set_phase(
                RestorePhase.RECOVERING, {"scheduled_purge_date": str(state.deleted.scheduled_purge_date)}
            )
            await call(KeyVaultActivityStub.recover_deleted_key, ref)
            method = "recovered"
        elif input.backup is not None:
            # Also when a key of that name is active: the service answers 409 Conflict and ckey reports it.
            await self.set_phase(RestorePhase.RESTORING, {"backup": input.backup})
            await call(
                KeyVaultActivityStub.restore_key_backup,
                RestoreKeyBackupInput(vault=input.key_uri.vault, backup=input.backup, name=input.key_uri.name),
            )
            method = "restored"
        elif state.active is not None:
            raise ApplicationError(
                f"{input.key_uri.versionless} exists and is not deleted: there is nothing to restore",
                type="restore-needs-lost-key",
                non_retryable=True,
            )
        else:
            raise ApplicationError(
                f"{input.key_uri.versionless} is not in soft delete (purged or never created): restoring it needs "
                "its backup (upload it: POST /api/uploads/key-backups, and name its id as backup)",
                type="backup-required",
                non_retryable=True,
            )
        await self.set_phase(RestorePhase.VERIFYING)
        key = await call(KeyVaultActivityStub.verify_key_crypto, ref)
        await self.set_phase(RestorePhase.DONE, {"method": method, "key": key.uri})
        return KeyVaultKeyRestoreResult(method=method, key_uri=key.uri)


# keyvault.access.revoke --------------------------------------------------------------------------------------------


class RevokePhase(StrEnum):
    """Phases of ``keyvault.access.revoke``."""

    SHOWING_ACCESS = "showing_access"
    REMOVING = "removing"
    DONE = "done"


@workflow.defn
class KeyVaultAccessRevokeWorkflow(OperationWorkflow):
    """Remove a person's access policy from a vault (an administrator leaving the team)."""

    kind = "keyvault.access.revoke"

    @workflow.run
    async def run(self, input: KeyVaultAccessRevokeInput) -> KeyVaultAccessRevokeResult:
        """Show the vault's access, remove the user's policy, show what remains."""
        return await self.operate(input, lambda: self._revoke(input))

    async def _revoke(self, input: KeyVaultAccessRevokeInput) -> KeyVaultAccessRevokeResult:
        await self.set_phase(RevokePhase.SHOWING_ACCESS)
        vault = await call(KeyVaultActivityStub.show_vault_access, VaultRef(vault=input.vault))
        if vault.rbac:
            raise ApplicationError(
                f"vault {vault.name} uses Azure RBAC, not access policies: remove the user's role assignments",
                type="vault-uses-rbac",
                non_retryable=True,
            )
        await self.set_phase(RevokePhase.REMOVING)
        removed = await call(
            KeyVaultActivityStub.remove_access_policy,
            RemoveAccessPolicyInput(vault=input.vault, user_principal_name=input.user_principal_name),
        )
        after = await call(KeyVaultActivityStub.show_vault_access, VaultRef(vault=input.vault))
        before: list[str] = next((p.keys for p in vault.access_policies if p.object_id == removed.object_id), [])
        remaining = [f"{p.principal or ''} ({p.object_id})".strip() for p in after.access_policies]
        await self.set_phase(RevokePhase.DONE, {"removed_permissions": before})
        return KeyVaultAccessRevokeResult(removed_permissions=before, remaining=remaining)


def _key_lease(uri: object, mode: LeaseMode) -> Lease:
    key = KeyUri.parse(str(uri))
    return Lease.on("key", f"{key.vault}/{key.name}", mode)


def _checks_keys(params: BaseModel) -> LeaseRequest:
    """A health check reads its keys (the named ones, or the workload's configured set): never beside a restore."""
    keys = list(getattr(params, "keys", []) or [])
    if keys:
        return LeaseRequest(leases=[_key_lease(k, LeaseMode.READ) for k in keys])
    if getattr(params, "scope", None) == HealthScope.IN_USE:
        return LeaseRequest(leases=[Lease.on("keys", "in_use", LeaseMode.READ)])
    return LeaseRequest(leases=[Lease.on("keys", str(getattr(params, "workload", "exchange")), LeaseMode.READ)])


def _restores_key(params: BaseModel) -> LeaseRequest:
    """A restore writes its key: a second restore of it, or a health check of it, waits for this one."""
    return LeaseRequest(leases=[_key_lease(getattr(params, "key_uri", ""), LeaseMode.WRITE)])


def _revokes_access(params: BaseModel) -> LeaseRequest:
    """A revoke writes its vault's access policies."""
    return LeaseRequest(leases=[Lease.on("vault", str(getattr(params, "vault", "")), LeaseMode.WRITE)])


KINDS: tuple[OperationKind, ...] = (
    OperationKind(
        name=KeyVaultHealthWorkflow.kind,
        workflow=KeyVaultHealthWorkflow,
        input_model=KeyVaultHealthInput,
        role=Role.OPERATOR,
        description="Check a workload's Customer Keys: exists, enabled, soft delete, purge protection, no expiry, "
        "RSA, two vaults in two regions, the service principal's get/wrapKey/unwrapKey. A broken rule ends it failed "
        "(keyvault-health-failed), the rules named, the report kept as its result; each key's health goes to the "
        "inventory and a broken rule raises an alert. scope in_use: every key in use (the ckey-keyvault-health "
        "schedule).",
        result_model=KeyVaultHealthResult,
        leases_of=_checks_keys,
        activities=(KeyVaultActivityStub, AlertActivityStub),
    ),
    OperationKind(
        name=KeyVaultKeyRestoreWorkflow.kind,
        workflow=KeyVaultKeyRestoreWorkflow,
        input_model=KeyVaultKeyRestoreInput,
        role=Role.OPERATOR,
        description="Bring back a lost key: recover from soft delete, else restore its uploaded backup "
        "(POST /api/uploads/key-backups); then verify it.",
        claim_check=lazy("ckey.store.backups:claim_check_key_backup"),
        result_model=KeyVaultKeyRestoreResult,
        leases_of=_restores_key,
        activities=(KeyVaultActivityStub,),
    ),
    OperationKind(
        name=KeyVaultAccessRevokeWorkflow.kind,
        workflow=KeyVaultAccessRevokeWorkflow,
        input_model=KeyVaultAccessRevokeInput,
        role=Role.ADMIN,
        description="Remove a user's access policy from a vault (never a Microsoft 365 service principal's, never "
        "ckey's own; a user without a policy there is refused).",
        result_model=KeyVaultAccessRevokeResult,
        leases_of=_revokes_access,
        activities=(KeyVaultActivityStub,),
    ),
)
"""The kinds this module runs, declared once: the registry (:func:`workflows.product_registry`) collects them."""
