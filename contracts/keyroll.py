"""The key-roll family's contract: ``key.roll`` and ``key.rotation.watch``, their models and the activities' stub.

A roll makes a new version of a customer key in its vault (or adopts one Key Vault made by itself), checks it, then
refreshes every workload that uses the key: mailbox DEPs (Set-DataEncryptionPolicy -Refresh), the multi-workload DEP
(Set-M365DataAtRestEncryptionPolicy -Refresh) and SharePoint geos (Update-SPODataEncryptionPolicy). The watcher finds
keys whose newest version the workloads do not use yet. :class:`activities.keyroll.KeyRollActivities` implements
:class:`KeyRollActivityStub`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints
from temporalio import activity

from ckey.models import DepName, KeyName, KeyVersion, KeyVersionInfo, VaultName
from ckey.operations import Lease, Params

ROLL_MAX_TARGETS = 50
"""DEPs (or geos) one roll names at most per workload (Microsoft allows 50 DEPs per kind)."""
ROLL_TAG = "ckey-roll-operation"
"""The tag a roll puts on the version it creates: a retry finds it there and creates no second version."""

SpoGeo = Annotated[str, StringConstraints(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$")]
"""A SharePoint geo's code (``NAM``, ``EUR`` ...)."""


class TargetWorkload(StrEnum):
    """What a roll refreshes."""

    MAILBOX_DEP = "mailbox_dep"
    MULTI_WORKLOAD_DEP = "multi_workload_dep"
    SPO_GEO = "spo_geo"


# Workflows ---------------------------------------------------------------------------------------------------------


class KeyRollParams(Params):
    """Which key to roll and, optionally, the workloads that use it (none named: ckey finds them)."""

    vault: VaultName
    key: KeyName
    deps: list[DepName] = Field(
        default_factory=list, max_length=ROLL_MAX_TARGETS, description="Mailbox DEPs that use the key."
    )
    m365_deps: list[DepName] = Field(
        default_factory=list, max_length=ROLL_MAX_TARGETS, description="Multi-workload DEPs that use the key."
    )
    geos: list[SpoGeo] = Field(
        default_factory=list, max_length=ROLL_MAX_TARGETS, description="SharePoint geos whose DEP uses the key."
    )
    adopt_version: KeyVersion | None = Field(
        default=None,
        description="Refresh onto this existing version (made by a rotation policy or by hand) instead of creating "
        "one.",
    )


class RollSettings(BaseModel):
    """The settings a roll runs under, recorded on its input so that a replay sees the same."""

    vault_suffix: str = "vault.azure.net"
    """The vaults' DNS suffix of the deployment's Azure cloud (a key's versionless URI is built with it)."""
    geo_admin_urls: dict[str, str] = Field(default_factory=dict)
    poll_interval: timedelta = timedelta(minutes=5)
    exchange_escalate_after: timedelta = timedelta(days=7)
    exchange_poll_interval: timedelta = timedelta(minutes=15)
    spo_stall_after: timedelta = timedelta(hours=24)
    m365_window: timedelta = timedelta(hours=24)


class KeyRollInput(KeyRollParams, RollSettings):
    """The roll's input: the params and the settings it runs under."""

    @property
    def key_id(self) -> str:
        """The key's versionless URI."""
        return f"https://{self.vault.lower()}.{self.vault_suffix}/keys/{self.key}"


class WorkloadOutcome(BaseModel):
    """How one workload's refresh ended."""

    workload: TargetWorkload
    target: str
    """The DEP's name or the geo's code."""
    state: str
    """``refreshed`` (mailbox DEP followed to the end), ``in_effect``, ``registered``, or what it stopped at."""
    detail: dict[str, str | int | None] = Field(default_factory=dict)
    escalated: bool = False


class KeyRollResult(BaseModel):
    """The new version and what each workload did with it."""

    key_id: str
    version: str
    created: bool
    """Whether this roll created the version (false: adopted, or found from an earlier attempt)."""
    workloads: list[WorkloadOutcome] = Field(default_factory=list)


