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


# Activities -------------------------------------------------------------------------------------------------------


class CloudPcsInput(BaseModel):
    """Nothing to name: the tenant's Cloud PCs."""


class CloudPcsResult(BaseModel):
    """How many Cloud PCs the tenant has (none: no Windows 365 to encrypt)."""

    count: int = 0


class Windows365ActivityStub:
    """What the Windows 365 workflows call; :class:`activities.windows365.Windows365Activities` implements it."""

    @activity.defn(name="count_cloud_pcs")
    async def count_cloud_pcs(self, input: CloudPcsInput) -> CloudPcsResult:
        """How many Cloud PCs the tenant has (Graph ``GET cloudPCs``)."""
        raise NotImplementedError
