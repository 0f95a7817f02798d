"""Exchange activities run on their own, against the store and a stand-in for the tenant's recipient list."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

from temporalio.testing import ActivityEnvironment

from activities.exchange import ExchangeActivities
from ckey.m365 import MAIL_USER, MAILBOX, OnCall
from ckey.store import Store
from ckey.store.targets import TargetStore
from contracts.exchange import RegisterMailboxesInput

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


class Recipients:
    """The tenant as the bulk lookup sees it: every recipient by name; counts the lookups."""

    def __init__(self, kinds: dict[str, str]) -> None:
        self.kinds, self.lookups = kinds, 0

    def with_on_call(self, on_call: OnCall | None) -> Recipients:
        return self

    async def recipients(self) -> dict[str, str]:
        self.lookups += 1
        return self.kinds

    async def recipient_index(self) -> dict[str, tuple[str, str | None]]:
        return {name: (kind, None) for name, kind in (await self.recipients()).items()}


async def test_following_a_set_without_assigning_marks_every_mailbox_assigned(store: Store) -> None:
    boxes = [f"user{i:04d}@contoso.com" for i in range(1500)]  # more than one page of the set
    targets = TargetStore(store)
    uploaded = await targets.create_set("mailboxes", "inline", [*boxes, "typo@contoso.com"], "alice@contoso.com", T0)
    tenant = Recipients({b: MAIL_USER if b.endswith("7@contoso.com") else MAILBOX for b in boxes})
    exchange = ExchangeActivities(cast(Any, tenant), store, cast(Any, None))

    registered = await ActivityEnvironment().run(
        exchange.register_dep_mailboxes,
        RegisterMailboxesInput(operation_id="op-verify", dep="USA_mailboxes", set_id=uploaded.id),
    )
    counts = await targets.counts("op-verify")
    assert (registered.count, counts.total, counts.assigned) == (1500, 1500, 1500)
    # One bulk lookup for the whole set; the identity nobody answers to is named and not followed.
    assert tenant.lookups == 1
    assert (registered.unknown, registered.unknown_count) == (["typo@contoso.com"], 1)
    kinds = await targets.kinds("op-verify", ["user0007@contoso.com", "user0008@contoso.com", "typo@contoso.com"])
    assert kinds == {"user0007@contoso.com": MAIL_USER, "user0008@contoso.com": MAILBOX}
