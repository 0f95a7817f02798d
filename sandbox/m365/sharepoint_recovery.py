"""A geo's recovery mode and Restore-SPODataEncryptionPolicy.

What Microsoft documents ("Learn about the availability key"; the Restore-SPODataEncryptionPolicy reference):
SharePoint and OneDrive never use a DEP's availability key unless the customer asks Microsoft to start the recovery
process, after losing control of its root keys (contact Microsoft Support); Restore-SPODataEncryptionPolicy then
"restores customer encryption status for your geo tenant when in recovery mode", given a new primary and secondary key
(by vault, name and version, or by key URI). So here:

- a geo enters recovery mode only when Microsoft recovers it (:func:`enter_recovery`; the control endpoint's
  ``POST /sandbox/geos/{geo}/recovery`` stands in for the support case): its DEP key is opened with the availability
  key, its sites stay readable, Get-SPODataEncryptionPolicy shows ``State = Recovery`` (the state's text is the
  sandbox's: Microsoft does not publish it) with the keys that were lost;
- :func:`restore` refuses a geo that is not in recovery mode; it checks both new keys as Register does (the
  SharePoint principal's get/wrapKey/unwrapKey, two vaults), wraps the DEP key with them, and the geo re-registers
  its sites under the restored keys (``Registering`` with its percent, then ``Registered``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.m365.core import KeyUnavailable
from sandbox.m365.db import DepRow, GeoRow
from sandbox.m365.errors import SPO_ARGUMENT, SPO_INVALID_OPERATION, SPO_SERVER, CmdletFailure
from sandbox.m365.params import Output
from sandbox.m365.sharepoint_sets import two_keys
from sandbox.vocabulary import Workload

if TYPE_CHECKING:
    from sandbox.m365.sharepoint import SharePoint


async def enter_recovery(sharepoint: SharePoint, code: str) -> dict[str, Any]:
    """Microsoft recovers a geo with its availability key (the customer lost access to its keys).

    Raises:
        CmdletFailure: no such geo, no DEP registered, already in recovery mode, or a customer key still opens the
            DEP key (there is nothing to recover from).
    """
    core = sharepoint.core
    async with core.db.session() as s:
        geo = await s.get(GeoRow, code.strip().upper())
        if geo is None:
            raise CmdletFailure(f"No geo '{code}' in this tenant.", SPO_ARGUMENT, 404)
        dep = await s.get(DepRow, geo.dep_guid) if geo.dep_guid else None
    if dep is None:
        raise CmdletFailure(f"No data encryption policy is registered for the geo {geo.geo}.", SPO_INVALID_OPERATION)
    if geo.recovery_at is not None:
        raise CmdletFailure(f"The geo {geo.geo} is already in recovery mode.", SPO_INVALID_OPERATION)
    # Recovery is for a customer who lost its keys: while a customer key still opens the DEP key, there is nothing
    # to recover from.
    try:
        opened = await core.open_dep_key(dep, record_alert=False)
    except KeyUnavailable:
        opened = None
    if opened is not None and opened.path.startswith("customer-key"):
        raise CmdletFailure(
            f"The customer keys of the geo {geo.geo} still open its DEP key ({opened.path}); Microsoft recovers a geo "
            f"only after access to its keys was lost.",
            SPO_INVALID_OPERATION,
        )
    try:
        core.open_with_availability(dep)
    except KeyUnavailable as exc:
        raise CmdletFailure(exc.message, SPO_SERVER) from None
    async with core.db.session() as s, s.begin():
        row = await s.get(GeoRow, geo.geo)
        if row is None:
            raise CmdletFailure(f"No geo '{code}' in this tenant.", SPO_ARGUMENT, 404)
        row.recovery_at, row.paused_at = core.now(), None
        row.roll_started_at, row.roll_key_type = None, None
    name = dep.name
    await core.alert(
        "availability-key-used", f"Microsoft recovered the geo {code.upper()} ({name}) with its availability key."
    )
    return {"geo": code.upper(), "state": "Recovery"}


async def restore(sharepoint: SharePoint, host: str, p: dict[str, Any]) -> Output:
    """Restore-SPODataEncryptionPolicy: new primary and secondary keys for a geo in recovery mode.

    Raises:
        CmdletFailure: the parameters select no set, the geo is not in recovery mode, or a key fails a check
            (nothing is stored).
    """
    core = sharepoint.core
    uris = two_keys(core.settings.vault_dns_suffix, p)
    async with core.db.session() as s:
        geo = await sharepoint.geo_of(s, host, p.get("Identity"))
        dep = await s.get(DepRow, geo.dep_guid) if geo.dep_guid else None
    if geo.recovery_at is None or dep is None:
        state = sharepoint.progress(geo, core.now()).state.value
        raise CmdletFailure(
            f"The geo {geo.geo} isn't in recovery mode (its state is {state}). Restore-SPODataEncryptionPolicy "
            f"restores a geo that Microsoft recovered after access to its keys was lost.",
            SPO_INVALID_OPERATION,
        )
    try:
        dep_key = core.open_with_availability(dep)
    except KeyUnavailable as exc:
        raise CmdletFailure(exc.message, SPO_SERVER) from None
    checks = [await core.check_key(uri, Workload.SHAREPOINT, SPO_SERVER) for uri in uris]
    wrapped = [await core.wrap_with(c.kid, dep_key, Workload.SHAREPOINT, SPO_SERVER) for c in checks]
    now = core.now()
    async with core.db.session() as s, s.begin():
        dep_row = await s.get(DepRow, dep.guid)
        geo_row = await s.get(GeoRow, geo.geo)
        if dep_row is None or geo_row is None:
            raise CmdletFailure(f"The geo {geo.geo} changed meanwhile; try again.", SPO_SERVER, 503)
        dep_row.azure_key_ids = [str(u) for u in uris]
        dep_row.key_versions = [w[0] for w in wrapped]
        dep_row.wrapped_1, dep_row.wrapped_2 = wrapped[0][1], wrapped[1][1]
        dep_row.changed_at = now
        geo_row.recovery_at = None
        geo_row.registered_at = now
        geo_row.rolls = [
            *geo_row.rolls,
            {"key_type": "Restore", "from": dep.azure_key_ids, "to": dep_row.azure_key_ids, "started_at": now},
        ]
    core.forget(dep.guid)
    return Output()