class KeyRotationWatchParams(Params):
    """The watcher takes no parameters: it reads the keys in use and the settings."""


class KeyRotationWatchInput(KeyRotationWatchParams):
    """The watcher's input: the settings it acts under."""

    adopt: bool = False
    roll: RollSettings = Field(default_factory=RollSettings)
    """The settings the rolls it starts run under (the geos it reads among them)."""


class PendingVersion(BaseModel):
    """A key whose newest enabled version some workloads do not have in effect."""

    vault: str
    key: str
    key_id: str
    version: str
    expires_on: datetime | None = None
    deps: list[str] = Field(default_factory=list)
    m365_deps: list[str] = Field(default_factory=list)
    geos: list[str] = Field(default_factory=list)
    behind: list[str] = Field(default_factory=list)
    """``<workload>:<target>@<version in effect>`` for each workload that runs behind."""


class KeyRotationWatchResult(BaseModel):
    """What the watcher found and did."""

    keys: int
    pending: list[PendingVersion] = Field(default_factory=list)
    started: list[str] = Field(default_factory=list)
    """Operation ids of the rolls it started."""
    alerted: list[str] = Field(default_factory=list)
    """Key ids it raised an alert for (asks first, or the version carries an expiry)."""
    unreadable: list[str] = Field(default_factory=list)
    """Keys in use whose versions could not be listed, with the service's answer."""


# Activities --------------------------------------------------------------------------------------------------------


class DiscoverInput(BaseModel):
    """Which key's workloads to find, and the geos' admin sites to ask."""

    operation_id: str
    key_id: str
    """The versionless key URI."""
    geo_admin_urls: dict[str, str] = Field(default_factory=dict)


class GeoSlot(BaseModel):
    """A geo whose DEP uses the key, and in which slot."""

    geo: str
    key_type: str
    """``Primary`` or ``Secondary``."""
    version: str | None = None
    state: str | None = None
    """The geo's state when it was found (a key rolls only from ``Registered``)."""
    percent: int | None = None


class DiscoverResult(BaseModel):
    """The workloads that use the key, and where each was found."""

    deps: list[str] = Field(default_factory=list)
    m365_deps: list[str] = Field(default_factory=list)
    geos: list[GeoSlot] = Field(default_factory=list)
    sources: dict[str, list[str]] = Field(default_factory=dict)
    """``inventory`` / ``tenant``: the targets each source named (``mailbox_dep:<name>`` ...)."""


class HoldInput(BaseModel):
    """More targets a running operation holds (found once it ran)."""

    operation_id: str
    leases: list[Lease]


class HoldResult(BaseModel):
    """The targets newly held."""

    held: list[str] = Field(default_factory=list)


class KeyVersionsInput(BaseModel):
    """A key by versionless URI."""

    key_id: str


class KeyVersionsResult(BaseModel):
    """Every version of a key, oldest first."""

    versions: list[KeyVersionInfo] = Field(default_factory=list)


class CreateVersionInput(BaseModel):
    """The roll that creates a version (its id tags the version)."""

    operation_id: str
    key_id: str


class CreateVersionResult(BaseModel):
    """The version, and whether this call created it (false: an earlier attempt of the same roll had)."""

    version: KeyVersionInfo
    created: bool


class RefreshDepInput(BaseModel):
    """A DEP to refresh onto a key's version."""

    operation_id: str
    workload: TargetWorkload
    dep: str
    key_id: str
    version: str


class RefreshDepResult(BaseModel):
    """The DEP's ``LastRefreshedDateTime`` before the refresh (multi-workload), when the tenant reports one."""

    last_refreshed_before: str | None = None


class ReadM365DepInput(BaseModel):
    """A multi-workload DEP to read."""

    dep: str


class ReadM365DepResult(BaseModel):
    """What Get-M365DataAtRestEncryptionPolicy shows of it."""

    enabled: bool
    last_refreshed: str | None = None


