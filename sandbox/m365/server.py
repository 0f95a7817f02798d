"""Serving the sandbox tenant over HTTPS with uvicorn: in the foreground, or in a thread for tests.

TLS comes from the local CA (:func:`sandbox.tls.ensure_server_cert`): the server certificate carries
``outlook.office365.com``, ``graph.microsoft.com``, ``*.sharepoint.com`` and ``support.ckey.test``, which ckey's
resolver sends here in sandbox mode.
"""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette

from ckey.config import Settings
from sandbox import common
from sandbox.m365.app import create_app
from sandbox.m365.durations import Durations
from sandbox.m365.lifecycle import SandboxM365
from sandbox.m365.tenant import DEMO_TENANT, TenantSpec
from sandbox.m365.vault import KEYVAULT_RETRIES


def uvicorn_config(
    app: Starlette, settings: Settings, *, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"
) -> uvicorn.Config:
    """A uvicorn configuration that serves ``app`` over TLS with the sandbox's server certificate."""
    port = port or settings.sandbox_m365_port
    return common.uvicorn_config(app, settings, host=host, port=port, log_level=log_level)


def serve(settings: Settings, *, seed: TenantSpec | None = DEMO_TENANT, log_level: str = "info") -> None:
    """Serve in the foreground until interrupted."""
    uvicorn.Server(uvicorn_config(create_app(settings, seed=seed), settings, log_level=log_level)).run()


class SandboxM365Server(common.ThreadedServer):
    """The sandbox tenant in a background thread (its own event loop), for tests and embedding.

    Args:
        settings: ckey's settings; the server binds ``127.0.0.1:settings.sandbox_m365_port``.
        seed: the tenant to generate when the database is new (None: an empty tenant).
        database_url: SQLAlchemy async URL; default ``<data_dir>/sandbox-m365.db``.
        speed: simulated seconds per real second; default ``settings.sandbox_m365_speed`` or 1.0.
        keyvault_retries: retries of a failing Key Vault call (tests pass 0 to keep fault tests fast).
        durations: the service's process durations.
    """

    thread_name = "sandbox-m365"
    title = "the sandbox tenant"

    def __init__(
        self,
        settings: Settings,
        *,
        seed: TenantSpec | None = DEMO_TENANT,
        database_url: str | None = None,
        speed: float | None = None,
        keyvault_retries: int = KEYVAULT_RETRIES,
        durations: Durations | None = None,
    ) -> None:
        app = create_app(
            settings,
            database_url=database_url,
            seed=seed,
            speed=speed,
            keyvault_retries=keyvault_retries,
            durations=durations,
        )
        super().__init__(settings, app, settings.sandbox_m365_port)

    @property
    def sandbox(self) -> SandboxM365:
        """The running sandbox's parts, for assertions."""
        sandbox: SandboxM365 = self.app.state.sandbox
        return sandbox
