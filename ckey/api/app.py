"""The ckey API application (FastAPI)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from temporalio.client import Client

from ckey.api import openapi, problems
from ckey.api.guard import BodyLimits, RequestGuard
from ckey.api.routes import audit, exchange, key_backups, operations, schedules, spo, uploads, vaults
from ckey.api.routes import m365 as m365_routes
from ckey.api.routes import windows365 as windows365_routes
from ckey.auth import TokenVerifier
from ckey.azure import AzureConnection
from ckey.config import Settings, get_settings
from ckey.keyvault import KeyVaultGateway
from ckey.m365 import M365Gateway, build_transport
from ckey.store import Store
from ckey.temporal import connect
from ckey.windows365 import Windows365Gateway


def create_app(
    settings: Settings | None = None,
    *,
    client: Client | None = None,
    store: Store | None = None,
    keyvault: KeyVaultGateway | None = None,
    m365: M365Gateway | None = None,
    windows365: Windows365Gateway | None = None,
) -> FastAPI:
    """The API, connected at start-up to Temporal and the store (or to the ones given, as tests do)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if client is None:
            app.state.client = await connect(settings)
        if store is None:
            app.state.store = Store.from_settings(settings)
        azure = AzureConnection(settings) if keyvault is None or m365 is None else None
        if azure is not None:
            app.state.keyvault = keyvault or KeyVaultGateway(azure)
            app.state.m365 = m365 or M365Gateway(build_transport(settings, azure))
            app.state.windows365 = windows365 or Windows365Gateway(azure)
        try:
            yield
        finally:
            if azure is not None:
                if keyvault is None:
                    await app.state.keyvault.close()
                await azure.close()
            if store is None:
                await app.state.store.close()

    app = FastAPI(
        title="ckey",
        summary="Microsoft Purview Customer Key operations as durable Temporal workflows",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    # Given clients (tests, embedding) are usable without running the lifespan.
    app.state.client, app.state.store, app.state.keyvault, app.state.m365 = client, store, keyvault, m365
    app.state.windows365 = windows365
    app.state.verifier = TokenVerifier(settings)
    problems.install(app)
    app.add_middleware(
        RequestGuard,
        verifier=app.state.verifier,
        limits=BodyLimits(default=settings.api_max_body_bytes, uploads=settings.upload_max_bytes),
    )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers (no token needed)."""
        return {"status": "ok"}

    app.include_router(operations.router)
    app.include_router(audit.router)
    app.include_router(vaults.router)
    app.include_router(uploads.router)
    app.include_router(key_backups.router)
    app.include_router(exchange.router)
    app.include_router(schedules.router)
    app.include_router(spo.router)
    app.include_router(windows365_routes.router)
    app.include_router(m365_routes.router)
    openapi.install(app)
    return app
