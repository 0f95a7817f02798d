"""``/api/operations``: start, list, show, follow and cancel operations of every registered kind."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from ckey import temporal as sa
from ckey.api.deps import Caller, ClientDep, Operator, OptionalM365Dep, SettingsDep, StoreDep, Viewer, ensure_role
from ckey.api.limits import read_body
from ckey.api.problems import Problem, validation_problem
from ckey.auth import Principal
from ckey.config import Settings
from ckey.operations import (
    AuditEvent,
    AuditRecord,
    LeaseRequest,
    OperationKind,
    OperationRecord,
    OperationState,
    OperationStatus,
    Outcome,
    request_fingerprint,
)
from ckey.store import RESERVED_PHASE, LeaseConflict, Store
from ckey.store.targets import TargetStore
from workflows import product_registry

router = APIRouter(prefix="/api/operations", tags=["operations"])

# Operation ids derived from an Idempotency-Key live in their own UUID namespace.
_IDEMPOTENCY_NAMESPACE = uuid.UUID("5b0f5a8e-3c1e-4a53-9a43-c6f1d8d3e7a1")
_QUERY_TIMEOUT = timedelta(seconds=3)
OperationId = Annotated[str, Path(min_length=1, max_length=64, description="The operation's id (op-<uuid>).")]
MAX_OFFSET = 1_000_000
"""Deepest page offset: beyond it, filter instead (and no database sees an out-of-range integer)."""
MAX_SEQ = 2**62
"""Largest audit sequence number a query may name (inside a signed 64-bit integer on every database)."""


class StartOperation(BaseModel):
    """A request to start an operation: its kind and that kind's parameters (validated by the kind's model)."""

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=100, examples=["exchange.dep.create"])
    params: dict[str, Any] = Field(default_factory=dict)


class OperationAccepted(BaseModel):
    """The operation that a start request created, or found under the same Idempotency-Key."""

    id: str
    kind: str
    state: OperationState
    replayed: bool = False
    """True when an earlier request with the same Idempotency-Key had started it."""


class KindInfo(BaseModel):
    """A registered operation kind."""

    kind: str
    role: str
    description: str
    params_schema: dict[str, Any]
    updates: list[str] = Field(default_factory=list)
    """What a running operation of the kind accepts besides cancel (``close``: ``POST /{id}/close``)."""


class CancelAccepted(BaseModel):
    """A cancellation request that was passed to the operation."""

    id: str
    state: OperationState
    cancel_requested: bool = True


def operation_id_for(user: str, idempotency_key: str | None) -> str:
    """The operation id: derived from the caller and the Idempotency-Key when there is one, random otherwise."""
    if idempotency_key is None:
        return f"op-{uuid.uuid4()}"
    name = f"{user}\n{idempotency_key}"
    return f"op-{uuid.uuid5(_IDEMPOTENCY_NAMESPACE, name)}"


@router.get("/kinds", response_model=list[KindInfo])
async def list_kinds(_: Viewer) -> list[KindInfo]:
    """The operation kinds this deployment can start, with the role each needs and its parameters' schema."""
    return [
        KindInfo(
            kind=k.name,
            role=k.role.value,
            description=k.description,
            params_schema=k.public_params.model_json_schema(),
            updates=[u.name for u in k.updates],
        )
        for k in product_registry()
    ]


IDEMPOTENCY_KEY = r"^[!-~]{1,200}$"
"""1-200 visible ASCII characters (pydantic patterns are Rust regexes: ``$`` is the end of the text)."""


