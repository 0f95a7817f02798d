"""SharePoint/OneDrive operations: ``spo.dep.register`` and ``spo.dep.restore``.

Seed sections "Create a DEP for use with SharePoint and OneDrive" and "Verify encryption completes for SharePoint and
OneDrive": a geo's DEP is registered through that geo's admin site, then Get-SPODataEncryptionPolicy shows
``Registering`` with the percent of sites done, then ``Registered``. ckey follows it at the settings' cadence; a geo
whose percent stops moving for longer than ``spo_stall_deadline`` is escalated once, and the follow-up ends failed,
with its reason, after ``spo_follow_limit``. Restore-SPODataEncryptionPolicy (not in the seed) gives new keys to a geo
in recovery mode and is followed back to ``Registered`` the same way.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from pydantic import BaseModel
from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from ckey.models import Role, SpoState, Workload, human_duration
    from ckey.operations import Escalation, Lease, LeaseMode, LeaseRequest, OperationKind
    from contracts.keyvault import KeyVaultActivityStub
    from contracts.spo import (
        PERCENTS_KEPT,
        SpoActivityStub,
        SpoDepRegisterParams,
        SpoDepRestoreParams,
        SpoFollowState,
        SpoGeoInput,
        SpoGeoRef,
        SpoGeoResult,
        SpoGeoView,
        SpoKeysInput,
    )
    from workflows.keyvault import check_dep_keys
    from workflows.operation import OperationWorkflow, call

if TYPE_CHECKING:
    from ckey.config import Settings

HEARTBEAT = timedelta(seconds=10)
"""A SharePoint call whose worker died is retried elsewhere after this long (the activities heartbeat meanwhile)."""


RESTORE_NEEDS_RECOVERY = "spo-restore-needs-recovery"
"""Patch id: a restore refuses every geo not in recovery mode, even one that already holds the keys it names."""


class SpoPhase(StrEnum):
    """Phases of ``spo.dep.register`` and ``spo.dep.restore``."""

    CHECKING_GEO = "checking_geo"
    CHECKING_KEYS = "checking_keys"
    REGISTERING = "registering"
    RESTORING = "restoring"
    FOLLOWING = "following"
    ESCALATED = "escalated"
    DONE = "done"


class SpoGeoWorkflow(OperationWorkflow):
    """Shared by register and restore: the checks before anything is sent, and the follow-up to ``Registered``."""

    def _known_geo(self, input: SpoGeoInput) -> str:
        if input.admin_url is None:
            raise ApplicationError(
                f"{input.geo!r} is not a geo of this tenant; known geos: {', '.join(input.known_geos) or 'none'} "
                f"(CKEY_SPO_GEO_ADMIN_URLS)",
                type="spo-geo-known",
                non_retryable=True,
            )
        return input.admin_url

    async def _check_keys(self, input: SpoGeoInput) -> None:
        """The seed's key rules for the SharePoint principal: each key healthy, two vaults, two regions."""
        keys = [input.primary_uri, input.secondary_uri]
        await self.set_phase(SpoPhase.CHECKING_KEYS, {"keys": keys})
        await check_dep_keys(keys, Workload.SHAREPOINT, "SharePoint DEP")

    def _keys_input(self, input: SpoGeoInput, admin_url: str) -> SpoKeysInput:
        return SpoKeysInput(
            geo=input.geo,
            admin_url=admin_url,
            primary=input.primary,
            secondary=input.secondary,
            primary_uri=input.primary_uri,
            secondary_uri=input.secondary_uri,
            operation_id=self.operation_id,
        )

    async def follow(self, input: SpoGeoInput, state: SpoFollowState, admin_url: str) -> SpoGeoResult:
        """Read the geo at the poll interval until ``Registered``; escalate a stall once; end at the limit."""
        await self.set_phase(SpoPhase.ESCALATED if state.escalated else SpoPhase.FOLLOWING)
        ref = SpoGeoRef(geo=input.geo, admin_url=admin_url, operation_id=self.operation_id)
        while True:
            geo = await call(SpoActivityStub.get_spo_geo, ref, heartbeat=HEARTBEAT)
            now = workflow.now()
            percent = geo.percent if geo.percent is not None else 0
            if percent != state.last_percent:
                state.last_percent, state.last_change_at = percent, now
                if len(state.percents) < PERCENTS_KEPT and percent not in state.percents:
                    state.percents.append(percent)
            self.set_progress(percent, 100, "percent of sites")
            await self.checkpoint()
            if geo.state == SpoState.REGISTERED:
                return self._result(geo, state)
            if geo.state not in (SpoState.REGISTERING, SpoState.ROLLING):
                raise ApplicationError(
                    f"the geo {input.geo} went {geo.state} while ckey followed it to Registered",
                    type="spo-geo-state",
                    non_retryable=True,
                )
            if not state.escalated and now - state.last_change_at > input.stall_deadline:
                state.escalated = True
                await self.escalate(
                    Escalation(
                        at=now,
                        reason=f"the geo {input.geo} has been {geo.state} at {percent}% for more than "
                        f"{human_duration(input.stall_deadline)}; ask Microsoft support why its sites stopped",
                        subjects=[input.geo],
                    )
                )
                await self.set_phase(SpoPhase.ESCALATED, {"percent": percent})
            if now - state.started_at >= input.follow_limit:
                raise ApplicationError(
                    f"the geo {input.geo} is still {geo.state} at {percent}% after "
                    f"{human_duration(input.follow_limit)} (spo_follow_limit); ckey stopped following it",
                    type="spo-follow-limit",
                    non_retryable=True,
                )
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(input.model_copy(update={"follow_state": state}))
            await workflow.sleep(input.poll_interval)

    def _result(self, geo: SpoGeoView, state: SpoFollowState) -> SpoGeoResult:
        return SpoGeoResult(
            geo=geo.geo,
            state=geo.state,
            percent=geo.percent,
            primary_key_uri=geo.primary_key_uri,
            secondary_key_uri=geo.secondary_key_uri,
            sent=state.sent,
            escalated=state.escalated,
            percents=state.percents,
        )


