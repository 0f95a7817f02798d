"""Key rolls: ``key.roll`` and the rotation watcher ``key.rotation.watch``.

Seed: "Whether you rolled a Customer Key, assigned a new DEP, or migrated a mailbox, ..." -- a roll is a new version
of the key in its vault, then each workload's refresh: Set-DataEncryptionPolicy -Refresh for mailbox DEPs (then the
mailboxes are followed as ``exchange.encryption.verify`` does, with its week), Set-M365DataAtRestEncryptionPolicy
-Refresh for the multi-workload DEP, Update-SPODataEncryptionPolicy for each SharePoint geo (Rolling, then
Registered). Old versions are never disabled or deleted: data wrapped under them stays readable until Microsoft 365
has re-wrapped it. The watcher, on a Temporal Schedule, finds key versions the workloads do not use yet (a rotation
policy fired, or someone rotated by hand) and starts a roll that adopts the version, or alerts and waits for a person.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
    from temporalio.workflow import ParentClosePolicy

    from ckey import temporal as sa
    from ckey.models import KeyUri, KeyVersionInfo, Role, Workload, human_duration
    from ckey.operations import Escalation, Lease, LeaseMode, LeaseRequest, OperationKind
    from contracts.alerts import ALERT_MAX_FINDINGS, Alert, AlertActivityStub, AlertFinding
    from contracts.exchange import ExchangeEncryptionVerifyInput, MailboxFollowResult
    from contracts.keyroll import (
        CreateVersionInput,
        DiscoverInput,
        DiscoverResult,
        GeoSlot,
        HoldInput,
        KeyRollActivityStub,
        KeyRollInput,
        KeyRollParams,
        KeyRollResult,
        KeyRotationWatchInput,
        KeyRotationWatchParams,
        KeyRotationWatchResult,
        KeyVersionsInput,
        PendingInput,
        PendingVersion,
        ReadGeoInput,
        ReadM365DepInput,
        RecordInEffectInput,
        RefreshDepInput,
        RollSettings,
        TargetWorkload,
        UpdateGeoInput,
        WorkloadOutcome,
    )
    from contracts.keyvault import CheckKeyHealthInput, KeyVaultActivityStub
    from workflows.exchange import ExchangeEncryptionVerifyWorkflow
    from workflows.keyvault import _key_lease
    from workflows.operation import OperationWorkflow, call

if TYPE_CHECKING:
    from ckey.config import Settings


# key.roll ----------------------------------------------------------------------------------------------------------


class RollPhase(StrEnum):
    """Phases of ``key.roll``."""

    PLANNING = "planning"
    CREATING_VERSION = "creating_version"
    ADOPTING_VERSION = "adopting_version"
    CHECKING = "checking"
    REFRESHING = "refreshing"
    DONE = "done"


M365_SIGNAL = "LastRefreshedDateTime"
"""What the roll watches on the multi-workload DEP after its refresh, when the tenant reports it."""

_PRINCIPAL_OF = {
    TargetWorkload.MAILBOX_DEP: Workload.EXCHANGE,
    TargetWorkload.MULTI_WORKLOAD_DEP: Workload.MULTI_WORKLOAD,
    TargetWorkload.SPO_GEO: Workload.SHAREPOINT,
}


def dep_lease(workload: TargetWorkload, name: str) -> Lease:
    """The lease names the parts of issue 11 agreed on."""
    if workload is TargetWorkload.MAILBOX_DEP:
        return Lease.on("dep:exchange", name)
    if workload is TargetWorkload.MULTI_WORKLOAD_DEP:
        return Lease.on("dep:multi_workload", name)
    return Lease.on("spo:geo", name)


@workflow.defn
class KeyRollWorkflow(OperationWorkflow):
    """Roll a customer key: a new version (or one Key Vault made), checked, then every workload refreshed onto it."""

    kind = "key.roll"

    @workflow.run
    async def run(self, input: KeyRollInput) -> KeyRollResult:
        """Plan, make or adopt the version, check it, refresh every workload."""
        return await self.operate(input, lambda: self._roll(input))

    async def _roll(self, input: KeyRollInput) -> KeyRollResult:
        key_id = input.key_id
        await self.set_phase(RollPhase.PLANNING, {"key": key_id})
        found = await call(
            KeyRollActivityStub.discover_key_workloads,
            DiscoverInput(operation_id=self.operation_id, key_id=key_id, geo_admin_urls=input.geo_admin_urls),
            start_to_close=timedelta(minutes=10),
        )
        deps, m365_deps, geos = _targets(input, found)
        leases = [_key_lease(key_id, LeaseMode.WRITE)]
        leases += [dep_lease(TargetWorkload.MAILBOX_DEP, d) for d in deps]
        leases += [dep_lease(TargetWorkload.MULTI_WORKLOAD_DEP, d) for d in m365_deps]
        leases += [dep_lease(TargetWorkload.SPO_GEO, g.geo) for g in geos]
        held = await call(KeyRollActivityStub.hold_targets, HoldInput(operation_id=self.operation_id, leases=leases))
        total = len(deps) + len(m365_deps) + len(geos)
        self.set_progress(0, total, "workloads refreshed")
        await self.audit(
            "key.roll.plan",
            detail={
                "key": key_id,
                "named": bool(input.deps or input.m365_deps or input.geos),
                "mailbox_deps": deps,
                "multi_workload_deps": m365_deps,
                "spo_geos": [f"{g.geo} ({g.key_type})" for g in geos],
                "sources": found.sources,
                "version": f"adopt {input.adopt_version}" if input.adopt_version else "create",
                "multi_workload_follow": f"until {M365_SIGNAL} changes, escalated after "
                f"{human_duration(input.m365_window)}; where the tenant shows none, wait out that window and verify",
                "spo_follow": f"Rolling to Registered, a geo still for {human_duration(input.spo_stall_after)} "
                "escalated",
                "held": held.held,
            },
        )
        busy = [g for g in geos if g.state != "Registered"]
        if busy:
            # SharePoint rolls one key at a time per geo, and only from Registered: refused before any version.
            raise ApplicationError(
                "; ".join(
                    f"geo {g.geo} is {g.state}"
                    + (f" ({g.percent}% of sites)" if g.percent is not None else "")
                    + f": its {g.key_type.lower()} key can roll once it is Registered"
                    for g in busy
                )
                + " (nothing was created)",
                type="spo-geo-rolling",
                non_retryable=True,
            )
        if total == 0:
            raise ApplicationError(
                f"no workload uses {key_id}: no mailbox DEP, multi-workload DEP or SharePoint geo names it "
                "(nothing was created)",
                type="key-in-use",
                non_retryable=True,
            )

        version, created = await self._version(input, key_id)
        await self.set_phase(RollPhase.CHECKING, {"version": version.uri, "created": created})
        workloads = sorted(
            {w for w, on in ((TargetWorkload.MAILBOX_DEP, deps), (TargetWorkload.MULTI_WORKLOAD_DEP, m365_deps)) if on}
            | ({TargetWorkload.SPO_GEO} if geos else set()),
            key=lambda w: w.value,
        )
        results = await asyncio.gather(
            *(
                call(
                    KeyVaultActivityStub.check_key_health,
                    CheckKeyHealthInput(key_uri=version.uri, workload=_PRINCIPAL_OF[w]),
                )
                for w in workloads
            )
        )
        broken = [line for r in results for line in r.lines if not line.ok]
        if broken:
            raise ApplicationError(
                f"the new version {version.uri} breaks the key rules, no workload was refreshed: "
                + "; ".join(f"{line.check} ({line.rule}): {line.detail}".rstrip(": ") for line in broken),
                [line.model_dump() for line in broken],
                type=broken[0].rule,
                non_retryable=True,
            )

        await self.set_phase(RollPhase.REFRESHING, {"version": version.version, "workloads": total})
        outcomes = await asyncio.gather(
            *(self._mailbox_dep(input, d, key_id, version) for d in deps),
            *(self._m365_dep(input, d, key_id, version) for d in m365_deps),
            *(self._geo(input, g, key_id, version) for g in geos),
        )
        await self.set_phase(
            RollPhase.DONE, {"version": version.version, "workloads": {f"{o.target}": o.state for o in outcomes}}
        )
        return KeyRollResult(key_id=key_id, version=version.version, created=created, workloads=list(outcomes))

    async def _version(self, input: KeyRollInput, key_id: str) -> tuple[KeyVersionInfo, bool]:
        if input.adopt_version is None:
            await self.set_phase(RollPhase.CREATING_VERSION)
            made = await call(
                KeyRollActivityStub.create_key_version,
                CreateVersionInput(operation_id=self.operation_id, key_id=key_id),
            )
            return made.version, made.created
        await self.set_phase(RollPhase.ADOPTING_VERSION, {"version": input.adopt_version})
        versions = (await call(KeyRollActivityStub.key_versions, KeyVersionsInput(key_id=key_id))).versions
        chosen = next((v for v in versions if v.version.lower() == input.adopt_version.lower()), None)
        enabled = [v for v in versions if v.enabled]
        if chosen is None:
            raise ApplicationError(
                f"{key_id} has no version {input.adopt_version}", type="key-version-exists", non_retryable=True
            )
        if chosen.expires_on is not None:
            raise ApplicationError(
                f"version {chosen.version} of {key_id} expires on {chosen.expires_on.isoformat()}: Microsoft 365 "
                "must never depend on a key that expires (remove the expiry, or roll a new version)",
                type="key-no-expiry",
                non_retryable=True,
            )
        if not enabled or enabled[-1].version != chosen.version:
            # -Refresh wraps with the key's newest enabled version, whatever ckey names.
            raise ApplicationError(
                f"version {chosen.version} of {key_id} is not its newest enabled version"
                + (f" ({enabled[-1].version} is)" if enabled else "")
                + ": a refresh would wrap with the newest one",
                type="adopt-newest-version",
                non_retryable=True,
            )
        return chosen, False

    async def _done_one(self) -> None:
        self.set_progress(self._status.progress.done + 1)
        await self.checkpoint()

    async def _record_in_effect(self, workload: TargetWorkload, target: str, key_id: str, version: str) -> None:
        await call(
            KeyRollActivityStub.record_version_in_effect,
            RecordInEffectInput(
                operation_id=self.operation_id,
                workload=workload,
                target=target,
                key_id=key_id,
                version=version,
                at=workflow.now(),
            ),
        )

    async def _mailbox_dep(
        self, input: KeyRollInput, dep: str, key_id: str, version: KeyVersionInfo
    ) -> WorkloadOutcome:
        await call(
            KeyRollActivityStub.refresh_dep,
            RefreshDepInput(
                operation_id=self.operation_id,
                workload=TargetWorkload.MAILBOX_DEP,
                dep=dep,
                key_id=key_id,
                version=version.version,
            ),
        )
        refreshed_at = workflow.now()
        await self._record_in_effect(TargetWorkload.MAILBOX_DEP, dep, key_id, version.version)
        await self.audit("key.roll.refreshed", target=f"mailbox_dep:{dep}", detail={"version": version.version})
        # The mailboxes are followed as exchange.encryption.verify follows them, escalation after the week included:
        # an operation of its own (its record, its progress, its close), started and awaited by this roll. Its id is
        # the workflow's own random (replayed identically), not derived from this operation's id.
        follow_id = f"op-{workflow.uuid4()}"
        followed: MailboxFollowResult = await workflow.execute_child_workflow(
            ExchangeEncryptionVerifyWorkflow.run,
            ExchangeEncryptionVerifyInput(
                dep=dep,
                escalate_after=input.exchange_escalate_after,
                poll_interval=input.exchange_poll_interval,
                follow_from=refreshed_at,
            ),
            id=follow_id,
            memo={"kind": ExchangeEncryptionVerifyWorkflow.kind, "started_by": self.started_by, "dep": dep},
            parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
        )
        await self._done_one()
        return WorkloadOutcome(
            workload=TargetWorkload.MAILBOX_DEP,
            target=dep,
            state="refreshed",
            detail={
                "follow_up": follow_id,
                "encrypted": followed.encrypted,
                "total": followed.total,
                "case": followed.case_id,
            },
            escalated=followed.escalated > 0,
        )

    async def _m365_dep(self, input: KeyRollInput, dep: str, key_id: str, version: KeyVersionInfo) -> WorkloadOutcome:
        refreshed = await call(
            KeyRollActivityStub.refresh_dep,
            RefreshDepInput(
                operation_id=self.operation_id,
                workload=TargetWorkload.MULTI_WORKLOAD_DEP,
                dep=dep,
                key_id=key_id,
                version=version.version,
            ),
        )
        started = workflow.now()
        before = refreshed.last_refreshed_before
        escalated = False
        state = "in_effect"
        method = M365_SIGNAL
        while True:
            seen = await call(KeyRollActivityStub.read_m365_dep, ReadM365DepInput(dep=dep))
            if seen.last_refreshed is not None and seen.last_refreshed != before:
                break
            waited = workflow.now() - started
            if seen.last_refreshed is None and before is None:
                # The tenant shows no refresh time: wait out the documented window, then verify the DEP stands.
                method = "window"
                if waited >= input.m365_window:
                    if not seen.enabled:
                        state = "disabled"
                    break
            elif waited >= input.m365_window and not escalated:
                escalated = True
                await self.escalate(
                    Escalation(
                        at=workflow.now(),
                        reason=f"multi-workload DEP {dep} shows no refresh {human_duration(input.m365_window)} after "
                        f"Set-M365DataAtRestEncryptionPolicy -Refresh",
                        subjects=[dep],
                    )
                )
                state = "unconfirmed"
                break
            await workflow.sleep(input.poll_interval)
        if state == "in_effect":
            await self._record_in_effect(TargetWorkload.MULTI_WORKLOAD_DEP, dep, key_id, version.version)
        await self.audit(
            "key.roll.refreshed", target=f"multi_workload_dep:{dep}", detail={"state": state, "method": method}
        )
        await self._done_one()
        return WorkloadOutcome(
            workload=TargetWorkload.MULTI_WORKLOAD_DEP,
            target=dep,
            state=state,
            detail={"method": method},
            escalated=escalated,
        )

    async def _geo(self, input: KeyRollInput, slot: GeoSlot, key_id: str, version: KeyVersionInfo) -> WorkloadOutcome:
        admin_url = input.geo_admin_urls[slot.geo]
        uri = KeyUri.parse(version.uri)
        await call(
            KeyRollActivityStub.update_spo_geo,
            UpdateGeoInput(
                operation_id=self.operation_id,
                geo=slot.geo,
                admin_url=admin_url,
                key_type=slot.key_type,
                vault=uri.vault,
                key=uri.name,
                version=version.version,
            ),
        )
        last_percent: int | None = None
        moved_at = workflow.now()
        escalated = False
        state = "registered"
        while True:
            geo = await call(KeyRollActivityStub.read_spo_geo, ReadGeoInput(geo=slot.geo, admin_url=admin_url))
            on = geo.primary_version if slot.key_type == "Primary" else geo.secondary_version
            if geo.state == "Registered" and (on or "").lower() == version.version.lower():
                break
            if geo.percent != last_percent:
                last_percent, moved_at = geo.percent, workflow.now()
            elif workflow.now() - moved_at >= input.spo_stall_after:
                if escalated:
                    state = "stalled"
                    break
                escalated = True
                moved_at = workflow.now()
                await self.escalate(
                    Escalation(
                        at=workflow.now(),
                        reason=f"geo {slot.geo} has not advanced for {human_duration(input.spo_stall_after)} "
                        f"({geo.state}, {geo.percent}% of sites) while rolling its {slot.key_type.lower()} key",
                        subjects=[slot.geo],
                    )
                )
            await workflow.sleep(input.poll_interval)
        if state == "registered":
            await self._record_in_effect(TargetWorkload.SPO_GEO, slot.geo, key_id, version.version)
        await self.audit(
            "key.roll.refreshed", target=f"spo_geo:{slot.geo}", detail={"state": state, "key_type": slot.key_type}
        )
        await self._done_one()
        return WorkloadOutcome(
            workload=TargetWorkload.SPO_GEO,
            target=slot.geo,
            state=state,
            detail={"key_type": slot.key_type, "percent": last_percent},
            escalated=escalated,
        )


def _targets(input: KeyRollInput, found: DiscoverResult) -> tuple[list[str], list[str], list[GeoSlot]]:
    """The named targets (each must use the key) or, none named, every one found."""
    if not (input.deps or input.m365_deps or input.geos):
        return found.deps, found.m365_deps, found.geos
    using = {
        TargetWorkload.MAILBOX_DEP: {d.lower(): d for d in found.deps},
        TargetWorkload.MULTI_WORKLOAD_DEP: {d.lower(): d for d in found.m365_deps},
    }
    slots = {g.geo: g for g in found.geos}
    missing = [f"mailbox DEP {d}" for d in input.deps if d.lower() not in using[TargetWorkload.MAILBOX_DEP]]
    missing += [
        f"multi-workload DEP {d}" for d in input.m365_deps if d.lower() not in using[TargetWorkload.MULTI_WORKLOAD_DEP]
    ]
    missing += [f"geo {g}" for g in input.geos if g not in slots]
    if missing:
        raise ApplicationError(
            f"{', '.join(missing)} do(es) not use {input.vault}/{input.key} (or do not exist): nothing was changed",
            type="key-in-use",
            non_retryable=True,
        )
    return (
        [using[TargetWorkload.MAILBOX_DEP][d.lower()] for d in dict.fromkeys(input.deps)],
        [using[TargetWorkload.MULTI_WORKLOAD_DEP][d.lower()] for d in dict.fromkeys(input.m365_deps)],
        [slots[g] for g in dict.fromkeys(input.geos)],
    )


# key.rotation.watch ------------------------------------------------------------------------------------------------


class WatchPhase(StrEnum):
    """Phases of ``key.rotation.watch``."""

    READING = "reading"
    ACTING = "acting"
    DONE = "done"


ROTATION_PENDING = "key-rotation-pending"
"""The alert of a new key version the workloads do not use yet, when the settings ask a person first."""
ROTATION_EXPIRES = "key-rotation-version-expires"
"""The alert of a new key version that carries an expiry: never adopted."""


def roll_id(pending: PendingVersion) -> str:
    """The id of the roll the watcher starts for a version: one roll per version, whatever the number of watches."""
    return f"key-roll-{pending.vault}-{pending.key}-{pending.version}".lower()


@workflow.defn
class KeyRotationWatchWorkflow(OperationWorkflow):
    """Find key versions the workloads do not use yet; start their roll, or alert when a person decides."""

    kind = "key.rotation.watch"

    @workflow.run
    async def run(self, input: KeyRotationWatchInput) -> KeyRotationWatchResult:
        """Read the keys in use, then start rolls or raise alerts."""
        return await self.operate(input, lambda: self._watch(input))

    async def _watch(self, input: KeyRotationWatchInput) -> KeyRotationWatchResult:
        await self.set_phase(WatchPhase.READING)
        found = await call(
            KeyRollActivityStub.pending_key_versions,
            PendingInput(operation_id=self.operation_id, geo_admin_urls=input.roll.geo_admin_urls),
            start_to_close=timedelta(minutes=10),
        )
        result = KeyRotationWatchResult(keys=found.keys, pending=found.pending, unreadable=found.unreadable)
        await self.set_phase(WatchPhase.ACTING, {"keys": found.keys, "pending": [p.key_id for p in found.pending]})
        for pending in found.pending:
            if pending.expires_on is not None:
                await self._alert(
                    ROTATION_EXPIRES,
                    pending,
                    f"{pending.key_id} has a new version {pending.version} that expires on "
                    f"{pending.expires_on.isoformat()}: not adopted (no expiry on keys Microsoft 365 uses). Remove the "
                    "expiry from the key's rotation policy and the version, or roll by hand.",
                )
                result.alerted.append(pending.key_id)
            elif input.adopt:
                started = await self._start_roll(input, pending)
                if started:
                    result.started.append(started)
            else:
                await self._alert(
                    ROTATION_PENDING,
                    pending,
                    f"{pending.key_id} has a new version {pending.version} that {len(pending.behind)} workload(s) do "
                    f"not use yet; to refresh them: ckey key roll {pending.vault} {pending.key} --adopt "
                    f"{pending.version}",
                )
                result.alerted.append(pending.key_id)
        await self.set_phase(WatchPhase.DONE, {"started": result.started, "alerted": result.alerted})
        return result

    async def _start_roll(self, input: KeyRotationWatchInput, pending: PendingVersion) -> str | None:
        roll = KeyRollInput(
            vault=pending.vault,
            key=pending.key,
            deps=pending.deps,
            m365_deps=pending.m365_deps,
            geos=pending.geos,
            adopt_version=pending.version,
            **input.roll.model_dump(),
        )
        op_id = roll_id(pending)
        by = f"{self.started_by} ({self.operation_id})"[:200]
        attributes = TypedSearchAttributes.empty
        if workflow.info().typed_search_attributes.get(sa.KIND) is not None:
            attributes = TypedSearchAttributes(
                [
                    SearchAttributePair(sa.KIND, KeyRollWorkflow.kind),
                    SearchAttributePair(sa.STATE, "running"),
                    SearchAttributePair(sa.STARTED_BY, by),
                ]
            )
        try:
            # Abandoned when the watch ends: the roll runs for hours, the next watch must not wait for it.
            await workflow.start_child_workflow(
                KeyRollWorkflow.run,
                roll,
                id=op_id,
                memo={"kind": KeyRollWorkflow.kind, "started_by": by},
                search_attributes=attributes,
                parent_close_policy=ParentClosePolicy.ABANDON,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
            )
        except WorkflowAlreadyStartedError:
            return None  # an earlier watch started it: it runs, or it ended well
        await self.audit("key.rotation.roll.started", target=pending.key_id, detail={"operation": op_id})
        return op_id

    async def _alert(self, rule: str, pending: PendingVersion, summary: str) -> None:
        alert = Alert(
            rule=rule,
            operation_id=self.operation_id,
            kind=self.kind,
            summary=summary,
            findings=[AlertFinding(rule=rule, target=b, detail=pending.version) for b in pending.behind][
                :ALERT_MAX_FINDINGS
            ],
            at=workflow.now(),
        )
        await call(AlertActivityStub.record_alert, alert)
        await self.post_alert(alert)


# Registration ------------------------------------------------------------------------------------------------------


def roll_settings(settings: Settings) -> RollSettings:
    """The settings a roll runs under (recorded on its input)."""
    return RollSettings(
        vault_suffix=settings.vault_dns_suffix,
        geo_admin_urls=dict(settings.spo_geo_admin_urls),
        poll_interval=settings.key_roll_poll_interval,
        exchange_escalate_after=settings.exchange_escalate_after,
        exchange_poll_interval=settings.exchange_poll_interval,
        spo_stall_after=settings.key_roll_spo_stall_after,
        m365_window=settings.key_roll_m365_window,
    )


def build_roll_input(params: BaseModel, settings: Settings) -> KeyRollInput:
    """The roll's input: the params, the geos' admin sites and the timings of the settings."""
    return KeyRollInput(**params.model_dump(), **roll_settings(settings).model_dump())


def build_watch_input(params: BaseModel, settings: Settings) -> KeyRotationWatchInput:
    """The watcher's input: whether it adopts by itself, and the settings of the rolls it starts."""
    return KeyRotationWatchInput(adopt=settings.key_rotation_adopt, roll=roll_settings(settings))


