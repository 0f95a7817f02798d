"""The Windows 365 gateway: Cloud PCs and their disk encryption through Microsoft Graph.

Microsoft Graph's Windows 365 (Cloud PC) endpoints live under ``/beta/deviceManagement/virtualEndpoint``:

- ``GET cloudPCs`` (``diskEncryptionState``: ``notAvailable``, ``notEncrypted``, ``encryptedUsingPlatformManagedKey``,
  ``encryptedUsingCustomerManagedKey``) -- ``CloudPC.Read.All``;
- ``GET retrieveTenantEncryptionSetting`` (a ``cloudPcTenantEncryptionSetting``: ``tenantDiskEncryptionType``
  ``platformManagedKey`` until the Intune admin center is ready after a multi-workload assignment, then
  ``customerManagedKey``) -- ``CloudPC.Read.All``;
- ``POST bulkActions`` with a ``#microsoft.graph.cloudPcBulkModifyDiskEncryptionType`` (``cloudPcIds``,
  ``diskEncryptionType``) and ``GET bulkActions[/{id}]`` (``status`` ``pending|succeeded|failed``,
  ``actionSummary``) -- ``CloudPC.ReadWrite.All``.

Errors: a 4xx that no retry cures raises :class:`GraphRefusal` with Graph's own message; 429 and 5xx are retried
here a few times honouring ``Retry-After``, then raised as :class:`GraphUnavailable` for the activity's retry. In
sandbox mode ``graph.microsoft.com`` resolves to the sandbox tenant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from ckey.azure import AzureConnection
from ckey.models import rule_error

if TYPE_CHECKING:
    from ckey.m365 import M365Gateway
    from ckey.store.targets import TargetStore

GRAPH_URL = "https://graph.microsoft.com"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
VIRTUAL_ENDPOINT = "/beta/deviceManagement/virtualEndpoint"
CMK = "customerManagedKey"
ENCRYPTED_WITH_CMK = "encryptedUsingCustomerManagedKey"
BULK_MODIFY = "#microsoft.graph.cloudPcBulkModifyDiskEncryptionType"
RETRIES = 4
"""Attempts beyond the first for a throttled or failing call before the activity's own retry takes over."""
MAX_RETRY_AFTER = 60.0


class GraphRefusal(Exception):
    """Graph refused a call with a 4xx that no retry cures (its status, error code and message)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"Graph {status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class GraphUnavailable(Exception):
    """Graph throttled (429) or failed (5xx) on every attempt, or asked for a longer wait: retry later.

    Args:
        message: the last answer.
        retry_after: the wait Graph asked for last (seconds), if it named one.
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CloudPc(BaseModel):
    """A Cloud PC as Graph's ``cloudPC`` resource describes it (the fields ckey reads)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    display_name: str | None = Field(default=None, alias="displayName")
    managed_device_name: str | None = Field(default=None, alias="managedDeviceName")
    user_principal_name: str | None = Field(default=None, alias="userPrincipalName")
    status: str | None = None
    disk_encryption_state: str | None = Field(default=None, alias="diskEncryptionState")

    @property
    def customer_managed(self) -> bool:
        """Encrypted with the customer-managed key already."""
        return self.disk_encryption_state == ENCRYPTED_WITH_CMK


class TenantEncryptionSetting(BaseModel):
    """Graph's ``cloudPcTenantEncryptionSetting``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    tenant_disk_encryption_type: str | None = Field(default=None, alias="tenantDiskEncryptionType")
    last_sync_date_time: datetime | None = Field(default=None, alias="lastSyncDateTime")

    @property
    def customer_managed(self) -> bool:
        """The Intune admin center is ready: new and re-encrypted Cloud PCs use the customer-managed key."""
        # Microsoft's own example answers "PlatformManagedKey" where the enum says platformManagedKey.
        return (self.tenant_disk_encryption_type or "").lower() == CMK.lower()


class BulkActionSummary(BaseModel):
    """Graph's ``cloudPcBulkActionSummary``."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    successful: int = Field(default=0, alias="successfulCount")
    in_progress: int = Field(default=0, alias="inProgressCount")
    failed: int = Field(default=0, alias="failedCount")
    not_supported: int = Field(default=0, alias="notSupportedCount")
    pending: int = Field(default=0, alias="pendingCount")


class BulkAction(BaseModel):
    """Graph's ``cloudPcBulkAction`` (here a ``cloudPcBulkModifyDiskEncryptionType``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: str
    display_name: str = Field(default="", alias="displayName")
    cloud_pc_ids: list[str] = Field(default_factory=list, alias="cloudPcIds")
    status: str = "pending"
    action_summary: BulkActionSummary = Field(default_factory=BulkActionSummary, alias="actionSummary")

    @property
    def finished(self) -> bool:
        """``succeeded`` or ``failed``: nothing of it is still under way."""
        return self.status in ("succeeded", "failed")


