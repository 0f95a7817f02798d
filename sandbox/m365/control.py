"""Client of the sandbox tenant's control endpoint (``https://localhost:<port>/sandbox/``), for tests and demos.

Example::

    async with SandboxM365Control.from_settings(settings) as control:
        await control.advance_clock(days=2)
        await control.set_faults(throttle_next=3, retry_after_seconds=1)
        print(await control.mailbox_items("adele.vance@contoso.com"))
"""

from __future__ import annotations

from typing import Any

from ckey.config import Settings
from sandbox.common import SandboxControlClient, SandboxControlError

__all__ = ["SandboxControlError", "SandboxM365Control"]


class SandboxM365Control(SandboxControlClient):
    """Async client of the sandbox tenant's control endpoint (arguments: see the base class)."""

    error_label = "sandbox tenant control"

    @classmethod
    def port(cls, settings: Settings) -> int:
        """``settings.sandbox_m365_port``."""
        return settings.sandbox_m365_port

    async def status(self) -> dict[str, Any]:
        """Clock, tenant, recipients, DEPs, geos, the multi-workload assignment, cases, faults, counters."""
        result: dict[str, Any] = await self._call("GET", "/status")
        return result

    async def clock(self) -> dict[str, Any]:
        """The sandbox clock (``now``, ``now_unix``, ``speed``, ``shifted_seconds``)."""
        result: dict[str, Any] = await self._call("GET", "/clock")
        return result

    async def advance_clock(
        self, *, days: float = 0, hours: float = 0, minutes: float = 0, seconds: float = 0
    ) -> dict[str, Any]:
        """Move the sandbox clock forward; Microsoft's steps that became due run."""
        body = {"days": days, "hours": hours, "minutes": minutes, "seconds": seconds}
        result: dict[str, Any] = await self._call("POST", "/clock/advance", body)
        return result

    async def seed(self, **spec: Any) -> dict[str, Any]:
        """Replace the tenant with a generated one (:class:`sandbox.m365.tenant.TenantSpec` fields)."""
        result: dict[str, Any] = await self._call("POST", "/seed", spec)
        return result

    async def faults(self) -> dict[str, Any]:
        """The fault switchboard."""
        result: dict[str, Any] = await self._call("GET", "/faults")
        return result

    async def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Set the fault switchboard (:class:`sandbox.m365.core.Faults` fields; left out: off)."""
        result: dict[str, Any] = await self._call("PUT", "/faults", faults)
        return result

    async def set_stuck(self, identities: list[str], stuck: bool = True) -> dict[str, Any]:
        """Make mailboxes' moves never finish (``stuck=False``: restart them)."""
        result: dict[str, Any] = await self._call(
            "POST", "/mailboxes/stuck", {"identities": identities, "stuck": stuck}
        )
        return result

    async def complete_migrations(self, identities: list[str] | None = None) -> list[str]:
        """Complete mail users' migrations (all of them by default); their names."""
        result: dict[str, Any] = await self._call("POST", "/migrations/complete", {"identities": identities})
        return list(result["migrated"])

    async def mailbox(self, identity: str) -> dict[str, Any]:
        """A mailbox's internal state (DEP, move due, stuck, encrypted)."""
        result: dict[str, Any] = await self._call("GET", f"/mailboxes/{identity}")
        return result

    async def mailbox_items(self, identity: str) -> dict[str, Any]:
        """Decrypt a mailbox's sample items: ``readable``, ``path`` (which key opened the DEP key), ``items``."""
        result: dict[str, Any] = await self._call("GET", f"/mailboxes/{identity}/items")
        return result

    async def site_items(self, url: str) -> dict[str, Any]:
        """Decrypt a site's sample item."""
        result: dict[str, Any] = await self._call("GET", "/sites/items", params={"url": url})
        return result

    async def recover_geo(self, geo: str) -> dict[str, Any]:
        """Put a registered geo in recovery mode, as Microsoft does at a customer's request after its keys were lost."""
        result: dict[str, Any] = await self._call("POST", f"/geos/{geo}/recovery")
        return result

    async def alerts(self) -> list[dict[str, Any]]:
        """The service's alerts (the availability key was used ...)."""
        result: list[dict[str, Any]] = await self._call("GET", "/alerts")
        return result

    async def calls(self, cmdlet: str | None = None, after: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        """The tenant's log of state-changing calls as received (``seq``, ``cmdlet``, ``identity``, ``status``)."""
        params = {"after": str(after), "limit": str(limit)}
        if cmdlet:
            params["cmdlet"] = cmdlet
        result: list[dict[str, Any]] = await self._call("GET", "/calls", params=params)
        return result

    async def tick(self) -> int:
        """Run Microsoft's due steps now; how many ran."""
        result: dict[str, int] = await self._call("POST", "/tick")
        return result["ran"]
