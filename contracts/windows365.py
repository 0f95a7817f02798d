"""The Windows 365 family's contract: ``windows365.encrypt``'s models (its activities' models and stub follow).

``m365.dep.assign`` starts ``windows365.encrypt`` as a child workflow when the tenant has Windows 365: it names the
workflow by :data:`WINDOWS365_ENCRYPT_WORKFLOW` and passes a :class:`Windows365EncryptInput`, so that the two
families meet only here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from temporalio import activity

from ckey.operations import Params

WINDOWS365_ENCRYPT_WORKFLOW = "Windows365EncryptWorkflow"
"""The workflow type of ``windows365.encrypt`` (its class name)."""
INTUNE_READY_DEADLINE = timedelta(hours=6)
"""How long after the multi-workload assignment the Intune admin center may take to be ready before ckey
escalates (the seed: "within 3 to 4 hours"); the API and the parent fill it from the settings."""
POLL_INTERVAL = timedelta(minutes=15)
BATCH_SIZE = 50
INTUNE_READY_LIMIT = timedelta(days=3)
"""How long after the assignment ckey keeps waiting for the Intune admin center after escalating, before the
operation fails with its reason (nothing waits forever)."""
ENCRYPT_LIMIT = timedelta(hours=24)
"""How long one bulk action may take before the Cloud PCs it has not encrypted are counted as failed (Microsoft's
re-encryption of a Cloud PC takes minutes to a few hours)."""
FAILED_LISTED = 100
"""Failed Cloud PCs a result names one by one (the count says how many there are in all)."""


class Windows365EncryptParams(Params):
    """What a caller may set when starting ``windows365.encrypt`` on its own (after a multi-workload assignment)."""


class Windows365EncryptInput(BaseModel):
    """``windows365.encrypt``'s input: the parameters plus the settings' deadline and cadence.

    Fields are added with defaults, so histories of earlier runs still decode.
    """

    dep: str | None = None
    """The multi-workload DEP assigned (for the record and the search attribute); None when started on its own."""
    assigned_at: datetime | None = None
    """When the multi-workload assignment was made; the readiness deadline counts from it (else from the start)."""
    ready_deadline: timedelta = INTUNE_READY_DEADLINE
    poll_interval: timedelta = POLL_INTERVAL
    batch_size: int = Field(default=BATCH_SIZE, ge=1, le=1000)
    ready_limit: timedelta = INTUNE_READY_LIMIT
    """After the escalation, how long (from the assignment) ckey still waits before failing the operation."""
    encrypt_limit: timedelta = ENCRYPT_LIMIT
    state: EncryptState | None = None
    """Carried across continue-as-new; never set by a caller."""


class EncryptState(BaseModel):
    """Where a ``windows365.encrypt`` run stands (carried across continue-as-new)."""

    started_at: datetime
    escalated: bool = False
    ready: bool = False
    tenant_disk_encryption_type: str | None = None
    planned: bool = False
    total: int = 0
    already: int = 0
    """Cloud PCs already customer-managed when planned: counted done, never sent."""
    batches: int = 0
    next_batch: int = 0
    encrypted: int = 0
    """Cloud PCs of the finished batches now customer-managed."""
    failed: int = 0
    failed_cloud_pcs: list[str] = Field(default_factory=list)
    bulk_actions: int = 0


class Windows365EncryptResult(BaseModel):
    """What ``windows365.encrypt`` reached: every Cloud PC counted, those that failed named."""

    dep: str | None = None
    tenant_disk_encryption_type: str | None = None
    total: int = 0
    already: int = 0
    encrypted: int = 0
    """Cloud PCs customer-managed at the end (the already ones included)."""
    failed: int = 0
    failed_cloud_pcs: list[str] = Field(default_factory=list)
    """The first :data:`FAILED_LISTED` Cloud PCs (``name (id)``) that did not end customer-managed."""
    bulk_actions: int = 0
    escalated: bool = False


# Activities -------------------------------------------------------------------------------------------------------


class CloudPcsInput(BaseModel):
    """Nothing to name: the tenant's Cloud PCs."""


