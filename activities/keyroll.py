"""Key-roll activities: a key's new version in Key Vault, each workload's refresh, and what the watcher reads.

Every state-changing call is audited before it is sent (``intent``) and after (its outcome): the Key Vault version
through :func:`activities.operation.audit_call`, the cmdlets through the gateway's ``on_call`` as in
:mod:`activities.exchange`. Each activity looks before it acts again: a retried version creation finds the version
tagged with its operation's id, a retried SharePoint update finds its version in the geo's slot, and a retried
``-Refresh`` re-wraps with the same version, which changes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.exchange import refusal
from activities.keyvault import _refusals, render
from activities.operation import audit_call
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import Cmdlet, CmdletError, M365Gateway
from ckey.models import KeyUri, KeyVersionInfo, Workload
from ckey.operations import Outcome
from ckey.store import Store
from ckey.store.inventory import InventoryStore
from ckey.store.keyroll import KeyInEffect, KeyRollStore
from ckey.store.leases import LeaseConflict, describe
from ckey.store.spo import SpoGeoStore
from contracts.keyroll import (
    ROLL_TAG,
    CreateVersionInput,
    CreateVersionResult,
    DiscoverInput,
    DiscoverResult,
    GeoSlot,
    GeoState,
    HoldInput,
    HoldResult,
    KeyRollActivityStub,
    KeyVersionsInput,
    KeyVersionsResult,
    PendingInput,
    PendingResult,
    PendingVersion,
    ReadGeoInput,
    ReadM365DepInput,
    ReadM365DepResult,
    RecordInEffectInput,
    RefreshDepInput,
    RefreshDepResult,
    TargetWorkload,
    UpdateGeoInput,
    UpdateGeoResult,
)

if TYPE_CHECKING:
    from activities import Gateways

BASELINE = "baseline"
"""The operation id recorded for a DEP the watcher saw for the first time: its key's newest version then."""


def same_key(uri: str | None, key_id: str) -> bool:
    """Whether ``uri`` (versioned or not) names the key ``key_id`` (versionless), without regard to case."""
    if not uri:
        return False
    try:
        return KeyUri.parse(uri).versionless.lower() == key_id.lower().rstrip("/")
    except ValueError:
        return False


def newest_enabled(versions: list[KeyVersionInfo]) -> KeyVersionInfo | None:
    """The newest enabled version (``versions`` oldest first), the one Key Vault serves for a versionless URI."""
    enabled = [v for v in versions if v.enabled]
    return enabled[-1] if enabled else None