@workflow.defn
class SpoDepRegisterWorkflow(SpoGeoWorkflow):
    """Register a geo's DEP once its keys pass every rule, and follow it to ``Registered``."""

    kind = "spo.dep.register"

    @workflow.run
    async def run(self, input: SpoGeoInput) -> SpoGeoResult:
        """Check the geo and the keys, register, follow."""
        return await self.operate(input, lambda: self._register(input))

    async def _register(self, input: SpoGeoInput) -> SpoGeoResult:
        state = input.follow_state
        admin_url = self._known_geo(input)
        if state is None:
            await self._check_keys(input)
            await self.set_phase(SpoPhase.REGISTERING, {"geo": input.geo, "admin_url": admin_url})
            sent = await call(SpoActivityStub.register_spo_dep, self._keys_input(input, admin_url), heartbeat=HEARTBEAT)
            now = workflow.now()
            state = SpoFollowState(started_at=now, last_change_at=now, sent=sent.sent)
        result = await self.follow(input, state, admin_url)
        await self.set_phase(SpoPhase.DONE, {"state": result.state, "sent": result.sent})
        return result


@workflow.defn
class SpoDepRestoreWorkflow(SpoGeoWorkflow):
    """Restore a geo in recovery mode with two new keys, and follow it back to ``Registered``."""

    kind = "spo.dep.restore"

    @workflow.run
    async def run(self, input: SpoGeoInput) -> SpoGeoResult:
        """Check the geo is in recovery mode and the keys, restore, follow."""
        return await self.operate(input, lambda: self._restore(input))

    async def _restore(self, input: SpoGeoInput) -> SpoGeoResult:
        state = input.follow_state
        admin_url = self._known_geo(input)
        if state is None:
            await self.set_phase(SpoPhase.CHECKING_GEO, {"geo": input.geo})
            # A look, not a move: the geo's row keeps the operation that moved it last.
            ref = SpoGeoRef(geo=input.geo, admin_url=admin_url)
            geo = await call(SpoActivityStub.get_spo_geo, ref, heartbeat=HEARTBEAT)
            # A first look always finds the geo in recovery mode: a retried restore resumes from the history, never
            # from here, so a healthy geo holding the same keys is no reason to report a restore.
            lenient = not workflow.patched(RESTORE_NEEDS_RECOVERY) and geo.has_keys(
                input.primary_uri, input.secondary_uri
            )
            if geo.state != SpoState.RECOVERY and not lenient:
                raise ApplicationError(
                    f"the geo {input.geo} is not in recovery mode (it is {geo.state}); nothing was sent",
                    type="spo-geo-recovery",
                    non_retryable=True,
                )
            await self._check_keys(input)
            await self.set_phase(SpoPhase.RESTORING, {"geo": input.geo, "admin_url": admin_url})
            sent = await call(SpoActivityStub.restore_spo_dep, self._keys_input(input, admin_url), heartbeat=HEARTBEAT)
            now = workflow.now()
            state = SpoFollowState(started_at=now, last_change_at=now, sent=sent.sent)
        result = await self.follow(input, state, admin_url)
        await self.set_phase(SpoPhase.DONE, {"state": result.state, "sent": result.sent})
        return result


