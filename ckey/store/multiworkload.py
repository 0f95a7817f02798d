"""The multi-workload part of the inventory: the tenant's multi-workload DEPs and its one assignment.

``/api/m365/deps`` and ``/api/m365/assignment`` answer from here; the multi-workload operations write what they read
and change as they go, and ``refresh_multi_workload`` (wired into ``inventory.sync``) reads the whole of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import String, Text, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from ckey.audit import as_utc
from ckey.m365 import (
    CmdletError,
    M365DataAtRestEncryptionPolicy,
    M365DataAtRestEncryptionPolicyAssignment,
    M365Gateway,
    TransientError,
)
from ckey.models import rule_error
from ckey.store.inventory import _insert
from ckey.store.schema import Base
from contracts.m365 import AssignmentInfo, MultiDepInfo, assigned_refusal

if TYPE_CHECKING:
    from ckey.store import Store
    from ckey.store.targets import TargetStore

TENANT = "tenant"
"""The key of the one assignment row."""


def dep_info(dep: M365DataAtRestEncryptionPolicy) -> MultiDepInfo:
    """Get-M365DataAtRestEncryptionPolicy's object as ckey keeps it."""
    return MultiDepInfo(
        name=dep.name,
        guid=dep.guid,
        azure_key_ids=dep.azure_key_ids,
        description=dep.description,
        enabled=dep.enabled,
    )


def assignment_info(found: M365DataAtRestEncryptionPolicyAssignment | None) -> AssignmentInfo:
    """Get-M365DataAtRestEncryptionPolicyAssignment's answer: the DEP it names, and every property returned."""
    if found is None:
        return AssignmentInfo()
    return AssignmentInfo(dep=found.dep, properties=found.model_dump(mode="json", by_alias=True, exclude_none=True))


class MultiDepRow(Base):
    """A multi-workload DEP as the tenant last reported it."""

    __tablename__ = "m365_deps"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    """The name in lower case."""
    name: Mapped[str] = mapped_column(String(128))
    guid: Mapped[str | None] = mapped_column(String(64), default=None)
    azure_key_ids: Mapped[list[Any]] = mapped_column(default=list)
    description: Mapped[str | None] = mapped_column(Text, default=None)
    enabled: Mapped[bool] = mapped_column(default=True)
    seen_at: Mapped[datetime]
    source: Mapped[str | None] = mapped_column(String(64), default=None)


class MultiAssignmentRow(Base):
    """The tenant's multi-workload assignment as last read (one row)."""

    __tablename__ = "m365_assignment"

    scope: Mapped[str] = mapped_column(String(16), primary_key=True)
    dep: Mapped[str | None] = mapped_column(String(128), default=None)
    properties: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seen_at: Mapped[datetime]
    source: Mapped[str | None] = mapped_column(String(64), default=None)
    assigned_at: Mapped[datetime | None] = mapped_column(default=None)
    """When ckey assigned the DEP it shows (None: not by ckey, or not known)."""
    assigned_by: Mapped[str | None] = mapped_column(String(64), default=None)
    """The operation that assigned it."""


class MultiDepView(MultiDepInfo):
    """A multi-workload DEP in the inventory, with when it was read and by which operation."""

    seen_at: datetime
    source: str | None = None


class AssignmentView(BaseModel):
    """The tenant's multi-workload assignment in the inventory."""

    dep: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    seen_at: datetime
    source: str | None = None
    assigned_at: datetime | None = None
    assigned_by: str | None = None