class CloudPcsResult(BaseModel):
    """How many Cloud PCs the tenant has (none: no Windows 365 to encrypt)."""

    count: int = 0


class TenantSettingInput(BaseModel):
    """Whose readiness: the operation asking (for the audit trail)."""

    operation_id: str
    wait: bool = False
    """Raise a retryable ``intune-not-ready-yet`` while the setting is platform-managed (retry-driven polling)."""


class TenantSettingResult(BaseModel):
    """The tenant's Cloud PC encryption setting (Graph ``retrieveTenantEncryptionSetting``)."""

    tenant_disk_encryption_type: str | None = None
    customer_managed: bool = False


class PlanInput(BaseModel):
    """Plan an operation's batches from the tenant's Cloud PCs (idempotent: a second call answers the same plan)."""

    operation_id: str
    batch_size: int = Field(default=BATCH_SIZE, ge=1, le=1000)


class PlanResult(BaseModel):
    """How many Cloud PCs, how many already customer-managed, how many batches to send."""

    total: int = 0
    already: int = 0
    batches: int = 0


class BatchInput(BaseModel):
    """One batch of an operation's plan."""

    operation_id: str
    batch: int = Field(ge=0)
    bulk_action_id: str | None = None
    reported: int = 0
    """Cloud PCs of the batch the workflow last reported encrypted: a round returns when more are."""
    report_every: int = Field(default=1, ge=1)
    final: bool = False
    """The batch's time is up: answer what is seen, counting what is not customer-managed as failed."""


class BatchResult(BaseModel):
    """A batch's bulk action and its Cloud PCs' state."""

    bulk_action_id: str | None = None
    created: bool = False
    """This call created the bulk action (False: found from an earlier attempt, or nothing left to send)."""
    size: int = 0
    sent: int = 0
    encrypted: int = 0
    finished: bool = False
    failed_cloud_pcs: list[str] = Field(default_factory=list)


class RefreshCloudPcsInput(BaseModel):
    """Read every Cloud PC and the tenant setting from Graph into the inventory."""


class RefreshCloudPcsResult(BaseModel):
    """How many Cloud PCs were read, by state."""

    total: int = 0
    by_state: dict[str, int] = Field(default_factory=dict)
    tenant_disk_encryption_type: str | None = None


class Windows365ActivityStub:
    """What the Windows 365 workflows call; :class:`activities.windows365.Windows365Activities` implements it."""

    @activity.defn(name="count_cloud_pcs")
    async def count_cloud_pcs(self, input: CloudPcsInput) -> CloudPcsResult:
        """How many Cloud PCs the tenant has (Graph ``GET cloudPCs``)."""
        raise NotImplementedError

    @activity.defn(name="read_tenant_encryption_setting")
    async def read_tenant_encryption_setting(self, input: TenantSettingInput) -> TenantSettingResult:
        """Graph ``retrieveTenantEncryptionSetting`` (with ``wait``: not ready is a retryable failure)."""
        raise NotImplementedError

    @activity.defn(name="plan_cloud_pc_batches")
    async def plan_cloud_pc_batches(self, input: PlanInput) -> PlanResult:
        """Read the Cloud PCs, store them, and put those not customer-managed in batches of the operation."""
        raise NotImplementedError

    @activity.defn(name="encrypt_cloud_pc_batch")
    async def encrypt_cloud_pc_batch(self, input: BatchInput) -> BatchResult:
        """Find the batch's bulk action by its name, or create it for the batch's Cloud PCs not yet customer-managed."""
        raise NotImplementedError

    @activity.defn(name="follow_cloud_pc_batch")
    async def follow_cloud_pc_batch(self, input: BatchInput) -> BatchResult:
        """Read the batch's bulk action and Cloud PCs; a round with nothing new is a retryable failure."""
        raise NotImplementedError

    @activity.defn(name="refresh_cloud_pcs")
    async def refresh_cloud_pcs(self, input: RefreshCloudPcsInput) -> RefreshCloudPcsResult:
        """The inventory's Windows 365 part: every Cloud PC and the tenant setting, read from Graph into SQL."""
        raise NotImplementedError


Windows365EncryptInput.model_rebuild()
