from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from ckey.store import Store
from ckey.store.targets import StatusUpdate, TargetStore

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


async def test_target_sets_keep_order_and_drop_duplicates(any_store: Store) -> None:
    targets = TargetStore(any_store)
    identities = [f"user{i:04d}@contoso.com" for i in range(1203)] + ["user0001@contoso.com", "  "]
    stored = await targets.create_set("mailboxes", "inline", identities, "alice@contoso.com", T0)
    assert stored.count == 1203
    assert (await targets.get_set(stored.id)) == stored
    assert await targets.items(stored.id, 1200, 10) == [
        "user1200@contoso.com",
        "user1201@contoso.com",
        "user1202@contoso.com",
    ]
    assert await targets.get_set("ts-nope") is None


async def test_a_mail_user_showing_the_dep_is_done_and_never_escalated(any_store: Store) -> None:
    targets = TargetStore(any_store)
    kinds = {"box@contoso.com": "mailbox", "hybrid@contoso.com": "mail_user", "other@contoso.com": "mail_user"}
    await targets.register("op-mu", list(kinds), 0, kinds)
    await targets.mark_all_assigned("op-mu", T0)
    assert [kind for _, _, kind in await targets.pending_recipients("op-mu")] == ["mailbox", "mail_user", "mail_user"]

    newly = await targets.record_status(
        "op-mu",
        [
            StatusUpdate(identity="hybrid@contoso.com", is_encrypted=False, dep_guid="GUID-1", mail_user=True),
            StatusUpdate(identity="other@contoso.com", is_encrypted=False, dep_guid="guid-2", mail_user=True),
        ],
        "guid-1",
        T0,
    )
    assert newly == 1  # the other mail user shows another DEP: still pending
    counts = await targets.counts("op-mu")
    assert (counts.encrypted, counts.assigned_encrypts_on_migration, counts.done, counts.pending) == (0, 1, 1, 2)
    # What an escalation would file: the mailbox and the mail user without the DEP, never the assigned mail user.
    assert [r.identity for r in await targets.rows("op-mu", pending_only=True)] == [
        "box@contoso.com",
        "other@contoso.com",
    ]


async def test_follow_up_counts_assignments_encryption_and_escalation(any_store: Store) -> None:
    targets = TargetStore(any_store)
    boxes = ["a@contoso.com", "b@contoso.com", "c@contoso.com", "d@contoso.com"]
    await targets.register("op-1", boxes, 0)
    await targets.register("op-1", boxes[:2], 0)  # a retried batch registers nothing twice
    await targets.mark_assigned("op-1", "a@contoso.com", T0)
    await targets.mark_assigned("op-1", "b@contoso.com", T0)
    await targets.mark_failed("op-1", "d@contoso.com", "couldn't be found")
    assert await targets.unassigned("op-1", boxes) == ["c@contoso.com"]
    await targets.mark_assigned("op-1", "c@contoso.com", T0)

    newly = await targets.record_status(
        "op-1",
        [
            StatusUpdate(identity="a@contoso.com", is_encrypted=True, dep_guid="GUID-1"),
            StatusUpdate(identity="b@contoso.com", is_encrypted=True, dep_guid="guid-other"),
            StatusUpdate(identity="c@contoso.com", is_encrypted=False, dep_guid="guid-1"),
        ],
        "guid-1",
        T0,
    )
    assert newly == 1  # b is encrypted, but with another DEP
    counts = await targets.counts("op-1")
    assert (counts.total, counts.assigned, counts.encrypted, counts.failed, counts.pending) == (4, 3, 1, 1, 2)
    assert [identity for _, identity in await targets.pending("op-1")] == ["b@contoso.com", "c@contoso.com"]

    await targets.mark_escalated("op-1", ["b@contoso.com", "c@contoso.com"], T0)
    evidence = await targets.rows("op-1", pending_only=True)
    assert [(r.identity, r.dep_guid, r.escalated_at) for r in evidence] == [
        ("b@contoso.com", "guid-other", T0),
        ("c@contoso.com", "guid-1", T0),
    ]
    assert (await targets.counts("op-2")).total == 0


