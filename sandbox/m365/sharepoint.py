"""SharePoint and OneDrive's side of Customer Key: one DEP per geo, registration and key rolls site by site.

A geo is addressed by its admin host (``contoso-admin.sharepoint.com`` for the default geo,
``contosoeur-admin.sharepoint.com`` for EUR), the URL that ``Connect-SPOService`` and ``Get-SPODataEncryptionPolicy
<SPOAdminSiteUrl>`` name. Registration encrypts the geo's sites one after the other (``Registering`` with the percent
of sites done, then ``Registered``); ``Update-SPODataEncryptionPolicy`` rolls one key at a time (``Rolling``, then
``Registered``). Progress is computed from timestamps; a stalled geo (sandbox fault) freezes it. There is no rollback
and no purge for SharePoint: the seed says neither is supported.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from sandbox.m365.clock import iso
from sandbox.m365.core import Core, KeyUnavailable
from sandbox.m365.db import DepRow, GeoRow, SiteRow
from sandbox.m365.errors import SPO_ARGUMENT, SPO_INVALID_OPERATION, SPO_SERVER, CmdletFailure
from sandbox.m365.items import read_unit
from sandbox.m365.params import Cmdlet, Kind, Output, Param, Spec
from sandbox.m365.sharepoint_recovery import restore
from sandbox.m365.sharepoint_sets import ONE_KEY, TWO_KEYS, key_uri, two_keys
from sandbox.vocabulary import KeyUri, SpoState, Workload


@dataclass(frozen=True)
class Progress:
    """A geo's state as Get-SPODataEncryptionPolicy reports it."""

    state: SpoState
    done: int
    total: int

    @property
    def percent(self) -> int:
        """Percent of sites done (100 only when every site is)."""
        if self.total == 0:
            return 100 if self.state is SpoState.REGISTERED else 0
        return self.done * 100 // self.total


