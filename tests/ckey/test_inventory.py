"""The inventory in SQL (``ckey.store.inventory``): listings, assignments and status rounds keep it right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ckey.store import Store
from ckey.store.inventory import DepView, InventoryStore, KeyHealthView, RecipientSeen, RecipientStatus

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
GUID_A, GUID_B = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def _seen(n: int, dep: str | None = None, kind: str = "UserMailbox") -> RecipientSeen:
    return RecipientSeen(
        identity=f"User{n:04}", recipient_type=kind, user_principal_name=f"user{n:04}@contoso.com", dep=dep
    )


async def test_pages_filter_by_dep_and_encryption_in_identity_order(any_store: Store) -> None:
    inventory = InventoryStore(any_store)
    recipients = [_seen(n, "DEP_A" if n % 2 else None) for n in range(2500)]
    recipients.append(_seen(9999, "dep_a", kind="MailUser"))
    assert await inventory.record_seen(recipients, {"dep_a": GUID_A}, T0, "op-sync") == 2501
    await inventory.mark_synced("recipients", T0, "op-sync", 2501)
    page = await inventory.page(limit=3)
    assert [r.identity for r in page.items] == ["User0000", "User0001", "User0002"]
    assert page.total == 2501 and page.as_of == T0
    by_dep = await inventory.page(dep="Dep_A", offset=1249, limit=5)
    assert by_dep.total == 1251 and [r.identity for r in by_dep.items] == ["User2499", "User9999"]
    assert by_dep.items[0].dep_guid == GUID_A and by_dep.items[1].is_mail_user
    assert (await inventory.page(encrypted=True)).total == 0
    waiting = await inventory.needing_status(10_000)
    assert len(waiting) == 1250 and "User9999" not in waiting  # a mail user has no statistics to read

    await inventory.record_status(
        [RecipientStatus(identity="user0001@CONTOSO.com", is_encrypted=True, dep_guid=GUID_A)], T0, "op-assign"
    )
    shown = await inventory.get("USER0001")
    assert shown is not None and (shown.is_encrypted, shown.source, shown.status_at) == (True, "op-assign", T0)
    assert (await inventory.page(encrypted=True, dep="dep_a")).total == 1


async def test_a_reassignment_is_not_encrypted_until_the_new_dep_wraps_it(any_store: Store) -> None:
    inventory = InventoryStore(any_store)
    await inventory.record_seen([_seen(1, "DEP_A")], {"dep_a": GUID_A, "dep_b": GUID_B}, T0, None)
    await inventory.record_status([RecipientStatus(identity="User0001", is_encrypted=True, dep_guid=GUID_A)], T0, None)
    await inventory.record_assignment(["user0001@contoso.com"], "DEP_B", GUID_B, T0, "op-b")
    moved = await inventory.get("User0001")
    assert moved is not None and (moved.dep, moved.dep_guid, moved.is_encrypted) == ("DEP_B", GUID_B, False)
    assert await inventory.needing_status(10) == ["User0001"]
    await inventory.record_status([RecipientStatus(identity="User0001", is_encrypted=True, dep_guid=GUID_B)], T0, None)
    assert (await inventory.get("User0001")).is_encrypted is True  # type: ignore[union-attr]
    # An assignment names a recipient the inventory has not listed yet: it is kept until the next listing.
    await inventory.record_assignment(["new.hire@contoso.com"], "DEP_B", GUID_B, T0, "op-b")
    assert await inventory.known(["NEW.HIRE@contoso.com", "nobody@contoso.com"]) == {"new.hire@contoso.com"}


async def test_a_complete_listing_forgets_recipients_it_no_longer_shows(any_store: Store) -> None:
    inventory = InventoryStore(any_store)
    await inventory.record_seen([_seen(n) for n in range(5)], {}, T0, None)
    later = T0 + timedelta(hours=1)
    await inventory.record_seen([_seen(n) for n in range(3)], {}, later, None)
    assert await inventory.forget_unseen(later) == 2
    assert (await inventory.page()).total == 3


async def test_deps_and_key_health(any_store: Store) -> None:
    inventory = InventoryStore(any_store)
    deps = [DepView(workload="exchange", name=n, guid=g, seen_at=T0) for n, g in (("DEP_A", GUID_A), ("DEP_B", GUID_B))]
    await inventory.record_deps("exchange", deps, T0, "op-sync")
    assert [d.name for d in await inventory.deps("exchange")] == ["DEP_A", "DEP_B"]
    assert (await inventory.find_dep("exchange", GUID_B.upper())).name == "DEP_B"  # type: ignore[union-attr]
    assert await inventory.find_dep("exchange", "nope") is None
    await inventory.record_dep(DepView(workload="exchange", name="DEP_C", guid="g", seen_at=T0, source="op-create"))
    await inventory.record_dep(DepView(workload="exchange", name="dep_c", guid="g2", seen_at=T0, source="op-create"))
    assert [(d.name, d.guid) for d in await inventory.deps("exchange")][2] == ("dep_c", "g2")
    await inventory.record_deps("exchange", deps[:1], T0, "op-sync")
    assert [d.name for d in await inventory.deps()] == ["DEP_A"]
    key = "https://contoso-eastus-kv1.vault.azure.net/keys/exo-key-01"
    await inventory.record_key_health(
        KeyHealthView(key_id=key, vault="contoso-eastus-kv1", healthy=True, checked_at=T0)
    )
    broken = KeyHealthView(
        key_id=key, vault="contoso-eastus-kv1", healthy=False, problems=["soft-delete"], checked_at=T0
    )
    await inventory.record_key_health(broken)
    (stored,) = await inventory.keys()
    assert (stored.healthy, stored.problems) == (False, ["soft-delete"])
