"""``/api/audit``: the audit trail, its verification, its signed checkpoints and the key that verifies them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from ckey.api.deps import StoreDep, Viewer
from ckey.api.problems import Problem
from ckey.audit import ChainVerification, Checkpoint, public_key_pem
from ckey.operations import AuditRecord

router = APIRouter(prefix="/api/audit", tags=["audit"])

MAX_SEQ = 2**62
"""Sequence numbers fit a signed 64-bit column; a larger ``after`` is refused (422), not sent to the database."""
MAX_PAGE = 5000

After = Annotated[int, Query(ge=0, le=MAX_SEQ, description="Only entries after this sequence number.")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many entries.")]


class ChainHead(BaseModel):
    """The head of the audit chain: the last entry's sequence number and hash."""

    seq: int
    hash: str


@router.get("/verify", response_model=ChainVerification)
async def verify_audit(_: Viewer, store: StoreDep) -> ChainVerification:
    """Recompute the hash chain, match it against the signed checkpoints, and report the first broken entry.

    A malformed entry is reported as the break (its seq and why), never as a server error.
    """
    return await store.verify_audit_chain()


@router.get("", response_model=list[AuditRecord])
async def list_audit(_: Viewer, store: StoreDep, after: After = 0, limit: Limit = 1000) -> list[AuditRecord]:
    """The audit trail in chain order, a page at a time.

    An entry whose stored row does not parse comes back as a marker: ``action`` ``audit.malformed``, ``outcome``
    ``failed``, and ``malformed`` saying why.
    """
    return await store.list_audit(after_seq=after, limit=limit)


@router.get("/head", response_model=ChainHead)
async def audit_head(_: Viewer, store: StoreDep) -> ChainHead:
    """The chain head; an export reads it first and stops there, so its checkpoints never outrun its entries."""
    head = await store.audit_head()
    if head is None:
        raise Problem(409, "audit-head-missing", "the audit chain head is missing: the trail was tampered with")
    return ChainHead(seq=head[0], hash=head[1])


@router.get("/checkpoints", response_model=list[Checkpoint])
async def list_checkpoints(_: Viewer, store: StoreDep, after: After = 0, limit: Limit = 1000) -> list[Checkpoint]:
    """The signed checkpoints in order of the entry they name."""
    return await store.list_checkpoints(after_seq=after, limit=limit)


@router.get("/public-key", response_class=PlainTextResponse)
async def checkpoint_public_key(_: Viewer, store: StoreDep) -> str:
    """The public key (PEM) that verifies the checkpoints.

    Auditors should pin their own copy rather than trust this answer, and pass it to ``ckey audit verify
    --public-key``.
    """
    if store.signer is None:
        raise Problem(404, "audit-checkpoints-off", "this API signs no audit checkpoints")
    return public_key_pem(store.signer.public_key)
