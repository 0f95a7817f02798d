"""The sandbox tenant's own transport to the sandbox Key Vault: its names resolve locally, nothing else does."""

from __future__ import annotations

import socket

import pytest

from sandbox.m365.transport import KeyVaultResolver


@pytest.mark.parametrize(
    "host",
    [
        "contoso-eastus-kv1.vault.azure.net",
        "KV1.Vault.Azure.Net.",
        "kv1.vault.ckey.test",
        "management.azure.com",
        "login.microsoftonline.com",
    ],
)
async def test_the_key_vault_servers_names_resolve_to_its_local_port(host: str) -> None:
    [result] = await KeyVaultResolver(8443).resolve(host, 443)
    assert (result["host"], result["port"], result["hostname"]) == ("127.0.0.1", 8443, host)
    assert result["family"] == socket.AF_INET


@pytest.mark.parametrize(
    "host",
    [
        "vault.azure.net",
        "kv1.vault.azure.net.evil.example",
        "outlook.office365.com",
        "graph.microsoft.com",
        "example.com",
        "127.0.0.1",
    ],
)
async def test_no_other_name_resolves(host: str) -> None:
    with pytest.raises(OSError, match="only the sandbox Key Vault"):
        await KeyVaultResolver(8443).resolve(host, 443)
