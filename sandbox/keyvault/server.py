"""Serving the sandbox Key Vault over HTTPS with uvicorn: in the foreground, or in a thread for tests.

TLS comes from the local CA (:func:`sandbox.tls.ensure_server_cert`): the server certificate carries
``*.vault.azure.net`` and ``management.azure.com``, which ckey's resolver sends here in sandbox mode.
"""

from __future__ import annotations

import uvicorn
from starlette.applications import Starlette

from ckey.config import Settings
from sandbox import common
from sandbox.keyvault.app import SandboxKeyVault, create_app


def uvicorn_config(
    app: Starlette, settings: Settings, *, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"
) -> uvicorn.Config:
    """A uvicorn configuration that serves ``app`` over TLS with the sandbox's server certificate."""
    port = port or settings.sandbox_keyvault_port
    return common.uvicorn_config(app, settings, host=host, port=port, log_level=log_level)


def serve(settings: Settings, *, seed: bool = True, log_level: str = "info") -> None:
    """Serve in the foreground until interrupted."""
    uvicorn.Server(uvicorn_config(create_app(settings, seed=seed), settings, log_level=log_level)).run()


class SandboxKeyVaultServer(common.ThreadedServer):
    """The sandbox in a background thread (its own event loop), for tests and embedding.

    Args:
        settings: ckey's settings; the server binds ``127.0.0.1:settings.sandbox_keyvault_port``.
        seed: create the demo vaults and keys when the database is new.
        database_url: SQLAlchemy async URL; default ``<data_dir>/sandbox-keyvault.db``.
    """

    thread_name = "sandbox-keyvault"
    title = "the sandbox Key Vault"
    start_hint = "; see its log"

    def __init__(self, settings: Settings, *, seed: bool = True, database_url: str | None = None) -> None:
        app = create_app(settings, database_url=database_url, seed=seed)
        super().__init__(settings, app, settings.sandbox_keyvault_port)

    @property
    def sandbox(self) -> SandboxKeyVault:
        """The running sandbox's parts (counters, service) for assertions."""
        sandbox: SandboxKeyVault = self.app.state.sandbox
        return sandbox
