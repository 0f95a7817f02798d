"""``/api/windows365``: the read model of Windows 365 Cloud PCs and their disk encryption (from SQL)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ckey.api.deps import OptionalWindows365Dep, StoreDep, Viewer
from ckey.api.problems import Problem
from ckey.store.cloudpcs import CloudPcStore, CloudPcView, refresh
from ckey.windows365 import GraphRefusal, GraphUnavailable

router = APIRouter(prefix="/api/windows365", tags=["windows365"])


class CloudPcItem(BaseModel):
    """A Cloud PC as ckey last read it, and what ckey's last ``windows365.encrypt`` did to it."""

    id: str
    display_name: str | None = None
    user_principal_name: str | None = None
    managed_device_name: str | None = None
    disk_encryption_state: str | None = None
    """Graph's ``diskEncryptionState``: ``encryptedUsingCustomerManagedKey`` once re-encrypted."""
    seen_at: datetime
    operation_id: str | None = None
    bulk_action_id: str | None = None
    failed: bool = False


class CloudPcPage(BaseModel):
    """The tenant setting, counts by state, the failed ones, and a page of Cloud PCs."""

    tenant_disk_encryption_type: str | None = None
    """``retrieveTenantEncryptionSetting``: ``customerManagedKey`` once the Intune admin center is ready."""
    tenant_seen_at: datetime | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    failed: list[CloudPcItem] = Field(default_factory=list)
    total: int = 0
    items: list[CloudPcItem] = Field(default_factory=list)


def _item(view: CloudPcView) -> CloudPcItem:
    return CloudPcItem(
        id=view.id,
        display_name=view.display_name,
        user_principal_name=view.user_principal_name,
        managed_device_name=view.managed_device_name,
        disk_encryption_state=view.disk_encryption_state,
        seen_at=view.seen_at,
        operation_id=view.operation_id,
        bulk_action_id=view.bulk_action_id,
        failed=view.failed,
    )


@router.get("/cloud-pcs", response_model=CloudPcPage)
async def cloud_pcs(
    gateway: OptionalWindows365Dep,
    _: Viewer,
    store: StoreDep,
    state: Annotated[
        str | None, Query(max_length=64, pattern=r"^[A-Za-z]+$", description="A diskEncryptionState")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
    refresh_: Annotated[
        bool, Query(alias="refresh", description="Read Microsoft Graph now (and update the inventory).")
    ] = False,
) -> CloudPcPage:
    """The tenant's Cloud PCs with their encryption state, from SQL; ``refresh=true`` reads Graph first."""
    pcs = CloudPcStore(store)
    if refresh_:
        if gateway is None:
            raise Problem(503, "graph-reachable", "this API has no Microsoft Graph connection to refresh from")
        try:
            await refresh(gateway, pcs, datetime.now(UTC))
        except GraphRefusal as exc:
            raise Problem(exc.status if exc.status in (403, 404) else 502, "graph-refused", exc.message) from None
        except GraphUnavailable as exc:
            raise Problem(503, "graph-reachable", f"Microsoft Graph is throttling or unavailable: {exc}") from None
    kind, seen = await pcs.tenant()
    page, total = await pcs.page(state=state, limit=limit, offset=offset)
    return CloudPcPage(
        tenant_disk_encryption_type=kind,
        tenant_seen_at=seen,
        counts=await pcs.counts(),
        failed=[_item(v) for v in await pcs.failed()],
        total=total,
        items=[_item(v) for v in page],
    )