async def test_a_call_sent_without_an_outcome_is_in_flight(any_store: Store) -> None:
    targets = TargetStore(any_store)
    boxes = ["a@contoso.com", "b@contoso.com", "c@contoso.com", "d@contoso.com"]
    await targets.register("op-1", boxes, 0)
    for identity in boxes[:3]:
        await targets.mark_sent("op-1", identity, T0)
    await targets.mark_assigned("op-1", "a@contoso.com", T0)
    await targets.mark_failed("op-1", "b@contoso.com", "couldn't be found")
    # c was sent and nothing came back (its worker died): the one to look up before sending again.
    assert await targets.in_flight("op-1") == ["c@contoso.com"]
    progress = await targets.assignment("op-1", boxes)
    assert [(p.sent, p.assigned, p.failed, p.in_flight) for p in progress.values()] == [
        (True, True, False, False),
        (True, False, True, False),
        (True, False, False, True),
        (False, False, False, False),
    ]
    (failed,) = await targets.failed("op-1")
    assert (failed.identity, failed.error, failed.sent_at) == ("b@contoso.com", "couldn't be found", T0)
    assert await targets.in_flight("op-2") == []


async def test_following_without_assigning_marks_every_mailbox_in_one_transaction(
    any_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    targets = TargetStore(any_store)
    boxes = [f"user{i}@contoso.com" for i in range(250)]
    await targets.register("op-1", boxes, 0)
    await targets.register("op-2", ["other@contoso.com"], 0)
    await targets.mark_assigned("op-1", boxes[0], T0)

    transactions: list[None] = []
    opened = any_store.transaction

    def counted() -> AbstractAsyncContextManager[AsyncSession]:
        transactions.append(None)
        return opened()

    monkeypatch.setattr(any_store, "transaction", counted)
    later = T0 + timedelta(hours=1)
    await targets.mark_all_assigned("op-1", later)
    assert len(transactions) == 1  # one for the operation, not one per mailbox

    assigned = {r.identity: r.assigned_at for r in await targets.rows("op-1")}
    assert assigned == {boxes[0]: T0} | {box: later for box in boxes[1:]}  # an earlier assignment is kept
    assert [r.assigned_at for r in await targets.rows("op-2")] == [None]


async def test_a_verification_knows_when_ckey_last_assigned_its_mailboxes(any_store: Store) -> None:
    from ckey.operations import OperationRecord, OperationState

    targets = TargetStore(any_store)
    for op_id, kind, dep in (
        ("op-a1", "exchange.dep.assign", "USA_mailboxes"),
        ("op-a2", "exchange.dep.assign", "USA_mailboxes"),
        ("op-other", "exchange.dep.assign", "EUR_mailboxes"),
        ("op-v", "exchange.encryption.verify", "USA_mailboxes"),
    ):
        record = OperationRecord(
            id=op_id,
            kind=kind,
            state=OperationState.RUNNING,
            phase="following",
            started_by="alice@contoso.com",
            started_at=T0,
            updated_at=T0,
            dep=dep,
        )
        await any_store.create_operation(record)
    await targets.register("op-a1", ["a@contoso.com", "b@contoso.com"], 0)
    await targets.mark_all_assigned("op-a1", T0)
    await targets.register("op-a2", ["b@contoso.com"], 0)
    await targets.mark_all_assigned("op-a2", T0 + timedelta(days=2))
    await targets.register("op-other", ["a@contoso.com"], 0)
    await targets.mark_all_assigned("op-other", T0 + timedelta(days=5))  # another DEP: not this one's assignment
    await targets.register("op-v", ["a@contoso.com", "b@contoso.com"], 0)
    await targets.mark_all_assigned("op-v", T0 + timedelta(days=6))
    # The latest assignment of the DEP to one of them: each mailbox gets its full delay.
    assert await targets.last_assigned_at("op-v", "usa_MAILBOXES") == T0 + timedelta(days=2)
    assert await targets.last_assigned_at("op-v", "APC_mailboxes") is None
