"""SharePoint/OneDrive activities: each geo's DEP through its admin site, and the geos in the inventory."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TYPE_CHECKING, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.exchange import refusal
from activities.operation import audit_call
from ckey.m365 import Cmdlet, CmdletError, M365Gateway, SpoDataEncryptionPolicy
from ckey.models import SpoState
from ckey.operations import Outcome
from ckey.store import Store
from ckey.store.spo import SpoGeoStore
from contracts.spo import (
    RefreshSpoGeosInput,
    RefreshSpoGeosResult,
    SpoActivityStub,
    SpoGeoRef,
    SpoGeoView,
    SpoKeysInput,
    SpoSendResult,
)

if TYPE_CHECKING:
    from activities import Gateways

T = TypeVar("T")
HEARTBEAT_EVERY = 2.0
"""Seconds between heartbeats while a call is in flight: a worker that dies is noticed by the heartbeat timeout
(the workflows give 10 s), not after the whole start-to-close timeout."""


async def beating(work: Awaitable[T]) -> T:
    """Await ``work``, heartbeating while it runs."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY)
        if done:
            return task.result()
        activity.heartbeat()


def geo_view(geo: str, policy: SpoDataEncryptionPolicy) -> SpoGeoView:
    """Get-SPODataEncryptionPolicy's answer as the workflows read it."""
    return SpoGeoView(
        geo=geo.upper(),
        state=policy.state,
        percent=policy.percent_complete,
        primary_key_uri=policy.primary_key_uri,
        secondary_key_uri=policy.secondary_key_uri,
    )


class SpoActivities(SpoActivityStub):
    """Register, restore and read the geos' DEPs.

    Args:
        m365: the Microsoft 365 gateway (SharePoint cmdlets travel through their own transport).
        store: the audit trail and the inventory.
        geos: each geo's admin site (the settings').
    """

    @classmethod
    def from_gateways(cls, gateways: Gateways) -> SpoActivities | None:
        """The family built from the worker's gateways (None without the Microsoft 365 gateway)."""
        if gateways.m365 is None:
            return None
        return cls(gateways.m365, gateways.store, gateways.spo_geo_admin_urls)

    def __init__(self, m365: M365Gateway, store: Store, geos: dict[str, str]) -> None:
        self.m365 = m365
        self.store = store
        self.geos = SpoGeoStore(store)
        self.admin_urls = {code.upper(): url for code, url in geos.items()}

    def _audited(self, step: str = "") -> M365Gateway:
        """The gateway, each call in the audit trail (a state-changing one as its intent first, then its outcome)."""

        async def on_call(cmdlet: Cmdlet, outcome: str, error: str | None) -> None:
            await audit_call(
                self.store,
                f"m365.{cmdlet.name}",
                cmdlet.render(),
                Outcome(outcome),
                {"error": error} if error else None,
                step=f"{step}/intent" if outcome == Outcome.INTENT else step,
            )

        return self.m365.with_on_call(on_call)

    async def _read(self, geo: str, admin_url: str, operation_id: str | None, step: str = "") -> SpoGeoView:
        try:
            policy = await self._audited(step).get_spo_data_encryption_policy(admin_url)
        except CmdletError as exc:
            raise refusal(exc) from None
        view = geo_view(geo, policy)
        await self.geos.record_geo(
            view.geo,
            view.state,
            view.percent,
            [u for u in (view.primary_key_uri, view.secondary_key_uri) if u],
            operation_id,
        )
        return view

    async def _sent_before(self, operation_id: str, cmdlet: str) -> bool:
        """Whether this operation recorded the cmdlet's intent before (an attempt that died after sending it)."""
        events = await self.store.list_audit(operation_id=operation_id, limit=100_000)
        return any(e.action == f"m365.{cmdlet}" and e.outcome == Outcome.INTENT for e in events)

    @activity.defn
    async def get_spo_geo(self, input: SpoGeoRef) -> SpoGeoView:
        """Get-SPODataEncryptionPolicy through the geo's admin site; the geo's row in the inventory updated."""
        return await beating(self._read(input.geo, input.admin_url, input.operation_id))

    @activity.defn
    async def register_spo_dep(self, input: SpoKeysInput) -> SpoSendResult:
        """Register-SPODataEncryptionPolicy, looking first: a geo with these keys is done, with others refused.

        Raises:
            ApplicationError: ``spo-geo-registered`` (non-retryable) when the geo has a DEP with other keys.
        """
        return await beating(self._register(input))

    @activity.defn
    async def restore_spo_dep(self, input: SpoKeysInput) -> SpoSendResult:
        """Restore-SPODataEncryptionPolicy; refused unless the geo is in recovery mode (nothing sent then).

        A retry after the restore went through finds the geo re-registering with the new keys, and is done.

        Raises:
            ApplicationError: ``spo-geo-recovery`` (non-retryable): the geo is not in recovery mode.
        """
        return await beating(self._restore(input))

    @activity.defn
    async def refresh_spo_geos(self, input: RefreshSpoGeosInput) -> RefreshSpoGeosResult:
        """Every configured geo read with Get-SPODataEncryptionPolicy and recorded in the inventory.

        A refresh does not claim the geos: the operation that moved each one last stays recorded.
        """
        return await beating(self._refresh())

    async def _register(self, input: SpoKeysInput) -> SpoSendResult:
        before = await self._read(input.geo, input.admin_url, None, "/before")
        if before.state != SpoState.UNREGISTERED:
            if before.has_keys(input.primary_uri, input.secondary_uri):
                sent = await self._sent_before(input.operation_id, "Register-SPODataEncryptionPolicy")
                return SpoSendResult(geo=before, sent=sent)
            raise ApplicationError(
                f"the geo {input.geo} is already registered ({before.state}) with other keys: primary "
                f"{before.primary_key_uri}, secondary {before.secondary_key_uri}; roll a key with key.roll instead",
                type="spo-geo-registered",
                non_retryable=True,
            )
        try:
            await self._audited("/register").register_spo_data_encryption_policy(
                input.admin_url, input.primary, input.secondary
            )
        except CmdletError as exc:
            raise refusal(exc) from None
        return SpoSendResult(geo=await self._read(input.geo, input.admin_url, input.operation_id, "/after"), sent=True)

    async def _restore(self, input: SpoKeysInput) -> SpoSendResult:
        before = await self._read(input.geo, input.admin_url, None, "/before")
        if before.state != SpoState.RECOVERY:
            if before.state in (SpoState.REGISTERING, SpoState.REGISTERED) and before.has_keys(
                input.primary_uri, input.secondary_uri
            ):
                sent = await self._sent_before(input.operation_id, "Restore-SPODataEncryptionPolicy")
                return SpoSendResult(geo=before, sent=sent)
            raise ApplicationError(
                f"the geo {input.geo} is not in recovery mode (it is {before.state}): Restore-SPODataEncryptionPolicy "
                f"is for a geo Microsoft recovered after access to its keys was lost",
                type="spo-geo-recovery",
                non_retryable=True,
            )
        try:
            await self._audited("/restore").restore_spo_data_encryption_policy(
                input.admin_url, input.primary, input.secondary
            )
        except CmdletError as exc:
            raise refusal(exc) from None
        return SpoSendResult(geo=await self._read(input.geo, input.admin_url, input.operation_id, "/after"), sent=True)

    async def _refresh(self) -> RefreshSpoGeosResult:
        read = [await self._read(code, url, None, f"/{code}") for code, url in sorted(self.admin_urls.items())]
        return RefreshSpoGeosResult(geos=read)
