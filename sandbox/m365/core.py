"""What every workload of the sandbox tenant shares: database, clock, durations, state, and the key hierarchy.

The key hierarchy is real (see :mod:`sandbox.m365.keys`): a DEP key opens through the first customer key, else the
second, both unwrapped by Azure Key Vault as the workload's service principal. Only when both fail with *system*
errors (5xx, throttling, unreachable) does the service use the DEP's availability key, and it records an alert when it
does; a refusal (the customer removed the permission, disabled or deleted the key) never falls back. The data purge
destroys the DEP key's copies and the availability key, after which nothing opens.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ckey.config import Settings
from sandbox.m365 import keys
from sandbox.m365.clock import SimClock
from sandbox.m365.db import AlertRow, Database, DepRow, StateRow
from sandbox.m365.durations import Durations
from sandbox.m365.errors import CmdletFailure
from sandbox.m365.vault import KeyCheck, KeyVaultAccess, VaultDenied, VaultError, VaultUnavailable
from sandbox.vocabulary import KeyUri, ServicePrincipal, Workload

DEP_KEY_CACHE_SECONDS = 60.0
"""Real seconds an unwrapped DEP key stays in memory for writes (assignments); reads of data always go to Key
Vault, so that a revoked permission shows at once."""
MICROSOFT_MANAGED = "microsoft-managed"
AVAILABILITY = "availability"


class KeyUnavailable(Exception):
    """A DEP key cannot be opened.

    Args:
        message: why, for people.
        transient: every failure was a system error (retrying may help), not a refusal.
    """

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient


@dataclass(frozen=True)
class OpenedKey:
    """A DEP key in the clear and the way it was opened."""

    key: bytes
    path: str
    """``customer-key-1``, ``customer-key-2``, ``availability-key`` or ``microsoft-managed``."""


@dataclass(frozen=True)
class NewDepKey:
    """A fresh DEP key and its copies wrapped by both customer keys (through Key Vault)."""

    key: bytes
    key_versions: list[str]
    wrapped_1: bytes
    wrapped_2: bytes


def principal_for(workload: Workload) -> str:
    """The application id that reaches a workload's customer keys."""
    return ServicePrincipal.of(workload).value


