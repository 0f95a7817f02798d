"""Leases in SQL (``ckey.store.leases``): taken with the reservation, refused naming the holder, freed by the end."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from ckey.operations import Lease, LeaseMode, LeaseRequest, OperationRecord, OperationState, OperationUpdate
from ckey.store import RESERVED_PHASE, LeaseConflict, Store
from ckey.store.targets import TargetStore

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
DEP = Lease.on("dep:exchange", "USA_mailboxes")


def _record(op_id: str, kind: str = "exchange.dep.assign") -> OperationRecord:
    return OperationRecord(
        id=op_id,
        kind=kind,
        state=OperationState.RUNNING,
        phase=RESERVED_PHASE,
        started_by="alice@contoso.com",
        started_at=T0,
        updated_at=T0,
    )


async def _end(store: Store, op_id: str, state: OperationState) -> None:
    await store.update_operation(OperationUpdate(id=op_id, at=T0, state=state))


async def test_a_writer_holds_alone_and_its_end_whatever_it_is_frees_the_target(any_store: Store) -> None:
    _, reserved = await any_store.reserve_operation(_record("op-1", "exchange.dep.create"), LeaseRequest(leases=[DEP]))
    assert reserved
    assert await any_store.leases("op-1") == [("dep:exchange:usa_mailboxes", "write")]
    for n, (mode, end) in enumerate(
        [(LeaseMode.READ, OperationState.FAILED), (LeaseMode.WRITE, OperationState.CANCELLED)], start=2
    ):
        holder = f"op-{n - 1}"
        other = LeaseRequest(leases=[Lease.on("dep:exchange", "usa_MAILBOXES", mode)])
        with pytest.raises(LeaseConflict) as refused:
            await any_store.reserve_operation(_record(f"op-{n}"), other)
        (named,) = refused.value.holders
        assert (named.operation_id, named.targets) == (holder, ["dep:exchange:usa_mailboxes"])
        assert holder in str(refused.value) and "alice@contoso.com" in str(refused.value)
        assert await any_store.get_operation(f"op-{n}") is None  # refused: nothing stored
        await _end(any_store, holder, end)
        assert await any_store.leases(holder) == []
        _, reserved = await any_store.reserve_operation(_record(f"op-{n}"), other)
        assert reserved


async def test_readers_share_and_a_writer_is_refused_naming_every_reader(any_store: Store) -> None:
    read = LeaseRequest(leases=[Lease.on("vault", "contoso-eastus-kv1", LeaseMode.READ)])
    for op_id in ("op-a", "op-b"):
        assert (await any_store.reserve_operation(_record(op_id, "keyvault.health"), read))[1]
    write = LeaseRequest(leases=[Lease.on("vault", "Contoso-EastUS-KV1")])
    with pytest.raises(LeaseConflict) as refused:
        await any_store.reserve_operation(_record("op-c", "keyvault.access.revoke"), write)
    assert [h.operation_id for h in refused.value.holders] == ["op-a", "op-b"]
    assert {h.kind for h in refused.value.holders} == {"keyvault.health"}


async def test_overlapping_mailbox_sets_conflict_whatever_the_case_and_disjoint_ones_do_not(any_store: Store) -> None:
    targets = TargetStore(any_store)
    first = await targets.create_set("mailboxes", "a.csv", [f"user{i}@contoso.com" for i in range(2000)], "a", T0)
    second = await targets.create_set("mailboxes", "b.csv", ["USER1999@contoso.com", "new@contoso.com"], "b", T0)
    apart = await targets.create_set("mailboxes", "c.csv", ["other@contoso.com"], "c", T0)
    assert (await any_store.reserve_operation(_record("op-1"), LeaseRequest(mailbox_set=first.id)))[1]
    held = await any_store.leases("op-1", limit=5000)
    assert len(held) == 2000 and held[0] == ("mailbox:user0@contoso.com", "write")
    with pytest.raises(LeaseConflict) as refused:
        await any_store.reserve_operation(_record("op-2"), LeaseRequest(mailbox_set=second.id))
    (holder,) = refused.value.holders
    assert (holder.operation_id, holder.targets, holder.count) == ("op-1", ["mailbox:user1999@contoso.com"], 1)
    verify = LeaseRequest(mailbox_set=second.id, mailbox_mode=LeaseMode.READ)
    with pytest.raises(LeaseConflict):  # a reader waits for a writer too
        await any_store.reserve_operation(_record("op-3", "exchange.encryption.verify"), verify)
    assert (await any_store.reserve_operation(_record("op-4"), LeaseRequest(mailbox_set=apart.id)))[1]
    await any_store.release_operation("op-1")  # a start that Temporal refused frees what it reserved
    assert await any_store.leases("op-1") == []
    assert (await any_store.reserve_operation(_record("op-2"), LeaseRequest(mailbox_set=second.id)))[1]


async def test_of_concurrent_starts_on_one_target_exactly_one_holds_it(any_store: Store) -> None:
    request = LeaseRequest(leases=[Lease.on("dep:exchange", "EU_mailboxes")])

    async def start(n: int) -> str:
        try:
            await any_store.reserve_operation(_record(f"op-{n}", "exchange.dep.create"), request)
        except LeaseConflict:
            return "refused"
        return "held"

    for round_ in range(3):
        outcomes = await asyncio.gather(*(start(round_ * 10 + n) for n in range(6)))
        assert sorted(outcomes) == ["held"] + ["refused"] * 5, outcomes
        (winner,) = [round_ * 10 + n for n, o in enumerate(outcomes) if o == "held"]
        await _end(any_store, f"op-{winner}", OperationState.SUCCEEDED)


async def test_an_acquisition_waits_for_one_in_progress_and_then_sees_what_it_took(any_store: Store) -> None:
    """The lease lock, shown without relying on a race: B starts while A is between its check and its commit."""
    from ckey.store import leases as lease_table
    from ckey.store.schema import OperationRow

    request = LeaseRequest(leases=[Lease.on("geo", "EUR")])
    async with any_store.session() as session:
        await lease_table.lock(session)
        assert await lease_table.conflicts(session, "op-a", request) == []
        session.add(
            OperationRow(
                id="op-a",
                kind="k",
                state="running",
                phase="starting",
                started_by="a",
                started_at=T0,
                updated_at=T0,
                params={},
                escalations=[],
                gates=[],
            )
        )
        await session.flush()
        await lease_table.acquire(session, "op-a", request, T0)
        b = asyncio.ensure_future(any_store.reserve_operation(_record("op-b", "k"), request))
        await asyncio.sleep(0.5)
        assert not b.done()  # B waits on the lock instead of reading a world without A's lease
        await session.commit()
    with pytest.raises(LeaseConflict) as refused:
        await b
    assert [h.operation_id for h in refused.value.holders] == ["op-a"]


def test_every_kind_that_changes_something_declares_what_it_holds() -> None:
    from workflows import product_registry

    kinds = {kind.name: kind for kind in product_registry()}
    readers = {"inventory.sync"}  # reads the tenant only: holds nothing
    for name, kind in kinds.items():
        assert (kind.leases_of is None) == (name in readers), name
    restore = kinds["keyvault.key.restore"].leases_of
    health = kinds["keyvault.health"].leases_of
    assert restore is not None and health is not None
    key = "https://Contoso-EastUS-KV1.vault.azure.net/keys/exo-key-01/0123456789abcdef0123456789abcdef"
    params = kinds["keyvault.key.restore"].public_params.model_validate({"key_uri": key})
    assert restore(params).leases == [Lease(target="key:contoso-eastus-kv1/exo-key-01", mode=LeaseMode.WRITE)]
    checked = health(kinds["keyvault.health"].public_params.model_validate({"keys": [key]}))
    assert checked.leases == [Lease(target="key:contoso-eastus-kv1/exo-key-01", mode=LeaseMode.READ)]
