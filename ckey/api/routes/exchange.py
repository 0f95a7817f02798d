"""Exchange Online read models: ``/api/deps``, ``/api/mailboxes``, ``/api/mailboxes/{identity}``.

Answered from the inventory in SQL (:mod:`ckey.store.inventory`), with the time its data was read (``as_of``):
a page view never asks the tenant. ``inventory.sync`` (a Temporal Schedule) and every operation that assigns a DEP
or reads a status keep it fresh. ``?refresh=true`` on one mailbox, or on the DEP list, reads live, as the seed's
"Determine the DEP assigned to a mailbox" and "View the DEPs you created" do, and writes what it read into the
inventory. A mail user has no mailbox statistics; its DEP comes from Get-MailUser.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from ckey.api.deps import M365Dep, StoreDep, Viewer
from ckey.api.problems import Problem
from ckey.m365 import CmdletError, M365Gateway, Mailbox, TransientError
from ckey.models import RecipientIdentity
from ckey.store.inventory import DepView, InventoryStore, RecipientSeen, RecipientStatus, RecipientView, dep_view

router = APIRouter(tags=["exchange"])
EXCHANGE = "exchange"


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
    status_at: datetime | None = None
    """When its encryption status was last read (Get-MailboxStatistics)."""
    updated_at: datetime | None = None
    """When its inventory row last changed."""


class MailboxPage(BaseModel):
    """One page of mailboxes."""

    items: list[MailboxView]
    offset: int
    limit: int
    total: int
    as_of: datetime | None = None
    """When the tenant's recipients were last read whole into the inventory (null: never)."""


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


class DepRecord(BaseModel):
    """A mailbox DEP as the inventory holds it (the fields of Get-DataEncryptionPolicy that ckey reads)."""

    name: str
    guid: str | None = None
    azure_key_ids: list[str] = Field(default_factory=list)
    enabled: bool = True
    permanent_data_purge_requested: bool = False
    seen_at: datetime
    """When the tenant last reported it."""


def _dep_record(dep: DepView) -> DepRecord:
    return DepRecord(
        name=dep.name,
        guid=dep.guid,
        azure_key_ids=dep.azure_key_ids,
        enabled=dep.enabled,
        permanent_data_purge_requested=dep.purge_requested,
        seen_at=dep.seen_at,
    )


async def _read_deps_live(m365: M365Gateway, inventory: InventoryStore) -> None:
    try:
        deps = await m365.get_data_encryption_policy()
    except GatewayError as exc:
        raise _unavailable(exc) from None
    now = datetime.now(UTC)
    views = [dep_view(EXCHANGE, d, now, None) for d in deps]
    await inventory.record_deps(EXCHANGE, views, now, None)
    await inventory.mark_synced(f"deps:{EXCHANGE}", now, None, len(views))


@router.get("/api/deps", response_model=list[DepRecord])
async def list_deps(
    _: Viewer, store: StoreDep, m365: M365Dep, refresh: Annotated[bool, Query()] = False
) -> list[DepRecord]:
    """Every mailbox DEP, from the inventory; ``refresh=true`` (or an inventory never synced) reads the tenant.

    Reading the DEPs is one Get-DataEncryptionPolicy call, so an empty inventory fills itself on first use.
    """
    inventory = InventoryStore(store)
    if refresh or await inventory.as_of(f"deps:{EXCHANGE}") is None:
        await _read_deps_live(m365, inventory)
    return [_dep_record(d) for d in await inventory.deps(EXCHANGE)]


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


