"""Target sets (claim checks for large lists of mailboxes) and the per-mailbox follow-up of an operation.

A workflow never carries ten thousand mailbox names in its input or history: the API stores them once as a target
set, the workflow passes the set's id to its activities, and the activities keep each mailbox's progress here.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel
from pydantic_core import PydanticCustomError
from sqlalchemy import func, insert, select, update

from ckey.audit import as_utc
from ckey.m365 import CmdletError, TransientError, resolve_identities
from ckey.models import FollowCounts as FollowCounts
from ckey.models import check_identity, located, rule_error
from ckey.store import Store
from ckey.store.inventory import InventoryStore
from ckey.store.schema import MailboxFollowRow, TargetItemRow, TargetSetRow

if TYPE_CHECKING:
    from ckey.m365 import M365Gateway

INSERT_CHUNK = 500


class TargetSet(BaseModel):
    """A stored set of targets."""

    id: str
    kind: str
    source: str
    count: int
    created_by: str
    created_at: datetime


class FollowRow(BaseModel):
    """One mailbox's follow-up, as the evidence of an escalation shows it."""

    identity: str
    sent_at: datetime | None = None
    assigned_at: datetime | None = None
    encrypted_at: datetime | None = None
    checked_at: datetime | None = None
    is_encrypted: bool = False
    dep_guid: str | None = None
    error: str | None = None
    escalated_at: datetime | None = None


class AssignmentProgress(BaseModel):
    """Where one mailbox's assignment stands: sent (intent recorded), assigned, failed."""

    sent: bool = False
    assigned: bool = False
    failed: bool = False

    @property
    def in_flight(self) -> bool:
        """Sent with no outcome recorded: the call may or may not have reached the tenant."""
        return self.sent and not (self.assigned or self.failed)


class StatusUpdate(BaseModel):
    """What one status check saw for one mailbox."""

    identity: str
    is_encrypted: bool
    dep_guid: str | None = None
    error: str | None = None
    mail_user: bool = False
    """Seen by Get-MailUser (not migrated yet): showing the DEP (``dep_guid``) it is done, encrypting on migration."""


