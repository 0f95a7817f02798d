"""Exchange Online read models: ``/api/deps``, ``/api/mailboxes``, ``/api/mailboxes/{identity}``.

Answered live from the tenant through the Microsoft 365 gateway (Get-DataEncryptionPolicy, Get-Mailbox,
Get-MailUser, Get-MailboxStatistics), as the seed's "View the DEPs you created" and "Determine the DEP assigned to
a mailbox" do.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from ckey.api.deps import Viewer
from ckey.api.problems import Problem
from ckey.m365 import CmdletError, DataEncryptionPolicy, M365Gateway, TransientError

router = APIRouter(tags=["exchange"])
STATUS_CONCURRENCY = 16


def get_m365(request: Request) -> M365Gateway:
    """The Microsoft 365 gateway."""
    gateway: M365Gateway = request.app.state.m365
    return gateway


M365Dep = Annotated[M365Gateway, Depends(get_m365)]


class MailboxView(BaseModel):
    """A mailbox's DEP (name and GUID) and whether it is encrypted."""

    identity: str
    recipient_type: str | None = None
    dep: str | None = None
    dep_guid: str | None = None
    is_encrypted: bool | None = None


class MailboxPage(BaseModel):
    """One page of mailboxes."""

    items: list[MailboxView]
    offset: int
    limit: int
    total: int


def _unavailable(exc: CmdletError | TransientError) -> Problem:
    if isinstance(exc, CmdletError):
        return Problem(
            404 if "couldn't be found" in exc.message.lower() else 422, exc.code or "cmdlet-refused", exc.message
        )
    return Problem(502, "tenant-reachable", str(exc))


@router.get("/api/deps", response_model=list[DataEncryptionPolicy], response_model_by_alias=False)
async def list_deps(_: Viewer, m365: M365Dep) -> list[DataEncryptionPolicy]:
    """Every mailbox DEP of the tenant (Get-DataEncryptionPolicy)."""
    try:
        return await m365.get_data_encryption_policy()
    except (CmdletError, TransientError) as exc:
        raise _unavailable(exc) from None


async def mailbox_view(m365: M365Gateway, identity: str, deps: dict[str, str] | None = None) -> MailboxView:
    """Get-MailboxStatistics for the GUID and IsEncrypted, then Get-DataEncryptionPolicy <GUID> for the name."""
    stats = await m365.get_mailbox_statistics(identity)
    guid = stats.data_encryption_policy_id
    name = None
    if guid:
        if deps is not None and guid.lower() in deps:
            name = deps[guid.lower()]
        else:
            found = await m365.get_data_encryption_policy(guid)
            name = found[0].name if found else None
    return MailboxView(identity=identity, dep=name, dep_guid=guid, is_encrypted=stats.is_encrypted)


@router.get("/api/mailboxes", response_model=MailboxPage)
async def list_mailboxes(
    _: Viewer,
    m365: M365Dep,
    dep: str | None = None,
    encrypted: bool | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MailboxPage:
    """Mailboxes and mail users, filtered by DEP (name) and by encrypted or not, a page at a time."""
    try:
        recipients = await m365.get_mailbox(result_size="Unlimited") + await m365.get_mail_user(result_size="Unlimited")
        deps = {d.guid.lower(): d.name for d in await m365.get_data_encryption_policy()}
    except (CmdletError, TransientError) as exc:
        raise _unavailable(exc) from None
    if dep is not None:
        recipients = [r for r in recipients if (r.data_encryption_policy or "").lower() == dep.lower()]
    recipients.sort(key=lambda r: r.identity.lower())
    gate = asyncio.Semaphore(STATUS_CONCURRENCY)

    async def view(identity: str, kind: str | None) -> MailboxView:
        async with gate:
            found = await mailbox_view(m365, identity, deps)
            return found.model_copy(update={"recipient_type": kind})

    try:
        if encrypted is None:
            page = recipients[offset : offset + limit]
            items = await asyncio.gather(*(view(r.identity, r.recipient_type_details) for r in page))
            return MailboxPage(items=list(items), offset=offset, limit=limit, total=len(recipients))
        # Filtering on IsEncrypted needs every mailbox's statistics.
        everything = await asyncio.gather(*(view(r.identity, r.recipient_type_details) for r in recipients))
    except (CmdletError, TransientError) as exc:
        raise _unavailable(exc) from None
    matching = [m for m in everything if m.is_encrypted == encrypted]
    return MailboxPage(items=matching[offset : offset + limit], offset=offset, limit=limit, total=len(matching))


@router.get("/api/mailboxes/{identity}", response_model=MailboxView)
async def get_mailbox(identity: str, _: Viewer, m365: M365Dep) -> MailboxView:
    """One mailbox: its DEP's name and GUID (Get-MailboxStatistics, then Get-DataEncryptionPolicy <GUID>)."""
    try:
        return await mailbox_view(m365, identity)
    except (CmdletError, TransientError) as exc:
        raise _unavailable(exc) from None
