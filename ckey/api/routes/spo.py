"""``/api/spo/geos``: the SharePoint/OneDrive geos' encryption, from the inventory in SQL.

Each geo's state (Unregistered, Registering, Registered, Rolling, Recovery), its percent of sites, its key URIs and
the operation that moved it last. ``?refresh=true`` reads the tenant now (Get-SPODataEncryptionPolicy through each
geo's admin site) and records what it read; a page view otherwise never reaches the tenant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query

from ckey.api.deps import M365Dep, SettingsDep, StoreDep, Viewer
from ckey.api.problems import Problem
from ckey.m365 import CmdletError, M365Gateway
from ckey.store.spo import SpoGeoStore, SpoGeoView

router = APIRouter(prefix="/api/spo", tags=["sharepoint"])

GeoPath = Annotated[str, Path(pattern=r"^[A-Za-z]{2,8}$", description="The geo's code (NAM, EUR ...).")]
Refresh = Annotated[bool, Query(description="Read the tenant now (and update the inventory).")]


async def _read(m365: M365Gateway, geos: SpoGeoStore, code: str, admin_url: str) -> None:
    try:
        policy = await m365.get_spo_data_encryption_policy(admin_url)
    except CmdletError as exc:
        raise Problem(502, "spo-readable", f"Get-SPODataEncryptionPolicy for {code} failed: {exc.message}") from None
    uris = [u for u in (policy.primary_key_uri, policy.secondary_key_uri) if u]
    await geos.record_geo(code, policy.state, policy.percent_complete, uris, None, datetime.now(UTC))


@router.get("/geos", response_model=list[SpoGeoView])
async def list_geos(
    _: Viewer, store: StoreDep, settings: SettingsDep, m365: M365Dep, refresh: Refresh = False
) -> list[SpoGeoView]:
    """Every geo ckey knows: state, percent of sites, key URIs, the operation that moved it last, when it was read.

    From the inventory; ``refresh=true``, or an inventory that never read a geo, reads every configured geo
    (``CKEY_SPO_GEO_ADMIN_URLS``) now.
    """
    geos = SpoGeoStore(store)
    if refresh or not await geos.geos():
        for code, url in sorted(settings.spo_geo_admin_urls.items()):
            await _read(m365, geos, code.upper(), url)
    return await geos.geos()


@router.get("/geos/{geo}", response_model=SpoGeoView)
async def get_geo(
    _: Viewer, store: StoreDep, settings: SettingsDep, m365: M365Dep, geo: GeoPath, refresh: Refresh = False
) -> SpoGeoView:
    """One geo, from the inventory (``refresh=true``: read now). 404 for a geo that is not configured."""
    code = geo.upper()
    urls = {c.upper(): u for c, u in settings.spo_geo_admin_urls.items()}
    if code not in urls:
        raise Problem(
            404, "spo-geo-known", f"{code} is not a geo of this tenant; known geos: {', '.join(sorted(urls))}"
        )
    geos = SpoGeoStore(store)
    if refresh or await geos.geo(code) is None:
        await _read(m365, geos, code, urls[code])
    view = await geos.geo(code)
    if view is None:
        raise Problem(404, "spo-geo-known", f"{code} has not been read")
    return view
