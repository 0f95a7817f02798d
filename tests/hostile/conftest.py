"""A whole API for hostile tests: served by uvicorn over real HTTP, on the dev server, a small sandbox tenant and
Key Vault, and its own SQLite store — with no worker, so nothing but the API itself can change anything."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from temporalio.testing import WorkflowEnvironment

from ckey.api.app import create_app
from ckey.auth import mint_local_token
from ckey.config import Settings, load_settings
from ckey.models import Role
from ckey.store import create_engine
from ckey.store.migrate import upgrade
from sandbox.keyvault import SandboxKeyVaultServer
from sandbox.m365.server import SandboxM365Server
from sandbox.m365.tenant import TenantSpec
from tests.conftest import free_port, signed_in_to_sandbox

LONG = bool(os.environ.get("CKEY_HYPOTHESIS_LONG"))
"""``CKEY_HYPOTHESIS_LONG=1``: many more examples per endpoint and model (minutes, not seconds)."""
SMALL_TENANT = TenantSpec(mailboxes=12, mail_users=3, sites_per_geo=1, cloud_pcs=0, stuck_mailboxes=0)


@dataclass
class HostileStack:
    """The served API and what a test needs to check that refused requests changed nothing."""

    url: str
    settings: Settings
    store_file: Path
    tokens: dict[str, str]
    """Role name (and ``none``) → Authorization header value."""

    def store_snapshot(self) -> dict[str, int]:
        """Row counts of every table of ckey's store."""
        with sqlite3.connect(self.store_file) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            return {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}

    def sandbox_snapshot(self) -> dict[str, list[tuple[object, ...]]]:
        """Every row of both sandboxes' databases, except the tenant's call bookkeeping (it counts reads too)."""
        found: dict[str, list[tuple[object, ...]]] = {}
        for name in ("sandbox-keyvault.db", "sandbox-m365.db"):
            with sqlite3.connect(self.settings.data_dir / name) as db:
                tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
                for table in tables:
                    if "call" in table or "log" in table or "clock" in table:
                        continue
                    found[f"{name}:{table}"] = sorted(
                        map(tuple, db.execute(f'SELECT * FROM "{table}"').fetchall()), key=repr
                    )
        return found


@pytest.fixture(scope="session")
def hostile_stack(tmp_path_factory: pytest.TempPathFactory, env: WorkflowEnvironment) -> Iterator[HostileStack]:
    data_dir = tmp_path_factory.mktemp("hostile") / "data"
    settings = signed_in_to_sandbox(
        load_settings(
            data_dir=data_dir,
            sandbox_keyvault_port=free_port(),
            sandbox_m365_port=free_port(),
            api_port=free_port(),
            temporal_address=env.client.service_client.config.target_host,
            temporal_task_queue="hostile-no-worker",
            _env_file=None,
        )
    )
    store_file = data_dir / "ckey.db"
    with SandboxKeyVaultServer(settings), SandboxM365Server(settings, seed=SMALL_TENANT, speed=1.0):
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.api_port, log_level="warning")
        )

        def serve() -> None:
            async def migrate() -> None:
                engine = create_engine(settings.resolved_database_url)
                try:
                    await upgrade(engine)
                finally:
                    await engine.dispose()

            asyncio.run(migrate())
            server.run()

        thread = threading.Thread(target=serve, name="hostile-api", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("the API did not start")
            time.sleep(0.05)
        tokens = {
            role.value: "Bearer " + mint_local_token(settings, f"{role.value}@contoso.com", [role]) for role in Role
        }
        tokens["none"] = ""
        try:
            yield HostileStack(
                url=f"http://127.0.0.1:{settings.api_port}", settings=settings, store_file=store_file, tokens=tokens
            )
        finally:
            server.should_exit = True
            thread.join(timeout=15)


@pytest.fixture(scope="session")
def openapi_document(hostile_stack: HostileStack) -> dict[str, object]:
    document: dict[str, object] = httpx.get(f"{hostile_stack.url}/openapi.json", timeout=30).json()
    return document