class Windows365Gateway:
    """Cloud PCs and the tenant's Cloud PC encryption setting, from Microsoft Graph.

    Args:
        connection: credentials and the HTTP transport (the sandbox's in sandbox mode).
        transport: an HTTP transport to use instead (tests).
        sleep: how to wait before a retry (tests).
    """

    def __init__(
        self,
        connection: AzureConnection,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.connection = connection
        self.transport = transport
        self.sleep = sleep

    async def _headers(self) -> dict[str, str]:
        token = await self.connection.credential().get_token(GRAPH_SCOPE)
        return {"Authorization": f"Bearer {token.token}"}

    def _http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=GRAPH_URL, timeout=30, transport=self.transport or self.connection.httpx_transport()
        )

    async def _request(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One Graph call: its JSON answer; 429/5xx retried honouring ``Retry-After``, other 4xx refused."""
        target = url if url.startswith("https://") else f"{VIRTUAL_ENDPOINT}{url}"
        last, asked = "", None
        for attempt in range(RETRIES + 1):
            async with self._http() as http:
                try:
                    response = await http.request(method, target, json=body, headers=await self._headers())
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                    await self.sleep(min(2.0**attempt, MAX_RETRY_AFTER))
                    continue
            if response.status_code < 400:
                answer: dict[str, Any] = response.json() if response.content else {}
                return answer
            code, message = _graph_error(response)
            if response.status_code != 429 and response.status_code < 500:
                raise GraphRefusal(response.status_code, code, message)
            last = f"Graph {response.status_code} {code}: {message}"
            asked = _retry_after(response)
            if asked is not None and asked > MAX_RETRY_AFTER:
                break  # a long wait is the activity's retry's, not a worker slot's
            await self.sleep(asked if asked is not None else min(2.0**attempt, MAX_RETRY_AFTER))
        raise GraphUnavailable(last, asked)

    async def _pages(self, path: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        page = await self._request("GET", path)
        while True:
            found += list(page.get("value", []))
            next_link = page.get("@odata.nextLink")
            if not next_link:
                return found
            page = await self._request("GET", str(next_link))

    async def cloud_pcs(self) -> list[CloudPc]:
        """Every Cloud PC of the tenant (``GET cloudPCs``, following ``@odata.nextLink``)."""
        return [CloudPc.model_validate(item) for item in await self._pages("/cloudPCs")]

    async def tenant_encryption_setting(self) -> TenantEncryptionSetting:
        """``GET retrieveTenantEncryptionSetting``: customer-managed once the Intune admin center is ready."""
        return TenantEncryptionSetting.model_validate(await self._request("GET", "/retrieveTenantEncryptionSetting"))

    async def bulk_actions(self) -> list[BulkAction]:
        """Every bulk action of the tenant (``GET bulkActions``)."""
        return [BulkAction.model_validate(item) for item in await self._pages("/bulkActions")]

    async def find_bulk_action(self, display_name: str) -> BulkAction | None:
        """The bulk action of that display name (ckey names each of its own uniquely), if one was created."""
        return next((a for a in await self.bulk_actions() if a.display_name == display_name), None)

    async def modify_disk_encryption(self, display_name: str, cloud_pc_ids: list[str]) -> BulkAction:
        """``POST bulkActions``: re-encrypt these Cloud PCs with the customer-managed key."""
        body = {
            "@odata.type": BULK_MODIFY,
            "displayName": display_name,
            "cloudPcIds": cloud_pc_ids,
            "diskEncryptionType": CMK,
        }
        return BulkAction.model_validate(await self._request("POST", "/bulkActions", body))

    async def bulk_action(self, action_id: str) -> BulkAction:
        """``GET bulkActions/{id}``."""
        return BulkAction.model_validate(await self._request("GET", f"/bulkActions/{action_id}"))


def _graph_error(response: httpx.Response) -> tuple[str, str]:
    try:
        error = response.json().get("error", {})
        return str(error.get("code") or response.reason_phrase), str(error.get("message") or response.text[:500])
    except ValueError:
        return response.reason_phrase, response.text[:500]


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


async def preflight_encrypt(params: BaseModel, targets: TargetStore, m365: M365Gateway) -> None:
    """Refuse ``windows365.encrypt`` while no multi-workload DEP is assigned: the Intune admin center never updates.

    Raises:
        PydanticCustomError: ``m365-assignment-exists``, naming what to do first.
    """
    assignment = await m365.get_m365_data_at_rest_encryption_policy_assignment()
    extra = assignment.model_extra or {} if assignment is not None else {}
    if (
        assignment is None
        or not (assignment.data_encryption_policy or assignment.data_encryption_policy_id)
        or str(extra.get("Status", "")).lower() == "notassigned"
    ):
        raise rule_error(
            "m365-assignment-exists",
            "no multi-workload DEP is assigned to the tenant (Get-M365DataAtRestEncryptionPolicyAssignment), so the "
            "Intune admin center will not offer the customer-managed key for Cloud PCs: assign one first "
            "(m365.dep.assign, which starts windows365.encrypt itself)",
        )
