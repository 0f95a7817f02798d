"""Client of the sandbox Key Vault's control endpoint (``https://localhost:<port>/sandbox/``), for tests and ckey.

Example::

    async with SandboxKeyVaultControl.from_settings(settings) as control:
        await control.create_vault("contoso-test-kv", location="eastus", purge_protection=False)
        await control.set_limits("contoso-test-kv", other=5, window_seconds=1, retry_after_seconds=1)
        await control.advance_clock(days=91)
"""

from __future__ import annotations

from typing import Any

from ckey.config import Settings
from sandbox.common import SandboxControlClient, SandboxControlError

__all__ = ["SandboxControlError", "SandboxKeyVaultControl"]


class SandboxKeyVaultControl(SandboxControlClient):
    """Async client of the sandbox Key Vault's control endpoint (arguments: see the base class)."""

    @classmethod
    def port(cls, settings: Settings) -> int:
        """``settings.sandbox_keyvault_port``."""
        return settings.sandbox_keyvault_port

    # Service ----------------------------------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        """Clock, vaults, their limits, faults and counters."""
        result: dict[str, Any] = await self._call("GET", "/status")
        return result

    async def clock(self) -> dict[str, Any]:
        """The sandbox clock (``offset_seconds``, ``now``)."""
        result: dict[str, Any] = await self._call("GET", "/clock")
        return result

    async def advance_clock(self, *, days: float = 0, hours: float = 0, seconds: float = 0) -> dict[str, Any]:
        """Move the sandbox clock: due soft-deleted keys are purged (``purged``), due rotations made (``rotated``)."""
        result: dict[str, Any] = await self._call(
            "POST", "/clock/advance", {"days": days, "hours": hours, "seconds": seconds}
        )
        return result

    # Vaults -----------------------------------------------------------------------------------------------------

    async def create_vault(
        self,
        name: str,
        *,
        location: str = "eastus",
        retention_days: int = 90,
        purge_protection: bool = False,
        rbac: bool = False,
        protected_subscription: bool = False,
        **extra: Any,
    ) -> dict[str, Any]:
        """Create a vault (``extra``: ``tenant_id``, ``subscription_id``, ``resource_group``, ``sku``, ``tags``)."""
        body = {
            "name": name,
            "location": location,
            "soft_delete_retention_days": retention_days,
            "purge_protection": purge_protection,
            "rbac": rbac,
            "protected_subscription": protected_subscription,
            **extra,
        }
        result: dict[str, Any] = await self._call("POST", "/vaults", body)
        return result

    async def vault(self, name: str) -> dict[str, Any]:
        """A vault's summary (keys, policies, limits, faults, counters)."""
        result: dict[str, Any] = await self._call("GET", f"/vaults/{name}")
        return result

    async def change_vault(self, name: str, **changes: Any) -> dict[str, Any]:
        """Change ``purge_protection``, ``rbac`` or ``soft_delete_retention_days``."""
        result: dict[str, Any] = await self._call("PATCH", f"/vaults/{name}", changes)
        return result

    async def create_key(
        self, vault: str, name: str, *, kty: str = "RSA", size: int = 2048, **extra: Any
    ) -> dict[str, Any]:
        """Create a key (or a new version); ``kid`` in the answer (``extra``: ``key_ops``, ``tags``, ``enabled``)."""
        result: dict[str, Any] = await self._call(
            "POST", f"/vaults/{vault}/keys", {"name": name, "kty": kty, "size": size, **extra}
        )
        return result

    # Permissions ------------------------------------------------------------------------------------------------

    async def grant(self, vault: str, principal: str, permissions: list[str]) -> dict[str, Any]:
        """Add key permissions to ``principal``'s (app id or UPN) access policy in ``vault``."""
        result: dict[str, Any] = await self._call(
            "POST", f"/vaults/{vault}/access-policies/grant", {"principal": principal, "permissions": permissions}
        )
        return result

    async def revoke(self, vault: str, principal: str, permissions: list[str] | None = None) -> dict[str, Any]:
        """Take key permissions (None: the whole entry) out of ``principal``'s access policy in ``vault``."""
        result: dict[str, Any] = await self._call(
            "POST", f"/vaults/{vault}/access-policies/revoke", {"principal": principal, "permissions": permissions}
        )
        return result

    async def assign_role(
        self, principal: str, role: str, *, vault: str | None = None, scope: str | None = None
    ) -> dict[str, Any]:
        """Assign a built-in role (name or id) to ``principal`` at a vault or any scope; the assignment's ``name``."""
        result: dict[str, Any] = await self._call(
            "POST", "/role-assignments", {"principal": principal, "role": role, "vault": vault, "scope": scope}
        )
        return result

    async def remove_role_assignment(self, name: str) -> None:
        """Delete a role assignment."""
        await self._call("DELETE", f"/role-assignments/{name}")

    # Limits and faults ------------------------------------------------------------------------------------------

    async def set_limits(
        self,
        vault: str,
        *,
        create: int | None = None,
        other: int | None = None,
        window_seconds: float | None = None,
        retry_after_seconds: int | None = None,
    ) -> dict[str, Any]:
        """Set a vault's limits (in RSA 2,048-bit software-key units); None restores the documented value."""
        body = {"create": create, "other": other, "window_seconds": window_seconds}
        result: dict[str, Any] = await self._call(
            "PUT", f"/vaults/{vault}/limits", {**body, "retry_after_seconds": retry_after_seconds}
        )
        return result

    async def set_faults(
        self, vault: str, *, error_rate: float = 0.0, latency_ms: int = 0, down: bool = False
    ) -> dict[str, Any]:
        """Inject faults into a vault's data plane (all zero: none)."""
        result: dict[str, Any] = await self._call(
            "PUT", f"/vaults/{vault}/faults", {"error_rate": error_rate, "latency_ms": latency_ms, "down": down}
        )
        return result

    async def counters(self, vault: str) -> dict[str, Any]:
        """What the vault's data plane answered: ``requests``, ``throttled``, ``faults``, ``statuses``."""
        counters: dict[str, Any] = (await self.vault(vault))["counters"]
        return counters