class RecordInEffectInput(BaseModel):
    """A workload's target now on a key's version."""

    operation_id: str
    workload: TargetWorkload
    target: str
    key_id: str
    version: str
    at: datetime


class UpdateGeoInput(BaseModel):
    """Update-SPODataEncryptionPolicy for one geo's slot."""

    operation_id: str
    geo: str
    admin_url: str
    key_type: str
    vault: str
    key: str
    version: str


class UpdateGeoResult(BaseModel):
    """Whether this call sent the update (false: the slot already named the version: an earlier attempt did)."""

    sent: bool


class ReadGeoInput(BaseModel):
    """A geo to read."""

    geo: str
    admin_url: str


class GeoState(BaseModel):
    """Get-SPODataEncryptionPolicy of a geo."""

    geo: str
    state: str
    percent: int | None = None
    primary_version: str | None = None
    secondary_version: str | None = None


class PendingInput(BaseModel):
    """The watcher's look at the keys in use."""

    operation_id: str
    geo_admin_urls: dict[str, str] = Field(default_factory=dict)


class PendingResult(BaseModel):
    """Keys in use, and those whose newest version some workload does not have in effect."""

    keys: int
    pending: list[PendingVersion] = Field(default_factory=list)
    unreadable: list[str] = Field(default_factory=list)
    """Keys in use whose versions ckey could not list, with the service's answer (the health check alerts on them)."""


class KeyRollActivityStub:
    """The key-roll activities as the workflows call them; :class:`activities.keyroll.KeyRollActivities` runs them."""

    @activity.defn(name="discover_key_workloads")
    async def discover_key_workloads(self, input: DiscoverInput) -> DiscoverResult:
        """The mailbox DEPs, multi-workload DEPs and geos that use a key: the inventory, then the tenant."""
        raise NotImplementedError

    @activity.defn(name="hold_targets")
    async def hold_targets(self, input: HoldInput) -> HoldResult:
        """Lease more targets for the running operation; a target another operation holds refuses it."""
        raise NotImplementedError

    @activity.defn(name="key_versions")
    async def key_versions(self, input: KeyVersionsInput) -> KeyVersionsResult:
        """Every version of a key (Get-AzKeyVaultKey -IncludeVersions)."""
        raise NotImplementedError

    @activity.defn(name="create_key_version")
    async def create_key_version(self, input: CreateVersionInput) -> CreateVersionResult:
        """A new version tagged with the operation's id, unless an earlier attempt made it already."""
        raise NotImplementedError

    @activity.defn(name="refresh_dep")
    async def refresh_dep(self, input: RefreshDepInput) -> RefreshDepResult:
        """Set-DataEncryptionPolicy -Refresh, or Set-M365DataAtRestEncryptionPolicy -Refresh."""
        raise NotImplementedError

    @activity.defn(name="read_m365_dep")
    async def read_m365_dep(self, input: ReadM365DepInput) -> ReadM365DepResult:
        """Get-M365DataAtRestEncryptionPolicy -Identity."""
        raise NotImplementedError

    @activity.defn(name="record_version_in_effect")
    async def record_version_in_effect(self, input: RecordInEffectInput) -> None:
        """Record that a workload's target is on a version (the watcher compares against it)."""
        raise NotImplementedError

    @activity.defn(name="update_spo_geo")
    async def update_spo_geo(self, input: UpdateGeoInput) -> UpdateGeoResult:
        """Update-SPODataEncryptionPolicy -KeyType for the geo's slot that holds the key."""
        raise NotImplementedError

    @activity.defn(name="read_spo_geo")
    async def read_spo_geo(self, input: ReadGeoInput) -> GeoState:
        """Get-SPODataEncryptionPolicy of one geo."""
        raise NotImplementedError

    @activity.defn(name="pending_key_versions")
    async def pending_key_versions(self, input: PendingInput) -> PendingResult:
        """Keys in use whose newest enabled version some workload does not have in effect."""
        raise NotImplementedError
