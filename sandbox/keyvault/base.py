"""What every part of the sandbox Key Vault's domain shares: the database, the write lock and the clock.

The domain is split by resource (:mod:`~sandbox.keyvault.vaults`, :mod:`~sandbox.keyvault.access`,
:mod:`~sandbox.keyvault.keys`, :mod:`~sandbox.keyvault.backup`, :mod:`~sandbox.keyvault.rotation`); each part gets
the :class:`Store` and the few collaborators it calls in ``__init__``. Everything here is independent of HTTP; the
route modules translate requests into these calls. Rule violations raise
:class:`~sandbox.keyvault.errors.ServiceError` in the shape and wording of the real service.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from sandbox.keyvault import errors
from sandbox.keyvault.db import Database, StateRow, VaultRow

DAY = 86400
UNSET: Any = object()
"""Marks an attribute an update leaves alone (``None`` clears it)."""


class VaultLookup(Protocol):
    """How the parts that work inside a vault find it (:class:`~sandbox.keyvault.vaults.Vaults` is one)."""

    async def get_vault(self, name: str) -> VaultRow | None:
        """The vault named ``name`` (case-insensitive), if there is one."""
        ...

    async def require_vault(self, name: str) -> VaultRow:
        """The vault, or a 404 in ARM's wording."""
        ...


class Store:
    """The sandbox's database, its single writer lock and its clock.

    Args:
        db: the sandbox's database.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.clock_offset = 0.0
        """Seconds the sandbox clock runs ahead of the real one (persisted)."""
        # One writer at a time keeps read-modify-write sequences (versions, policies) consistent on SQLite.
        self.lock = asyncio.Lock()
        self.clock_hooks: dict[str, Callable[[], Awaitable[int]]] = {}
        """What the clock makes happen when it moves (``rotated``: rotation policies), each answering a count."""

    async def open(self) -> bool:
        """Create the tables and load the clock; whether the database is new (never seeded)."""
        await self.db.create_all()
        clock = await self.get_state("clock")
        self.clock_offset = float(clock["offset_seconds"]) if clock else 0.0
        return await self.get_state("seeded") is None

    def now(self) -> int:
        """The sandbox clock, Unix seconds."""
        return int(time.time() + self.clock_offset)

    async def get_state(self, key: str) -> dict[str, Any] | None:
        """A service-wide state value."""
        async with self.db.session() as s:
            row = await s.get(StateRow, key)
            return row.value if row else None

    async def set_state(self, key: str, value: dict[str, Any]) -> None:
        """Set a service-wide state value."""
        async with self.db.session() as s, s.begin():
            await s.merge(StateRow(key=key, value=value))

    async def advance_clock(self, seconds: float) -> dict[str, int]:
        """Move the sandbox clock forward and run :attr:`clock_hooks`; what each hook did (name → count).

        What falls due is purged by :meth:`~sandbox.keyvault.deleted.DeletedKeys.purge_expired`.

        Raises:
            ServiceError: BadParameter for a step backwards.
        """
        if seconds < 0:
            raise errors.bad_parameter("the sandbox clock only moves forward")
        self.clock_offset += seconds
        await self.set_state("clock", {"offset_seconds": self.clock_offset})
        return {name: await hook() for name, hook in self.clock_hooks.items()}