class MultiWorkloadStore:
    """Reads and writes of the multi-workload inventory."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def record_deps(self, deps: Sequence[MultiDepInfo], at: datetime, source: str | None) -> None:
        """Replace the DEPs with a complete listing."""
        async with self.store.transaction() as session:
            await session.execute(delete(MultiDepRow))
            for dep in deps:
                session.add(MultiDepRow(key=dep.name.lower(), seen_at=at, source=source, **dep.model_dump()))

    async def record_dep(self, dep: MultiDepInfo, at: datetime, source: str | None) -> None:
        """One DEP created or changed by an operation."""
        values = {**dep.model_dump(), "seen_at": at, "source": source}
        async with self.store.transaction() as session:
            statement = _insert(session, MultiDepRow).values(key=dep.name.lower(), **values)
            await session.execute(statement.on_conflict_do_update(index_elements=["key"], set_=values))

    async def deps(self) -> list[MultiDepView]:
        """Every multi-workload DEP the inventory holds, by name."""
        async with self.store.session() as session:
            rows = (await session.execute(select(MultiDepRow).order_by(MultiDepRow.key))).scalars()
            return [_dep_view(r) for r in rows]

    async def dep(self, name_or_guid: str) -> MultiDepView | None:
        """A DEP by name (any case) or GUID."""
        wanted = name_or_guid.strip().lower()
        return next((d for d in await self.deps() if wanted in (d.name.lower(), (d.guid or "").lower())), None)

    async def record_assignment(
        self, info: AssignmentInfo, at: datetime, source: str | None, *, assigned_at: datetime | None = None
    ) -> None:
        """What the tenant reports as assigned; ``assigned_at``: ckey has just assigned it (``source`` did)."""
        async with self.store.transaction() as session:
            row = await session.get(MultiAssignmentRow, TENANT)
            if row is None:
                row = MultiAssignmentRow(scope=TENANT, seen_at=at)
                session.add(row)
            elif (row.dep or "").lower() != (info.dep or "").lower():
                # Another DEP than the one ckey assigned: when and by whom is not known.
                row.assigned_at = row.assigned_by = None
            row.dep, row.properties, row.seen_at, row.source = info.dep, info.properties, at, source
            if assigned_at is not None:
                row.assigned_at, row.assigned_by = assigned_at, source

    async def assignment(self) -> AssignmentView | None:
        """The assignment as last read (None: never read)."""
        async with self.store.session() as session:
            row = await session.get(MultiAssignmentRow, TENANT)
            if row is None:
                return None
            return AssignmentView(
                dep=row.dep,
                properties=dict(row.properties),
                seen_at=as_utc(row.seen_at),
                source=row.source,
                assigned_at=as_utc(row.assigned_at) if row.assigned_at else None,
                assigned_by=row.assigned_by,
            )


def _dep_view(row: MultiDepRow) -> MultiDepView:
    return MultiDepView(
        name=row.name,
        guid=row.guid,
        azure_key_ids=list(row.azure_key_ids),
        description=row.description,
        enabled=row.enabled,
        seen_at=as_utc(row.seen_at),
        source=row.source,
    )


# Preflights: the API refuses what can do nothing, before anything starts --------------------------------------------


async def _live(m365: M365Gateway, dep: str) -> tuple[MultiDepInfo | None, AssignmentInfo] | None:
    """The DEP and the assignment as the tenant reports them now.

    None when the tenant can't be read: the request starts, and the workflow's own checks refuse the same way.
    """
    try:
        found = await m365.get_m365_data_at_rest_encryption_policy(dep)
        assignment = assignment_info(await m365.get_m365_data_at_rest_encryption_policy_assignment())
    except CmdletError as exc:
        if exc.code == "ManagementObjectNotFoundException" or "couldn't be found" in exc.message.lower():
            return None, AssignmentInfo()
        return None
    except (TransientError, ValueError):
        return None
    return (dep_info(found[0]) if found else None), assignment


async def preflight_assign(params: BaseModel, targets: TargetStore, m365: M365Gateway) -> None:
    """Refuse assigning an unknown or disabled multi-workload DEP (``m365-dep-exists``, ``m365-dep-enabled``)."""
    name = str(getattr(params, "dep", ""))
    live = await _live(m365, name)
    if live is None:
        return
    dep, _ = live
    if dep is None:
        raise rule_error("m365-dep-exists", f"there is no multi-workload DEP named {name!r}")
    if not dep.enabled:
        raise rule_error(
            "m365-dep-enabled", f"multi-workload DEP {dep.name!r} is disabled: enable it before assigning it"
        )


async def preflight_disable(params: BaseModel, targets: TargetStore, m365: M365Gateway) -> None:
    """Refuse disabling an unknown DEP, or the tenant's assigned one (``m365-dep-assigned``, naming the ways out)."""
    name = str(getattr(params, "dep", ""))
    live = await _live(m365, name)
    if live is None:
        return
    dep, assignment = live
    if dep is None:
        raise rule_error("m365-dep-exists", f"there is no multi-workload DEP named {name!r}")
    if assignment.names(dep):
        raise rule_error("m365-dep-assigned", assigned_refusal(dep.name))
