"""The inventory in SQL: recipients, DEPs and keys as last read from the tenant and the vaults.

The read side of ckey answers from here (``/api/mailboxes``, ``/api/deps``, the dashboard), with the time the data
was read (``as_of``), and never asks the tenant on a page view. ``inventory.sync`` fills it with bulk cmdlets on a
Temporal Schedule; every assignment, status round and health check updates the rows it touches as it happens.

Identities are compared in lower case, as Exchange compares them; a recipient is found by its identity or its UPN.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ckey.audit import as_utc
from ckey.m365 import DataEncryptionPolicy
from ckey.models import VaultSummary
from ckey.store.schema import InventoryDepRow, InventoryKeyRow, InventorySyncRow, InventoryVaultRow, RecipientRow

if TYPE_CHECKING:
    from ckey.store import Store

BATCH = 1000
"""Rows per statement when writing a page of the tenant's answer."""
MAIL_USER = "mailuser"


class RecipientSeen(BaseModel):
    """A recipient as Get-Mailbox or Get-MailUser lists it."""

    identity: str
    recipient_type: str | None = None
    user_principal_name: str | None = None
    dep: str | None = None


class RecipientStatus(BaseModel):
    """What Get-MailboxStatistics said about a mailbox."""

    identity: str
    is_encrypted: bool
    dep_guid: str | None = None


class RecipientView(BaseModel):
    """A recipient in the inventory."""

    identity: str
    recipient_type: str | None = None
    user_principal_name: str | None = None
    dep: str | None = None
    dep_guid: str | None = None
    is_encrypted: bool | None = None
    """Encrypted under its assigned DEP (Get-MailboxStatistics); null for a mail user or when not read yet."""
    encrypted_with: str | None = None
    status_at: datetime | None = None
    seen_at: datetime
    updated_at: datetime
    source: str | None = None

    @property
    def is_mail_user(self) -> bool:
        """Whether it is a mail user (no mailbox in Exchange Online yet: it encrypts on migration)."""
        return (self.recipient_type or "").lower() == MAIL_USER


class DepView(BaseModel):
    """A DEP as the inventory last saw it."""

    workload: str
    name: str
    guid: str | None = None
    azure_key_ids: list[str] = Field(default_factory=list)
    enabled: bool = True
    purge_requested: bool = False
    seen_at: datetime
    source: str | None = None


def dep_view(workload: str, dep: DataEncryptionPolicy, at: datetime, source: str | None) -> DepView:
    """A DEP as Get-DataEncryptionPolicy reported it, for the inventory."""
    return DepView(
        workload=workload,
        name=dep.name,
        guid=dep.guid,
        azure_key_ids=dep.azure_key_ids,
        enabled=dep.enabled,
        purge_requested=dep.permanent_data_purge_requested,
        seen_at=at,
        source=source,
    )


class KeyHealthView(BaseModel):
    """A key in use and its health as last checked."""

    key_id: str
    vault: str
    healthy: bool | None = None
    problems: list[str] = Field(default_factory=list)
    checked_at: datetime | None = None
    source: str | None = None


@dataclass
class RecipientPage:
    """One page of recipients, their total under the filter, and when the list was last read whole."""

    items: list[RecipientView]
    total: int
    as_of: datetime | None


def _key(identity: str) -> str:
    return identity.strip().lower()


def _view(row: RecipientRow) -> RecipientView:
    return RecipientView(
        identity=row.identity,
        recipient_type=row.recipient_type,
        user_principal_name=row.user_principal_name,
        dep=row.dep,
        dep_guid=row.dep_guid,
        is_encrypted=row.is_encrypted,
        encrypted_with=row.encrypted_with,
        status_at=as_utc(row.status_at) if row.status_at else None,
        seen_at=as_utc(row.seen_at),
        updated_at=as_utc(row.updated_at),
        source=row.source,
    )


def _encrypted_under(is_encrypted: bool | None, encrypted_with: str | None, dep_guid: str | None) -> bool | None:
    """Whether a mailbox is encrypted under its assigned DEP.

    The statistics' GUID must be the assigned DEP's: a mailbox moved to a new DEP stays encrypted under the old one
    until Microsoft re-wraps it.
    """
    if is_encrypted is None:
        return None
    if not is_encrypted:
        return False
    if dep_guid is None or encrypted_with is None:
        return is_encrypted
    return encrypted_with.lower() == dep_guid.lower()


def _insert(session: AsyncSession, table: Any) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


