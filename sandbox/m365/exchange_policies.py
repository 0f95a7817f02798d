"""Exchange Online's mailbox data encryption policies: New-, Get- and Set-DataEncryptionPolicy.

A DEP is created from two customer keys in two vaults (:mod:`sandbox.m365.deps` checks them through Key Vault);
``-Refresh`` re-wraps its key with the keys' latest versions; ``-PermanentDataPurgeRequested`` starts the data purge,
which the seed allows only once Exchange Online can no longer wrap or unwrap with either key (the purge itself is
Microsoft's, through the support desk: :mod:`sandbox.m365.support`).
"""

from __future__ import annotations

from typing import Any

from sandbox.m365 import deps, keys
from sandbox.m365.core import Core
from sandbox.m365.db import DepRow
from sandbox.m365.errors import ALREADY_EXISTS, INVALID_OPERATION, KEY_VAULT, PARAMETER_BINDING, CmdletFailure
from sandbox.m365.params import NO_CHANGE, Cmdlet, Kind, Output, Param, Spec
from sandbox.m365.vault import VaultDenied, VaultUnavailable
from sandbox.vocabulary import ServicePrincipal, Workload


class ExchangePolicies:
    """The Exchange Online cmdlets of mailbox DEPs.

    Args:
        core: the tenant's shared state and key hierarchy.
    """

    def __init__(self, core: Core) -> None:
        self.core = core

    def cmdlets(self) -> dict[str, Cmdlet]:
        """The cmdlets by name."""
        s, b, w, ss = Kind.STRING, Kind.BOOL, Kind.SWITCH, Kind.STRINGS
        specs = [
            Cmdlet(
                Spec(
                    "New-DataEncryptionPolicy",
                    (Param("Name", s, True), Param("AzureKeyIDs", ss, True), Param("Description", s)),
                ),
                self.new_policy,
                changes=True,
            ),
            Cmdlet(Spec("Get-DataEncryptionPolicy", (Param("Identity", s),)), self.get_policy),
            Cmdlet(
                Spec(
                    "Set-DataEncryptionPolicy",
                    (
                        Param("Identity", s, True),
                        Param("Refresh", w),
                        Param("Enabled", b),
                        Param("Description", s),
                        Param("Name", s),
                        Param("PermanentDataPurgeRequested", w),
                        Param("PermanentDataPurgeReason", s),
                        Param("PermanentDataPurgeContact", s),
                    ),
                ),
                self.set_policy,
                changes=True,
            ),
        ]
        return {c.spec.name.lower(): c for c in specs}

    async def new_policy(self, p: dict[str, Any]) -> Output:
        """New-DataEncryptionPolicy -Name -AzureKeyIDs [-Description]."""
        dep = await deps.create(self.core, Workload.EXCHANGE, p["Name"], p.get("AzureKeyIDs"), p.get("Description"))
        return Output([deps.to_object(dep)])

    async def get_policy(self, p: dict[str, Any]) -> Output:
        """Get-DataEncryptionPolicy [[-Identity] <name or GUID>]."""
        async with self.core.db.session() as s:
            if p.get("Identity"):
                return Output([deps.to_object(await deps.require(s, self.core, Workload.EXCHANGE, p["Identity"]))])
            return Output([deps.to_object(d) for d in await deps.live(s, Workload.EXCHANGE)])

    async def set_policy(self, p: dict[str, Any]) -> Output:
        """Set-DataEncryptionPolicy <identity> [-Refresh] [-Enabled] [-Description] [-Name] [-PermanentDataPurge...]."""
        purge = bool(p.get("PermanentDataPurgeRequested"))
        refresh = bool(p.get("Refresh"))
        if purge and refresh:
            raise CmdletFailure(
                "Parameter set cannot be resolved using the specified named parameters.", PARAMETER_BINDING
            )
        if not purge and ("PermanentDataPurgeReason" in p or "PermanentDataPurgeContact" in p):
            raise CmdletFailure(
                "PermanentDataPurgeReason and PermanentDataPurgeContact go with the PermanentDataPurgeRequested "
                "switch.",
                PARAMETER_BINDING,
            )
        if purge:
            missing = [n for n in ("PermanentDataPurgeReason", "PermanentDataPurgeContact") if not p.get(n)]
            if missing:
                raise CmdletFailure(
                    f"Cannot process command because of one or more missing mandatory parameters: {' '.join(missing)}.",
                    PARAMETER_BINDING,
                )
        now = self.core.now()
        async with self.core.db.session() as s, s.begin():
            dep = await deps.require(s, self.core, Workload.EXCHANGE, p["Identity"])
            changed = False
            if purge:
                if dep.purge_requested:
                    raise CmdletFailure(
                        f"A permanent data purge has already been requested for '{dep.name}'.", INVALID_OPERATION
                    )
                await self._check_access_removed(dep)
                dep.purge_requested = True
                dep.purge_reason = p["PermanentDataPurgeReason"]
                dep.purge_contact = p["PermanentDataPurgeContact"]
                dep.purge_requested_at = now
                changed = True
            if refresh:
                if dep.purge_requested:
                    raise CmdletFailure(
                        f"'{dep.name}' has a permanent data purge request; it can't be refreshed.", INVALID_OPERATION
                    )
                await self.core.rewrap_dep_key(dep, Workload.EXCHANGE, KEY_VAULT)
                dep.refreshed_at = now
                changed = True
            if "Enabled" in p and p["Enabled"] != dep.enabled:
                dep.enabled = bool(p["Enabled"])
                changed = True
            if "Description" in p and p["Description"] != dep.description:
                dep.description = p["Description"]
                changed = True
            if "Name" in p and p["Name"] != dep.name:
                # -Name renames the DEP (Microsoft Learn: "the unique name for the data encryption policy");
                # mailboxes name their DEP by GUID, so they follow it.
                new_name = deps.check_name(p["Name"], PARAMETER_BINDING)
                other = await deps.find(s, Workload.EXCHANGE, new_name)
                if other is not None and other.guid != dep.guid:
                    raise CmdletFailure(f"A data encryption policy named '{new_name}' already exists.", ALREADY_EXISTS)
                dep.name, dep.name_lower = new_name, new_name.lower()
                changed = True
            if not changed:
                return Output(warnings=[NO_CHANGE.format(dep.name)])
            dep.changed_at = now
        return Output()

    async def _check_access_removed(self, dep: DepRow) -> None:
        """The seed's rule: the purge request fails while Exchange Online can still wrap or unwrap with either key."""
        principal = ServicePrincipal.EXCHANGE_ONLINE.value
        for kid, blob in zip(dep.key_versions, (dep.wrapped_1, dep.wrapped_2), strict=False):
            for step in ("unwrapKey", "wrapKey"):
                try:
                    if step == "unwrapKey":
                        if blob is None:
                            continue
                        await self.core.vault.unwrap(kid, blob, principal)
                    else:
                        await self.core.vault.wrap(kid, keys.new_key(), principal)
                except VaultDenied:
                    continue
                except VaultUnavailable as exc:
                    raise CmdletFailure(
                        f"The permanent data purge request for '{dep.name}' failed: Azure Key Vault didn't answer "
                        f"for the key '{kid}' ({exc.status or 'no answer'} {exc.code}), so the removal of Exchange "
                        f"Online's permissions couldn't be verified. Try again later.",
                        KEY_VAULT,
                        503,
                    ) from None
                raise CmdletFailure(
                    f"The permanent data purge request for '{dep.name}' failed: Exchange Online (Office 365 Exchange "
                    f"Online, {principal}) still has the {step} permission on the key '{kid}'. Remove the wrap and "
                    f"unwrap permissions for Exchange Online from both Azure Key Vaults, then run the command again.",
                    INVALID_OPERATION,
                )
