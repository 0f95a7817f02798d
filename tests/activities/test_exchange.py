"""Exchange activities run on their own, against the store alone."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from activities.exchange import ExchangeActivities
from ckey.store import Store
from ckey.store.targets import TargetStore
from contracts.exchange import RegisterMailboxesInput

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


async def test_following_a_set_without_assigning_marks_every_mailbox_assigned(store: Store) -> None:
    boxes = [f"user{i:04d}@contoso.com" for i in range(1500)]  # more than one page of the set
    targets = TargetStore(store)
    uploaded = await targets.create_set("mailboxes", "inline", boxes, "alice@contoso.com", T0)
    exchange = ExchangeActivities(cast(Any, None), store, cast(Any, None))  # a set needs no tenant

    registered = await exchange.register_dep_mailboxes(
        RegisterMailboxesInput(operation_id="op-verify", dep="USA_mailboxes", set_id=uploaded.id)
    )
    counts = await targets.counts("op-verify")
    assert (registered.count, counts.total, counts.assigned) == (1500, 1500, 1500)
