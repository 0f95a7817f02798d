"""Serving the sandbox tenant over HTTPS with uvicorn: in the foreground, or in a thread for tests.

TLS comes from the local CA (:func:`sandbox.tls.ensure_server_cert`): the server certificate carries
``outlook.office365.com``, ``graph.microsoft.com``, ``*.sharepoint.com`` and ``support.ckey.test``, which ckey's
resolver sends here in sandbox mode.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette

from ckey.config import Settings
from sandbox.m365.app import DEMO_TENANT, SandboxM365, create_app
from sandbox.m365.durations import Durations
from sandbox.m365.tenant import TenantSpec
from sandbox.m365.vault import KEYVAULT_RETRIES
from sandbox.tls import ensure_server_cert, server_ssl_context


def uvicorn_config(
    app: Starlette, settings: Settings, *, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"
) -> uvicorn.Config:
    """A uvicorn configuration that serves ``app`` over TLS with the sandbox's server certificate."""
    cert = ensure_server_cert(settings.tls_dir)

    def tls(_config: uvicorn.Config, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        return server_ssl_context(cert)

    return uvicorn.Config(
        app,
        host=host,
        port=port or settings.sandbox_m365_port,
        ssl_context_factory=tls,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def serve(settings: Settings, *, seed: TenantSpec | None = DEMO_TENANT, log_level: str = "info") -> None:
    """Serve in the foreground until interrupted."""
    uvicorn.Server(uvicorn_config(create_app(settings, seed=seed), settings, log_level=log_level)).run()


class SandboxM365Server:
    """The sandbox tenant in a background thread (its own event loop), for tests and embedding.

    Args:
        settings: ckey's settings; the server binds ``127.0.0.1:settings.sandbox_m365_port``.
        seed: the tenant to generate when the database is new (None: an empty tenant).
        database_url: SQLAlchemy async URL; default ``<data_dir>/sandbox-m365.db``.
        speed: simulated seconds per real second; default ``settings.sandbox_m365_speed`` or 1.0.
        keyvault_retries: retries of a failing Key Vault call (tests pass 0 to keep fault tests fast).
        durations: the service's process durations.
    """

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
        self.settings = settings
        self.app = create_app(
            settings,
            database_url=database_url,
            seed=seed,
            speed=speed,
            keyvault_retries=keyvault_retries,
            durations=durations,
        )
        self._server = uvicorn.Server(uvicorn_config(self.app, settings))
        self._thread: threading.Thread | None = None

    @property
    def sandbox(self) -> SandboxM365:
        """The running sandbox's parts, for assertions."""
        sandbox: SandboxM365 = self.app.state.sandbox
        return sandbox

    @property
    def base_url(self) -> str:
        """The control endpoint's base URL."""
        return f"https://localhost:{self.settings.sandbox_m365_port}"

    def start(self, timeout: float = 30.0) -> SandboxM365Server:
        """Start serving and wait until the server accepts connections.

        Raises:
            RuntimeError: the server did not start (port taken, database unreadable ...).
        """
        self._thread = threading.Thread(target=self._server.run, name="sandbox-m365", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the sandbox tenant did not start on port {self.settings.sandbox_m365_port}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the sandbox tenant did not start within {timeout:g} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> SandboxM365Server:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()
