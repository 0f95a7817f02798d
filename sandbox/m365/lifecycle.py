"""The sandbox tenant's parts and their life cycle: start, re-seed, stop.

Starting opens the database (creating and seeding a new one), restores the clock and the fault switchboard, and runs
Microsoft's steps in the background.

:class:`SandboxM365` builds the parts and hands each the few others it works with; the HTTP side
(:mod:`sandbox.m365.app`) and the control endpoint (:mod:`sandbox.m365.admin`) get theirs from it.
"""

from __future__ import annotations

import logging
from collections import Counter

from ckey.config import Settings
from sandbox.entra import SandboxDirectory, ensure_app_registrations
from sandbox.identity import SandboxIdentity
from sandbox.m365.clock import SimClock
from sandbox.m365.core import Core
from sandbox.m365.db import Database, default_database_url
from sandbox.m365.durations import Durations
from sandbox.m365.exchange import Exchange
from sandbox.m365.exchange_policies import ExchangePolicies
from sandbox.m365.faults import Faults, FaultSwitchboard
from sandbox.m365.multiworkload import MultiWorkload
from sandbox.m365.params import Cmdlet
from sandbox.m365.sharepoint import SharePoint
from sandbox.m365.support import SupportDesk
from sandbox.m365.tenant import DEMO_TENANT, EMPTY_TENANT, TenantSpec, generate
from sandbox.m365.ticker import Ticker
from sandbox.m365.vault import KEYVAULT_RETRIES, KeyVaultAccess
from sandbox.m365.windows365 import Windows365

log = logging.getLogger(__name__)


class SandboxM365:
    """The sandbox tenant's moving parts.

    Args:
        settings: ckey's settings (data dir, tenant, identity key, principal, speed, Key Vault port).
        database_url: SQLAlchemy async URL; default ``<data_dir>/sandbox-m365.db``.
        seed: the tenant to generate when the database is new (None: an empty tenant).
        speed: simulated seconds per real second; default ``settings.sandbox_m365_speed`` or 1.0.
        keyvault_retries: retries of a failing Key Vault call before the vault counts as unavailable.
        durations: the service's process durations.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        database_url: str | None = None,
        seed: TenantSpec | None = DEMO_TENANT,
        speed: float | None = None,
        keyvault_retries: int = KEYVAULT_RETRIES,
        durations: Durations | None = None,
    ) -> None:
        self.settings = settings
        self.database_url = database_url or default_database_url(settings.data_dir)
        self.db = Database(self.database_url)
        self.vault = KeyVaultAccess(settings, keyvault_retries)
        self.core = Core(settings, self.db, self.vault, durations or Durations())
        self.counters: Counter[str] = Counter()
        self.exchange = Exchange(self.core)
        self.policies = ExchangePolicies(self.core)
        self.multi = MultiWorkload(self.core)
        self.windows365 = Windows365(self.core, self.multi.assignment)
        self.sharepoint = SharePoint(self.core)
        self.desk = SupportDesk(self.core, self.exchange, self.multi)
        self.faults = FaultSwitchboard(self.core, self.counters)
        self.ticker = Ticker(self.core, self.desk)
        self.identity = SandboxIdentity(settings.sandbox_identity_key_path, settings.azure_tenant_id)
        self.directory = SandboxDirectory(
            settings.azure_tenant_id, ensure_app_registrations(settings.data_dir, settings.azure_principal)
        )
        self.seed = seed or EMPTY_TENANT
        self.speed = speed or settings.sandbox_m365_speed or 1.0

    def exchange_cmdlets(self) -> dict[str, Cmdlet]:
        """What Exchange Online PowerShell serves: the Exchange cmdlets and the multi-workload ones, by name."""
        return {**self.policies.cmdlets(), **self.exchange.cmdlets(), **self.multi.cmdlets()}

    async def start(self) -> None:
        """Open the database (seeding a new one), restore the clock at this run's speed, start the ticker."""
        await self.db.create_all()
        clock = await self.core.get_state("clock")
        if clock:
            self.core.clock = SimClock.from_state(clock)
            if self.core.clock.speed != self.speed:
                self.core.clock.set_speed(self.speed)
        else:
            self.core.clock = SimClock(self.speed)
        await self.core.save_clock()
        await self.faults.load()
        tenant = await self.core.get_state("tenant")
        if tenant:
            self.core.tenant = tenant
        else:
            await self._generate(self.seed)
            log.info("sandbox tenant: seeded %s in %s", self.seed.fqdn, self.database_url)
        await self.ticker.tick()
        self.ticker.start()

    async def stop(self) -> None:
        """Stop the ticker, close Key Vault clients and the database."""
        await self.ticker.stop()
        await self.vault.close()
        await self.db.close()

    async def _generate(self, spec: TenantSpec) -> None:
        tenant, rows = generate(self.core, spec, self.core.now())
        async with self.db.session() as s, s.begin():
            s.add_all(rows)
        self.core.tenant = tenant
        await self.core.set_state("tenant", tenant)

    async def reseed(self, spec: TenantSpec) -> None:
        """Replace the whole tenant with a newly generated one (the clock and the faults stay)."""
        async with self.core.lock:
            self.desk.next_due = 0.0
            await self.db.drop_all()
            await self.db.create_all()
            await self.core.save_clock()
            await self.faults.save()
            await self._generate(spec)

    async def set_faults(self, faults: Faults) -> None:
        """Replace the fault switchboard; stalled geos stop, released ones resume."""
        now = self.core.now()
        stalled = {g.upper() for g in faults.stalled_geos}
        async with self.core.lock:
            await self.sharepoint.stall(stalled, now)
            await self.faults.replace(faults.model_copy(update={"stalled_geos": sorted(stalled)}))

    async def tick(self) -> int:
        """Carry out Microsoft's due steps (support cases); how many ran."""
        return await self.ticker.tick()

    async def advance(self, seconds: float) -> float:
        """Shift the clock forward, run what became due; the new simulated instant."""
        return await self.ticker.advance(seconds)