class KeyRollActivities(KeyRollActivityStub):
    """Activities of key rolls and the rotation watcher.

    Args:
        keyvault: the Key Vault gateway.
        m365: the Microsoft 365 gateway (Exchange Online and SharePoint cmdlets).
        store: the audit trail, the inventory, the leases and the versions in effect.
    """

    @classmethod
    def from_gateways(cls, gateways: Gateways) -> KeyRollActivities | None:
        """The family built from the worker's gateways; ``None`` without Key Vault or Microsoft 365."""
        if gateways.keyvault is None or gateways.m365 is None:
            return None
        return cls(gateways.keyvault, gateways.m365, gateways.store)

    def __init__(self, keyvault: KeyVaultGateway, m365: M365Gateway, store: Store) -> None:
        self.keyvault = keyvault
        self.m365 = m365
        self.store = store

    def _audited(self) -> M365Gateway:
        async def on_call(cmdlet: Cmdlet, outcome: str, error: str | None) -> None:
            await audit_call(
                self.store,
                f"m365.{cmdlet.name}",
                cmdlet.render(),
                Outcome(outcome),
                {"error": error} if error else None,
                step="/intent" if outcome == Outcome.INTENT else "",
            )

        return self.m365.with_on_call(on_call)

    # Discovery ----------------------------------------------------------------------------------------------------

    @activity.defn
    async def discover_key_workloads(self, input: DiscoverInput) -> DiscoverResult:
        """The inventory's DEPs that name the key, then the tenant's: mailbox DEPs, multi-workload DEPs, geos."""
        found = DiscoverResult(sources={"inventory": [], "tenant": []})
        deps: dict[str, str] = {}
        m365_deps: dict[str, str] = {}
        for dep in await InventoryStore(self.store).deps():
            if dep.purge_requested or not any(same_key(k, input.key_id) for k in dep.azure_key_ids):
                continue
            if dep.workload == Workload.EXCHANGE.value:
                deps.setdefault(dep.name.lower(), dep.name)
                found.sources["inventory"].append(f"mailbox_dep:{dep.name}")
            elif dep.workload == Workload.MULTI_WORKLOAD.value:
                m365_deps.setdefault(dep.name.lower(), dep.name)
                found.sources["inventory"].append(f"multi_workload_dep:{dep.name}")
        gateway = self._audited()
        for mailbox_dep in await gateway.get_data_encryption_policy():
            if mailbox_dep.permanent_data_purge_requested:
                continue
            if any(same_key(k, input.key_id) for k in mailbox_dep.azure_key_ids):
                deps.setdefault(mailbox_dep.name.lower(), mailbox_dep.name)
                found.sources["tenant"].append(f"mailbox_dep:{mailbox_dep.name}")
        try:
            multi = await gateway.get_m365_data_at_rest_encryption_policy()
        except CmdletError:
            multi = []  # a tenant without the multi-workload service answers with a refusal: nothing uses the key
        for m in multi:
            if any(same_key(k, input.key_id) for k in m.azure_key_ids):
                m365_deps.setdefault(m.name.lower(), m.name)
                found.sources["tenant"].append(f"multi_workload_dep:{m.name}")
        for geo, admin_url in sorted(input.geo_admin_urls.items()):
            try:
                policy = await gateway.get_spo_data_encryption_policy(admin_url)
            except CmdletError as exc:
                raise refusal(exc) from None
            for key_type, uri, version in (
                ("Primary", policy.primary_key_uri, policy.primary_key_version),
                ("Secondary", policy.secondary_key_uri, policy.secondary_key_version),
            ):
                if same_key(uri, input.key_id):
                    found.geos.append(
                        GeoSlot(
                            geo=geo,
                            key_type=key_type,
                            version=version,
                            state=policy.state,
                            percent=policy.percent_complete,
                        )
                    )
                    found.sources["tenant"].append(f"spo_geo:{geo}")
        found.deps, found.m365_deps = sorted(deps.values()), sorted(m365_deps.values())
        return found

    @activity.defn
    async def hold_targets(self, input: HoldInput) -> HoldResult:
        """Lease what the operation found once it ran; refused (``targets-leased``) when another operation holds it."""
        from ckey.operations import LeaseRequest

        try:
            held = await self.store.extend_leases(input.operation_id, LeaseRequest(leases=input.leases))
        except LeaseConflict as conflict:
            raise ApplicationError(
                f"targets this roll needs are held by running operations (wait for them to end, or cancel them): "
                f"{describe(conflict.holders)}",
                [h.operation_id for h in conflict.holders],
                type="targets-leased",
                non_retryable=True,
            ) from None
        return HoldResult(held=held)

    # Key Vault ------------------------------------------------------------------------------------------------------

    @activity.defn
    async def key_versions(self, input: KeyVersionsInput) -> KeyVersionsResult:
        """Every version of the key, oldest first."""
        uri = KeyUri.parse(input.key_id)
        async with _refusals():
            versions = await self.keyvault.key_versions(uri)
        return KeyVersionsResult(versions=versions)

    @activity.defn
    async def create_key_version(self, input: CreateVersionInput) -> CreateVersionResult:
        """A new version tagged with the operation's id; a retry finds the version an earlier attempt created."""
        uri = KeyUri.parse(input.key_id)
        async with _refusals():
            versions = await self.keyvault.key_versions(uri)
        mine = [v for v in versions if v.tags.get(ROLL_TAG) == input.operation_id]
        if mine:
            return CreateVersionResult(version=mine[-1], created=False)
        target = render("Add-AzKeyVaultKey", VaultName=uri.vault, Name=uri.name, Destination="<as the current>")
        await audit_call(self.store, "keyvault.key.version.create", target, Outcome.INTENT, step="/intent")
        try:
            async with _refusals():
                key = await self.keyvault.create_key_version(uri, {ROLL_TAG: input.operation_id})
        except ApplicationError as exc:
            await audit_call(self.store, "keyvault.key.version.create", target, Outcome.REFUSED, {"error": exc.message})
            raise
        await audit_call(
            self.store, "keyvault.key.version.create", target, Outcome.OK, {"key": key.uri, "version": key.version}
        )
        return CreateVersionResult(
            version=KeyVersionInfo(
                uri=key.uri,
                version=key.version,
                enabled=key.enabled,
                created_on=key.created_on,
                expires_on=key.expires_on,
                tags={ROLL_TAG: input.operation_id},
            ),
            created=True,
        )

    # Workloads ------------------------------------------------------------------------------------------------------

    @activity.defn
    async def refresh_dep(self, input: RefreshDepInput) -> RefreshDepResult:
        """``-Refresh``: the DEP re-wraps its key with the newest version of each of its customer keys."""
        gateway = self._audited()
        try:
            if input.workload is TargetWorkload.MAILBOX_DEP:
                await gateway.set_data_encryption_policy(input.dep, refresh=True)
                return RefreshDepResult()
            before = await gateway.get_m365_data_at_rest_encryption_policy(input.dep)
            await gateway.set_m365_data_at_rest_encryption_policy(input.dep, refresh=True)
        except CmdletError as exc:
            raise refusal(exc, "dep-refresh") from None
        return RefreshDepResult(last_refreshed_before=before[0].last_refreshed if before else None)

    @activity.defn
    async def read_m365_dep(self, input: ReadM365DepInput) -> ReadM365DepResult:
        """Whether the multi-workload DEP is enabled, and when the tenant last refreshed it."""
        try:
            found = await self._audited().get_m365_data_at_rest_encryption_policy(input.dep)
        except CmdletError as exc:
            raise refusal(exc) from None
        if not found:
            raise ApplicationError(f"no multi-workload DEP {input.dep!r}", type="dep-exists", non_retryable=True)
        return ReadM365DepResult(enabled=found[0].enabled, last_refreshed=found[0].last_refreshed)

    @activity.defn
    async def record_version_in_effect(self, input: RecordInEffectInput) -> None:
        """Record the version a workload's target is on."""
        await KeyRollStore(self.store).record(
            KeyInEffect(
                workload=input.workload.value,
                target=input.target,
                key_id=input.key_id,
                version=input.version,
                refreshed_at=input.at,
                operation_id=input.operation_id,
            )
        )

    @activity.defn
    async def update_spo_geo(self, input: UpdateGeoInput) -> UpdateGeoResult:
        """Update-SPODataEncryptionPolicy for the slot; nothing sent when the slot names the version already."""
        from ckey.models import SpoKeyRef

        gateway = self._audited()
        try:
            policy = await gateway.get_spo_data_encryption_policy(input.admin_url)
        except CmdletError as exc:
            raise refusal(exc) from None
        slot = policy.primary_key_version if input.key_type == "Primary" else policy.secondary_key_version
        if (slot or "").lower() == input.version.lower():
            return UpdateGeoResult(sent=False)
        if policy.state != "Registered":
            raise _geo_busy(input.geo, policy.state, policy.percent_complete)
        try:
            await gateway.update_spo_data_encryption_policy(
                input.admin_url, input.key_type, SpoKeyRef(vault=input.vault, key=input.key, version=input.version)
            )
        except CmdletError as exc:
            if "Rolling" in exc.message or "Registering" in exc.message:
                raise _geo_busy(input.geo, "Rolling", None, exc.message) from None
            raise refusal(exc, "spo-update") from None
        return UpdateGeoResult(sent=True)

    @activity.defn
    async def read_spo_geo(self, input: ReadGeoInput) -> GeoState:
        """Get-SPODataEncryptionPolicy: state, percent, each slot's version."""
        try:
            policy = await self._audited().get_spo_data_encryption_policy(input.admin_url)
        except CmdletError as exc:
            raise refusal(exc) from None
        # The inventory's geo shows this roll as the operation that moved it last (GET /api/spo/geos).
        await SpoGeoStore(self.store).record_geo(
            input.geo,
            policy.state,
            policy.percent_complete,
            [u for u in (policy.primary_key_uri, policy.secondary_key_uri) if u],
            activity.info().workflow_id,
        )
        return GeoState(
            geo=input.geo,
            state=policy.state,
            percent=policy.percent_complete,
            primary_version=policy.primary_key_version,
            secondary_version=policy.secondary_key_version,
        )

    # The watcher ----------------------------------------------------------------------------------------------------

    @activity.defn
    async def pending_key_versions(self, input: PendingInput) -> PendingResult:
        """Keys in use (inventory and tenant) whose newest enabled version a workload does not have in effect.

        A mailbox or multi-workload DEP is on the version ckey last refreshed it to; a DEP ckey never refreshed is
        taken to be on its key's newest version the first time the watcher sees it (recorded as the baseline: the
        tenant names no version for it). A geo is on the versions Get-SPODataEncryptionPolicy names.
        """
        users: dict[str, dict[str, list[tuple[str, str | None]]]] = {}

        def use(key_uri: str, workload: TargetWorkload, target: str, version: str | None = None) -> None:
            try:
                key_id = KeyUri.parse(key_uri).versionless
            except ValueError:
                return
            entry = users.setdefault(key_id.lower(), {"_id": [(key_id, None)]})
            targets = entry.setdefault(workload.value, [])
            if all(t != target.lower() for t, _ in targets):
                targets.append((target.lower(), version))

        for dep in await InventoryStore(self.store).deps():
            if dep.purge_requested:
                continue
            workload = {
                Workload.EXCHANGE.value: TargetWorkload.MAILBOX_DEP,
                Workload.MULTI_WORKLOAD.value: TargetWorkload.MULTI_WORKLOAD_DEP,
            }.get(dep.workload)
            for uri in dep.azure_key_ids if workload else []:
                use(uri, workload, dep.name)  # type: ignore[arg-type]
        gateway = self.m365
        for mailbox_dep in await gateway.get_data_encryption_policy():
            if not mailbox_dep.permanent_data_purge_requested:
                for uri in mailbox_dep.azure_key_ids:
                    use(uri, TargetWorkload.MAILBOX_DEP, mailbox_dep.name)
        try:
            multi = await gateway.get_m365_data_at_rest_encryption_policy()
        except CmdletError:
            multi = []
        for m in multi:
            for uri in m.azure_key_ids:
                use(uri, TargetWorkload.MULTI_WORKLOAD_DEP, m.name)
        for geo, admin_url in sorted(input.geo_admin_urls.items()):
            try:
                policy = await gateway.get_spo_data_encryption_policy(admin_url)
            except CmdletError:
                continue
            for slot_uri, slot_version in (
                (policy.primary_key_uri, policy.primary_key_version),
                (policy.secondary_key_uri, policy.secondary_key_version),
            ):
                if slot_uri:
                    use(slot_uri, TargetWorkload.SPO_GEO, geo, slot_version)

        rolls = KeyRollStore(self.store)
        pending: list[PendingVersion] = []
        unreadable: list[str] = []
        now = datetime.now(UTC)
        for entry in users.values():
            key_id = str(entry["_id"][0][0])
            key_uri = KeyUri.parse(key_id)
            try:
                async with _refusals():
                    newest = newest_enabled(await self.keyvault.key_versions(key_uri))
            except ApplicationError as exc:
                # One key ckey cannot read (its vault gone, ckey's access removed) is the health check's to report;
                # the other keys are still watched.
                unreadable.append(f"{key_id}: {exc.message}"[:500])
                continue
            if newest is None:
                continue
            recorded = {(r.workload, r.target): r.version for r in await rolls.in_effect(key_id)}
            behind: list[str] = []
            found = PendingVersion(vault=key_uri.vault, key=key_uri.name, key_id=key_id, version=newest.version)
            found.expires_on = newest.expires_on
            for workload_name, targets in entry.items():
                if workload_name == "_id":
                    continue
                workload = TargetWorkload(workload_name)
                for target, live_version in targets:
                    version: str | None
                    if workload is TargetWorkload.SPO_GEO:
                        version = live_version
                    else:
                        version = recorded.get((workload.value, target))
                        if version is None:
                            await rolls.record(
                                KeyInEffect(
                                    workload=workload.value,
                                    target=target,
                                    key_id=key_id,
                                    version=newest.version,
                                    refreshed_at=now,
                                    operation_id=f"{BASELINE}:{input.operation_id}"[:64],
                                )
                            )
                            version = newest.version
                    if (version or "").lower() == newest.version.lower():
                        continue
                    behind.append(f"{workload.value}:{target}@{version or '?'}")
                    if workload is TargetWorkload.MAILBOX_DEP:
                        found.deps.append(target)
                    elif workload is TargetWorkload.MULTI_WORKLOAD_DEP:
                        found.m365_deps.append(target)
                    else:
                        found.geos.append(target.upper())
            if behind:
                found.behind = behind
                pending.append(found)
        return PendingResult(keys=len(users), pending=pending, unreadable=unreadable)


def _geo_busy(geo: str, state: str, percent: int | None, text: str | None = None) -> ApplicationError:
    """The refusal of a geo that is not Registered: one SharePoint key rolls at a time."""
    shown = f"{state}" + (f", {percent}% of sites" if percent is not None else "")
    return ApplicationError(
        f"geo {geo} is {shown}: SharePoint rolls one key at a time per geo; roll this key once it is Registered"
        + (f" (SharePoint: {text})" if text else ""),
        type="spo-geo-rolling",
        non_retryable=True,
    )