class InventoryStore:
    """Reads and writes of the inventory tables."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # Recipients ------------------------------------------------------------------------------------------------

    async def _existing(self, session: AsyncSession, keys: Sequence[str]) -> dict[str, RecipientRow]:
        rows = await session.execute(select(RecipientRow).where(RecipientRow.key.in_(keys)))
        return {row.key: row for row in rows.scalars()}

    async def record_seen(
        self, recipients: Sequence[RecipientSeen], dep_guids: dict[str, str], at: datetime, source: str | None
    ) -> int:
        """Write recipients as the tenant listed them; ``dep_guids`` maps DEP names (lower case) to GUIDs.

        A recipient whose assigned DEP changed keeps its last status, which then counts as encrypted only under the
        DEP it names (see :func:`_encrypted_under`).
        """
        written = 0
        for start in range(0, len(recipients), BATCH):
            batch = {_key(r.identity): r for r in recipients[start : start + BATCH]}
            async with self.store.transaction() as session:
                existing = await self._existing(session, list(batch))
                for key, seen in batch.items():
                    dep_guid = dep_guids.get(seen.dep.lower()) if seen.dep else None
                    row = existing.get(key)
                    values: dict[str, Any] = {
                        "identity": seen.identity,
                        "recipient_type": seen.recipient_type,
                        "user_principal_name": seen.user_principal_name,
                        "upn_key": _key(seen.user_principal_name) if seen.user_principal_name else None,
                        "dep": seen.dep,
                        "dep_key": seen.dep.lower() if seen.dep else None,
                        "dep_guid": dep_guid,
                        "seen_at": at,
                    }
                    # A mailbox without a DEP is not under a Customer Key (IsEncrypted reports DEP encryption);
                    # a mail user has no statistics at all.
                    unassigned = (
                        False if seen.dep is None and (seen.recipient_type or "").lower() != MAIL_USER else None
                    )
                    if row is None:
                        session.add(
                            RecipientRow(key=key, updated_at=at, source=source, is_encrypted=unassigned, **values)
                        )
                        continue
                    if (row.dep_guid or "").lower() != (dep_guid or "").lower() or row.dep != seen.dep:
                        values["is_encrypted"] = (
                            unassigned
                            if seen.dep is None
                            else _encrypted_under(
                                row.is_encrypted if row.encrypted_with else None, row.encrypted_with, dep_guid
                            )
                        )
                        values["updated_at"], values["source"] = at, source
                    for name, value in values.items():
                        setattr(row, name, value)
                written += len(batch)
        return written

    async def forget_unseen(self, before: datetime) -> int:
        """Remove the recipients a complete listing started at ``before`` no longer showed (deleted, renamed)."""
        async with self.store.transaction() as session:
            result = await session.execute(delete(RecipientRow).where(RecipientRow.seen_at < before))
            return int(getattr(result, "rowcount", 0) or 0)

    async def record_assignment(
        self,
        identities: Sequence[str],
        dep: str,
        dep_guid: str | None,
        at: datetime,
        source: str | None,
        mail_users: Iterable[str] = (),
    ) -> None:
        """An operation assigned ``dep`` to ``identities`` (as named: identity or UPN).

        ``mail_users`` names those of them the operation knows to be mail users (Set-MailUser), so that a recipient
        the inventory has not listed yet is shown with its kind.
        """
        users = {_key(i) for i in mail_users}
        keys = [_key(i) for i in identities]
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            async with self.store.transaction() as session:
                rows = await session.execute(
                    select(RecipientRow).where(or_(RecipientRow.key.in_(chunk), RecipientRow.upn_key.in_(chunk)))
                )
                found = {*()}
                for row in rows.scalars():
                    found.update({row.key, row.upn_key})
                    row.is_encrypted = _encrypted_under(
                        row.is_encrypted if row.encrypted_with else None, row.encrypted_with, dep_guid
                    )
                    row.dep, row.dep_key, row.dep_guid = dep, dep.lower(), dep_guid
                    row.updated_at, row.source = at, source
                for key, identity in zip(chunk, identities[start : start + BATCH], strict=True):
                    if key not in found:  # not listed yet: the next sync fills in its type and UPN
                        session.add(
                            RecipientRow(
                                key=key,
                                identity=identity,
                                recipient_type="MailUser" if key in users else "UserMailbox",
                                dep=dep,
                                dep_key=dep.lower(),
                                dep_guid=dep_guid,
                                seen_at=at,
                                updated_at=at,
                                source=source,
                            )
                        )

    async def record_status(self, statuses: Sequence[RecipientStatus], at: datetime, source: str | None) -> None:
        """Get-MailboxStatistics answers: IsEncrypted and the DEP GUID the data is encrypted with."""
        by_key = {_key(s.identity): s for s in statuses}
        keys = list(by_key)
        for start in range(0, len(keys), BATCH):
            chunk = keys[start : start + BATCH]
            async with self.store.transaction() as session:
                rows = await session.execute(
                    select(RecipientRow).where(or_(RecipientRow.key.in_(chunk), RecipientRow.upn_key.in_(chunk)))
                )
                for row in rows.scalars():
                    status = by_key.get(row.key) or by_key.get(row.upn_key or "")
                    if status is None:
                        continue
                    row.encrypted_with = status.dep_guid
                    row.is_encrypted = _encrypted_under(status.is_encrypted, status.dep_guid, row.dep_guid)
                    if row.dep_guid is None and status.dep_guid is not None:
                        row.dep_guid = status.dep_guid
                    row.status_at, row.updated_at, row.source = at, at, source

    async def needing_status(self, limit: int) -> list[str]:
        """Mailboxes with a DEP, not yet known encrypted under it, least recently read first.

        These are the ones a sync reads statistics for.
        """
        async with self.store.session() as session:
            rows = await session.execute(
                select(RecipientRow.identity)
                .where(
                    RecipientRow.dep_key.is_not(None),
                    or_(RecipientRow.recipient_type.is_(None), func.lower(RecipientRow.recipient_type) != MAIL_USER),
                    or_(RecipientRow.is_encrypted.is_(None), RecipientRow.is_encrypted.is_(False)),
                )
                .order_by(RecipientRow.status_at.is_not(None), RecipientRow.status_at, RecipientRow.key)
                .limit(limit)
            )
            return list(rows.scalars())

    async def page(
        self, *, dep: str | None = None, encrypted: bool | None = None, offset: int = 0, limit: int = 50
    ) -> RecipientPage:
        """Recipients in identity order, filtered by assigned DEP (name) and encrypted or not."""
        where: list[Any] = []
        if dep is not None:
            where.append(RecipientRow.dep_key == dep.lower())
        if encrypted is not None:
            where.append(RecipientRow.is_encrypted.is_(encrypted))
        async with self.store.session() as session:
            total = (await session.execute(select(func.count()).select_from(RecipientRow).where(*where))).scalar_one()
            # A deferred join: the page's keys come from the (covering) index alone, however deep the offset, and
            # only those rows are read whole.
            keys = select(RecipientRow.key).where(*where).order_by(RecipientRow.key).offset(offset).limit(limit)
            rows = await session.execute(
                select(RecipientRow).where(RecipientRow.key.in_(keys.scalar_subquery())).order_by(RecipientRow.key)
            )
            items = [_view(row) for row in rows.scalars()]
            as_of = await self._as_of(session, "recipients")
        return RecipientPage(items=items, total=int(total), as_of=as_of)

    async def get(self, identity: str) -> RecipientView | None:
        """One recipient by identity or UPN."""
        key = _key(identity)
        async with self.store.session() as session:
            rows = await session.execute(
                select(RecipientRow).where(or_(RecipientRow.key == key, RecipientRow.upn_key == key)).limit(1)
            )
            row = rows.scalar_one_or_none()
            return _view(row) if row is not None else None

    async def known(self, identities: Iterable[str]) -> set[str]:
        """Which of ``identities`` (lower case) the inventory lists, by identity or UPN."""
        keys = sorted({_key(i) for i in identities})
        found: set[str] = set()
        async with self.store.session() as session:
            for start in range(0, len(keys), BATCH):
                chunk = keys[start : start + BATCH]
                rows = await session.execute(
                    select(RecipientRow.key, RecipientRow.upn_key).where(
                        or_(RecipientRow.key.in_(chunk), RecipientRow.upn_key.in_(chunk))
                    )
                )
                for key, upn_key in rows.all():
                    found.update(k for k in (key, upn_key) if k in chunk)
        return found

    # DEPs ------------------------------------------------------------------------------------------------------

    async def record_deps(self, workload: str, deps: Sequence[DepView], at: datetime, source: str | None) -> None:
        """Replace a workload's DEPs with a complete listing."""
        async with self.store.transaction() as session:
            await session.execute(delete(InventoryDepRow).where(InventoryDepRow.workload == workload))
            for dep in deps:
                values = dep.model_dump(exclude={"workload", "seen_at", "source"})
                session.add(
                    InventoryDepRow(workload=workload, key=dep.name.lower(), seen_at=at, source=source, **values)
                )

    async def record_dep(self, dep: DepView) -> None:
        """One DEP created or changed by an operation."""
        async with self.store.transaction() as session:
            statement = _insert(session, InventoryDepRow).values(key=dep.name.lower(), **dep.model_dump())
            columns = dep.model_dump(exclude={"workload"})
            await session.execute(statement.on_conflict_do_update(index_elements=["workload", "key"], set_=columns))

    async def deps(self, workload: str | None = None) -> list[DepView]:
        """The DEPs the inventory holds, by workload and name."""
        async with self.store.session() as session:
            query = select(InventoryDepRow).order_by(InventoryDepRow.workload, InventoryDepRow.key)
            if workload is not None:
                query = query.where(InventoryDepRow.workload == workload)
            rows = await session.execute(query)
            return [
                DepView(
                    workload=r.workload,
                    name=r.name,
                    guid=r.guid,
                    azure_key_ids=list(r.azure_key_ids),
                    enabled=r.enabled,
                    purge_requested=r.purge_requested,
                    seen_at=as_utc(r.seen_at),
                    source=r.source,
                )
                for r in rows.scalars()
            ]

    async def find_dep(self, workload: str, name_or_guid: str) -> DepView | None:
        """A DEP by name (any case) or GUID."""
        wanted = name_or_guid.strip().lower()
        for dep in await self.deps(workload):
            if dep.name.lower() == wanted or (dep.guid or "").lower() == wanted:
                return dep
        return None

    # Keys ------------------------------------------------------------------------------------------------------

    async def record_key_health(self, health: KeyHealthView) -> None:
        """A key's health as a check found it."""
        async with self.store.transaction() as session:
            statement = _insert(session, InventoryKeyRow).values(**health.model_dump())
            await session.execute(
                statement.on_conflict_do_update(index_elements=["key_id"], set_=health.model_dump(exclude={"key_id"}))
            )

    async def keys(self) -> list[KeyHealthView]:
        """Every key the inventory holds, with its last health."""
        async with self.store.session() as session:
            rows = await session.execute(select(InventoryKeyRow).order_by(InventoryKeyRow.key_id))
            return [
                KeyHealthView(
                    key_id=r.key_id,
                    vault=r.vault,
                    healthy=r.healthy,
                    problems=list(r.problems),
                    checked_at=as_utc(r.checked_at) if r.checked_at else None,
                    source=r.source,
                )
                for r in rows.scalars()
            ]

    # Vaults ----------------------------------------------------------------------------------------------------

    async def record_vaults(self, vaults: Sequence[VaultSummary], at: datetime, source: str | None) -> None:
        """Replace the vaults with a complete listing, and mark it as of ``at``."""
        async with self.store.transaction() as session:
            await session.execute(delete(InventoryVaultRow))
            for vault in vaults:
                session.add(
                    InventoryVaultRow(
                        key=vault.name.lower(),
                        summary=vault.model_dump(mode="json", exclude={"seen_at"}),
                        seen_at=at,
                        source=source,
                    )
                )
        await self.mark_synced("vaults", at, source, len(vaults))

    async def vaults(self) -> list[VaultSummary]:
        """The vaults the inventory holds, by name, each with when it was read."""
        async with self.store.session() as session:
            rows = await session.execute(select(InventoryVaultRow).order_by(InventoryVaultRow.key))
            return [VaultSummary.model_validate({**r.summary, "seen_at": as_utc(r.seen_at)}) for r in rows.scalars()]

    # Sync marks ------------------------------------------------------------------------------------------------

    async def mark_synced(self, scope: str, at: datetime, operation_id: str | None, count: int) -> None:
        """A complete read of ``scope`` (``recipients``, ``deps:<workload>``) finished; its data is as of ``at``."""
        async with self.store.transaction() as session:
            statement = _insert(session, InventorySyncRow).values(
                scope=scope, as_of=at, operation_id=operation_id, count=count
            )
            await session.execute(
                statement.on_conflict_do_update(
                    index_elements=["scope"], set_={"as_of": at, "operation_id": operation_id, "count": count}
                )
            )

    async def as_of(self, scope: str) -> datetime | None:
        """When ``scope`` was last read whole, or ``None`` if never."""
        async with self.store.session() as session:
            return await self._as_of(session, scope)

    async def _as_of(self, session: AsyncSession, scope: str) -> datetime | None:
        row = await session.get(InventorySyncRow, scope)
        return as_utc(row.as_of) if row is not None else None


__all__ = [
    "DepView",
    "InventoryStore",
    "KeyHealthView",
    "RecipientPage",
    "RecipientSeen",
    "RecipientStatus",
    "RecipientView",
]
