"""Key rotation: a new version on demand, and the rotation policy that sets its expiry."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from sqlalchemy import func, select

from sandbox.keyvault import errors, material
from sandbox.keyvault.base import DAY, Store
from sandbox.keyvault.db import KeyRow, KeyVersionRow
from sandbox.keyvault.keys import KeyAttributes, Keys, KeyView, latest_version

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


MIN_EXPIRY_DAYS = 28
"""Azure refuses a rotation policy whose ``expiryTime`` is shorter (the SDKs document "at least 28 days")."""
MAX_CATCH_UP = 100
"""Versions one check may add to a key whose policy fell due many times over (a long clock jump)."""


def rotate_trigger(policy: dict[str, Any] | None) -> dict[str, Any] | None:
    """The trigger of a policy's ``Rotate`` action (``Notify`` sends Event Grid events, which the sandbox has not)."""
    for action in (policy or {}).get("lifetimeActions") or []:
        if str((action.get("action") or {}).get("type", "")).lower() == "rotate":
            trigger: dict[str, Any] = action.get("trigger") or {}
            return trigger
    return None


def rotation_due_at(policy: dict[str, Any] | None, version: KeyVersionRow) -> int | None:
    """When the policy rotates a key whose current version is ``version`` (None: never).

    ``timeAfterCreate`` counts from the version's creation; ``timeBeforeExpiry`` back from its expiry, or, for a
    version without one, from when the policy's ``expiryTime`` would end it.
    """
    trigger = rotate_trigger(policy)
    if trigger is None:
        return None
    if trigger.get("timeAfterCreate"):
        return version.created + duration_seconds(str(trigger["timeAfterCreate"]))
    if trigger.get("timeBeforeExpiry"):
        expires = version.expires
        expiry_time = ((policy or {}).get("attributes") or {}).get("expiryTime")
        if expires is None and expiry_time:
            expires = version.created + duration_seconds(str(expiry_time))
        if expires is not None:
            return expires - duration_seconds(str(trigger["timeBeforeExpiry"]))
    return None


def _latest_versions() -> Any:
    """Each key's current version (the highest id), as a subquery of key id and version id."""
    return (
        select(KeyVersionRow.key_id, func.max(KeyVersionRow.id).label("latest"))
        .group_by(KeyVersionRow.key_id)
        .subquery()
    )


class Rotation:
    """``POST /keys/{name}/rotate``, ``PUT /keys/{name}/rotationpolicy``, and the policies acting on the clock.

    Args:
        store: database, lock and clock.
        keys: reads the current version and adds the new one.
    """

    def __init__(self, store: Store, keys: Keys) -> None:
        self.store = store
        self.keys = keys
        # One check at a time: two requests arriving together must not both rotate the same due key.
        self._checking = asyncio.Lock()

    async def rotate(self, vault: str, name: str, *, at: int | None = None) -> KeyView:
        """A new version like the current one (type, size or curve, operations, tags); earlier ones stay usable.

        The expiry comes from the rotation policy's ``expiryTime``, if it sets one. ``at`` is the new version's
        creation time when a policy rotated it (the instant its trigger fell due); default now.

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
        created = self.store.now() if at is None else at
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

    async def rotate_due(self, vault: str | None = None) -> int:
        """Rotate every active key (of ``vault``, or all) whose policy's Rotate trigger the clock has passed.

        Each new version is created at the instant its trigger fell due, so a clock jump over several periods
        leaves the versions Azure would have made over that time. Returns how many versions were added.
        """
        if not await self._due(vault):
            return 0
        made = 0
        async with self._checking:
            # Another request may have made them meanwhile: each key is read again under the lock.
            for key in await self._due(vault):
                for _ in range(MAX_CATCH_UP):
                    async with self.store.db.session() as s:
                        due = rotation_due_at(key.rotation_policy, await latest_version(s, key))
                    if due is None or due > self.store.now():
                        break
                    try:
                        await self.rotate(key.vault_name, key.name, at=due)
                    except errors.ServiceError:  # deleted meanwhile
                        break
                    made += 1
        return made

    async def _due(self, vault: str | None) -> list[KeyRow]:
        """The active keys whose rotation is due now (one query: this runs before every data-plane request)."""
        latest = _latest_versions()
        query = (
            select(KeyRow, KeyVersionRow)
            .join(latest, latest.c.key_id == KeyRow.id)
            .join(KeyVersionRow, KeyVersionRow.id == latest.c.latest)
            .where(KeyRow.rotation_policy.is_not(None), KeyRow.deleted_at.is_(None))
        )
        if vault is not None:
            query = query.where(KeyRow.vault_name == vault.lower())
        now = self.store.now()
        async with self.store.db.session() as s:
            rows = (await s.execute(query)).all()
        due = []
        for key, version in rows:
            at = rotation_due_at(key.rotation_policy, version)
            if at is not None and at <= now:
                due.append(key)
        return due

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
        if expiry and duration_seconds(str(expiry)) < MIN_EXPIRY_DAYS * DAY:
            raise errors.bad_parameter(
                f"Invalid rotation policy: expiryTime {expiry} is shorter than the minimum of "
                f"{MIN_EXPIRY_DAYS} days (P{MIN_EXPIRY_DAYS}D)."
            )
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
