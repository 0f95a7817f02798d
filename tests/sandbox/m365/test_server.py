"""Serving: authentication, faults and throttling, ckey's own gateway against it, restarts, ``python -m``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ckey.auth import mint_local_token
from ckey.azure import AzureConnection
from ckey.config import Settings, load_settings
from ckey.m365 import CmdletError, InvokeCommandTransport, M365Gateway, TransientError
from ckey.models import Role, ServicePrincipal
from sandbox.keyvault import SandboxKeyVaultControl, SandboxKeyVaultServer
from sandbox.m365.control import SandboxM365Control
from sandbox.m365.server import SandboxM365Server
from sandbox.tls import client_ssl_context
from tests.sandbox.conftest import free_port
from tests.sandbox.m365.conftest import EXO, M365, new_keys, start_tenant, tenant_settings, unique


async def test_bearer_tokens_and_roles(m365: M365, settings_m365: Settings) -> None:
    url = f"{EXO}/adminapi/beta/{settings_m365.azure_tenant_id}/InvokeCommand"
    body = {"CmdletInput": {"CmdletName": "Get-DataEncryptionPolicy", "Parameters": {}}}
    session = m365.connection.http_session()
    async with session.post(url, json=body) as response:
        assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer ")
    graph_token = m365.headers("https://graph.microsoft.com")
    async with session.post(url, json=body, headers=graph_token) as response:
        assert response.status == 401  # a token for another resource
    bob = await m365.exo("Get-DataEncryptionPolicy", principal="bob@contoso.com")
    assert bob.status == 403 and bob.body["error"]["code"] == "AccessDenied" and "Exchange Administrator" in bob.message
    app = await m365.exo("Get-DataEncryptionPolicy", principal=ServicePrincipal.EXCHANGE_ONLINE.value)
    assert app.status == 403
    other_tenant = await m365.request(
        "POST", f"{EXO}/adminapi/beta/fabrikam.onmicrosoft.com/InvokeCommand", resource=EXO, json=body
    )
    assert other_tenant.status == 404
    by_domain = await m365.request(
        "POST", f"{EXO}/adminapi/beta/contoso.onmicrosoft.com/InvokeCommand", resource=EXO, json=body
    )
    assert by_domain.status == 200


async def test_injected_faults_and_throttling(m365: M365, control: SandboxM365Control) -> None:
    await control.set_faults(throttle_next=1, retry_after_seconds=7)
    throttled = await m365.exo("Get-DataEncryptionPolicy")
    assert throttled.status == 429 and throttled.headers["Retry-After"] == "7"
    assert (await m365.exo("Get-DataEncryptionPolicy")).status == 200
    await control.set_faults(fail_next=1, error_status=500)
    failed = await m365.exo("Get-DataEncryptionPolicy")
    assert failed.status == 500 and failed.exception.endswith("ADTransientException")
    await control.set_faults(fail_next=1)
    assert (await m365.graph("GET", "cloudPCs")).status == 503
    await control.set_faults(throttle_rate=1.0, retry_after_seconds=2)
    assert (await m365.spo("Get-SPODataEncryptionPolicy")).status == 429
    await control.set_faults(latency_ms=150)
    started = time.monotonic()
    assert (await m365.exo("Get-DataEncryptionPolicy")).status == 200
    assert time.monotonic() - started >= 0.15
    await control.set_faults()
    assert (await control.status())["counters"]["throttled"] >= 2


async def test_ckey_gateway_speaks_to_the_sandbox(
    settings_m365: Settings, control: SandboxM365Control, kv: SandboxKeyVaultControl
) -> None:
    keys = await new_keys(kv, [ServicePrincipal.EXCHANGE_ONLINE])
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    async with AzureConnection(settings_m365) as conn:
        gateway = M365Gateway(InvokeCommandTransport(conn, settings_m365, sleep=sleep))
        name = unique("Gateway")
        created = await gateway.new_data_encryption_policy(name, keys.uris, "through ckey's gateway")
        assert created.name == name and created.azure_key_ids == keys.uris
        [found] = await gateway.get_data_encryption_policy(created.guid)
        assert found.name == name
        mailbox = (await gateway.get_mailbox(result_size="Unlimited"))[0]
        await gateway.set_mailbox(mailbox.identity, name)
        stats = await gateway.get_mailbox_statistics(mailbox.identity)
        assert stats.data_encryption_policy_id == created.guid and stats.is_encrypted is False
        with pytest.raises(CmdletError) as refused:
            await gateway.new_data_encryption_policy("has spaces", keys.uris)
        assert refused.value.code == "DataValidationException" and "can't contain spaces" in refused.value.message
        # Throttling is retried after the service's Retry-After; a fault that outlasts the budget is transient.
        await control.set_faults(throttle_next=2, retry_after_seconds=7)
        assert [p.name for p in await gateway.get_data_encryption_policy(name)] == [name]
        assert slept == [7.0, 7.0]
        await control.set_faults(fail_next=settings_m365.m365_max_attempts)
        with pytest.raises(TransientError):
            await gateway.get_data_encryption_policy(name)
        await control.set_faults()


async def test_control_endpoint_requires_an_admin(settings_m365: Settings, tenant: SandboxM365Server) -> None:
    verify = client_ssl_context(settings_m365.resolved_ca_file)
    async with httpx.AsyncClient(base_url=tenant.base_url, verify=verify) as http:
        assert (await http.get("/sandbox/health")).json() == {"status": "ok"}
        assert (await http.get("/sandbox/status")).status_code == 401
        operator = mint_local_token(settings_m365, "olivia", [Role.OPERATOR])
        assert (await http.get("/sandbox/status", headers={"Authorization": f"Bearer {operator}"})).status_code == 403
        admin = mint_local_token(settings_m365, "ada", [Role.ADMIN])
        status = await http.get("/sandbox/status", headers={"Authorization": f"Bearer {admin}"})
        assert status.status_code == 200 and status.json()["clock"]["speed"] == 1.0
        # Not under Microsoft's names.
        assert (await http.get("/sandbox/health", headers={"Host": "outlook.office365.com"})).status_code != 200


async def test_the_tenant_survives_a_restart(
    tmp_path: Path, m365_data: Path, m365_kv: SandboxKeyVaultServer, kv: SandboxKeyVaultControl
) -> None:
    db = tmp_path / "sandbox-m365.db"
    first = tenant_settings(m365_data, m365_kv.settings.sandbox_keyvault_port)
    keys = await new_keys(kv, [ServicePrincipal.EXCHANGE_ONLINE])
    server = start_tenant(first, db)
    try:
        client = M365(first)
        [dep] = await client.ok("New-DataEncryptionPolicy", Name=unique("Durable"), AzureKeyIDs=keys.uris)
        mailbox = (await client.ok("Get-Mailbox"))[0]["Name"]
        await client.ok("Set-Mailbox", Identity=mailbox, DataEncryptionPolicy=dep["Name"])
        await client.close()
        async with SandboxM365Control.from_settings(first) as control:
            await control.advance_clock(days=4)
            await control.set_faults(retry_after_seconds=9)
            before = await control.mailbox(mailbox)
            shifted = (await control.clock())["shifted_seconds"]
    finally:
        server.stop()
    assert before["is_encrypted"]

    second = tenant_settings(m365_data, m365_kv.settings.sandbox_keyvault_port)  # another port: a new process
    server = start_tenant(second, db)
    try:
        client = M365(second)
        [again] = await client.ok("Get-DataEncryptionPolicy", Identity=dep["Guid"])
        assert again["Name"] == dep["Name"]
        [stats] = await client.ok("Get-MailboxStatistics", Identity=mailbox)
        assert stats["IsEncrypted"] is True and stats["DataEncryptionPolicyID"] == dep["Guid"]
        await client.close()
        async with SandboxM365Control.from_settings(second) as control:
            assert (await control.clock())["shifted_seconds"] == shifted
            assert (await control.faults())["retry_after_seconds"] == 9
            items = await control.mailbox_items(mailbox)
            assert items["readable"] and items["path"] == "customer-key-1"
    finally:
        server.stop()


def test_python_m_sandbox_m365_seeds_the_demo_tenant_and_answers_health(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CKEY_")},
        "CKEY_DATA_DIR": str(tmp_path / "data"),
        "CKEY_SANDBOX_M365_PORT": str(port),
        "CKEY_SANDBOX_M365_SPEED": "3600",
    }
    root = Path(__file__).resolve().parents[3]
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox.m365"], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        ca = tmp_path / "data" / "tls" / "ca.pem"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            if ca.exists():
                try:
                    response = httpx.get(f"https://localhost:{port}/sandbox/health", verify=client_ssl_context(ca))
                    if response.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            assert time.monotonic() < deadline, "the sandbox tenant did not become ready"
            time.sleep(0.1)
        settings = load_settings(data_dir=tmp_path / "data", sandbox_m365_port=port, _env_file=None)
        token = mint_local_token(settings, "ada", [Role.ADMIN])
        status = httpx.get(
            f"https://localhost:{port}/sandbox/status",
            headers={"Authorization": f"Bearer {token}"},
            verify=client_ssl_context(ca),
        ).json()
    finally:
        process.terminate()
        process.wait(10)
    assert process.returncode in (0, -15)  # uvicorn re-raises the SIGTERM it handled, after a clean shutdown
    assert sum(status["recipients"].values()) == 1000 and status["recipients"]["MailUser"] == 100
    assert [g["geo"] for g in status["geos"]] == ["NAM", "EUR"] and status["stuck"] == 3
    assert status["clock"]["speed"] == 3600
    assert (tmp_path / "data" / "sandbox-m365.db").exists()
