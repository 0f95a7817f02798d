"""Windows 365's activities: Cloud PCs and their encryption through Microsoft Graph."""

from __future__ import annotations

from typing import TYPE_CHECKING

from temporalio import activity

from ckey.store import Store
from ckey.windows365 import Windows365Gateway
from contracts.windows365 import CloudPcsInput, CloudPcsResult, Windows365ActivityStub

if TYPE_CHECKING:
    from activities import Gateways


class Windows365Activities(Windows365ActivityStub):
    """Reads and re-encrypts Cloud PCs.

    Args:
        windows365: the Graph gateway.
        store: ckey's SQL store.
    """

    @classmethod
    def from_gateways(cls, gateways: Gateways) -> Windows365Activities | None:
        """The family built from the worker's gateways (None without a Windows 365 gateway)."""
        if gateways.windows365 is None:
            return None
        return cls(gateways.windows365, gateways.store)

    def __init__(self, windows365: Windows365Gateway, store: Store) -> None:
        self.windows365 = windows365
        self.store = store

    @activity.defn
    async def count_cloud_pcs(self, input: CloudPcsInput) -> CloudPcsResult:
        """How many Cloud PCs the tenant has."""
        return CloudPcsResult(count=len(await self.windows365.cloud_pcs()))
