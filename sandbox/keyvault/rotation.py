"""Key rotation: a new version on demand, and the rotation policy that sets its expiry."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from sandbox.keyvault import errors, material
from sandbox.keyvault.base import DAY, Store
from sandbox.keyvault.db import KeyRow
from sandbox.keyvault.keys import KeyAttributes, Keys, KeyView

_DURATION = re.compile(
    r"^P(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$"
)
_DURATION_SECONDS = {"years": 365 * DAY, "months": 30 * DAY, "weeks": 7 * DAY, "days": DAY, "hours": 3600}
_DURATION_SECONDS |= {"minutes": 60, "seconds": 1}


def duration_seconds(text: str) -> int:
    """Seconds in an ISO 8601 duration as Key Vault's rotation policies write them (``P90D``, ``P1Y``, ``PT48H``).

    Years and months count as 365 and 30 days, which is how far a sandbox needs them to be exact.

    Raises:
        ValueError: not such a duration.
    """
    match = _DURATION.match(text.strip().upper())
    if not match or text.strip().upper() in ("P", "PT"):
        raise ValueError(f"not an ISO 8601 duration: {text!r}")
    return sum(int(value) * _DURATION_SECONDS[unit] for unit, value in match.groupdict().items() if value)


def _exponent(e: str) -> int:
    return material.b64url_to_int(e) if e else 65537


class Rotation:
    """``POST /keys/{name}/rotate`` and ``PUT /keys/{name}/rotationpolicy``.

    Args:
        store: database, lock and clock.
        keys: reads the current version and adds the new one.
    """

    def __init__(self, store: Store, keys: Keys) -> None:
        self.store = store
        self.keys = keys

    async def rotate(self, vault: str, name: str) -> KeyView:
        """A new version like the current one (type, size, operations, tags); earlier versions stay usable.

        The expiry comes from the rotation policy's ``expiryTime``, if it sets one.

        Raises:
            ServiceError: KeyNotFound.
        """
        current = await self.keys.get_key(vault, name)
        v = current.version
        private = await asyncio.to_thread(
            material.generate, v.kty, size=v.key_size, crv=v.crv or "P-256", public_exponent=_exponent(v.e)
        )
        expires = None
        # One instant for both: the expiry is exactly the policy's duration after the version's creation.
        created = self.store.now()
        expiry_time = ((current.key.rotation_policy or {}).get("attributes") or {}).get("expiryTime")
        if expiry_time:
            expires = created + duration_seconds(str(expiry_time))
        return await self.keys.add_version(
            vault,
            current.key.name,
            private,
            kty=current.version.kty,
            key_ops=current.version.key_ops,
            attributes=KeyAttributes(exportable=current.version.exportable, expires=expires),
            tags=current.version.tags,
            must_exist=True,
            created=created,
        )

    async def set_rotation_policy(self, vault: str, name: str, policy: dict[str, Any]) -> KeyView:
        """Store a key's rotation policy (``lifetimeActions`` and ``attributes.expiryTime``).

        Raises:
            ServiceError: KeyNotFound; BadParameter for an unreadable policy.
        """
        view = await self.keys.get_key(vault, name)
        actions = policy.get("lifetimeActions") or []
        attributes = dict(policy.get("attributes") or {})
        if not isinstance(actions, list) or len(actions) > 2:
            raise errors.bad_parameter("lifetimeActions holds at most two actions: one rotate, one notify.")
        expiry = attributes.get("expiryTime")
        try:
            for text in [expiry] + [
                (a.get("trigger") or {}).get(t) for a in actions for t in ("timeAfterCreate", "timeBeforeExpiry")
            ]:
                if text:
                    duration_seconds(str(text))
        except (ValueError, AttributeError) as exc:
            raise errors.bad_parameter(f"The rotation policy is invalid: {exc}") from None
        now = self.store.now()
        previous = view.key.rotation_policy or {}
        stored = {
            "lifetimeActions": actions,
            "attributes": {
                **({"expiryTime": expiry} if expiry else {}),
                "created": (previous.get("attributes") or {}).get("created", now),
                "updated": now,
            },
        }
        async with self.store.lock, self.store.db.session() as s, s.begin():
            key = await s.get(KeyRow, view.key.id)
            assert key is not None
            key.rotation_policy = stored
        return KeyView(view.vault, key, view.version)
