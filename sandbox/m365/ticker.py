"""Microsoft's scheduled steps in simulated time: run when due, on every request and once a second while idle.

The support desk is what schedules steps (:meth:`~sandbox.m365.support.SupportDesk.tick`); everything else in the
tenant is computed from timestamps when somebody asks. Moving the sandbox clock forward (the control endpoint) runs
what became due at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from sandbox.m365.core import Core

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
"""Real seconds between two runs of Microsoft's due steps while the server idles."""


class Scheduled(Protocol):
    """What has scheduled steps: the earliest one's instant, and running those that are due."""

    next_due: float
    """The earliest scheduled step (0: unknown); until then :meth:`tick` has nothing to do."""

    async def tick(self) -> int:
        """Carry out the due steps; how many ran."""
        ...


class Ticker:
    """Runs Microsoft's due steps, and the background task that runs them while the server idles.

    Args:
        core: the tenant's clock and lock.
        steps: what has scheduled steps (the support desk).
    """

    def __init__(self, core: Core, steps: Scheduled) -> None:
        self.core = core
        self.steps = steps
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> int:
        """Carry out Microsoft's due steps (support cases); how many ran."""
        if self.core.now() < self.steps.next_due:
            return 0  # every request passes here: nothing due, no lock
        async with self.core.lock:
            return await self.steps.tick()

    async def advance(self, seconds: float) -> float:
        """Shift the clock forward, run what became due; the new simulated instant."""
        async with self.core.lock:
            now = self.core.clock.shift(seconds)
            await self.core.save_clock()
        await self.tick()
        return now

    async def set_speed(self, speed: float) -> None:
        """Run the clock at ``speed`` from now on (until a restart, which takes its speed from the settings)."""
        async with self.core.lock:
            self.core.clock.set_speed(speed)
            await self.core.save_clock()
        await self.tick()

    def start(self) -> None:
        """Start the background task."""
        self._task = asyncio.create_task(self._forever(), name="sandbox-m365-ticker")

    async def stop(self) -> None:
        """Stop the background task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                await self.tick()
            except Exception:
                log.exception("sandbox tenant: a scheduled step failed; it runs again on the next tick")
