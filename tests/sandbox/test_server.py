"""Serving: persistence across restarts, the control endpoint's auth, the entry point's readiness probe."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from azure.keyvault.keys.aio import KeyClient
from azure.keyvault.keys.crypto import KeyWrapAlgorithm
from azure.keyvault.keys.crypto.aio import CryptographyClient

from ckey.auth import mint_local_token
from ckey.azure import AzureConnection
from ckey.config import Settings
from ckey.models import Role
from sandbox.keyvault import SandboxKeyVaultControl, SandboxKeyVaultServer
from sandbox.keyvault import __main__ as keyvault_main
from sandbox.m365 import __main__ as m365_main
from sandbox.tls import client_ssl_context
from tests.sandbox.conftest import free_port, modulus, sandbox_settings, vault_url


async def test_keys_and_clock_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = sandbox_settings(data)
    with SandboxKeyVaultServer(first, seed=False):
        async with SandboxKeyVaultControl.from_settings(first) as control:
            await control.create_vault("persist-kv", purge_protection=True)
            await control.grant("persist-kv", first.azure_principal, ["all"])
            await control.advance_clock(days=3)
        async with AzureConnection(first) as conn:
            async with KeyClient(vault_url("persist-kv"), conn.credential(), **conn.client_kwargs()) as client:
                key = await client.create_rsa_key("durable")
                await client.rotate_key("durable")
                await client.create_rsa_key("binned")
                deleted = await client.delete_key("binned")
            async with CryptographyClient(key, conn.credential(), **conn.client_kwargs()) as cc:
                wrapped = (await cc.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"c" * 32)).encrypted_key

    # Same data dir, another port: a new process in all but name.
    second = sandbox_settings(data)
    with SandboxKeyVaultServer(second, seed=False):
        async with AzureConnection(second) as conn:
            async with KeyClient(vault_url("persist-kv"), conn.credential(), **conn.client_kwargs()) as client:
                again = await client.get_key("durable", key.properties.version)
                assert modulus(again) == modulus(key)
                assert len([v async for v in client.list_properties_of_key_versions("durable")]) == 2
                still_deleted = await client.get_deleted_key("binned")
                assert still_deleted.scheduled_purge_date == deleted.scheduled_purge_date
            async with CryptographyClient(key.id, conn.credential(), **conn.client_kwargs()) as cc:
                assert (await cc.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)).key == b"c" * 32
        async with SandboxKeyVaultControl.from_settings(second) as control:
            assert (await control.clock())["offset_seconds"] == 3 * 86400
    # Private keys are sealed at rest, never stored in the clear.
    database = (data / "sandbox-keyvault.db").read_bytes()
    assert b"PRIVATE KEY" not in database
    assert (data / "keys" / "sandbox-keyvault-kek.bin").stat().st_mode & 0o777 == 0o600


async def test_control_endpoint_requires_an_admin(kv_settings: Settings, kv_server: SandboxKeyVaultServer) -> None:
    verify = client_ssl_context(kv_settings.resolved_ca_file)
    async with httpx.AsyncClient(base_url=kv_server.base_url, verify=verify) as http:
        assert (await http.get("/sandbox/health")).json() == {"status": "ok"}
        assert (await http.get("/sandbox/status")).status_code == 401
        operator = mint_local_token(kv_settings, "olivia", [Role.OPERATOR])
        refused = await http.get("/sandbox/status", headers={"Authorization": f"Bearer {operator}"})
        assert refused.status_code == 403
        admin = mint_local_token(kv_settings, "ada", [Role.ADMIN])
        status = await http.get("/sandbox/status", headers={"Authorization": f"Bearer {admin}"})
        assert status.status_code == 200 and "contoso-eastus-kv1" in {v["name"] for v in status.json()["vaults"]}
        # The control endpoint exists only under the local names, never under Azure's.
        assert (await http.get("/sandbox/health", headers={"Host": "management.azure.com"})).status_code != 200


def test_python_m_sandbox_keyvault_serves_and_answers_health(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "CKEY_DATA_DIR": str(tmp_path / "data"), "CKEY_SANDBOX_KEYVAULT_PORT": str(port)}
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.keyvault"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        ca = tmp_path / "data" / "tls" / "ca.pem"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            if ca.exists():
                try:
                    response = httpx.get(f"https://localhost:{port}/sandbox/health", verify=client_ssl_context(ca))
                    if response.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            assert time.monotonic() < deadline, "the sandbox did not become ready"
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(10)
    assert (tmp_path / "data" / "sandbox-keyvault.db").exists()


def test_the_entry_points_serve_in_sandbox_mode_whatever_the_environment_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sandbox mode is off by default (production); the sandbox's own clients must still reach the sandbox.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CKEY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CKEY_SANDBOX", "false")
    served: list[Settings] = []
    for entry in (keyvault_main, m365_main):
        monkeypatch.setattr(entry, "serve", served.append)
        assert entry.main() == 0
    assert [settings.sandbox for settings in served] == [True, True]
