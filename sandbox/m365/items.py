"""Reading a mailbox's or a site's sample items through the key hierarchy, as the control endpoint shows them.

Never cached: every read opens the DEP key through Key Vault (or the availability key), so that a revoked permission
or a purge shows at once.
"""

from __future__ import annotations

from typing import Any

from sandbox.m365 import keys
from sandbox.m365.core import Core, KeyUnavailable


async def read_unit(
    core: Core, subject: str, unit: str, wrapped: bytes, dep_guid: str, items: list[dict[str, Any]]
) -> dict[str, Any]:
    """Open a mailbox's or site's key through its DEP and decrypt its items; ``readable`` says whether it worked."""
    dep = await core.dep(dep_guid)
    out: dict[str, Any] = {"identity": subject, "dep": dep.name if dep else None, "dep_guid": dep_guid}
    if dep is None:
        return {**out, "readable": False, "path": None, "error": "the DEP no longer exists", "items": []}
    try:
        opened = await core.open_dep_key(dep, subject=subject)
    except KeyUnavailable as exc:
        return {**out, "readable": False, "path": None, "error": exc.message, "transient": exc.transient, "items": []}
    try:
        unit_key = core.unwrap_unit_key(opened.key, wrapped, unit, dep.guid)
        clear = keys.decrypt_items(unit_key, unit, items)
    except keys.UnwrapError as exc:
        return {**out, "readable": False, "path": opened.path, "error": str(exc), "items": []}
    return {**out, "readable": True, "path": opened.path, "error": None, "items": clear}