class TargetStore:
    """Target sets and mailbox follow-up on top of :class:`~ckey.store.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # Target sets -------------------------------------------------------------------------------------------------

    async def create_set(
        self, kind: str, source: str, identities: Sequence[str], created_by: str, at: datetime
    ) -> TargetSet:
        """Store ``identities`` as a new set: blanks skipped, duplicates dropped, order and first spelling kept.

        Exchange compares identities case-insensitively, so ``ALICE@contoso.com`` after ``alice@contoso.com`` is
        the same mailbox and is dropped.

        Raises:
            PydanticCustomError: an identity breaks the identity rule (``mailbox-identity-length``,
                ``no-control-characters``); the message names its position (``mailbox 12``, from 1).
        """
        first_spelling: dict[str, str] = {}
        for position, raw in enumerate(identities, start=1):
            if not raw.strip():
                continue
            try:
                identity = check_identity(raw)
            except PydanticCustomError as exc:
                raise located(exc, f"mailbox {position}") from None
            first_spelling.setdefault(identity.lower(), identity)
        unique = list(first_spelling.values())
        target = TargetSet(
            id=f"ts-{uuid.uuid4()}", kind=kind, source=source, count=len(unique), created_by=created_by, created_at=at
        )
        async with self.store.transaction() as session:
            session.add(TargetSetRow(**target.model_dump()))
            for start in range(0, len(unique), INSERT_CHUNK):
                await session.execute(
                    insert(TargetItemRow),
                    [
                        {"set_id": target.id, "seq": start + n, "identity": identity}
                        for n, identity in enumerate(unique[start : start + INSERT_CHUNK])
                    ],
                )
        return target

    async def get_set(self, set_id: str) -> TargetSet | None:
        """A stored set, or ``None``."""
        async with self.store.session() as session:
            row = await session.get(TargetSetRow, set_id)
            if row is None:
                return None
            return TargetSet(
                id=row.id,
                kind=row.kind,
                source=row.source,
                count=row.count,
                created_by=row.created_by,
                created_at=as_utc(row.created_at),
            )

    async def items(self, set_id: str, offset: int, limit: int) -> list[str]:
        """``limit`` identities of a set from ``offset``, in order."""
        query = (
            select(TargetItemRow.identity)
            .where(TargetItemRow.set_id == set_id, TargetItemRow.seq >= offset)
            .order_by(TargetItemRow.seq)
            .limit(limit)
        )
        async with self.store.session() as session:
            return list((await session.scalars(query)).all())

    # Mailbox follow-up -------------------------------------------------------------------------------------------

    async def register(
        self,
        operation_id: str,
        identities: Sequence[str],
        first_seq: int,
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        """Add mailboxes to an operation's follow-up; ones already there are left as they are.

        ``kinds``: identity → ``mailbox`` or ``mail_user``, as a lookup resolved it (kept for each new row).
        """
        async with self.store.transaction() as session:
            known = set(
                (
                    await session.scalars(
                        select(MailboxFollowRow.identity).where(
                            MailboxFollowRow.operation_id == operation_id, MailboxFollowRow.identity.in_(identities)
                        )
                    )
                ).all()
            )
            fresh = [
                {
                    "operation_id": operation_id,
                    "identity": identity,
                    "seq": first_seq + n,
                    "is_encrypted": False,
                    "recipient_type": (kinds or {}).get(identity),
                }
                for n, identity in enumerate(identities)
                if identity not in known
            ]
            for start in range(0, len(fresh), INSERT_CHUNK):
                await session.execute(insert(MailboxFollowRow), fresh[start : start + INSERT_CHUNK])

    async def kinds(self, operation_id: str, identities: Sequence[str]) -> dict[str, str | None]:
        """The registered ones of ``identities``, each with its recipient type (``None`` when not resolved)."""
        row = MailboxFollowRow
        query = select(row.identity, row.recipient_type).where(
            row.operation_id == operation_id, row.identity.in_(identities)
        )
        async with self.store.session() as session:
            return {identity: kind for identity, kind in (await session.execute(query)).all()}

    async def unassigned(self, operation_id: str, identities: Sequence[str]) -> list[str]:
        """Which of ``identities`` have not been assigned yet (nor failed), in the given order."""
        async with self.store.session() as session:
            done = set(
                (
                    await session.scalars(
                        select(MailboxFollowRow.identity).where(
                            MailboxFollowRow.operation_id == operation_id,
                            MailboxFollowRow.identity.in_(identities),
                            (MailboxFollowRow.assigned_at.is_not(None)) | (MailboxFollowRow.error.is_not(None)),
                        )
                    )
                ).all()
            )
        return [i for i in identities if i not in done]

    async def assignment(self, operation_id: str, identities: Sequence[str]) -> dict[str, AssignmentProgress]:
        """Where the assignment of each of ``identities`` (registered before) stands."""
        row = MailboxFollowRow
        query = select(row.identity, row.sent_at, row.assigned_at, row.error).where(
            row.operation_id == operation_id, row.identity.in_(identities)
        )
        async with self.store.session() as session:
            found = {
                identity: AssignmentProgress(
                    sent=sent_at is not None, assigned=assigned_at is not None, failed=error is not None
                )
                for identity, sent_at, assigned_at, error in (await session.execute(query)).all()
            }
        return {i: found.get(i, AssignmentProgress()) for i in identities}

    async def mark_sent(self, operation_id: str, identity: str, at: datetime) -> None:
        """Record that the mailbox's assignment is about to be sent (before its intent is audited and it is sent)."""
        await self._set(operation_id, [identity], sent_at=at)

    async def in_flight(self, operation_id: str) -> list[str]:
        """Mailboxes whose assignment was sent with no outcome recorded, in order."""
        row = MailboxFollowRow
        query = (
            select(row.identity)
            .where(
                row.operation_id == operation_id,
                row.sent_at.is_not(None),
                row.assigned_at.is_(None),
                row.error.is_(None),
            )
            .order_by(row.seq)
        )
        async with self.store.session() as session:
            return list((await session.scalars(query)).all())

    async def failed(self, operation_id: str, limit: int = 100) -> list[FollowRow]:
        """The first ``limit`` mailboxes that could not be assigned, in order, with the reason."""
        return await self.rows(operation_id, failed_only=True, limit=limit)

    async def mark_assigned(self, operation_id: str, identity: str, at: datetime) -> None:
        """Record that the DEP was assigned to the mailbox."""
        await self._set(operation_id, [identity], assigned_at=at)

    async def last_assigned_at(self, operation_id: str, dep: str) -> datetime | None:
        """When ckey's assignments of ``dep`` last assigned it to one of the mailboxes ``operation_id`` follows.

        For a verification: the seed's week runs from the assignment. ``None`` when no assignment by ckey is on
        record for them (assigned by hand, or before ckey).
        """
        from ckey.store.schema import OperationRow

        mine = select(MailboxFollowRow.identity).where(MailboxFollowRow.operation_id == operation_id)
        query = (
            select(func.max(MailboxFollowRow.assigned_at))
            .join(OperationRow, OperationRow.id == MailboxFollowRow.operation_id)
            .where(
                OperationRow.kind == "exchange.dep.assign",
                func.lower(OperationRow.dep) == dep.lower(),
                MailboxFollowRow.operation_id != operation_id,
                MailboxFollowRow.assigned_at.is_not(None),
                MailboxFollowRow.identity.in_(mine),
            )
        )
        async with self.store.session() as session:
            found = (await session.execute(query)).scalar_one_or_none()
        return as_utc(found) if found is not None else None

    async def mark_many_assigned(self, operation_id: str, identities: Sequence[str], at: datetime) -> None:
        """Record that the DEP was assigned to each of ``identities`` (a statement per thousand)."""
        for start in range(0, len(identities), 1000):
            await self._set(operation_id, identities[start : start + 1000], assigned_at=at)

    async def mark_all_assigned(self, operation_id: str, at: datetime) -> None:
        """Record every registered mailbox not yet assigned as assigned at ``at``, in one statement.

        For following without assigning (the DEP is theirs already): one transaction for the whole operation, however
        many mailboxes, where a loop over :meth:`mark_assigned` took one per mailbox.
        """
        async with self.store.transaction() as session:
            await session.execute(
                update(MailboxFollowRow)
                .where(MailboxFollowRow.operation_id == operation_id, MailboxFollowRow.assigned_at.is_(None))
                .values(assigned_at=at)
            )

    async def mark_failed(self, operation_id: str, identity: str, error: str) -> None:
        """Record that the mailbox cannot be followed (not found, refused)."""
        await self._set(operation_id, [identity], error=error)

    async def mark_escalated(self, operation_id: str, identities: Sequence[str], at: datetime) -> None:
        """Record the escalation of these mailboxes."""
        await self._set(operation_id, identities, escalated_at=at)

    async def _set(self, operation_id: str, identities: Sequence[str], **values: object) -> None:
        async with self.store.transaction() as session:
            await session.execute(
                update(MailboxFollowRow)
                .where(MailboxFollowRow.operation_id == operation_id, MailboxFollowRow.identity.in_(identities))
                .values(**values)
            )

    async def pending(self, operation_id: str, after_seq: int = -1, limit: int = 1000) -> list[tuple[int, str]]:
        """(seq, identity) of assigned mailboxes not yet done (encrypted, or a mail user showing the DEP), in order."""
        return [(seq, identity) for seq, identity, _ in await self.pending_recipients(operation_id, after_seq, limit)]

    async def pending_recipients(
        self, operation_id: str, after_seq: int = -1, limit: int = 1000
    ) -> list[tuple[int, str, str | None]]:
        """(seq, identity, recipient type) of the recipients not yet done, in order."""
        row = MailboxFollowRow
        query = (
            select(row.seq, row.identity, row.recipient_type)
            .where(
                row.operation_id == operation_id,
                row.encrypted_at.is_(None),
                row.migrates_at.is_(None),
                row.error.is_(None),
                row.seq > after_seq,
            )
            .order_by(row.seq)
            .limit(limit)
        )
        async with self.store.session() as session:
            return [(seq, identity, kind) for seq, identity, kind in (await session.execute(query)).all()]

    async def record_status(
        self, operation_id: str, updates: Sequence[StatusUpdate], dep_guid: str, at: datetime
    ) -> int:
        """Store what a status check saw; a mailbox counts as encrypted once it is, with this DEP's GUID.

        A mail user counts as done (``migrates_at``: assigned, it encrypts on migration) once it shows the DEP.

        Returns:
            How many recipients became done with this check.
        """
        rows: list[dict[str, object]] = []
        newly = 0
        for u in updates:
            shows_dep = (u.dep_guid or "").lower() == dep_guid.lower()
            if u.mail_user:
                newly += shows_dep
                row_ = {"operation_id": operation_id, "identity": u.identity, "checked_at": at, "dep_guid": u.dep_guid}
                if shows_dep:
                    row_["migrates_at"] = at
                rows.append(row_)
                continue
            done = u.is_encrypted and shows_dep
            newly += done
            row: dict[str, object] = {
                "operation_id": operation_id,
                "identity": u.identity,
                "checked_at": at,
                "is_encrypted": u.is_encrypted,
                "dep_guid": u.dep_guid,
            }
            if done:
                row["encrypted_at"] = at
            rows.append(row)
        if rows:
            # ORM bulk UPDATE by primary key: one executemany per shape of row, not one statement per mailbox.
            async with self.store.transaction() as session:
                await session.execute(update(MailboxFollowRow), rows)
        return newly

    async def counts(self, operation_id: str) -> FollowCounts:
        """Totals of an operation's follow-up."""
        row = MailboxFollowRow
        query = select(
            func.count(),
            func.count(row.assigned_at),
            func.count(row.encrypted_at),
            func.count(row.error),
            func.count(row.escalated_at),
            func.count(row.migrates_at),
        ).where(row.operation_id == operation_id)
        async with self.store.session() as session:
            total, assigned, encrypted, failed, escalated, migrates = (await session.execute(query)).one()
        return FollowCounts(
            total=total,
            assigned=assigned,
            encrypted=encrypted,
            failed=failed,
            escalated=escalated,
            assigned_encrypts_on_migration=migrates,
        )

    async def rows(
        self, operation_id: str, *, pending_only: bool = False, failed_only: bool = False, limit: int = 100_000
    ) -> list[FollowRow]:
        """The follow-up of an operation's mailboxes (the evidence of an escalation, the failed ones)."""
        query = select(MailboxFollowRow).where(MailboxFollowRow.operation_id == operation_id)
        if pending_only:
            query = query.where(
                MailboxFollowRow.encrypted_at.is_(None),
                MailboxFollowRow.migrates_at.is_(None),
                MailboxFollowRow.error.is_(None),
            )
        if failed_only:
            query = query.where(MailboxFollowRow.error.is_not(None))
        async with self.store.session() as session:
            found = (await session.scalars(query.order_by(MailboxFollowRow.seq).limit(limit))).all()
        return [
            FollowRow(
                identity=r.identity,
                sent_at=as_utc(r.sent_at) if r.sent_at else None,
                assigned_at=as_utc(r.assigned_at) if r.assigned_at else None,
                encrypted_at=as_utc(r.encrypted_at) if r.encrypted_at else None,
                checked_at=as_utc(r.checked_at) if r.checked_at else None,
                is_encrypted=r.is_encrypted,
                dep_guid=r.dep_guid,
                error=r.error,
                escalated_at=as_utc(r.escalated_at) if r.escalated_at else None,
            )
            for r in found
        ]


