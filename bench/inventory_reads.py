"""Benchmark of the read side: ``GET /api/mailboxes`` over an inventory of 100,000 recipients.

Fills a fresh SQLite inventory with 100,000 recipients (90 % mailboxes, 10 % mail users, a quarter of them under one
of four DEPs, half of those encrypted), then reads 100 pages through the real API (in process, over ASGI) with a
Microsoft 365 gateway whose every call is counted: pages from the start, the middle and the end, with and without
``dep=`` and ``encrypted=``. Prints the fill time, the p50/p95/max of the page reads and the number of tenant calls.
Goals: p95 at most 50 ms, 0 tenant calls. Asserts nothing. ``python -m bench.inventory_reads [--recipients N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from ckey.api.app import create_app
from ckey.auth import mint_local_token
from ckey.config import load_settings
from ckey.m365 import Cmdlet, M365Gateway
from ckey.models import Role
from ckey.store import Store
from ckey.store.inventory import DepView, InventoryStore, RecipientSeen, RecipientStatus
from ckey.store.migrate import upgrade

DEPS = [f"DEP_{region}" for region in ("USA", "EUR", "APC", "GBR")]


class CountingTenant:
    """A transport that counts what would have reached the tenant (and answers nothing useful)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def invoke(self, cmdlet: Cmdlet) -> list[dict[str, Any]]:
        self.calls.append(cmdlet.render())
        return []


async def fill(store: Store, count: int) -> float:
    inventory = InventoryStore(store)
    now = datetime.now(UTC)
    guids = {name.lower(): f"{n:08x}-0000-4000-8000-000000000000" for n, name in enumerate(DEPS)}
    await inventory.record_deps(
        "exchange",
        [DepView(workload="exchange", name=name, guid=guids[name.lower()], seen_at=now) for name in DEPS],
        now,
        "bench",
    )
    started = time.perf_counter()
    seen = [
        RecipientSeen(
            identity=f"user{n:06}",
            recipient_type="MailUser" if n % 10 == 9 else "UserMailbox",
            user_principal_name=f"user{n:06}@contoso.com",
            dep=DEPS[n % 4] if n % 4 == 0 or n % 16 == 1 else None,
        )
        for n in range(count)
    ]
    await inventory.record_seen(seen, guids, now, "bench")
    encrypted = [
        RecipientStatus(identity=r.identity, is_encrypted=True, dep_guid=guids[r.dep.lower()])
        for n, r in enumerate(seen)
        if r.dep and r.recipient_type != "MailUser" and n % 8 == 0
    ]
    await inventory.record_status(encrypted, now, "bench")
    await inventory.mark_synced("recipients", now, "bench", count)
    return time.perf_counter() - started


async def main(count: int, reads: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp), _env_file=None)
        store = Store.from_url(f"sqlite+aiosqlite:///{Path(tmp) / 'ckey.db'}")
        await upgrade(store.engine)
        fill_seconds = await fill(store, count)
        tenant = CountingTenant()
        app = create_app(settings, m365=M365Gateway(tenant), store=store)
        token = mint_local_token(settings, "vera.viewer@contoso.com", [Role.VIEWER])
        queries: list[dict[str, Any]] = []
        for n in range(reads):
            query: dict[str, Any] = {"limit": 50, "offset": (n * 997) % max(1, count - 50)}
            if n % 3 == 1:
                query |= {"dep": DEPS[n % 4], "offset": n % 50}
            if n % 5 == 2:
                query |= {"encrypted": n % 2 == 0, "offset": n % 50}
            queries.append(query)
        timings: list[float] = []
        statuses: list[int] = []
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://ckey.test",
            headers={"Authorization": f"Bearer {token}"},
        ) as api:
            await api.get("/api/mailboxes", params={"limit": 1})  # warm the pool
            for query in queries:
                started = time.perf_counter()
                answer = await api.get("/api/mailboxes", params=query)
                timings.append(time.perf_counter() - started)
                statuses.append(answer.status_code)
        await store.close()
    timings.sort()
    p95 = timings[max(0, int(len(timings) * 0.95) - 1)]
    print(f"inventory: {count} recipients written in {fill_seconds:.1f} s")
    print(
        f"{reads} page reads: p50 {statistics.median(timings) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
        f"max {timings[-1] * 1000:.1f} ms (goal: p95 <= 50 ms)"
    )
    print(f"answers: {sorted(set(statuses))}; tenant calls made by the page reads: {len(tenant.calls)} (goal: 0)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--reads", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(main(args.recipients, args.reads))
