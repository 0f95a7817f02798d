"""Exchange Online's side of Customer Key: mailbox DEPs, their assignment, and mailbox encryption in simulated time.

Encryption is computed from timestamps when somebody asks. Assigning a Customer Key DEP to a mailbox for the first
time schedules a move between databases, queued on the tenant's move lanes (hours to days, by size and by how many
mailboxes wait); later changes (a refresh after a key roll, another DEP, back to Microsoft-managed keys) only
re-encrypt, which is faster. A mail user assigned a DEP before its migration is encrypted when the migration
completes. ``IsEncrypted`` is true once the data is encrypted under the assigned DEP's current keys.

The mailbox key is re-wrapped for real at assignment: opened with the current DEP's key and wrapped with the target
DEP's key, which counts from the end of the move on.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from sandbox.m365 import deps
from sandbox.m365.clock import iso
from sandbox.m365.core import Core, KeyUnavailable
from sandbox.m365.db import DepRow, MailboxRow
from sandbox.m365.durations import DEFAULT_RESULT_SIZE, GB
from sandbox.m365.errors import INVALID_OPERATION, KEY_VAULT, CmdletFailure, not_found
from sandbox.m365.items import read_unit
from sandbox.m365.params import NO_CHANGE, Cmdlet, Kind, Output, Param, Spec
from sandbox.vocabulary import Workload

MAILBOX_TYPES = ("UserMailbox", "SharedMailbox")
MAIL_USER_TYPES = ("MailUser",)
MORE_RESULTS = (
    "There are more results available than are currently displayed. To view them, increase the value for the "
    "ResultSize parameter."
)


def total_item_size(size: int) -> str:
    """``1.234 GB (1,325,000,000 bytes)``, as Exchange formats a size."""
    for unit, scale in (("GB", GB), ("MB", 1024**2), ("KB", 1024)):
        if size >= scale:
            return f"{size / scale:.3f} {unit} ({size:,} bytes)"
    return f"{size} B ({size:,} bytes)"


class Exchange:
    """The Exchange Online cmdlets of Customer Key that act on recipients.

    The DEPs' own cmdlets are :class:`~sandbox.m365.exchange_policies.ExchangePolicies`.

    Args:
        core: the tenant's shared state and key hierarchy.
    """

    def __init__(self, core: Core) -> None:
        self.core = core
        self.durations = core.durations

    def cmdlets(self) -> dict[str, Cmdlet]:
        """The cmdlets by name."""
        s, n, w, ss, rs = Kind.STRING, Kind.NULLABLE_STRING, Kind.SWITCH, Kind.STRINGS, Kind.RESULT_SIZE
        specs = [
            Cmdlet(
                Spec("Set-Mailbox", (Param("Identity", s, True), Param("DataEncryptionPolicy", n))),
                self.set_mailbox,
                changes=True,
            ),
            Cmdlet(
                Spec("Set-MailUser", (Param("Identity", s, True), Param("DataEncryptionPolicy", n))),
                self.set_mail_user,
                changes=True,
            ),
            Cmdlet(Spec("Get-MailboxStatistics", (Param("Identity", s, True),)), self.get_mailbox_statistics),
            Cmdlet(
                Spec(
                    "Get-Mailbox",
                    (
                        Param("Identity", s),
                        Param("ResultSize", rs),
                        Param("RecipientTypeDetails", ss),
                        Param("SoftDeletedMailbox", w),
                    ),
                ),
                self.get_mailbox,
            ),
            Cmdlet(Spec("Get-MailUser", (Param("Identity", s), Param("ResultSize", rs))), self.get_mail_user),
        ]
        return {c.spec.name.lower(): c for c in specs}

    # Assignment -------------------------------------------------------------------------------------------------

    async def set_mailbox(self, p: dict[str, Any]) -> Output:
        """Set-Mailbox -Identity -DataEncryptionPolicy <name, GUID or $null>."""
        return await self._set_recipient(p, MAILBOX_TYPES)

    async def set_mail_user(self, p: dict[str, Any]) -> Output:
        """Set-MailUser -Identity -DataEncryptionPolicy (hybrid, before the migration)."""
        return await self._set_recipient(p, MAIL_USER_TYPES)

    async def _set_recipient(self, p: dict[str, Any], types: tuple[str, ...]) -> Output:
        async with self.core.db.session() as s, s.begin():
            mailbox = await self._find(s, p["Identity"], types)
            if mailbox is None:
                raise not_found(p["Identity"], self.core.server)
            if "DataEncryptionPolicy" not in p:
                return Output(warnings=[NO_CHANGE.format(mailbox.name)])
            return await self._assign(s, mailbox, p["DataEncryptionPolicy"])

    async def _assign(self, s: AsyncSession, mailbox: MailboxRow, identity: str | None) -> Output:
        core, now = self.core, self.core.now()
        if identity is None:
            if mailbox.dep_guid is None:
                raise CmdletFailure(
                    f"'{mailbox.name}' uses the data encryption policy of Microsoft-managed keys, which can't be "
                    f"unassigned. To stop using Microsoft-managed keys, assign a Customer Key data encryption policy.",
                    INVALID_OPERATION,
                )
            target = await s.get(DepRow, core.default_dep)
            assert target is not None
        else:
            target = await deps.require(s, core, Workload.EXCHANGE, identity)
            if target.purge_requested:
                raise CmdletFailure(
                    f"The data encryption policy '{target.name}' has a permanent data purge request; it can no longer "
                    f"be assigned to mailboxes.",
                    INVALID_OPERATION,
                )
            if not target.enabled:
                raise CmdletFailure(
                    f"The data encryption policy '{target.name}' is disabled; enable it before assigning it.",
                    INVALID_OPERATION,
                )
            if mailbox.dep_guid == target.guid:
                return Output(warnings=[NO_CHANGE.format(mailbox.name)])
        self._settle(mailbox, now)
        current = await s.get(DepRow, mailbox.key_current_dep)
        assert current is not None
        try:
            opened_current = await core.open_dep_key(current, cached=True, subject=mailbox.upn)
            unit_key = core.unwrap_unit_key(opened_current.key, mailbox.key_current, mailbox.guid, current.guid)
            opened_target = await core.open_dep_key(target, cached=True, subject=mailbox.upn)
        except KeyUnavailable as exc:
            raise CmdletFailure(
                f"The mailbox '{mailbox.name}' can't be re-encrypted: {exc.message}",
                KEY_VAULT,
                503 if exc.transient else 400,
            ) from None
        mailbox.key_target = core.wrap_unit_key(opened_target.key, unit_key, mailbox.guid, target.guid)
        mailbox.key_target_dep = target.guid
        mailbox.dep_guid = None if target.is_default else target.guid
        mailbox.assigned_at = now
        mailbox.assignments += 1
        if mailbox.recipient_type_details in MAIL_USER_TYPES:
            mailbox.move_due_at = None  # encrypted while it migrates
        elif not target.is_default and not mailbox.moved_once:
            mailbox.move_due_at = await self._first_move_slot(s, now, mailbox.size_bytes)
        else:
            mailbox.move_due_at = now + self.durations.reencrypt(mailbox.size_bytes)
        return Output()

    async def _first_move_slot(self, s: AsyncSession, now: float, size: int) -> float:
        # The tenant's moves share a few lanes: a thousand first-time assignments at once take days, one takes hours.
        lanes = (await self.core.get_state("move_lanes", s)) or {"free_at": []}
        free = [float(t) for t in lanes["free_at"]][: self.durations.move_lanes]
        free += [0.0] * (self.durations.move_lanes - len(free))
        lane = min(range(len(free)), key=free.__getitem__)
        due = max(now, free[lane]) + self.durations.first_move(size)
        free[lane] = due
        await self.core.set_state("move_lanes", {"free_at": free}, s)
        return due

    def move_done(self, mailbox: MailboxRow, now: float) -> bool:
        """Whether the latest assignment's move or re-encryption has completed."""
        return not mailbox.stuck and mailbox.move_due_at is not None and now >= mailbox.move_due_at

    def _settle(self, mailbox: MailboxRow, now: float) -> None:
        # A finished move makes its target wrap the current one; an unfinished one is abandoned for the new target.
        if mailbox.key_target is not None and self.move_done(mailbox, now):
            mailbox.key_current = mailbox.key_target
            mailbox.key_current_dep = mailbox.key_target_dep or mailbox.key_current_dep
            if mailbox.key_target_dep != self.core.default_dep:
                mailbox.moved_once = True
        mailbox.key_target = None
        mailbox.key_target_dep = None

    def is_encrypted(self, mailbox: MailboxRow, dep: DepRow | None, now: float) -> bool:
        """``IsEncrypted``: the data is encrypted under the assigned Customer Key DEP and its current keys."""
        if mailbox.dep_guid is None or dep is None or not self.move_done(mailbox, now):
            return False
        assigned = mailbox.assigned_at or 0.0
        if dep.refreshed_at is not None and dep.refreshed_at > assigned:
            return now >= dep.refreshed_at + self.durations.reencrypt(mailbox.size_bytes)
        return True

    def data_wrap(self, mailbox: MailboxRow, now: float) -> tuple[bytes, str]:
        """The mailbox key's wrap that protects the data now, and its DEP."""
        if mailbox.key_target is not None and mailbox.key_target_dep and self.move_done(mailbox, now):
            return mailbox.key_target, mailbox.key_target_dep
        return mailbox.key_current, mailbox.key_current_dep

    # Recipients -------------------------------------------------------------------------------------------------

    async def _find(
        self, s: AsyncSession, identity: str, types: tuple[str, ...], soft_deleted: bool = False
    ) -> MailboxRow | None:
        low = identity.strip().lower()
        query = select(MailboxRow).where(
            MailboxRow.recipient_type_details.in_(types),
            MailboxRow.soft_deleted_at.is_not(None) if soft_deleted else MailboxRow.soft_deleted_at.is_(None),
            (MailboxRow.name_lower == low)
            | (MailboxRow.upn_lower == low)
            | (MailboxRow.guid == low)
            | (MailboxRow.exchange_guid == low),
        )
        return (await s.scalars(query)).first()

    async def find_any(self, identity: str) -> MailboxRow | None:
        """A mailbox or mail user by name, UPN or GUID (soft-deleted ones included)."""
        low = identity.strip().lower()
        async with self.core.db.session() as s:
            query = select(MailboxRow).where(
                (MailboxRow.name_lower == low)
                | (MailboxRow.upn_lower == low)
                | (MailboxRow.guid == low)
                | (MailboxRow.exchange_guid == low)
            )
            return (await s.scalars(query)).first()

    async def get_mailbox_statistics(self, p: dict[str, Any]) -> Output:
        """Get-MailboxStatistics -Identity (IsEncrypted, DataEncryptionPolicyID)."""
        now = self.core.now()
        async with self.core.db.session() as s:
            mailbox = await self._find(s, p["Identity"], MAILBOX_TYPES)
            if mailbox is None:
                raise not_found(p["Identity"], self.core.server)
            dep = await s.get(DepRow, mailbox.dep_guid) if mailbox.dep_guid else None
        return Output(
            [
                {
                    "DisplayName": mailbox.display_name,
                    "Identity": mailbox.name,
                    "MailboxGuid": mailbox.exchange_guid,
                    "DatabaseName": mailbox.database,
                    "ItemCount": mailbox.item_count,
                    "TotalItemSize": total_item_size(mailbox.size_bytes),
                    "IsEncrypted": self.is_encrypted(mailbox, dep, now),
                    "DataEncryptionPolicyID": mailbox.dep_guid,
                    "MailboxTypeDetail": mailbox.recipient_type_details,
                    "IsArchiveMailbox": False,
                    "IsQuarantined": False,
                    "LastLogonTime": None,
                }
            ]
        )

    async def get_mailbox(self, p: dict[str, Any]) -> Output:
        """Get-Mailbox [-Identity] [-ResultSize] [-RecipientTypeDetails] [-SoftDeletedMailbox]."""
        types = tuple(p.get("RecipientTypeDetails") or MAILBOX_TYPES)
        return await self._list(p, types, bool(p.get("SoftDeletedMailbox")), "UserMailbox")

    async def get_mail_user(self, p: dict[str, Any]) -> Output:
        """Get-MailUser [-Identity] [-ResultSize]."""
        return await self._list(p, MAIL_USER_TYPES, False, "MailUser")

    async def _list(self, p: dict[str, Any], types: tuple[str, ...], soft_deleted: bool, kind: str) -> Output:
        async with self.core.db.session() as s:
            names = {d.guid: d.name for d in (await s.scalars(select(DepRow))).all()}
            deleted_filter = (
                MailboxRow.soft_deleted_at.is_not(None) if soft_deleted else MailboxRow.soft_deleted_at.is_(None)
            )
            base = select(MailboxRow).where(MailboxRow.recipient_type_details.in_(types), deleted_filter)
            if p.get("Identity"):
                found = await self._find(s, p["Identity"], types, soft_deleted)
                if found is None:
                    raise not_found(p["Identity"], self.core.server)
                return Output([self._recipient(found, names, kind)])
            size = p.get("ResultSize", DEFAULT_RESULT_SIZE)
            query = base.order_by(MailboxRow.id)
            rows = list((await s.scalars(query.limit(size) if size else query)).all())
            warnings = []
            if "ResultSize" not in p and len(rows) == size:
                total = await s.scalar(select(func.count()).select_from(base.subquery()))
                if (total or 0) > size:
                    warnings.append(MORE_RESULTS)
        return Output([self._recipient(r, names, kind) for r in rows], warnings)

    @staticmethod
    def _recipient(row: MailboxRow, dep_names: dict[str, str], kind: str) -> dict[str, Any]:
        return {
            "Name": row.name,
            "Alias": row.name,
            "DisplayName": row.display_name,
            "Identity": row.name,
            "Guid": row.guid,
            "ExchangeGuid": row.exchange_guid,
            "ExternalDirectoryObjectId": row.guid,
            "UserPrincipalName": row.upn,
            "PrimarySmtpAddress": row.upn,
            "RecipientType": "MailUser" if row.recipient_type_details == "MailUser" else "UserMailbox",
            "RecipientTypeDetails": row.recipient_type_details,
            "DataEncryptionPolicy": dep_names.get(row.dep_guid) if row.dep_guid else None,
            "IsSoftDeletedByRemove": row.soft_deleted_at is not None,
            "WhenSoftDeleted": iso(row.soft_deleted_at),
            "WhenCreated": iso(row.created_at),
        }

    # Sandbox control ---------------------------------------------------------------------------------------------

    async def complete_migrations(self, identities: list[str] | None) -> list[str]:
        """Complete the migration of mail users (all when ``identities`` is None); their names.

        A mail user assigned a DEP before its migration arrives encrypted under it.
        """
        now = self.core.now()
        done = []
        async with self.core.db.session() as s, s.begin():
            if identities is None:
                query = select(MailboxRow).where(MailboxRow.recipient_type_details == "MailUser")
                rows = list((await s.scalars(query)).all())
            else:
                rows = []
                for identity in identities:
                    row = await self._find(s, identity, MAIL_USER_TYPES)
                    if row is None:
                        raise not_found(identity, self.core.server)
                    rows.append(row)
            for row in rows:
                row.recipient_type_details = "UserMailbox"
                row.migrated_at = now
                if row.dep_guid is not None and row.key_target is not None:
                    row.move_due_at = now
                    row.moved_once = True
                done.append(row.name)
        return done

    async def set_stuck(self, identities: list[str], stuck: bool) -> list[str]:
        """Make mailboxes' moves never finish (or finish again: a stuck move restarts now)."""
        now = self.core.now()
        names = []
        async with self.core.db.session() as s, s.begin():
            for identity in identities:
                row = await self._find(s, identity, (*MAILBOX_TYPES, *MAIL_USER_TYPES))
                if row is None:
                    raise not_found(identity, self.core.server)
                if row.stuck and not stuck:
                    self.restart_move(row, now)
                row.stuck = stuck
                names.append(row.name)
        return names

    def restart_move(self, row: MailboxRow, now: float) -> None:
        """Start a stuck mailbox's move again from ``now`` (what Microsoft's engineers do for an escalation)."""
        if row.key_target is None:
            return
        first = row.key_target_dep != self.core.default_dep and not row.moved_once
        row.move_due_at = now + (self.durations.first_move if first else self.durations.reencrypt)(row.size_bytes)

    async def read_items(self, identity: str) -> dict[str, Any]:
        """Decrypt a mailbox's sample items through the key hierarchy (never cached): who can still read them."""
        row = await self.find_any(identity)
        if row is None:
            raise not_found(identity, self.core.server)
        wrapped, dep_guid = self.data_wrap(row, self.core.now())
        return await read_unit(self.core, row.upn, row.guid, wrapped, dep_guid, row.items)
