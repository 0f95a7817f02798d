"""The SharePoint/OneDrive family's contract: ``spo.dep.register`` and ``spo.dep.restore``.

Seed sections "Create a DEP for use with SharePoint and OneDrive" and "Verify encryption completes for SharePoint and
OneDrive": one DEP per geo, registered through the geo's admin site (Register-SPODataEncryptionPolicy), followed with
Get-SPODataEncryptionPolicy through ``Registering`` (percent of sites) to ``Registered``.
Restore-SPODataEncryptionPolicy (not in the seed) gives new keys to a geo in recovery mode. :mod:`workflows.spo` runs
them; :class:`SpoActivityStub` names their activities, which :class:`activities.spo.SpoActivities` implements.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints
from temporalio import activity

from ckey.models import SpoKeyRef
from ckey.operations import Params

GeoCode = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, min_length=2, max_length=8, pattern=r"^[A-Za-z]{2,8}$")
]
"""A SharePoint geo's code (``NAM``, ``EUR`` ...): 2-8 letters, compared in upper case."""

POLL_INTERVAL = timedelta(minutes=15)
STALL_DEADLINE = timedelta(hours=24)
FOLLOW_LIMIT = timedelta(days=30)
PERCENTS_KEPT = 101
"""Distinct percentages a result lists at most (0..100)."""


class SpoDepRegisterParams(Params):
    """What a caller sets to register a geo's DEP: the geo and its two keys (vault, key name, key version)."""

    geo: GeoCode
    primary: SpoKeyRef
    secondary: SpoKeyRef


class SpoDepRestoreParams(Params):
    """What a caller sets to restore a geo in recovery mode: the geo and its two new keys, as Restore takes them."""

    geo: GeoCode
    primary: SpoKeyRef
    secondary: SpoKeyRef


class SpoFollowState(BaseModel):
    """Where a follow-up stands, carried across continue-as-new."""

    started_at: datetime
    last_percent: int = -1
    last_change_at: datetime
    escalated: bool = False
    percents: list[int] = Field(default_factory=list)
    sent: bool = False
    """Whether ckey sent the Register/Restore cmdlet in this operation (False: the geo already had these keys)."""


class SpoGeoInput(BaseModel):
    """``spo.dep.register``'s and ``spo.dep.restore``'s input: the params plus what the settings supply.

    Fields are added with defaults, so histories of earlier runs still decode.
    """

    geo: str
    primary: SpoKeyRef
    secondary: SpoKeyRef
    admin_url: str | None = None
    """The geo's admin site from ``spo_geo_admin_urls`` (None: the geo is not one of them; refused)."""
    known_geos: list[str] = Field(default_factory=list)
    primary_uri: str = ""
    secondary_uri: str = ""
    """The keys' URIs (``https://<vault>.<suffix>/keys/<key>/<version>``) for the health checks."""
    poll_interval: timedelta = POLL_INTERVAL
    stall_deadline: timedelta = STALL_DEADLINE
    follow_limit: timedelta = FOLLOW_LIMIT
    follow_state: SpoFollowState | None = None


class SpoGeoResult(BaseModel):
    """Where the geo ended: its state, percent of sites, keys; whether ckey sent the cmdlet; what it saw."""

    geo: str
    state: str
    percent: int | None = None
    primary_key_uri: str | None = None
    secondary_key_uri: str | None = None
    sent: bool = False
    escalated: bool = False
    percents: list[int] = Field(default_factory=list)
    """The percentages of sites the follow-up saw, in order (each once)."""


# Activities -------------------------------------------------------------------------------------------------------


class SpoGeoRef(BaseModel):
    """A geo and its admin site; the operation reading it (recorded as the one that moved it last)."""

    geo: str
    admin_url: str
    operation_id: str | None = None


class SpoGeoView(BaseModel):
    """A geo as Get-SPODataEncryptionPolicy reports it."""

    geo: str
    state: str
    percent: int | None = None
    primary_key_uri: str | None = None
    secondary_key_uri: str | None = None

    def has_keys(self, primary: str, secondary: str) -> bool:
        """Whether the geo's keys are these (URIs compared without case)."""
        have = [(self.primary_key_uri or "").lower().rstrip("/"), (self.secondary_key_uri or "").lower().rstrip("/")]
        return have == [primary.lower().rstrip("/"), secondary.lower().rstrip("/")]


class SpoKeysInput(BaseModel):
    """Register's or Restore's call: the geo, its admin site, the two keys and their URIs."""

    geo: str
    admin_url: str
    primary: SpoKeyRef
    secondary: SpoKeyRef
    primary_uri: str
    secondary_uri: str
    operation_id: str


class SpoSendResult(BaseModel):
    """The geo after the call, and whether this call sent the cmdlet (False: the geo already had the keys)."""

    geo: SpoGeoView
    sent: bool


class RefreshSpoGeosInput(BaseModel):
    """Which operation reads the geos (for the record); every configured geo is read."""

    operation_id: str | None = None


class RefreshSpoGeosResult(BaseModel):
    """The geos read."""

    geos: list[SpoGeoView] = Field(default_factory=list)


class SpoActivityStub:
    """What the SharePoint workflows call; :class:`activities.spo.SpoActivities` implements it."""

    @activity.defn(name="get_spo_geo")
    async def get_spo_geo(self, input: SpoGeoRef) -> SpoGeoView:
        """Get-SPODataEncryptionPolicy through the geo's admin site; the geo's row in the inventory updated."""
        raise NotImplementedError

    @activity.defn(name="register_spo_dep")
    async def register_spo_dep(self, input: SpoKeysInput) -> SpoSendResult:
        """Register-SPODataEncryptionPolicy, unless the geo already has these keys; refused with other keys."""
        raise NotImplementedError

    @activity.defn(name="restore_spo_dep")
    async def restore_spo_dep(self, input: SpoKeysInput) -> SpoSendResult:
        """Restore-SPODataEncryptionPolicy for a geo in recovery mode (a retry that finds the new keys is done)."""
        raise NotImplementedError

    @activity.defn(name="refresh_spo_geos")
    async def refresh_spo_geos(self, input: RefreshSpoGeosInput) -> RefreshSpoGeosResult:
        """Every configured geo read with Get-SPODataEncryptionPolicy and recorded in the inventory."""
        raise NotImplementedError