class Core:
    """State and key hierarchy shared by the workloads.

    Args:
        settings: ckey's settings (tenant, principal, data dir).
        db: the tenant's database.
        vault: Key Vault as the Microsoft 365 service principals reach it.
        durations: the service's process durations.
    """

    def __init__(self, settings: Settings, db: Database, vault: KeyVaultAccess, durations: Durations) -> None:
        self.settings = settings
        self.db = db
        self.vault = vault
        self.durations = durations
        self.clock = SimClock()
        self.lock = asyncio.Lock()
        """Serializes the tenant's read-modify-write changes (one process serves the tenant)."""
        self._root = keys.load_or_create_root_key(settings.data_dir / "keys" / "sandbox-m365-kek.bin")
        self._cache: dict[str, tuple[float, OpenedKey]] = {}
        self.tenant: dict[str, Any] = {}
        """The seeded tenant's description (FQDN, domain, geos, the Microsoft-managed DEP's GUID ...)."""

    def now(self) -> float:
        """The sandbox clock."""
        return self.clock.now()

    # State ------------------------------------------------------------------------------------------------------

    async def get_state(self, key: str, session: AsyncSession | None = None) -> dict[str, Any] | None:
        """A tenant-wide state value."""
        if session is not None:
            row = await session.get(StateRow, key)
            return dict(row.value) if row else None
        async with self.db.session() as s:
            row = await s.get(StateRow, key)
            return dict(row.value) if row else None

    async def set_state(self, key: str, value: dict[str, Any], session: AsyncSession | None = None) -> None:
        """Store a tenant-wide state value."""
        if session is not None:
            await session.merge(StateRow(key=key, value=value))
            return
        async with self.db.session() as s, s.begin():
            await s.merge(StateRow(key=key, value=value))

    async def save_clock(self) -> None:
        """Persist the clock."""
        await self.set_state("clock", self.clock.state())

    @property
    def default_dep(self) -> str:
        """The GUID of the Microsoft-managed DEP."""
        return str(self.tenant["default_dep"])

    @property
    def server(self) -> str:
        """The domain controller Exchange names in "couldn't be found" messages."""
        return str(self.tenant.get("server", "NAMPR01A001DC01.NAMPR01A001.PROD.OUTLOOK.COM"))

    # The Microsoft-managed DEP ------------------------------------------------------------------------------------

    def new_default_dep(self, now: float) -> DepRow:
        """The Microsoft-managed DEP: its key wrapped only by the service's root key."""
        guid = str(uuid.uuid4())
        dep_key = keys.new_key()
        return DepRow(
            guid=guid,
            kind=Workload.EXCHANGE.value,
            name="Microsoft-managed",
            name_lower="microsoft-managed",
            description="The data encryption policy of Microsoft-managed keys",
            wrapped_availability=keys.seal(self._root, dep_key, keys.dep_aad(guid, MICROSOFT_MANAGED)),
            is_default=True,
            created_at=now,
            changed_at=now,
        )

    def default_key(self, dep: DepRow) -> bytes:
        """The Microsoft-managed DEP's key: the service's root key opens it, no Key Vault involved."""
        if not dep.is_default or dep.wrapped_availability is None:
            raise KeyUnavailable(f"'{dep.name}' isn't the Microsoft-managed DEP", transient=False)
        return keys.unseal(self._root, dep.wrapped_availability, keys.dep_aad(dep.guid, MICROSOFT_MANAGED))

    # Customer keys ----------------------------------------------------------------------------------------------

    async def check_key(self, uri: KeyUri, workload: Workload, exception_type: str) -> KeyCheck:
        """Read a customer key as the workload's principal and check what Customer Key requires of it.

        Raises:
            CmdletFailure: the key is missing, unreadable, disabled, expired, not RSA 2048+, or without soft delete
                and purge protection (400); or Key Vault did not answer (503).
        """
        principal = principal_for(workload)
        who = f"'{ServicePrincipal(principal).display_name}' ({principal})"
        try:
            check = await self.vault.check(uri, principal)
        except VaultUnavailable as exc:
            raise CmdletFailure(
                f"Azure Key Vault didn't answer for the key '{uri}' ({exc.status or 'no answer'} {exc.code}). "
                f"Try again later.",
                exception_type,
                503,
            ) from None
        except VaultDenied as exc:
            if exc.status == 404:
                raise CmdletFailure(
                    f"The Azure Key Vault key '{uri}' doesn't exist, or its vault doesn't: {exc.message}",
                    exception_type,
                ) from None
            raise CmdletFailure(
                f"The service principal {who} can't read the Azure Key Vault key '{uri}' ({exc.code}: {exc.message}). "
                f"Grant it the get, wrapKey and unwrapKey permissions on the key.",
                exception_type,
            ) from None
        problem = None
        if not check.enabled:
            problem = "is disabled. Enable it before using it in a data encryption policy"
        elif check.expired:
            problem = "has expired. Customer keys must have no expiration date in the past"
        elif check.not_yet_valid:
            problem = "isn't active yet (its activation date is in the future)"
        elif not check.kty.startswith("RSA") or check.bits < 2048:
            problem = f"is a {check.kty} key of {check.bits} bits; Customer Key needs RSA keys of 2048 bits or more"
        elif not check.soft_delete:
            problem = (
                f"isn't protected by soft delete (recovery level '{check.recovery_level}'). Customer Key requires "
                f"soft delete and purge protection on the key vault"
            )
        elif not check.purge_protection:
            problem = (
                f"can be purged (recovery level '{check.recovery_level}'). Customer Key requires purge protection "
                f"on the key vault"
            )
        if problem:
            raise CmdletFailure(f"The Azure Key Vault key '{uri}' {problem}.", exception_type)
        return check

    async def wrap_with(self, kid: str, dep_key: bytes, workload: Workload, exception_type: str) -> tuple[str, bytes]:
        """Wrap ``dep_key`` in Key Vault with ``kid`` as the workload's principal, and prove it unwraps again.

        Raises:
            CmdletFailure: the principal lacks wrapKey or unwrapKey (400), or Key Vault did not answer (503).
        """
        principal = principal_for(workload)
        who = f"'{ServicePrincipal(principal).display_name}' ({principal})"
        step = "wrapKey"
        try:
            used, wrapped = await self.vault.wrap(kid, dep_key, principal)
            step = "unwrapKey"
            back = await self.vault.unwrap(used, wrapped, principal)
        except VaultUnavailable as exc:
            raise CmdletFailure(
                f"Azure Key Vault didn't answer {step} for the key '{kid}' ({exc.status or 'no answer'} {exc.code}). "
                f"Try again later.",
                exception_type,
                503,
            ) from None
        except VaultDenied as exc:
            raise CmdletFailure(
                f"The service principal {who} can't {step} with the Azure Key Vault key '{kid}' ({exc.code}: "
                f"{exc.message}). Grant it the get, wrapKey and unwrapKey permissions on the key.",
                exception_type,
            ) from None
        if back != dep_key:
            raise CmdletFailure(
                f"The Azure Key Vault key '{kid}' unwrapped other bytes than it wrapped.", exception_type
            )
        return used, wrapped

    async def new_dep_key(self, uris: Sequence[KeyUri], workload: Workload, exception_type: str) -> NewDepKey:
        """Check both customer keys and wrap a fresh DEP key with each, and with a fresh availability key.

        Raises:
            CmdletFailure: a key fails a check (nothing is stored).
        """
        checks = [await self.check_key(uri, workload, exception_type) for uri in uris]
        dep_key = keys.new_key()
        wrapped = [await self.wrap_with(check.kid, dep_key, workload, exception_type) for check in checks]
        return NewDepKey(dep_key, [w[0] for w in wrapped], wrapped[0][1], wrapped[1][1])

    def store_new_dep_key(self, dep: DepRow, material: NewDepKey) -> None:
        """Put a new DEP key's copies on ``dep``, and a new availability key (sealed under the service's key)."""
        availability = keys.new_key()
        dep.key_versions = list(material.key_versions)
        dep.wrapped_1 = material.wrapped_1
        dep.wrapped_2 = material.wrapped_2
        dep.availability_key = keys.seal(self._root, availability, keys.dep_aad(dep.guid, "root"))
        dep.wrapped_availability = keys.seal(availability, material.key, keys.dep_aad(dep.guid, AVAILABILITY))

    # Opening DEP keys -------------------------------------------------------------------------------------------

    def forget(self, dep_guid: str) -> None:
        """Drop a DEP key from the write cache (after a refresh, a purge step)."""
        self._cache.pop(dep_guid, None)

    async def open_dep_key(
        self, dep: DepRow, *, cached: bool = False, subject: str | None = None, record_alert: bool = True
    ) -> OpenedKey:
        """The DEP key in the clear: first customer key, second, then (system errors only) the availability key.

        Args:
            dep: the DEP.
            cached: a write may use a key opened in the last :data:`DEP_KEY_CACHE_SECONDS`.
            subject: what the key was opened for (a mailbox), for the alert.
            record_alert: record an alert when the availability key serves.

        Raises:
            KeyUnavailable: the key cannot be opened.
        """
        if dep.is_default:
            return OpenedKey(self.default_key(dep), MICROSOFT_MANAGED)
        if cached and (hit := self._cache.get(dep.guid)) and hit[0] > time.monotonic():
            return hit[1]
        workload = Workload(dep.kind)
        principal = principal_for(workload)
        failures: list[VaultError] = []
        for index, (kid, blob) in enumerate(zip(dep.key_versions, (dep.wrapped_1, dep.wrapped_2), strict=False)):
            if blob is None:
                continue
            try:
                opened = OpenedKey(await self.vault.unwrap(kid, blob, principal), f"customer-key-{index + 1}")
            except VaultError as exc:
                failures.append(exc)
                continue
            self._cache[dep.guid] = (time.monotonic() + DEP_KEY_CACHE_SECONDS, opened)
            return opened
        if not failures and dep.wrapped_availability is None:
            raise KeyUnavailable(
                f"The DEP key of '{dep.name}' was destroyed by the data purge: the data can't be decrypted.",
                transient=False,
            )
        text = "; ".join(f"{f.uri}: {f.status or 'no answer'} {f.code}" for f in failures) or "no customer key copy"
        if failures and all(isinstance(f, VaultUnavailable) for f in failures):
            if dep.wrapped_availability is not None and dep.availability_key is not None:
                availability = keys.unseal(self._root, dep.availability_key, keys.dep_aad(dep.guid, "root"))
                key = keys.unseal(availability, dep.wrapped_availability, keys.dep_aad(dep.guid, AVAILABILITY))
                if record_alert:
                    await self.alert(
                        "availability-key-used",
                        f"Both customer keys of '{dep.name}' failed with system errors ({text}); the availability "
                        f"key served.",
                        dep.guid,
                        subject,
                    )
                return OpenedKey(key, "availability-key")
            raise KeyUnavailable(
                f"Both customer keys of '{dep.name}' failed ({text}) and its availability key was deleted by the "
                f"data purge.",
                transient=False,
            )
        raise KeyUnavailable(
            f"The customer keys of '{dep.name}' refused to unwrap its DEP key ({text}); the availability key isn't "
            f"used when access is denied.",
            transient=False,
        )

    def open_with_availability(self, dep: DepRow) -> bytes:
        """The DEP key through its availability key alone (Microsoft's recovery, never a fallback).

        Raises:
            KeyUnavailable: the availability key was deleted by the data purge.
        """
        if dep.wrapped_availability is None or dep.availability_key is None:
            raise KeyUnavailable(f"The availability key of '{dep.name}' was deleted.", transient=False)
        availability = keys.unseal(self._root, dep.availability_key, keys.dep_aad(dep.guid, "root"))
        return keys.unseal(availability, dep.wrapped_availability, keys.dep_aad(dep.guid, AVAILABILITY))

    async def rewrap_dep_key(self, dep: DepRow, workload: Workload, exception_type: str) -> None:
        """Re-wrap ``dep``'s key with the latest version of each customer key (``-Refresh``).

        Raises:
            CmdletFailure: the DEP key cannot be opened, or a latest version fails a check.
        """
        try:
            opened = await self.open_dep_key(dep, record_alert=False)
        except KeyUnavailable as exc:
            raise CmdletFailure(exc.message, exception_type, 503 if exc.transient else 400) from None
        uris = [KeyUri.parse(uri).versionless for uri in dep.azure_key_ids]
        checks = [await self.check_key(uri, workload, exception_type) for uri in uris]
        wrapped = [await self.wrap_with(check.kid, opened.key, workload, exception_type) for check in checks]
        dep.key_versions = [w[0] for w in wrapped]
        dep.wrapped_1, dep.wrapped_2 = wrapped[0][1], wrapped[1][1]
        self.forget(dep.guid)

    def wrap_unit_key(self, dep_key: bytes, unit_key: bytes, unit: str, dep_guid: str) -> bytes:
        """A mailbox's or site's key wrapped by a DEP key."""
        return keys.seal(dep_key, unit_key, keys.unit_aad(unit, dep_guid))

    def unwrap_unit_key(self, dep_key: bytes, wrapped: bytes, unit: str, dep_guid: str) -> bytes:
        """The key of :meth:`wrap_unit_key`."""
        return keys.unseal(dep_key, wrapped, keys.unit_aad(unit, dep_guid))

    async def dep(self, guid: str, session: AsyncSession | None = None) -> DepRow | None:
        """A DEP by GUID (deleted ones included)."""
        if session is not None:
            return await session.get(DepRow, guid)
        async with self.db.session() as s:
            return await s.get(DepRow, guid)

    # Alerts -----------------------------------------------------------------------------------------------------

    async def alert(self, kind: str, detail: str, dep_guid: str | None = None, subject: str | None = None) -> None:
        """Record an alert."""
        async with self.db.session() as s, s.begin():
            s.add(AlertRow(at=self.now(), kind=kind, dep_guid=dep_guid, subject=subject, detail=detail))

    async def alerts(self) -> list[AlertRow]:
        """Every alert, oldest first."""
        async with self.db.session() as s:
            return list((await s.scalars(select(AlertRow).order_by(AlertRow.id))).all())