def _rolls_key(params: BaseModel) -> LeaseRequest:
    """A roll writes its key and every DEP or geo it names (those it finds itself it leases once found)."""
    # The vault's DNS suffix does not matter to the lease: it names vault/key.
    key_id = f"https://{str(getattr(params, 'vault', '')).lower()}.vault.azure.net/keys/{getattr(params, 'key', '')}"
    leases = [_key_lease(key_id, LeaseMode.WRITE)]
    leases += [dep_lease(TargetWorkload.MAILBOX_DEP, d) for d in getattr(params, "deps", [])]
    leases += [dep_lease(TargetWorkload.MULTI_WORKLOAD_DEP, d) for d in getattr(params, "m365_deps", [])]
    leases += [dep_lease(TargetWorkload.SPO_GEO, g) for g in getattr(params, "geos", [])]
    return LeaseRequest(leases=leases)


def _watches(params: BaseModel) -> LeaseRequest:
    """The watcher reads the keys in use (never beside a restore of every key)."""
    return LeaseRequest(leases=[Lease.on("keys", "in_use", LeaseMode.READ)])


KINDS: tuple[OperationKind, ...] = (
    OperationKind(
        name=KeyRollWorkflow.kind,
        workflow=KeyRollWorkflow,
        input_model=KeyRollInput,
        params_model=KeyRollParams,
        build_input=build_roll_input,
        role=Role.OPERATOR,
        description="Roll a customer key: a new version in its vault (or adopt_version, one Key Vault made), checked "
        "for each workload's principal, then every workload that uses it refreshed (mailbox DEPs -Refresh and "
        "followed, the multi-workload DEP -Refresh, SharePoint geos Update-SPODataEncryptionPolicy to Registered). "
        "None named: ckey finds them. Old versions are never disabled or deleted.",
        leases_of=_rolls_key,
        result_model=KeyRollResult,
        activities=(KeyRollActivityStub, KeyVaultActivityStub),
    ),
    OperationKind(
        name=KeyRotationWatchWorkflow.kind,
        workflow=KeyRotationWatchWorkflow,
        input_model=KeyRotationWatchInput,
        params_model=KeyRotationWatchParams,
        build_input=build_watch_input,
        role=Role.OPERATOR,
        description="Find key versions the workloads do not use yet (a rotation policy fired, someone rotated by "
        "hand): start a key.roll that adopts each (CKEY_KEY_ROTATION_ADOPT=true) or alert (the default); a version "
        "with an expiry is never adopted (the ckey-key-rotation-watch schedule).",
        leases_of=_watches,
        result_model=KeyRotationWatchResult,
        activities=(KeyRollActivityStub, AlertActivityStub),
    ),
)
"""The kinds this module runs, declared once: the registry (:func:`workflows.product_registry`) collects them."""
