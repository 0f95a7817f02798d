"""Exchange Online read models: ``/api/deps``, ``/api/mailboxes``, ``/api/mailboxes/{identity}``.

Answered live from the tenant through the Microsoft 365 gateway (Get-DataEncryptionPolicy, Get-Mailbox,
Get-MailUser, Get-MailboxStatistics), as the seed's "View the DEPs you created" and "Determine the DEP assigned to
a mailbox" do. A mail user has no mailbox statistics; its DEP comes from Get-MailUser.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from ckey.api.deps import M365Dep, Viewer
from ckey.api.problems import Problem
from ckey.m365 import CmdletError, DataEncryptionPolicy, M365Gateway, Mailbox, TransientError
from ckey.models import RecipientIdentity

router = APIRouter(tags=["exchange"])
STATUS_CONCURRENCY = 16


MAIL_USER_NOTE = (
    "a mail user has no mailbox in Exchange Online yet (no mailbox statistics, no IsEncrypted): it is encrypted "
    "under its DEP when its migration to Exchange Online completes"
)

ENCRYPTS_ON_MIGRATION = "assigned, encrypts on migration"
"""The status of a mail user showing a DEP: nothing more to wait for until it migrates."""


class MailboxView(BaseModel):
    """A mailbox's DEP (name and GUID) and whether it is encrypted.

    A mail user has only its assigned DEP (Get-MailUser): ``is_encrypted`` is null and ``note`` says why. A recipient
    that could not be read is shown with its ``error`` instead of failing the page.
    """

    identity: str
    recipient_type: str | None = None
    dep: str | None = None
    dep_guid: str | None = None
    is_encrypted: bool | None = None
    status: str | None = None
    """For a mail user with a DEP: ``assigned, encrypts on migration``."""
    note: str | None = None
    error: str | None = None


class MailboxPage(BaseModel):
    """One page of mailboxes."""

    items: list[MailboxView]
    offset: int
    limit: int
    total: int


GatewayError = (CmdletError, TransientError, ValueError, LookupError)
"""What a gateway call can raise: a refusal, a transient failure, or an answer that does not read (bad JSON,
missing fields, no object)."""


def _unavailable(exc: Exception) -> Problem:
    if isinstance(exc, CmdletError):
        return Problem(404 if _not_found(exc) else 422, exc.code or "cmdlet-refused", exc.message)
    if isinstance(exc, TransientError):
        return Problem(502, "tenant-reachable", str(exc))
    return Problem(502, "tenant-answer-readable", f"the tenant's answer could not be read: {exc}")


def _not_found(exc: CmdletError) -> bool:
    return exc.code == "ManagementObjectNotFoundException" or "couldn't be found" in exc.message.lower()


def _error_text(exc: Exception) -> str:
    return exc.message if isinstance(exc, CmdletError) else str(exc)


@router.get("/api/deps", response_model=list[DataEncryptionPolicy], response_model_by_alias=False)
async def list_deps(_: Viewer, m365: M365Dep) -> list[DataEncryptionPolicy]:
    """Every mailbox DEP of the tenant (Get-DataEncryptionPolicy)."""
    try:
        return await m365.get_data_encryption_policy()
    except GatewayError as exc:
        raise _unavailable(exc) from None


def mail_user_view(recipient: Mailbox, dep_guid: str | None) -> MailboxView:
    """A mail user as Get-MailUser reports it: its DEP, no IsEncrypted (it encrypts on migration)."""
    return MailboxView(
        identity=recipient.identity,
        recipient_type=recipient.recipient_type_details or "MailUser",
        dep=recipient.data_encryption_policy,
        dep_guid=dep_guid,
        is_encrypted=None,
        status=ENCRYPTS_ON_MIGRATION if recipient.data_encryption_policy else None,
        note=MAIL_USER_NOTE,
    )


def _is_mail_user(recipient: Mailbox) -> bool:
    return (recipient.recipient_type_details or "").lower() == "mailuser"


async def mailbox_view(m365: M365Gateway, identity: str, deps: dict[str, str] | None = None) -> MailboxView:
    """Get-MailboxStatistics for the GUID and IsEncrypted, then Get-DataEncryptionPolicy <GUID> for the name.

    A recipient Get-MailboxStatistics does not find may be a mail user: then Get-MailUser gives its DEP. When
    neither finds it, the statistics' refusal is raised.
    """
    try:
        stats = await m365.get_mailbox_statistics(identity)
    except CmdletError as exc:
        if not _not_found(exc):
            raise
        try:
            found = await m365.get_mail_user(identity)
        except CmdletError as again:
            if _not_found(again):
                raise exc from None
            raise
        if not found:
            raise exc from None
        user = found[0]
        guid = None
        if user.data_encryption_policy:
            try:
                dep = await m365.get_data_encryption_policy(user.data_encryption_policy)
                guid = dep[0].guid if dep else None
            except CmdletError as lookup:
                # The mail user still answers; only its DEP's GUID is unknown.
                if not _not_found(lookup):
                    raise
        return mail_user_view(user, guid)
    guid = stats.data_encryption_policy_id
    name = None
    if guid:
        if deps is not None and guid.lower() in deps:
            name = deps[guid.lower()]
        else:
            found_dep = await m365.get_data_encryption_policy(guid)
            name = found_dep[0].name if found_dep else None
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
    """Mailboxes and mail users, filtered by DEP (name) and by encrypted or not, a page at a time.

    Mailboxes are read with Get-MailboxStatistics; mail users, which have none, from Get-MailUser. A recipient that
    cannot be read is shown with its ``error``; it never fails the page.
    """
    try:
        recipients = await m365.get_mailbox(result_size="Unlimited") + await m365.get_mail_user(result_size="Unlimited")
        deps = {d.guid.lower(): d.name for d in await m365.get_data_encryption_policy()}
    except GatewayError as exc:
        raise _unavailable(exc) from None
    guids = {name.lower(): guid for guid, name in deps.items()}
    if dep is not None:
        recipients = [r for r in recipients if (r.data_encryption_policy or "").lower() == dep.lower()]
    recipients.sort(key=lambda r: r.identity.lower())
    gate = asyncio.Semaphore(STATUS_CONCURRENCY)

    async def view(recipient: Mailbox) -> MailboxView:
        if _is_mail_user(recipient):
            return mail_user_view(recipient, guids.get((recipient.data_encryption_policy or "").lower()))
        async with gate:
            try:
                found = await mailbox_view(m365, recipient.identity, deps)
            except GatewayError as exc:
                # One unreadable recipient is shown as such; the rest of the page still answers.
                return MailboxView(
                    identity=recipient.identity,
                    recipient_type=recipient.recipient_type_details,
                    dep=recipient.data_encryption_policy,
                    error=_error_text(exc),
                )
            return found.model_copy(update={"recipient_type": recipient.recipient_type_details})

    if encrypted is None:
        page = recipients[offset : offset + limit]
        items = await asyncio.gather(*(view(r) for r in page))
        return MailboxPage(items=list(items), offset=offset, limit=limit, total=len(recipients))
    # Filtering on IsEncrypted needs every mailbox's statistics.
    everything = await asyncio.gather(*(view(r) for r in recipients))
    matching = [m for m in everything if m.is_encrypted == encrypted]
    return MailboxPage(items=matching[offset : offset + limit], offset=offset, limit=limit, total=len(matching))


@router.get("/api/mailboxes/{identity}", response_model=MailboxView)
async def get_mailbox(identity: RecipientIdentity, _: Viewer, m365: M365Dep) -> MailboxView:
    """One mailbox or mail user: its DEP's name and GUID, and whether it is encrypted.

    Get-MailboxStatistics, then Get-DataEncryptionPolicy <GUID>; for a mail user, Get-MailUser. The identity is
    checked (:data:`ckey.models.RecipientIdentity`) before any call; a broken rule is a 422 naming it.
    """
    try:
        return await mailbox_view(m365, identity)
    except GatewayError as exc:
        raise _unavailable(exc) from None