@router.post(
    "",
    status_code=202,
    response_model=OperationAccepted,
    responses={413: {"description": "The body is over the limit"}, 422: {"description": "A rule was broken"}},
    # The body is read by hand (within the size limit, after authentication); its schema, one params model per kind,
    # is published by the app's OpenAPI hook (ckey.api.openapi).
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {}}}}},
)
async def start_operation(
    request: Request,
    principal: Caller,
    client: ClientDep,
    store: StoreDep,
    settings: SettingsDep,
    m365: OptionalM365Dep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY)] = None,
) -> OperationAccepted:
    """Start an operation; the same ``Idempotency-Key`` again returns the same operation.

    Every rule is checked before anything starts: an unknown kind, a parameter the kind does not have or invalid
    parameters answer 422 naming the rule, and nothing is started. Of concurrent requests with one key, exactly
    one starts the operation: the others get it back (same body) or 422 ``idempotency-key-reused``.
    """
    body = await _start_request(request, settings)
    kind = product_registry().get(body.kind)
    if kind is None:
        known = ", ".join(k.name for k in product_registry()) or "none"
        raise Problem(422, "operation-kind-known", f"unknown operation kind {body.kind!r}; known kinds: {known}")
    ensure_role(principal, kind.role, f"starting {kind.name}")
    try:
        params = kind.public_params.model_validate(body.params)
    except ValidationError as exc:
        raise validation_problem(exc, prefix=("body", "params")) from None
    fingerprint = request_fingerprint(kind.name, params.model_dump(mode="json"))
    op_id = operation_id_for(principal.user, idempotency_key)
    response.headers["Location"] = f"/api/operations/{op_id}"

    if idempotency_key is not None:
        replay = await _replay(store, client, op_id, fingerprint)
        if replay is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return replay

    # Before the claim check, which stores an inline list, so that a refused request changes nothing. An API built
    # without the Microsoft 365 gateway (some tests embed it so) leaves the check to the workflow.
    if kind.preflight is not None and m365 is not None:
        try:
            await kind.preflight(params, TargetStore(store), m365)
        except PydanticCustomError as exc:
            raise Problem(
                422, exc.type, str(exc), errors=[{"loc": ["body", "params"], "rule": exc.type, "msg": str(exc)}]
            ) from None
    if kind.claim_check is not None:
        try:
            params = await kind.claim_check(params, TargetStore(store), principal.user)
        except PydanticCustomError as exc:
            raise Problem(
                422, exc.type, str(exc), errors=[{"loc": ["body", "params"], "rule": exc.type, "msg": str(exc)}]
            ) from None
    dep = kind.dep_of(params) if kind.dep_of else None
    now = datetime.now(UTC)
    record = OperationRecord(
        id=op_id,
        kind=kind.name,
        state=OperationState.RUNNING,
        phase=RESERVED_PHASE,
        params=params.model_dump(mode="json"),
        started_by=principal.user,
        started_at=now,
        updated_at=now,
        idempotency_key=idempotency_key,
        fingerprint=fingerprint,
        dep=dep,
    )
    # The reservation: the record is inserted before the workflow starts, and its primary key lets exactly one of
    # concurrent requests for this id through; what the operation holds is leased in the same transaction.
    stored, reserved = await _reserve(store, client, record, kind.leases_of(params) if kind.leases_of else None)
    if not reserved:
        response.headers["Idempotent-Replayed"] = "true"
        return _replayed(stored, fingerprint)
    memo = {
        "kind": kind.name,
        "started_by": principal.user,
        "fingerprint": fingerprint,
        "idempotency_key": idempotency_key,
        "dep": dep,
    }
    try:
        await client.start_workflow(
            kind.workflow.run,  # type: ignore[attr-defined]
            kind.make_input(params, settings),
            id=op_id,
            task_queue=settings.temporal_task_queue,
            # A finished operation is never run again under the same id; a running one is returned as is.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            memo=memo,
            search_attributes=_search_attributes(settings, kind, principal, dep),
        )
    except WorkflowAlreadyStartedError:
        # The id ran before and its record is gone (retention, a restored database): it is never run twice.
        response.headers["Idempotent-Replayed"] = "true"
        return OperationAccepted(id=op_id, kind=kind.name, state=stored.state, replayed=True)
    except RPCError as exc:
        await store.release_operation(op_id)
        raise Problem(503, "temporal-reachable", f"the operation could not be started: {exc.message}") from None
    return OperationAccepted(id=op_id, kind=kind.name, state=OperationState.RUNNING)


STALE_RESERVATION = timedelta(minutes=2)
"""A reservation older than this whose workflow Temporal does not know was left by an API that died starting it."""


async def _reserve(
    store: Store, client: Client, record: OperationRecord, leases: LeaseRequest | None
) -> tuple[OperationRecord, bool]:
    try:
        return await store.reserve_operation(record, leases)
    except LeaseConflict as conflict:
        # A holder whose workflow has ended without its code running (terminated, timed out) never released what
        # it held: free it, once, and try again; any other holder refuses the start.
        stale = [h for h in conflict.holders if await _holder_is_gone(store, client, h.operation_id)]
        if not stale:
            raise _lease_problem(conflict) from None
        for holder in stale:
            await store.release_leases(holder.operation_id)
    try:
        return await store.reserve_operation(record, leases)
    except LeaseConflict as conflict:
        raise _lease_problem(conflict) from None


def _lease_problem(conflict: LeaseConflict) -> Problem:
    return Problem(
        409,
        "targets-leased",
        f"this operation needs targets that running operations hold (wait for them to end, or cancel them): {conflict}",
        holders=[h.operation_id for h in conflict.holders],
    )


async def _holder_is_gone(store: Store, client: Client, operation_id: str) -> bool:
    record = await store.get_operation(operation_id)
    if record is None or record.state.ended:
        return True
    try:
        description = await client.get_workflow_handle(operation_id).describe(rpc_timeout=_QUERY_TIMEOUT)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            return False  # Temporal unreachable: nothing is freed on a guess
        return record.phase != RESERVED_PHASE or datetime.now(UTC) - record.updated_at > STALE_RESERVATION
    return description.status != WorkflowExecutionStatus.RUNNING


