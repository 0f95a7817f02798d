"""A real local HTTP server that receives alert webhooks, for the tests: it answers a scripted series of statuses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.conftest import free_port


@dataclass
class AlertReceiver:
    """What the webhook received (each POST's JSON body), and the statuses it answers in turn (then 204)."""

    url: str = ""
    received: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0
    statuses: list[int] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        status = self.statuses.pop(0) if self.statuses else 204
        if status < 300:
            assert request.headers["Content-Type"] == "application/json"
            self.received.append(json.loads(await request.read()))
            self.arrived.set()
        return web.Response(status=status)

    async def first(self) -> dict[str, Any]:
        """The first alert delivered (waits for it, a minute at most)."""
        async with asyncio.timeout(60):
            await self.arrived.wait()
        return self.received[0]


@asynccontextmanager
async def alert_receiver(*statuses: int) -> AsyncIterator[AlertReceiver]:
    """Run an :class:`AlertReceiver` on ``http://127.0.0.1:<free port>/alerts`` answering ``statuses`` first."""
    receiver = AlertReceiver(statuses=list(statuses))
    app = web.Application()
    app.router.add_post("/alerts", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    receiver.url = f"http://127.0.0.1:{port}/alerts"
    try:
        yield receiver
    finally:
        await runner.cleanup()
