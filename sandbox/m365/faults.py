"""The fault switchboard of the workload endpoints (Exchange, SharePoint, Graph): injected 5xx, throttling, latency.

The switchboard is part of the tenant's state (it survives restarts). The gate (:mod:`sandbox.m365.gate`) spends it:
``fail_next`` and ``throttle_next`` count down one request at a time, the rates draw at random. Stalled SharePoint
geos are the switchboard's too, but stalling one is SharePoint's business
(:meth:`~sandbox.m365.sharepoint.SharePoint.stall`, called by the life cycle when the switchboard changes).
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any, Protocol

from pydantic import BaseModel, Field

from sandbox.m365.errors import AD_TRANSIENT, SPO_SERVER, THROTTLED, CmdletFailure, Family, Reject, graph_error

STATE_KEY = "faults"
"""The switchboard's key in the tenant's state."""


class Faults(BaseModel):
    """The fault switchboard of the workload endpoints (Exchange, SharePoint, Graph)."""

    error_rate: float = Field(0.0, ge=0, le=1)
    """Share of requests answered with a 5xx."""
    error_status: int = Field(503, ge=500, le=599)
    fail_next: int = Field(0, ge=0)
    """The next N requests fail with ``error_status`` (deterministic, for tests)."""
    throttle_rate: float = Field(0.0, ge=0, le=1)
    """Share of requests answered 429 with ``Retry-After``, as Exchange Online throttles."""
    throttle_next: int = Field(0, ge=0)
    """The next N requests are throttled."""
    retry_after_seconds: int = Field(5, ge=0, le=3600)
    latency_ms: int = Field(0, ge=0, le=60_000)
    stalled_geos: list[str] = Field(default_factory=list)
    """SharePoint geos whose registration or key roll makes no progress."""


class StateStore(Protocol):
    """Where the switchboard is kept (the tenant's state: :class:`~sandbox.m365.core.Core`)."""

    async def get_state(self, key: str) -> dict[str, Any] | None:
        """A tenant-wide state value."""

    async def set_state(self, key: str, value: dict[str, Any]) -> None:
        """Store a tenant-wide state value."""


class FaultSwitchboard:
    """The current faults, kept in the tenant's state, and their injection into requests.

    Args:
        state: where the switchboard is kept.
        counters: the tenant's counters; injected faults count under ``faults`` and ``throttled``.
    """

    def __init__(self, state: StateStore, counters: Counter[str]) -> None:
        self.state = state
        self.counters = counters
        self.faults = Faults()

    async def load(self) -> None:
        """Read the switchboard from the tenant's state (none stored: no faults)."""
        stored = await self.state.get_state(STATE_KEY)
        self.faults = Faults.model_validate(stored) if stored else Faults()

    async def save(self) -> None:
        """Persist the switchboard."""
        await self.state.set_state(STATE_KEY, self.faults.model_dump())

    async def replace(self, faults: Faults) -> None:
        """Make ``faults`` the switchboard and persist it."""
        self.faults = faults
        await self.save()

    async def delay(self) -> None:
        """Wait the injected latency."""
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)

    async def inject(self, family: Family) -> None:
        """Spend the switchboard on one request: fail it, throttle it, or let it through.

        Raises:
            Reject: the request fails (``error_status``) or is throttled (429 with ``Retry-After``).
        """
        faults = self.faults
        fail = faults.fail_next > 0 or random.random() < faults.error_rate
        throttle = not fail and (faults.throttle_next > 0 or random.random() < faults.throttle_rate)
        if faults.fail_next > 0 or faults.throttle_next > 0:
            if fail and faults.fail_next > 0:
                faults.fail_next -= 1
            elif throttle and faults.throttle_next > 0:
                faults.throttle_next -= 1
            await self.save()
        if fail:
            self.counters["faults"] += 1
            status = faults.error_status
            message = "The service is temporarily unavailable (sandbox fault injection)."
            if family is Family.GRAPH:
                raise Reject(graph_error(status, "ServiceUnavailable", message))
            if family is Family.EXCHANGE:
                message = (
                    "The call to Microsoft Exchange Active Directory Topology service returned an error: Active "
                    "Directory server is not available (sandbox fault injection)."
                )
            raise Reject(
                CmdletFailure(message, AD_TRANSIENT if family is Family.EXCHANGE else SPO_SERVER, status).response()
            )
        if throttle:
            self.counters["throttled"] += 1
            wait = faults.retry_after_seconds
            headers = {"Retry-After": str(wait)}
            message = f"The request was throttled: too many requests in a short time. Retry after {wait} seconds."
            if family is Family.GRAPH:
                raise Reject(graph_error(429, "TooManyRequests", message, headers))
            raise Reject(CmdletFailure(message, THROTTLED, 429, headers).response())