class SharePoint:
    """The SharePoint Online cmdlets of Customer Key.

    Args:
        core: the tenant's shared state and key hierarchy.
    """

    def __init__(self, core: Core) -> None:
        self.core = core

    def cmdlets(self, host: str) -> dict[str, Cmdlet]:
        """The cmdlets by name, for a request to the admin host ``host`` (the geo it defaults to)."""
        specs = [
            Cmdlet(
                Spec("Register-SPODataEncryptionPolicy", TWO_KEYS.params()),
                lambda p: self.register(host, p),
                changes=True,
            ),
            Cmdlet(Spec("Get-SPODataEncryptionPolicy", (Param("Identity", Kind.STRING),)), lambda p: self.get(host, p)),
            Cmdlet(
                Spec("Update-SPODataEncryptionPolicy", ONE_KEY.params()),
                lambda p: self.update(host, p),
                changes=True,
            ),
            Cmdlet(
                Spec("Restore-SPODataEncryptionPolicy", TWO_KEYS.params()),
                lambda p: restore(self, host, p),
                changes=True,
            ),
        ]
        return {c.spec.name.lower(): c for c in specs}

    # Geos -------------------------------------------------------------------------------------------------------

    async def geo_of(self, s: AsyncSession, host: str, identity: str | None) -> GeoRow:
        """The geo a request addresses: its admin host, or another geo's admin site named by ``-Identity``."""
        target = host
        if identity:
            target = identity.strip().lower().removeprefix("https://").removeprefix("http://").split("/", 1)[0]
        geo = (await s.scalars(select(GeoRow).where(GeoRow.admin_host == target.lower()))).first()
        if geo is None:
            raise CmdletFailure(
                f"'{identity or host}' isn't the SharePoint admin site of a geo of this tenant "
                f"(https://<tenant>-admin.sharepoint.com).",
                SPO_ARGUMENT,
            )
        return geo

    def progress(self, geo: GeoRow, now: float) -> Progress:
        """Where a geo's registration or key roll stands."""
        total = geo.site_count
        if geo.dep_guid is None or geo.registered_at is None:
            return Progress(SpoState.UNREGISTERED, 0, total)
        if geo.recovery_at is not None:
            return Progress(SpoState.RECOVERY, total, total)
        t = geo.paused_at if geo.paused_at is not None else now
        d = self.core.durations
        if geo.roll_started_at is not None:
            done = _sites_done(t - geo.roll_started_at, d.spo_site_roll, total)
            if done < total:
                return Progress(SpoState.ROLLING, done, total)
        done = _sites_done(t - geo.registered_at, d.spo_site_register, total)
        if done < total:
            return Progress(SpoState.REGISTERING, done, total)
        return Progress(SpoState.REGISTERED, total, total)

    def pause(self, geo: GeoRow, now: float) -> None:
        """Stall a geo: its progress stops here."""
        if geo.paused_at is None:
            geo.paused_at = now

    def resume(self, geo: GeoRow, now: float) -> None:
        """Resume a stalled geo: the phase that was running carries on, the stalled time not counted."""
        if geo.paused_at is None:
            return
        at_pause = self.progress(geo, geo.paused_at)
        if at_pause.state is SpoState.ROLLING and geo.roll_started_at is not None:
            geo.roll_started_at += now - max(geo.paused_at, geo.roll_started_at)
        elif at_pause.state is SpoState.REGISTERING and geo.registered_at is not None:
            geo.registered_at += now - max(geo.paused_at, geo.registered_at)
        geo.paused_at = None

    async def stall(self, geos: set[str], now: float) -> None:
        """Stall the geos named (upper case) and resume every other one (the fault switchboard's ``stalled_geos``)."""
        async with self.core.db.session() as s, s.begin():
            for geo in (await s.scalars(select(GeoRow))).all():
                if geo.geo in geos:
                    self.pause(geo, now)
                else:
                    self.resume(geo, now)

    def admin_hosts(self) -> set[str]:
        """The admin hosts of the tenant's geos (``contoso-admin.sharepoint.com`` ...)."""
        return {str(g["admin_host"]) for g in self.core.tenant.get("geos", [])}

    # Cmdlets ----------------------------------------------------------------------------------------------------

    async def register(self, host: str, p: dict[str, Any]) -> Output:
        """Register-SPODataEncryptionPolicy: the geo's DEP from two keys in two vaults; encryption starts."""
        core = self.core
        uris = two_keys(core.settings.vault_dns_suffix, p)
        async with core.db.session() as s:
            geo = await self.geo_of(s, host, p.get("Identity"))
        if geo.dep_guid is not None:
            raise CmdletFailure(
                f"A data encryption policy is already registered for the geo {geo.geo}. To change a key, roll it with "
                f"Update-SPODataEncryptionPolicy.",
                SPO_INVALID_OPERATION,
            )
        material = await core.new_dep_key(uris, Workload.SHAREPOINT, SPO_SERVER)
        now = core.now()
        dep = DepRow(
            guid=str(uuid.uuid4()),
            kind=Workload.SHAREPOINT.value,
            name=f"SPO_{geo.geo}",
            name_lower=f"spo_{geo.geo.lower()}",
            azure_key_ids=[str(u) for u in uris],
            created_at=now,
            changed_at=now,
        )
        core.store_new_dep_key(dep, material)
        async with core.db.session() as s, s.begin():
            geo = await self.geo_of(s, host, p.get("Identity"))
            default = await s.get(DepRow, core.default_dep)
            assert default is not None
            default_key = core.default_key(default)
            for site in (await s.scalars(select(SiteRow).where(SiteRow.geo == geo.geo))).all():
                # Each site's key, wrapped by the Microsoft-managed DEP so far, is re-wrapped by the geo's DEP key.
                unit_key = core.unwrap_unit_key(default_key, site.key_current, site.url, site.key_current_dep)
                site.key_target = core.wrap_unit_key(material.key, unit_key, site.url, dep.guid)
                site.key_target_dep = dep.guid
            s.add(dep)
            geo.dep_guid = dep.guid
            geo.registered_at = now
        return Output()

    async def get(self, host: str, p: dict[str, Any]) -> Output:
        """Get-SPODataEncryptionPolicy [<SPOAdminSiteUrl>]: key URIs, state, percent of sites done."""
        async with self.core.db.session() as s:
            geo = await self.geo_of(s, host, p.get("Identity"))
            dep = await s.get(DepRow, geo.dep_guid) if geo.dep_guid else None
        progress = self.progress(geo, self.core.now())
        out: dict[str, Any] = {
            "Identity": f"https://{geo.admin_host}",
            "Geo": geo.geo,
            "State": progress.state.value,
            "PercentComplete": progress.percent,
            "SitesCompleted": progress.done,
            "SitesTotal": progress.total,
            "PrimaryKeyUri": None,
            "SecondaryKeyUri": None,
            "RegisteredDateTime": iso(geo.registered_at),
            "RollingKeyType": geo.roll_key_type if progress.state is SpoState.ROLLING else None,
        }
        if dep is not None:
            for label, uri in zip(("Primary", "Secondary"), dep.azure_key_ids, strict=True):
                parsed = KeyUri.parse(uri)
                out |= {
                    f"{label}KeyUri": uri,
                    f"{label}KeyVaultName": parsed.vault,
                    f"{label}KeyName": parsed.name,
                    f"{label}KeyVersion": parsed.version,
                }
        return Output([out])

    async def update(self, host: str, p: dict[str, Any]) -> Output:
        """Update-SPODataEncryptionPolicy -KeyType, and -KeyVaultName -KeyName -KeyVersion or -KeyVaultUri."""
        core = self.core
        chosen = ONE_KEY.choose(p)
        key_type = p["KeyType"].strip().capitalize()
        if key_type not in ("Primary", "Secondary"):
            raise CmdletFailure(
                f"Cannot bind parameter 'KeyType'. Cannot convert value \"{p['KeyType']}\" to type "
                f'"Microsoft.Online.SharePoint.TenantAdministration.SPOCustomerKeyType". Possible values: Primary, '
                f"Secondary.",
                SPO_ARGUMENT,
            )
        index = 0 if key_type == "Primary" else 1
        async with core.db.session() as s:
            geo = await self.geo_of(s, host, p.get("Identity"))
            dep = await s.get(DepRow, geo.dep_guid) if geo.dep_guid else None
        if dep is None:
            raise CmdletFailure(
                f"No data encryption policy is registered for the geo {geo.geo}. Register one with "
                f"Register-SPODataEncryptionPolicy first.",
                SPO_INVALID_OPERATION,
            )
        progress = self.progress(geo, core.now())
        if progress.state is not SpoState.REGISTERED:
            raise CmdletFailure(
                f"The geo {geo.geo} is {progress.state.value} ({progress.percent}% of sites done). Roll a key when its "
                f"state is Registered.",
                SPO_INVALID_OPERATION,
            )
        uri = key_uri(core.settings.vault_dns_suffix, p, chosen)
        other = KeyUri.parse(dep.azure_key_ids[1 - index])
        if uri.vault.lower() == other.vault.lower():
            raise CmdletFailure(
                f"The {key_type.lower()} key must stay in another Azure Key Vault than the "
                f"{'secondary' if index == 0 else 'primary'} key ('{other.vault}').",
                SPO_ARGUMENT,
            )
        if str(uri).lower() == dep.azure_key_ids[index].lower():
            raise CmdletFailure(f"The {key_type.lower()} key is already '{uri}'.", SPO_INVALID_OPERATION)
        check = await core.check_key(uri, Workload.SHAREPOINT, SPO_SERVER)
        try:
            opened = await core.open_dep_key(dep, record_alert=False)
        except KeyUnavailable as exc:
            raise CmdletFailure(exc.message, SPO_SERVER, 503 if exc.transient else 400) from None
        used, wrapped = await core.wrap_with(check.kid, opened.key, Workload.SHAREPOINT, SPO_SERVER)
        now = core.now()
        async with core.db.session() as s, s.begin():
            dep_row = await s.get(DepRow, dep.guid)
            geo_row = await s.get(GeoRow, geo.geo)
            assert dep_row is not None and geo_row is not None
            previous = dep_row.azure_key_ids[index]
            ids, versions = list(dep_row.azure_key_ids), list(dep_row.key_versions)
            ids[index], versions[index] = str(uri), used
            dep_row.azure_key_ids, dep_row.key_versions = ids, versions
            if index == 0:
                dep_row.wrapped_1 = wrapped
            else:
                dep_row.wrapped_2 = wrapped
            dep_row.changed_at = now
            geo_row.roll_started_at = now
            geo_row.roll_key_type = key_type
            geo_row.rolls = [
                *geo_row.rolls,
                {"key_type": key_type, "from": previous, "to": str(uri), "started_at": now},
            ]
        core.forget(dep.guid)
        return Output()

    # Sandbox control ---------------------------------------------------------------------------------------------

    async def read_site(self, url: str) -> dict[str, Any]:
        """Decrypt a site's sample item through the key hierarchy."""
        now = self.core.now()
        async with self.core.db.session() as s:
            site = (await s.scalars(select(SiteRow).where(SiteRow.url == url))).first()
            if site is None:
                raise CmdletFailure(f"No site '{url}'.", SPO_ARGUMENT, 404)
            geo = await s.get(GeoRow, site.geo)
        assert geo is not None
        wrapped, dep_guid = site.key_current, site.key_current_dep
        progress = self.progress(geo, now)
        registered_sites = progress.total if progress.state is not SpoState.REGISTERING else progress.done
        if site.key_target is not None and site.key_target_dep and site.idx < registered_sites:
            wrapped, dep_guid = site.key_target, site.key_target_dep
        return await read_unit(self.core, site.url, site.url, wrapped, dep_guid, site.items)


def _sites_done(elapsed: float, per_site: float, total: int) -> int:
    if elapsed <= 0:
        return 0
    if per_site <= 0:
        return total
    return min(total, int(elapsed // per_site))