async def _start_request(request: Request, settings: Settings) -> StartOperation:
    raw = await read_body(request, settings.api_max_body_bytes)
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise Problem(422, "json-invalid", f"the body is not JSON: {exc}") from None
    try:
        return StartOperation.model_validate(payload)
    except ValidationError as exc:
        raise validation_problem(exc, prefix=("body",)) from None


class OperationPage(BaseModel):
    """One page of operations, newest first, and how many match the filters on every page."""

    items: list[OperationRecord]
    total: int
    """Operations matching the filters, this page's included."""
    offset: int
    limit: int


ID_PREFIX = r"^[A-Za-z0-9-]{1,64}$"
"""The start of an operation id (``op-1a2b3c4d`` or ``1a2b3c4d``, as ``ckey ops list`` shows it)."""


@router.get("", response_model=OperationPage)
async def list_operations(
    _: Viewer,
    store: StoreDep,
    state: OperationState | None = None,
    kind: Annotated[str | None, Query(max_length=100)] = None,
    dep: Annotated[str | None, Query(max_length=128)] = None,
    id_prefix: Annotated[
        str | None,
        Query(
            pattern=ID_PREFIX,
            description="Only operations whose id starts so; without ``op-`` it is read after ``op-``.",
        ),
    ] = None,
    scheduled: Annotated[
        bool | None,
        Query(description="true: only runs a Temporal Schedule started; false: only the ones people started."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> OperationPage:
    """Operations, newest first, filtered by state, kind, DEP, id prefix and starter: one page and the total."""
    prefix = None if id_prefix is None else id_prefix if id_prefix.startswith("op-") else f"op-{id_prefix}"
    filters: dict[str, Any] = {"state": state, "kind": kind, "dep": dep, "id_prefix": prefix, "scheduled": scheduled}
    items = await store.list_operations(**filters, limit=limit, offset=offset)
    total = await store.count_operations(**filters)
    return OperationPage(items=items, total=total, offset=offset, limit=limit)


@router.get("/{operation_id}", response_model=OperationRecord)
async def get_operation(operation_id: OperationId, _: Viewer, store: StoreDep, client: ClientDep) -> OperationRecord:
    """One operation; while it runs, its phase and progress come live from the workflow."""
    record = await _must_get(store, operation_id)
    if record.state.ended:
        return record
    live = await _live_status(client.get_workflow_handle(operation_id))
    if live is None:
        return record
    return record.model_copy(
        update={
            # An end is shown once the store has it, with its result or error, never from the query alone.
            "state": record.state if live.state.ended else live.state,
            "phase": live.phase,
            "progress": live.progress,
            "escalations": live.escalations,
            "gates": live.gates,
            "updated_at": max(record.updated_at, live.updated_at or record.updated_at),
        }
    )


@router.get("/{operation_id}/events", response_model=list[AuditRecord])
async def list_operation_events(
    operation_id: OperationId,
    _: Viewer,
    store: StoreDep,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Only events after this sequence number.")] = 0,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
) -> list[AuditRecord]:
    """The operation's audit timeline, in order."""
    await _must_get(store, operation_id)
    return await store.list_audit(operation_id=operation_id, after_seq=after, limit=limit)


@router.post("/{operation_id}/cancel", status_code=202, response_model=CancelAccepted)
async def cancel_operation(
    operation_id: OperationId, principal: Operator, store: StoreDep, client: ClientDep
) -> CancelAccepted:
    """Ask a running operation to cancel. It records who asked; steps past a point of no return refuse."""
    record = await _must_get(store, operation_id)
    if record.state.ended:
        raise Problem(409, "operation-ended", f"operation {operation_id} has already {record.state.value}")
    handle = client.get_workflow_handle(operation_id)
    try:
        # The record may lag behind a workflow that has just ended: ask Temporal, so that a cancel of an ended
        # operation is refused without adding a request to its audit trail.
        description = await handle.describe()
    except RPCError as exc:
        raise Problem(409, "operation-ended", f"operation {operation_id} cannot be cancelled: {exc.message}") from None
    if description.status != WorkflowExecutionStatus.RUNNING:
        status = description.status.name.lower() if description.status else "ended"
        raise Problem(409, "operation-ended", f"operation {operation_id} has already ended ({status})")
    await _audit_cancel_request(store, principal, operation_id)
    try:
        await handle.cancel()
    except RPCError as exc:
        raise Problem(409, "operation-ended", f"operation {operation_id} cannot be cancelled: {exc.message}") from None
    return CancelAccepted(id=operation_id, state=record.state)


class CloseOperation(BaseModel):
    """Why an operator ends a follow-up before it is complete."""

    reason: str = Field(min_length=1, max_length=500)


@router.post("/{operation_id}/close", response_model=dict[str, Any])
async def close_operation(
    operation_id: OperationId, body: CloseOperation, principal: Operator, store: StoreDep, client: ClientDep
) -> dict[str, Any]:
    """End a follow-up (mailboxes still encrypting, escalated) now; it finishes with what it reached.

    Only kinds that declare a ``close`` update (:attr:`ckey.operations.OperationKind.updates`) can be closed.
    """
    record = await _must_get(store, operation_id)
    kind = product_registry().get(record.kind)
    update = kind.update("close") if kind is not None else None
    if update is None:
        raise Problem(409, "operation-closable", f"a {record.kind} operation has no follow-up to close; cancel it")
    ensure_role(principal, update.role)
    if record.state.ended:
        raise Problem(409, "operation-ended", f"operation {operation_id} has already {record.state.value}")
    handle = client.get_workflow_handle(operation_id)
    try:
        # The name comes from the workflow's own @workflow.update definition, not from a literal here.
        result = await handle.execute_update(
            update.name, {"reason": body.reason, "by": principal.user}, result_type=update.result_model
        )
    except WorkflowUpdateFailedError as exc:
        cause = getattr(exc.cause, "message", None) or str(exc.cause or exc)
        raise Problem(409, "operation-closable", cause) from None
    except RPCError as exc:
        raise Problem(409, "operation-closable", f"operation {operation_id} cannot be closed: {exc.message}") from None
    answer: dict[str, Any] = result.model_dump(mode="json") if isinstance(result, BaseModel) else dict(result)
    return answer


async def _audit_cancel_request(store: Store, principal: Principal, operation_id: str) -> None:
    now = datetime.now(UTC)
    await store.append_audit(
        AuditEvent(
            key=f"{operation_id}/cancel-requested/{uuid.uuid4()}",
            at=now,
            actor=principal.user,
            action="operation.cancel_requested",
            outcome=Outcome.INFO,
            operation_id=operation_id,
            target=f"POST /api/operations/{operation_id}/cancel",
        )
    )


async def _must_get(store: Store, operation_id: str) -> OperationRecord:
    record = await store.get_operation(operation_id)
    if record is None:
        raise Problem(404, "operation-exists", f"no operation {operation_id}")
    return record


async def _replay(store: Store, client: Client, op_id: str, fingerprint: str) -> OperationAccepted | None:
    """The operation an earlier request with the same key started, or None; 422 if that request differed."""
    record = await store.get_operation(op_id)
    if record is not None:
        earlier = record.fingerprint or request_fingerprint(record.kind, record.params)
        kind, state = record.kind, record.state
    else:
        try:
            desc = await client.get_workflow_handle(op_id).describe()
        except RPCError:
            return None
        memo = await desc.memo()
        earlier, kind, state = memo.get("fingerprint", ""), memo.get("kind", ""), OperationState.RUNNING
    if earlier != fingerprint:
        raise _key_reused()
    return OperationAccepted(id=op_id, kind=kind, state=state, replayed=True)


def _replayed(record: OperationRecord, fingerprint: str) -> OperationAccepted:
    """The operation another request with the same key reserved: a replay if it asked the same, else 422."""
    if (record.fingerprint or request_fingerprint(record.kind, record.params)) != fingerprint:
        raise _key_reused()
    return OperationAccepted(id=record.id, kind=record.kind, state=record.state, replayed=True)


def _key_reused() -> Problem:
    return Problem(
        422,
        "idempotency-key-reused",
        "this Idempotency-Key was already used for a different request; use a new key for a new operation",
    )


async def _live_status(handle: WorkflowHandle[Any, Any]) -> OperationStatus | None:
    try:
        status: OperationStatus = await handle.query(
            "progress", result_type=OperationStatus, rpc_timeout=_QUERY_TIMEOUT
        )
    except Exception:  # no worker at the moment, or the workflow just closed: the stored record stands
        return None
    return status


def _search_attributes(
    settings: Settings, kind: OperationKind, principal: Principal, dep: str | None
) -> TypedSearchAttributes | None:
    if not settings.temporal_search_attributes:
        return None
    pairs = [
        SearchAttributePair(sa.KIND, kind.name),
        SearchAttributePair(sa.STATE, OperationState.RUNNING.value),
        SearchAttributePair(sa.STARTED_BY, principal.user),
    ]
    if dep:
        pairs.append(SearchAttributePair(sa.DEP, dep))
    return TypedSearchAttributes(pairs)
