"""Multi-workload read models: ``/api/m365/deps``, ``/api/m365/deps/{name}``, ``/api/m365/assignment``.

Answered from the inventory in SQL (:mod:`ckey.store.multiworkload`), with when each was read (``seen_at``): a page
view never asks the tenant. The multi-workload operations and ``inventory.sync`` keep it fresh; ``?refresh=true``
reads live, as the seed's "Get details about DEPs you use with multiple workloads" (Get-M365DataAtRestEncryptionPolicy)
and "Get multi-workload DEP assignment information" (Get-M365DataAtRestEncryptionPolicyAssignment) do, and writes
what it read into the inventory. An inventory never read fills itself on first use (one call each).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from ckey.api.deps import M365Dep, StoreDep, Viewer
from ckey.api.problems import Problem
from ckey.api.routes.exchange import GatewayError, _unavailable
from ckey.m365 import M365Gateway
from ckey.store.multiworkload import (
    AssignmentView,
    MultiDepView,
    MultiWorkloadStore,
    assignment_info,
    dep_info,
)

router = APIRouter(tags=["m365"])


class MultiDepRecord(BaseModel):
    """A multi-workload DEP as the inventory holds it (Get-M365DataAtRestEncryptionPolicy)."""

    name: str
    guid: str | None = None
    azure_key_ids: list[str] = Field(default_factory=list)
    description: str | None = None
    enabled: bool = True
    assigned: bool = False
    """Whether the tenant's assignment names it, as last read."""
    seen_at: datetime
    source: str | None = None
    """The operation that last read or changed it (null: a read of the API or the sync)."""


class AssignmentRecord(BaseModel):
    """The tenant's multi-workload assignment as last read (Get-M365DataAtRestEncryptionPolicyAssignment)."""

    dep: str | None = None
    """The assigned DEP (the cmdlet's ``Name``); null: none assigned."""
    properties: dict[str, Any] = Field(default_factory=dict)
    """Everything the service returned, as returned."""
    seen_at: datetime
    source: str | None = None
    assigned_at: datetime | None = None
    """When ckey assigned it (null: not by ckey, or not known)."""
    assigned_by: str | None = None
    """The ``m365.dep.assign`` operation that assigned it."""


async def _read_live(m365: M365Gateway, store: MultiWorkloadStore) -> None:
    try:
        deps = [dep_info(d) for d in await m365.get_m365_data_at_rest_encryption_policy()]
        assignment = assignment_info(await m365.get_m365_data_at_rest_encryption_policy_assignment())
    except GatewayError as exc:
        raise _unavailable(exc) from None
    now = datetime.now(UTC)
    await store.record_deps(deps, now, None)
    await store.record_assignment(assignment, now, None)


async def _current(store: MultiWorkloadStore, m365: M365Gateway, refresh: bool) -> AssignmentView | None:
    assignment = await store.assignment()
    if refresh or assignment is None:
        await _read_live(m365, store)
        assignment = await store.assignment()
    return assignment


def _record(dep: MultiDepView, assignment: AssignmentView | None) -> MultiDepRecord:
    named = (assignment.dep or "").lower() if assignment else ""
    assigned = bool(named) and named in (dep.name.lower(), (dep.guid or "").lower())
    return MultiDepRecord(**dep.model_dump(), assigned=assigned)


@router.get("/api/m365/deps", response_model=list[MultiDepRecord])
async def list_multi_deps(
    _: Viewer, store: StoreDep, m365: M365Dep, refresh: Annotated[bool, Query()] = False
) -> list[MultiDepRecord]:
    """Every multi-workload DEP, from the inventory; ``refresh=true`` (or a first use) reads the tenant."""
    inventory = MultiWorkloadStore(store)
    assignment = await _current(inventory, m365, refresh)
    return [_record(d, assignment) for d in await inventory.deps()]


@router.get("/api/m365/deps/{name}", response_model=MultiDepRecord)
async def get_multi_dep(
    _: Viewer,
    store: StoreDep,
    m365: M365Dep,
    name: Annotated[str, Path(min_length=1, max_length=128)],
    refresh: Annotated[bool, Query()] = False,
) -> MultiDepRecord:
    """One multi-workload DEP by name or GUID; 404 ``m365-dep-exists`` when the tenant has none of that name."""
    inventory = MultiWorkloadStore(store)
    assignment = await _current(inventory, m365, refresh)
    dep = await inventory.dep(name)
    if dep is None and not refresh:
        # Created since the inventory was read: one live read before answering 404.
        assignment = await _current(inventory, m365, True)
        dep = await inventory.dep(name)
    if dep is None:
        raise Problem(404, "m365-dep-exists", f"there is no multi-workload DEP named {name!r}")
    return _record(dep, assignment)


@router.get("/api/m365/assignment", response_model=AssignmentRecord)
async def get_assignment(
    _: Viewer, store: StoreDep, m365: M365Dep, refresh: Annotated[bool, Query()] = False
) -> AssignmentRecord:
    """The tenant's multi-workload assignment, from the inventory; ``refresh=true`` (or a first use) reads it."""
    assignment = await _current(MultiWorkloadStore(store), m365, refresh)
    if assignment is None:  # pragma: no cover - a live read always records one
        raise Problem(502, "tenant-answer-readable", "the tenant's assignment could not be read")
    return AssignmentRecord(**assignment.model_dump())