def _inventory_view(recipient: RecipientView) -> MailboxView:
    if recipient.is_mail_user:
        return MailboxView(
            identity=recipient.identity,
            recipient_type=recipient.recipient_type,
            dep=recipient.dep,
            dep_guid=recipient.dep_guid,
            is_encrypted=None,
            status=ENCRYPTS_ON_MIGRATION if recipient.dep else None,
            note=MAIL_USER_NOTE,
            status_at=recipient.status_at,
            updated_at=recipient.updated_at,
        )
    return MailboxView(
        identity=recipient.identity,
        recipient_type=recipient.recipient_type,
        dep=recipient.dep,
        dep_guid=recipient.dep_guid,
        is_encrypted=recipient.is_encrypted,
        status_at=recipient.status_at,
        updated_at=recipient.updated_at,
    )


@router.get("/api/mailboxes", response_model=MailboxPage)
async def list_mailboxes(
    _: Viewer,
    store: StoreDep,
    dep: Annotated[str | None, Query(min_length=1, max_length=128, description="A DEP's name or GUID.")] = None,
    encrypted: bool | None = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> MailboxPage:
    """Mailboxes and mail users from the inventory, by identity, filtered by DEP and by encrypted or not.

    ``as_of`` is when the tenant's recipients were last read whole (null: never; run ``inventory.sync``). An
    unknown DEP is a 404, never an empty page.
    """
    inventory = InventoryStore(store)
    dep_name = None
    if dep is not None:
        found = await inventory.find_dep(EXCHANGE, dep)
        if found is None:
            as_of = await inventory.as_of(f"deps:{EXCHANGE}")
            seen = f"as of {as_of.isoformat()}" if as_of else "never synced"
            raise Problem(404, "dep-exists", f"there is no mailbox DEP named or with GUID {dep!r} (inventory {seen})")
        dep_name = found.name
    page = await inventory.page(dep=dep_name, encrypted=encrypted, offset=offset, limit=limit)
    return MailboxPage(
        items=[_inventory_view(r) for r in page.items], offset=offset, limit=limit, total=page.total, as_of=page.as_of
    )


@router.get("/api/mailboxes/{identity}", response_model=MailboxView)
async def get_mailbox(
    identity: RecipientIdentity,
    _: Viewer,
    store: StoreDep,
    m365: M365Dep,
    refresh: Annotated[bool, Query(description="Read the tenant now (and update the inventory).")] = False,
) -> MailboxView:
    """One mailbox or mail user: its DEP's name and GUID, and whether it is encrypted.

    From the inventory; ``refresh=true`` reads the tenant (Get-MailboxStatistics, then Get-DataEncryptionPolicy
    <GUID>; for a mail user, Get-MailUser) and records what it read. The identity is checked
    (:data:`ckey.models.RecipientIdentity`) before any call; a broken rule is a 422 naming it.
    """
    inventory = InventoryStore(store)
    if not refresh:
        found = await inventory.get(identity)
        if found is None:
            raise Problem(
                404,
                "recipient-exists",
                f"{identity} is not in the inventory (as of "
                f"{_when(await inventory.as_of('recipients'))}); ?refresh=true asks the tenant",
            )
        return _inventory_view(found)
    try:
        live = await mailbox_view(m365, identity)
    except GatewayError as exc:
        raise _unavailable(exc) from None
    now = datetime.now(UTC)
    # The row the inventory already has (found by identity or UPN) is updated, never doubled under another name.
    known = await inventory.get(identity)
    seen = RecipientSeen(
        identity=known.identity if known else identity,
        recipient_type=live.recipient_type or (known.recipient_type if known else "UserMailbox"),
        user_principal_name=known.user_principal_name if known else None,
        dep=live.dep,
    )
    await inventory.record_seen(
        [seen],
        {live.dep.lower(): live.dep_guid} if live.dep and live.dep_guid else {},
        now,
        None,
    )
    if live.is_encrypted is not None:
        await inventory.record_status(
            [RecipientStatus(identity=seen.identity, is_encrypted=live.is_encrypted, dep_guid=live.dep_guid)], now, None
        )
    return live.model_copy(update={"status_at": now, "updated_at": now})


def _when(at: datetime | None) -> str:
    return at.isoformat() if at else "never synced"