async def claim_check_mailboxes(params: BaseModel, targets: TargetStore, user: str) -> BaseModel:
    """Move an inline ``mailboxes`` list into a stored target set (``mailbox_file``); check a named set exists.

    Raises:
        PydanticCustomError: ``mailbox-file-exists`` when the named upload is unknown.
    """
    mailboxes: list[str] = getattr(params, "mailboxes", [])
    file: str | None = getattr(params, "mailbox_file", None)
    if mailboxes:
        stored = await targets.create_set("mailboxes", "inline", mailboxes, user, datetime.now(UTC))
        return params.model_copy(update={"mailboxes": [], "mailbox_file": stored.id})
    if file is not None and await targets.get_set(file) is None:
        raise rule_error("mailbox-file-exists", "no uploaded mailbox list {file}", file=repr(file))
    return params


PREFLIGHT_NAMED = 20
"""Unknown identities a refusal names one by one."""


async def preflight_recipients(params: BaseModel, targets: TargetStore, m365: M365Gateway) -> None:
    """Refuse a request none of whose named identities is a mailbox or a mail user, before anything starts.

    The inventory first (SQL), then, only when it lists none of them, one bulk lookup
    (:meth:`~ckey.m365.M365Gateway.recipients`) over the list named inline or the stored set. It runs before the
    claim check stores an inline list, so that a refused request leaves nothing behind. A partial list starts: the
    workflow resolves it again and states the unknown ones on its record. When the tenant cannot be read now, the
    request starts too: the workflow's own lookup is retried and refuses the same way.

    Raises:
        PydanticCustomError: ``recipients-unknown``, naming the first unknown identities.
    """
    identities: list[str] = list(getattr(params, "mailboxes", None) or [])
    if not identities:
        set_id: str | None = getattr(params, "mailbox_file", None)
        target = await targets.get_set(set_id) if set_id else None
        if target is None or target.count == 0:
            return
        identities = await targets.items(target.id, 0, target.count)
    # The inventory answers first, from SQL: one identity it lists is enough to start (the workflow resolves the
    # rest). Only a list it knows nothing of (typos, or recipients newer than the last sync) asks the tenant.
    if await InventoryStore(targets.store).known(identities):
        return
    try:
        recipients = await m365.recipients()
    except (CmdletError, TransientError, ValueError):
        return
    unknown = resolve_identities(identities, recipients)
    if unknown.kinds:
        return
    named = ", ".join(unknown.unknown[:PREFLIGHT_NAMED])
    more = len(unknown.unknown) - PREFLIGHT_NAMED
    raise rule_error(
        "recipients-unknown",
        "no mailbox or mail user answers to any identity named: {unknown}",
        unknown=named + (f" and {more} more" if more > 0 else ""),
    )