# Registration ------------------------------------------------------------------------------------------------------


def build_geo_input(params: BaseModel, settings: Settings) -> SpoGeoInput:
    """The input of either kind: the geo's admin site, the keys' URIs, and the settings' cadence and deadlines."""
    if not isinstance(params, (SpoDepRegisterParams, SpoDepRestoreParams)):
        raise TypeError(f"not SharePoint params: {type(params).__name__}")
    urls = {code.upper(): url for code, url in settings.spo_geo_admin_urls.items()}
    return SpoGeoInput(
        geo=params.geo,
        primary=params.primary,
        secondary=params.secondary,
        admin_url=urls.get(params.geo),
        known_geos=sorted(urls),
        primary_uri=str(params.primary.uri(settings.vault_dns_suffix)),
        secondary_uri=str(params.secondary.uri(settings.vault_dns_suffix)),
        poll_interval=settings.spo_poll_interval,
        stall_deadline=settings.spo_stall_deadline,
        follow_limit=settings.spo_follow_limit,
    )


def _key_lease(key: object) -> Lease:
    # The same target as workflows.keyvault's key leases: key:<vault>/<name>, whatever the version.
    return Lease.on("key", f"{getattr(key, 'vault', '')}/{getattr(key, 'key', '')}", LeaseMode.READ)


def _holds_geo(params: BaseModel) -> LeaseRequest:
    """The geo is held alone (a key roll of it waits); its two keys are read (no restore of them meanwhile)."""
    return LeaseRequest(
        leases=[
            Lease.on("spo:geo", str(getattr(params, "geo", ""))),
            _key_lease(getattr(params, "primary", None)),
            _key_lease(getattr(params, "secondary", None)),
        ]
    )


def _geo(params: BaseModel) -> str | None:
    geo = getattr(params, "geo", None)
    return f"SPO:{geo}" if geo else None


KINDS: tuple[OperationKind, ...] = (
    OperationKind(
        name="spo.dep.register",
        workflow=SpoDepRegisterWorkflow,
        input_model=SpoGeoInput,
        params_model=SpoDepRegisterParams,
        build_input=build_geo_input,
        result_model=SpoGeoResult,
        role=Role.OPERATOR,
        description="Register a SharePoint/OneDrive geo's DEP (Register-SPODataEncryptionPolicy) after checking both "
        "keys for the SharePoint principal, and follow it to Registered; a stalled geo is escalated.",
        dep_of=_geo,
        leases_of=_holds_geo,
        activities=(KeyVaultActivityStub, SpoActivityStub),
    ),
    OperationKind(
        name="spo.dep.restore",
        workflow=SpoDepRestoreWorkflow,
        input_model=SpoGeoInput,
        params_model=SpoDepRestoreParams,
        build_input=build_geo_input,
        result_model=SpoGeoResult,
        role=Role.OPERATOR,
        description="Give a geo in recovery mode two new keys (Restore-SPODataEncryptionPolicy) and follow it back "
        "to Registered; a geo not in recovery mode is refused.",
        dep_of=_geo,
        leases_of=_holds_geo,
        activities=(KeyVaultActivityStub, SpoActivityStub),
    ),
)
"""The kinds this module runs, declared once: the registry (:func:`workflows.product_registry`) collects them."""
